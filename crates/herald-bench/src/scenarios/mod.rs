//! The scenarios of issue 5. Each measures the machine's ceiling first (load generator against
//! the receiver, no Herald), then runs Herald as a child process and reports against the targets.

use crate::load::{self, Conn, MakeReq, Req, Stop};
use crate::procs::{ADMIN, Blackhole, Receiver, Server, ServerSpec, free_port};
use crate::receiver::StreamStats;
use crate::report::Report;
use crate::stats::{self, Latency};
use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod backlog;
mod isolation;
mod ordering;
pub use backlog::backlog;
pub use isolation::isolation;
pub use ordering::ordering;

/// What every scenario shares.
pub struct Ctx {
    pub herald: PathBuf,
    pub database_url: Option<String>,
    /// TOML for the server; `None` means the scenario's own (Herald's defaults for most).
    pub server_config: Option<String>,
    pub conns: usize,
    pub ceiling_secs: f64,
    pub timeout: Duration,
    pub progress: bool,
    /// Removed when the run ends, however it ends.
    pub tmp: tempfile::TempDir,
}

impl Ctx {
    fn spec(&self, name: &str, default_config: &str) -> ServerSpec {
        let config = self.server_config.as_deref().unwrap_or(default_config);
        ServerSpec {
            binary: self.herald.clone(),
            data_dir: self.tmp.path().join(name),
            database_url: self.database_url.clone(),
            config: without_rate_limits(config),
        }
    }

    fn bar(&self, what: &str, len: Option<u64>) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = match len {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        let template = match len {
            Some(_) => "{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
            None => "{msg:>12} [{elapsed_precise}] {spinner} {pos} ({per_sec})",
        };
        bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// C: requests/s of our load generator against our receiver alone.
    async fn ceiling(&self, receiver: &Receiver, report: &mut Report) -> anyhow::Result<()> {
        if self.ceiling_secs <= 0.0 {
            return Ok(());
        }
        let path: Arc<str> = Arc::from("/hook/ceiling");
        let make: MakeReq = Arc::new(move |seq, at| Req {
            method: Method::POST,
            path: path.clone(),
            token: None,
            body: Bytes::from(format!(
                r#"{{"type":"tts.completed","timestamp":"2026-01-01T00:00:00Z","data":{{"t":{at},"s":{seq}}}}}"#
            )),
        });
        let bar = self.bar("ceiling", None);
        let run = load::closed_loop(
            receiver.addr,
            self.conns,
            Stop::After(Duration::from_secs_f64(self.ceiling_secs)),
            make,
            bar.clone(),
        )
        .await;
        bar.finish_and_clear();
        if run.ok == 0 {
            bail!(
                "the ceiling run got no answer: {}",
                run.first_error.unwrap_or_default()
            );
        }
        report.ceiling_rps = run.rate();
        report.add_latency("ceiling request latency", run.latency());
        // Drawn unless the scenario has a latency of its own to show.
        report.plot_latency_of("ceiling request latency", stats::to_pairs(&run.latency));
        receiver.reset().await
    }
}

/// A fresh account with webhooks to the receiver's streams.
struct Fixture {
    account: Arc<str>,
    /// The account's API key.
    key: Arc<str>,
    /// The webhooks' ids, in the order they were given.
    webhooks: Vec<String>,
}

struct Hook<'a> {
    url: String,
    events: &'a [&'a str],
    retry: Option<Value>,
    /// `none`, `key` or `fifo`; Herald's default (`none`) if `None`.
    ordering: Option<&'a str>,
}

async fn setup(server: &Server, hooks: &[Hook<'_>]) -> anyhow::Result<Fixture> {
    let mut conn = Conn::new(server.addr);
    let admin: Arc<str> = Arc::from(ADMIN);
    let post = |path: &str, token: &Arc<str>, body: Value| Req {
        method: Method::POST,
        path: Arc::from(path),
        token: Some(token.clone()),
        body: Bytes::from(body.to_string()),
    };
    let account = conn
        .json(&post("/v1/accounts", &admin, json!({ "name": "bench" })))
        .await
        .context("creating the bench account")?;
    let key: Arc<str> = Arc::from(account["api_key"].as_str().context("api_key")?);
    let mut webhooks = Vec::new();
    for hook in hooks {
        let mut body = json!({ "url": hook.url, "events": hook.events });
        if let Some(retry) = &hook.retry {
            body["retry"] = retry.clone();
        }
        if let Some(ordering) = hook.ordering {
            body["ordering"] = json!(ordering);
        }
        let created = conn
            .json(&post("/v1/webhooks", &key, body))
            .await
            .context("creating a webhook")?;
        webhooks.push(created["id"].as_str().context("webhook id")?.to_owned());
    }
    Ok(Fixture {
        account: Arc::from(account["id"].as_str().context("account id")?),
        key,
        webhooks,
    })
}

/// Publishes `tts.completed` events whose data carries the send time (`t`, Unix µs).
fn publisher(account: &Arc<str>) -> MakeReq {
    let account = account.clone();
    let path: Arc<str> = Arc::from("/v1/events");
    let token: Arc<str> = Arc::from(ADMIN);
    Arc::new(move |seq, at| Req {
        method: Method::POST,
        path: path.clone(),
        token: Some(token.clone()),
        body: Bytes::from(format!(
            r#"{{"account":"{account}","type":"tts.completed","data":{{"t":{at},"s":{seq}}}}}"#
        )),
    })
}

/// Requests to `POST /v1/events/batch`, `n` events each.
fn batch_publisher(account: &Arc<str>, n: usize) -> MakeReq {
    let account = account.clone();
    let path: Arc<str> = Arc::from("/v1/events/batch");
    let token: Arc<str> = Arc::from(ADMIN);
    Arc::new(move |seq, at| {
        let events: Vec<String> = (0..n)
            .map(|i| {
                format!(r#"{{"account":"{account}","type":"tts.completed","data":{{"t":{at},"s":{seq},"i":{i}}}}}"#)
            })
            .collect();
        Req {
            method: Method::POST,
            path: path.clone(),
            token: Some(token.clone()),
            body: Bytes::from(format!(r#"{{"events":[{}]}}"#, events.join(","))),
        }
    })
}

fn ok_hook<'a>(receiver: &Receiver, stream: &str) -> Hook<'a> {
    Hook {
        url: receiver.url(stream),
        events: &["*"],
        retry: None,
        ordering: None,
    }
}

/// Polls the receiver until `stream` has `want` receipts.
async fn wait_receipts(
    ctx: &Ctx,
    receiver: &Receiver,
    stream: &str,
    want: u64,
) -> anyhow::Result<StreamStats> {
    let bar = ctx.bar("receipts", Some(want));
    let deadline = Instant::now() + ctx.timeout;
    loop {
        let got = receiver.stream(stream).await?;
        bar.set_position(got.count);
        if got.count >= want {
            bar.finish_and_clear();
            return Ok(got);
        }
        if Instant::now() > deadline {
            bar.finish_and_clear();
            bail!(
                "only {} of {want} deliveries reached the receiver within {:?}",
                got.count,
                ctx.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn check_errors(run: &load::LoadResult, what: &str) -> anyhow::Result<()> {
    if run.errors > 0 {
        bail!(
            "{} of {} {what} requests failed; first: {}",
            run.errors,
            run.errors + run.ok,
            run.first_error.clone().unwrap_or_default()
        );
    }
    Ok(())
}

fn receipt_latency(s: &StreamStats) -> Latency {
    Latency::of(&stats::from_pairs(&s.latency))
}

fn series_of(s: &StreamStats) -> stats::Series {
    stats::Series(s.series.iter().copied().collect())
}

pub async fn ceiling_only(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "ceiling",
        json!({ "connections": ctx.conns, "secs": ctx.ceiling_secs }),
    );
    let receiver = Receiver::start(free_port()?).await?;
    ctx.ceiling(&receiver, &mut report).await?;
    Ok(report)
}

/// C publishers for T seconds; `batch` events per request (1: the single-event endpoint).
pub async fn ingest(ctx: &Ctx, secs: f64, webhooks: usize, batch: usize) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "ingest",
        json!({ "connections": ctx.conns, "secs": secs, "webhooks": webhooks, "batch": batch }),
    );
    let receiver = Receiver::start(free_port()?).await?;
    ctx.ceiling(&receiver, &mut report).await?;
    let server = Server::start(&ctx.spec("ingest", "")).await?;
    let hooks: Vec<Hook> = (0..webhooks).map(|_| ok_hook(&receiver, "ok")).collect();
    let fixture = setup(&server, &hooks).await?;
    let bar = ctx.bar("publish", None);
    let run = load::closed_loop(
        server.addr,
        ctx.conns,
        Stop::After(Duration::from_secs_f64(secs)),
        if batch > 1 {
            batch_publisher(&fixture.account, batch)
        } else {
            publisher(&fixture.account)
        },
        bar.clone(),
    )
    .await;
    bar.finish_and_clear();
    check_errors(&run, "publish")?;
    let events_per_s = run.rate() * batch as f64;
    report.add("events accepted", run.ok * batch as u64);
    report.add("accepted events/s", events_per_s);
    report.add_latency("publish latency (per request)", run.latency());
    report.plot_latency_of(
        "publish latency (per request)",
        stats::to_pairs(&run.latency),
    );
    report.add_series("requests/s", &run.series, run.first_us);
    if batch > 1 {
        let met = events_per_s >= 100_000.0;
        report.target(
            "ingest events/s, batched",
            "≥ 100,000/s".to_owned(),
            events_per_s,
            met,
        );
    } else {
        report.target_fraction("ingest events/s", events_per_s, 0.25);
    }
    Ok(report)
}

/// N events to W webhooks as fast as possible; first publish → last receipt.
pub async fn e2e(ctx: &Ctx, events: u64, webhooks: usize) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "e2e",
        json!({ "connections": ctx.conns, "events": events, "webhooks": webhooks }),
    );
    let receiver = Receiver::start(free_port()?).await?;
    ctx.ceiling(&receiver, &mut report).await?;
    let server = Server::start(&ctx.spec("e2e", "")).await?;
    let hooks: Vec<Hook> = (0..webhooks).map(|_| ok_hook(&receiver, "ok")).collect();
    let fixture = setup(&server, &hooks).await?;
    let before = server.usage();
    let bar = ctx.bar("publish", Some(events));
    let run = load::closed_loop(
        server.addr,
        ctx.conns,
        Stop::Count(events),
        publisher(&fixture.account),
        bar.clone(),
    )
    .await;
    bar.finish_and_clear();
    check_errors(&run, "publish")?;
    let deliveries = events * webhooks as u64;
    let got = wait_receipts(ctx, &receiver, "ok", deliveries).await?;
    let span = (got.last_us.saturating_sub(run.first_us)) as f64 / 1e6;
    let rate = deliveries as f64 / span.max(1e-9);
    report.add("deliveries", deliveries);
    report.add("publish events/s", run.rate());
    report.add("first publish → last receipt (s)", span);
    report.add("deliveries/s", rate);
    report.add("repeated attempts seen", got.retries);
    // Per delivery, the server's CPU time and disk writes: unlike the rate, about the same on a
    // busy machine as on a quiet one.
    let used = server.usage().since(before);
    let per = deliveries.max(1) as f64;
    if let Some(cpu) = used.cpu_seconds {
        report.add("server CPU time per delivery (µs)", cpu * 1e6 / per);
    }
    if let Some(disk) = used.disk_bytes {
        report.add(
            "server disk writes per delivery (KB)",
            disk as f64 / per / 1024.0,
        );
    }
    report.add_latency("publish → receipt", receipt_latency(&got));
    report.add_latency("publish latency", run.latency());
    store_timings(&server, &mut report, "").await;
    report.plot_latency_of("publish → receipt", got.latency.clone());
    report.add_series("published/s", &run.series, run.first_us);
    report.add_series("delivered/s", &series_of(&got), run.first_us);
    let fraction = if webhooks >= 10 { 0.35 } else { 0.15 };
    report.target_fraction(
        &format!("e2e deliveries/s, fan-out {webhooks}"),
        rate,
        fraction,
    );
    Ok(report)
}

/// Publishes at `rate` events/s for `secs` to `stream` and returns its receipts.
async fn steady_run(
    ctx: &Ctx,
    server: &Server,
    receiver: &Receiver,
    account: &Arc<str>,
    stream: &str,
    rate: f64,
    secs: f64,
) -> anyhow::Result<(load::LoadResult, StreamStats)> {
    let total = (rate * secs).round() as u64;
    let bar = ctx.bar("publish", Some(total));
    let run = load::open_loop(
        server.addr,
        ctx.conns,
        rate,
        Duration::from_secs_f64(secs),
        publisher(account),
        bar.clone(),
    )
    .await;
    bar.finish_and_clear();
    check_errors(&run, "publish")?;
    let got = wait_receipts(ctx, receiver, stream, run.ok).await?;
    Ok((run, got))
}

/// A fixed R events/s for T seconds to one webhook.
pub async fn steady(ctx: &Ctx, rate: f64, secs: f64) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "steady",
        json!({ "connections": ctx.conns, "rate": rate, "secs": secs }),
    );
    let receiver = Receiver::start(free_port()?).await?;
    ctx.ceiling(&receiver, &mut report).await?;
    let server = Server::start(&ctx.spec("steady", "")).await?;
    let fixture = setup(&server, &[ok_hook(&receiver, "ok")]).await?;
    let (run, got) =
        steady_run(ctx, &server, &receiver, &fixture.account, "ok", rate, secs).await?;
    let latency = receipt_latency(&got);
    report.add("events published", run.ok);
    report.add("achieved events/s", run.rate());
    report.add_latency("publish → receipt", latency);
    report.add_latency("publish latency", run.latency());
    report.plot_latency_of("publish → receipt", got.latency.clone());
    report.add_series("published/s", &run.series, run.first_us);
    report.add_series("delivered/s", &series_of(&got), run.first_us);
    report.target(
        "steady p99 publish → receipt",
        format!("≤ 10 ms (at 2,000 events/s; this run: {rate}/s)"),
        latency.p99_ms,
        latency.p99_ms <= 10.0,
    );
    Ok(report)
}

/// The API's request rate limits, switched off: the load generator sends far more than a
/// customer's key may, and a benchmark measures the server, not the limiter. A configuration
/// that sets its own `[api]` table keeps it.
const UNLIMITED_API: &str =
    "\n[api]\nrate_limit = { per_second = 0 }\nadmin_rate_limit = { per_second = 0 }\n";

fn without_rate_limits(config: &str) -> String {
    let sets_api = config.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("[api]") || l.starts_with("api.") || l.starts_with("[api.")
    });
    if sets_api {
        config.to_owned()
    } else {
        format!("{config}{UNLIMITED_API}")
    }
}

/// Where the server's time went: how many store operations of each kind it ran, and their mean
/// duration (waiting for the SQLite writer's turn included), from its own `/metrics`.
async fn store_timings(server: &Server, report: &mut Report, prefix: &str) {
    let Some(page) = server.metrics().await else {
        return;
    };
    for op in ["publish", "claim", "record"] {
        let series =
            |part: &str| format!("herald_store_operation_duration_seconds_{part}{{op=\"{op}\"}}");
        if let (Some(sum), Some(count)) = (page.get(&series("sum")), page.get(&series("count")))
            && count > 0.0
        {
            report.add(&format!("{prefix}store {op} operations"), count);
            report.add(&format!("{prefix}store {op}: mean (ms)"), 1e3 * sum / count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_configs_get_unlimited_api_rate_limits_unless_they_set_their_own() {
        assert!(without_rate_limits("").contains("admin_rate_limit = { per_second = 0 }"));
        let backlog = without_rate_limits(backlog::BACKLOG_CONFIG);
        assert!(backlog.starts_with(backlog::BACKLOG_CONFIG) && backlog.contains("\n[api]\n"));
        let own = "[api]\nrate_limit = { per_second = 10 }\n";
        assert_eq!(without_rate_limits(own), own);
    }
}
