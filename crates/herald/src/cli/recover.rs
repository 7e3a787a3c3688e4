//! `herald recover <webhook id> --since <time>`: re-queues a webhook's failed deliveries of a
//! span of time (`POST /v1/webhooks/{id}/recover`), then follows the task (`GET /v1/tasks/{id}`)
//! to its end with a progress bar, and prints a summary: re-queued N of M, and how long it took.
//!
//! The bar is drawn on standard error when that is a terminal; otherwise (a log, a test) a plain
//! line is printed there each time the progress moves. The summary goes to standard output.

use super::client::Api;
use crate::domain::Timestamp;
use crate::domain::duration::parse_duration;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, clap::Args)]
pub struct RecoverArgs {
    /// The webhook (`wh_…`).
    #[arg(value_name = "WEBHOOK_ID")]
    pub webhook: String,
    /// Deliveries made from then on: an RFC 3339 time, or a duration ago (`12h`, `3d`).
    #[arg(long, value_name = "TIME")]
    pub since: String,
    /// …and before then (same forms); by default, now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only count the failed deliveries that would be re-queued.
    #[arg(long)]
    pub dry_run: bool,
    /// Herald's API.
    #[arg(
        long,
        env = "HERALD_API_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub api: url::Url,
    /// The account's API key (or the admin token).
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    pub key: String,
}

/// How often the task is looked at while it runs.
const POLL: Duration = Duration::from_millis(200);

#[derive(Deserialize)]
struct DryRun {
    count: u64,
}

/// The task, as `GET /v1/tasks/{id}` shows it.
#[derive(Deserialize)]
struct TaskAnswer {
    id: String,
    state: String,
    counted: u64,
    done: u64,
    error: Option<String>,
}

impl TaskAnswer {
    fn finished(&self) -> bool {
        self.state == "succeeded" || self.state == "failed"
    }
}

pub async fn run(args: RecoverArgs) -> anyhow::Result<()> {
    crate::install_tls_provider();
    let now = Timestamp::now();
    let since = time_arg("--since", &args.since, now)?;
    let until = args
        .until
        .as_deref()
        .map(|u| time_arg("--until", u, now))
        .transpose()?;
    let api = Api::new(&args.api, args.key)?;
    let path = format!("/v1/webhooks/{}/recover", args.webhook);
    let body = serde_json::json!({
        "since": since.to_rfc3339(),
        "until": until.map(Timestamp::to_rfc3339),
        "dry_run": args.dry_run,
    });
    if args.dry_run {
        let answer: DryRun = api.post(&path, &body).await?;
        println!(
            "dry run: {} failed deliveries of {} would be re-queued",
            answer.count, args.webhook
        );
        return Ok(());
    }
    let started = Instant::now();
    let mut task: TaskAnswer = api.post(&path, &body).await?;
    let mut progress = Progress::new(task.counted);
    progress.show(&task);
    while !task.finished() {
        tokio::time::sleep(POLL).await;
        task = api
            .get(&format!("/v1/tasks/{}", task.id))
            .await
            .context("following the task")?;
        progress.show(&task);
    }
    progress.finish();
    if task.state == "failed" {
        bail!(
            "task {} failed after re-queuing {} of {}: {}",
            task.id,
            task.done,
            task.counted,
            task.error.as_deref().unwrap_or("no reason given")
        );
    }
    println!(
        "re-queued {} of {} failed deliveries of {}, took {:.1}s (task {})",
        task.done,
        task.counted,
        args.webhook,
        started.elapsed().as_secs_f64(),
        task.id
    );
    Ok(())
}

/// An RFC 3339 time, or a duration before `now`.
fn time_arg(flag: &str, value: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Some(t) = Timestamp::parse_rfc3339(value) {
        return Ok(t);
    }
    match parse_duration(value) {
        Ok(ago) => Ok(now.minus(ago)),
        Err(_) => bail!("{flag} {value:?} is neither an RFC 3339 time nor a duration like 12h"),
    }
}

/// A bar on a terminal, plain lines elsewhere.
enum Progress {
    Bar(ProgressBar),
    Lines { last: Option<(u64, String)> },
}

impl Progress {
    fn new(counted: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::Lines { last: None };
        }
        let bar = ProgressBar::new(counted);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} re-queued ({msg})",
            )
            .expect("the template is valid"),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Self::Bar(bar)
    }

    fn show(&mut self, task: &TaskAnswer) {
        match self {
            Self::Bar(bar) => {
                bar.set_length(task.counted);
                bar.set_position(task.done);
                bar.set_message(task.state.clone());
            }
            Self::Lines { last } => {
                let now = (task.done, task.state.clone());
                if last.as_ref() != Some(&now) {
                    eprintln!(
                        "progress: {}/{} re-queued ({})",
                        task.done, task.counted, task.state
                    );
                    *last = Some(now);
                }
            }
        }
    }

    fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
