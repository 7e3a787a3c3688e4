//! The backlog scenario: N pending deliveries while the receiver is down, then RSS, a restart,
//! and the drain once the receiver is back.

use super::*;

/// Server settings for the backlog: a hanging receiver would otherwise hold the shutdown for
/// the default 30 s grace, and with the per-webhook cap below the worker count every claim
/// while the one webhook is saturated scans the whole backlog (see docs/BENCHMARKS.md).
pub(super) const BACKLOG_CONFIG: &str =
    "[delivery]\nper_webhook_concurrency = 64\nshutdown_grace = \"2s\"\n";

/// N pending deliveries while the receiver is down; RSS, restart; then the receiver up: drain.
pub async fn backlog(ctx: &Ctx, events: u64, hang: Duration) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "backlog",
        json!({ "connections": ctx.conns, "events": events, "down_timeout_s": hang.as_secs_f64(),
                "server_config": ctx.server_config.as_deref().unwrap_or(BACKLOG_CONFIG) }),
    );
    {
        let receiver = Receiver::start(free_port()?).await?;
        ctx.ceiling(&receiver, &mut report).await?;
    }
    let port = free_port()?;
    let down = Blackhole::start(port).await?;
    let spec = ctx.spec("backlog", BACKLOG_CONFIG);
    let server = Server::start(&spec).await?;
    report.add("first start, ready in (s)", server.ready_in.as_secs_f64());
    let retry = json!({ "schedule": ["1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"],
                        "timeout": format!("{}ms", hang.as_millis()) });
    let fixture = setup(
        &server,
        &[Hook {
            url: format!("http://127.0.0.1:{port}/hook/ok"),
            events: &["*"],
            retry: Some(retry),
            ordering: None,
        }],
    )
    .await?;
    let bar = ctx.bar("fill", Some(events));
    let fill = load::closed_loop(
        server.addr,
        ctx.conns,
        Stop::Count(events),
        publisher(&fixture.account),
        bar.clone(),
    )
    .await;
    bar.finish_and_clear();
    check_errors(&fill, "publish")?;
    report.add("fill: events/s with the receiver down", fill.rate());
    report.add_latency("fill: publish latency", fill.latency());
    report.plot_latency_of("fill: publish latency", stats::to_pairs(&fill.latency));
    let rss_filled = server.rss_bytes().unwrap_or(0);
    report.add("RSS with the backlog (MB)", rss_filled as f64 / 1e6);

    let stopped = Instant::now();
    server.stop(Duration::from_secs(30));
    report.add("stop took (s)", stopped.elapsed().as_secs_f64());
    let server = Server::start(&spec).await?;
    let restart = server.ready_in;
    let rss_restarted = server.rss_bytes().unwrap_or(0);
    report.add("restart: ready in (s)", restart.as_secs_f64());
    report.add("RSS after restart (MB)", rss_restarted as f64 / 1e6);
    let pending = async {
        // The queue gauges refresh in the background; wait for the first reading.
        for _ in 0..200 {
            if let Some(page) = server.metrics().await
                && let (Some(due), Some(scheduled)) = (
                    page.get("herald_queue_due"),
                    page.get("herald_queue_scheduled"),
                )
                && due + scheduled > 0.0
            {
                return Some(due + scheduled);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    };
    let pending = pending.await.unwrap_or(0.0);
    report.add("pending per /metrics after restart", pending);

    down.stop().await;
    let receiver = Receiver::start(port).await?;
    let up_us = stats::now_us();
    let cpu_at_up = server.cpu_seconds();
    let mut rss_peak = rss_restarted;
    let bar = ctx.bar("drain", Some(events));
    let deadline = Instant::now() + ctx.timeout;
    let got = loop {
        let got = receiver.stream("ok").await?;
        rss_peak = rss_peak.max(server.rss_bytes().unwrap_or(0));
        bar.set_position(got.count);
        if got.count >= events {
            break got;
        }
        if Instant::now() > deadline {
            bar.finish_and_clear();
            bail!(
                "drained only {} of {events} within {:?}",
                got.count,
                ctx.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_and_clear();
    let drain_s = got.last_us.saturating_sub(up_us) as f64 / 1e6;
    let drain = events as f64 / drain_s.max(1e-9);
    report.add("drain: deliveries", got.count);
    report.add("drain: seconds", drain_s);
    report.add("drain: deliveries/s", drain);
    report.add("RSS peak while draining (MB)", rss_peak as f64 / 1e6);
    if let (Some(before), Some(after)) = (cpu_at_up, server.cpu_seconds()) {
        // Includes up to one poll (100 ms) of idling after the last receipt.
        report.add(
            "drain: server CPU per delivery (µs)",
            1e6 * (after - before) / events as f64,
        );
    }
    // Counted since the restart: the wait for the queue gauges, against the receiver still
    // down, is in them too.
    store_timings(&server, &mut report, "since restart: ").await;
    report.add_series("published/s (fill)", &fill.series, fill.first_us);
    report.add_series("delivered/s (drain)", &series_of(&got), fill.first_us);
    let rss_max = rss_filled.max(rss_restarted).max(rss_peak) as f64 / 1e6;
    report.target(
        &format!("backlog RSS at {events} pending"),
        "≤ 200 MB (largest of filled, restarted, draining)".to_owned(),
        rss_max,
        rss_max <= 200.0,
    );
    report.target(
        "restart ready",
        "≤ 5 s".to_owned(),
        restart.as_secs_f64(),
        restart.as_secs_f64() <= 5.0,
    );
    report.target_fraction("drain deliveries/s", drain, 0.2);
    Ok(report)
}
