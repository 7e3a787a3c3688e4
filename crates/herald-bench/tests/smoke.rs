//! CI smoke: every scenario runs end to end in a tiny configuration (a few seconds each), so the
//! benchmark cannot rot. The numbers of a debug build on a shared CI machine mean nothing; the
//! checks are that each run completes and reports sane, consistent counts.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The `herald` binary of this build, next to `herald-bench`. The workspace test run
/// (scripts/test) builds it; `cargo test -p herald-bench` alone does not, and cannot build it
/// from here while cargo holds the target directory.
fn herald_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_herald-bench"));
    let herald = bench.with_file_name(format!("herald{}", std::env::consts::EXE_SUFFIX));
    assert!(
        herald.is_file(),
        "no herald binary at {}: run `cargo build -p herald` first, or the whole suite (scripts/test)",
        herald.display()
    );
    herald
}

/// Runs one scenario with tiny common sizes and returns its JSON report.
fn run(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let plot = dir.path().join("report.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .arg("--herald")
        .arg(herald_binary())
        .args([
            "--connections",
            "4",
            "--ceiling-secs",
            "0.3",
            "--timeout",
            "60",
            "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .args(args)
        .output()
        .expect("herald-bench runs");
    assert!(
        output.status.success(),
        "herald-bench {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ceiling C"),
        "the table is printed:\n{stdout}"
    );
    let svg = std::fs::read_to_string(&plot).expect("the plot is written");
    assert!(svg.starts_with("<svg") || svg.contains("<svg"), "an SVG");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["ceiling_rps"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        !report["targets"].as_array().unwrap().is_empty(),
        "{report}"
    );
    report
}

/// A measurement by name from the report's `results`.
fn result<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| pair[0] == name)
        .map(|pair| &pair[1])
        .unwrap_or_else(|| panic!("no {name:?} in {report}"))
}

fn number(report: &Value, name: &str) -> f64 {
    result(report, name).as_f64().unwrap()
}

#[test]
fn ingest_reports_accepted_events_and_latency() {
    let r = run(&["ingest", "--secs", "1", "--webhooks", "1"]);
    assert!(number(&r, "events accepted") > 0.0);
    assert!(number(&r, "accepted events/s") > 0.0);
    assert!(
        result(&r, "publish latency (per request)")["p99_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[test]
fn batched_ingest_counts_events_not_requests() {
    let r = run(&["ingest", "--secs", "1", "--batch", "50"]);
    let events = number(&r, "events accepted");
    assert!(events >= 50.0 && events % 50.0 == 0.0, "{events}");
}

#[test]
fn e2e_delivers_every_event_to_every_webhook() {
    let r = run(&["e2e", "--events", "100", "--webhooks", "3"]);
    assert_eq!(number(&r, "deliveries"), 300.0);
    assert!(number(&r, "deliveries/s") > 0.0);
    let latency = result(&r, "publish → receipt");
    assert_eq!(latency["count"], 300);
    assert!(latency["p50_ms"].as_f64().unwrap() <= latency["max_ms"].as_f64().unwrap());
}

#[test]
fn steady_sends_at_the_fixed_rate() {
    let r = run(&["steady", "--rate", "100", "--secs", "1"]);
    assert_eq!(number(&r, "events published"), 100.0);
    assert_eq!(result(&r, "publish → receipt")["count"], 100);
}

#[test]
fn isolation_compares_the_healthy_webhook_alone_and_beside_bad_ones_and_retries() {
    let r = run(&[
        "isolation",
        "--rate",
        "50",
        "--secs",
        "1",
        "--hang-ms",
        "300",
        "--retries",
        "200",
        "--rounds",
        "2",
    ]);
    // Both rounds alone, together.
    assert_eq!(result(&r, "healthy alone: publish → receipt")["count"], 100);
    assert_eq!(
        result(&r, "healthy beside bad: publish → receipt")["count"],
        50
    );
    // Herald's defaults: the circuit breaker opens after 10 failures in a row and then lets
    // only a probe through now and then.
    assert!(number(&r, "attempts at the failing webhook") >= 10.0);
    assert!(number(&r, "attempts at the hanging webhook") >= 1.0);
    assert_eq!(number(&r, "retry backlog: deliveries"), 200.0);
    assert_eq!(
        result(&r, "healthy beside retries: publish → receipt")["count"],
        100
    );
    for round in 1..=2 {
        let line = result(
            &r,
            &format!("round {round}: healthy p99 alone → beside retries (ms)"),
        );
        assert!(line.as_str().is_some_and(|l| l.contains(" → ")), "{line}");
    }
    assert!(
        number(
            &r,
            "healthy p99 beside retries / solo p99 (median of rounds)"
        ) > 0.0
    );
    assert_eq!(
        result(&r, "healthy alone again: publish → receipt")["count"],
        50
    );
    assert!(number(&r, "alone again p99 / solo p99 (noise floor)") > 0.0);
}

#[test]
fn backlog_fills_restarts_and_drains() {
    let r = run(&["backlog", "--events", "200", "--down-timeout-ms", "2000"]);
    assert_eq!(number(&r, "drain: deliveries"), 200.0);
    // Due plus scheduled; the ones the restarted server has leased already are in neither.
    let pending = number(&r, "pending per /metrics after restart");
    assert!((1.0..=200.0).contains(&pending), "{pending}");
    assert!(number(&r, "RSS with the backlog (MB)") > 1.0);
    assert!(number(&r, "restart: ready in (s)") > 0.0);
    assert!(number(&r, "drain: deliveries/s") > 0.0);
}

#[test]
fn ordering_compares_ordered_and_unordered_throughput() {
    let r = run(&["ordering", "--jobs", "20"]);
    assert!(number(&r, "unordered: deliveries/s (better round)") > 0.0);
    assert!(number(&r, "ordered: deliveries/s (better round)") > 0.0);
    assert_eq!(result(&r, "ordered-2: publish → receipt")["count"], 60);
    assert!(number(&r, "ordered / unordered deliveries/s") > 0.0);
}
