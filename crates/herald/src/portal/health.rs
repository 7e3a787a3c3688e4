//! A webhook's health over the last 24 hours: its success rate and latency quantiles (p50,
//! p99), in total and hour by hour as two charts drawn here as SVG (no script), from the same
//! per-minute endpoint figures `GET /v1/webhooks/{id}/stats` sums (`store::stats`).

use super::session::Session;
use super::{Chrome, PortalResult, render};
use crate::api::AppState;
use crate::api::extract::Actor;
use crate::api::webhooks::find;
use crate::domain::Timestamp;
use crate::store::stats::{AttemptStats, window_start};
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use std::time::Duration;

const HOURS: usize = 24;
const HOUR: Duration = Duration::from_secs(3600);

/// The chart's drawing area, in SVG units (the picture scales to the page).
const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 48.0;
const TOP: f64 = 8.0;
/// Latency is drawn on a log scale from 1 ms to 100 s.
const LOG_MIN: f64 = 0.0;
const LOG_MAX: f64 = 5.0;

/// One hour's figures.
struct Hour {
    /// `HH:00` (UTC) of its start.
    label: String,
    attempts: u64,
    rate: Option<f64>,
    p50: Option<u64>,
    p99: Option<u64>,
}

/// The figures of the rows in `[since, next since)`: the sum from `since` less the sum from the
/// next hour (counts and the latency histogram subtract; the last error is not needed here).
fn between(from: &AttemptStats, later: &AttemptStats) -> AttemptStats {
    let mut s = AttemptStats {
        attempts: from.attempts.saturating_sub(later.attempts),
        successes: from.successes.saturating_sub(later.successes),
        ..AttemptStats::default()
    };
    for (i, n) in s.latency.iter_mut().enumerate() {
        *n = from.latency[i].saturating_sub(later.latency[i]);
    }
    s
}

/// A bar of the success-rate chart.
struct Bar {
    x: String,
    y: String,
    width: String,
    height: String,
    label: String,
}

/// A chart's axis line and its label.
struct Tick {
    y: String,
    label: &'static str,
}

#[derive(Template)]
#[template(path = "portal/health.html")]
struct HealthPage {
    chrome: Chrome,
    webhook_id: String,
    url: String,
    status: &'static str,
    attempts: u64,
    failures: u64,
    rate: String,
    p50: String,
    p99: String,
    last_error: Option<(String, String)>,
    failing_since: Option<String>,
    hours: Vec<HourRow>,
    bars: Vec<Bar>,
    rate_ticks: Vec<Tick>,
    latency_ticks: Vec<Tick>,
    p50_line: String,
    p99_line: String,
    width: f64,
    height: f64,
    left: f64,
}

/// An hour as the data table shows it.
struct HourRow {
    label: String,
    attempts: u64,
    rate: String,
    p50: String,
    p99: String,
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or("–".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

fn millis(q: Option<u64>, attempts: u64) -> String {
    match (q, attempts) {
        (_, 0) => "–".to_owned(),
        (Some(ms), _) => format!("≤ {ms} ms"),
        (None, _) => "> 30000 ms".to_owned(),
    }
}

fn slot_x(i: usize) -> f64 {
    LEFT + (WIDTH - LEFT) * i as f64 / HOURS as f64
}

/// The height of a latency on the log scale (slower than the histogram's last bound: its top).
fn latency_y(ms: Option<u64>) -> f64 {
    let log = ms.map_or(LOG_MAX, |ms| (ms.max(1) as f64).log10());
    let share = ((log - LOG_MIN) / (LOG_MAX - LOG_MIN)).clamp(0.0, 1.0);
    TOP + HEIGHT * (1.0 - share)
}

/// The polyline of one quantile through the hours that had attempts.
fn line(hours: &[Hour], quantile: impl Fn(&Hour) -> Option<u64>) -> String {
    let slot = (WIDTH - LEFT) / HOURS as f64;
    hours
        .iter()
        .enumerate()
        .filter(|(_, h)| h.attempts > 0)
        .map(|(i, h)| {
            format!(
                "{:.1},{:.1}",
                slot_x(i) + slot / 2.0,
                latency_y(quantile(h))
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `GET /portal/webhooks/{id}/health`.
pub(super) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> PortalResult<Response> {
    let webhook = find(&state, &Actor::Account(session.account.clone()), &id, None).await?;
    let start = window_start(Timestamp::now(), HOURS as u32 * HOUR);
    // The sums from each hour's start on; an hour's figures are the difference of two. (One
    // read per hour of at most 1,440 small rows; a read grouped by hour is the next step.)
    let mut from_hour = Vec::with_capacity(HOURS + 1);
    for k in 0..HOURS {
        let since = start.plus(k as u32 * HOUR);
        from_hour.push(state.store.webhook_stats(&webhook.id, since).await?);
    }
    from_hour.push(AttemptStats::default());
    let total = from_hour[0].clone();
    let hours: Vec<Hour> = (0..HOURS)
        .map(|k| {
            let s = between(&from_hour[k], &from_hour[k + 1]);
            let at = start.plus(k as u32 * HOUR).to_rfc3339();
            Hour {
                label: at.get(11..16).unwrap_or("").to_owned(),
                attempts: s.attempts,
                rate: s.success_rate(),
                p50: s.latency_quantile_ms(0.5),
                p99: s.latency_quantile_ms(0.99),
            }
        })
        .collect();
    let slot = (WIDTH - LEFT) / HOURS as f64;
    let bars = hours
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let rate = h.rate?;
            let height = (HEIGHT * rate).max(1.0);
            Some(Bar {
                x: format!("{:.1}", slot_x(i) + 1.0),
                y: format!("{:.1}", TOP + HEIGHT - height),
                width: format!("{:.1}", slot - 2.0),
                height: format!("{height:.1}"),
                label: format!("{}: {}", h.label, percent(h.rate)),
            })
        })
        .collect();
    let rate_ticks = Vec::from([(0.0, "0 %"), (0.5, "50 %"), (1.0, "100 %")].map(
        |(share, label)| Tick {
            y: format!("{:.1}", TOP + HEIGHT * (1.0 - share)),
            label,
        },
    ));
    let latency_ticks = Vec::from(
        [
            (10, "10 ms"),
            (100, "100 ms"),
            (1000, "1 s"),
            (10_000, "10 s"),
        ]
        .map(|(ms, label)| Tick {
            y: format!("{:.1}", latency_y(Some(ms))),
            label,
        }),
    );
    Ok(render(&HealthPage {
        chrome: Chrome::new(&state, &session.csrf, "webhooks", "Health".into()),
        webhook_id: webhook.id.to_string(),
        url: webhook.url.as_str().to_owned(),
        status: webhook.status.as_str(),
        attempts: total.attempts,
        failures: total.failed(),
        rate: percent(total.success_rate()),
        p50: millis(total.latency_quantile_ms(0.5), total.attempts),
        p99: millis(total.latency_quantile_ms(0.99), total.attempts),
        last_error: total
            .last_error
            .clone()
            .map(|(at, what)| (at.to_rfc3339(), what)),
        failing_since: webhook.failing_since.map(Timestamp::to_rfc3339),
        p50_line: line(&hours, |h| h.p50),
        p99_line: line(&hours, |h| h.p99),
        hours: hours
            .iter()
            .map(|h| HourRow {
                label: h.label.clone(),
                attempts: h.attempts,
                rate: percent(h.rate),
                p50: millis(h.p50, h.attempts),
                p99: millis(h.p99, h.attempts),
            })
            .collect(),
        bars,
        rate_ticks,
        latency_ticks,
        width: WIDTH,
        height: HEIGHT + TOP + 24.0,
        left: LEFT,
    }))
}
