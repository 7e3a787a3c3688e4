//! `herald-bench`: measures a Herald server the way issue 5 asks, on this machine.
//!
//! The server under test is the `herald` binary as a child process with a temporary data
//! directory; the receiver is another child process (`herald-bench receiver`); this process is
//! the load generator. All of them are stopped and the temporary directory removed at the end,
//! also after an error or Ctrl-C.
#![forbid(unsafe_code)]

mod load;
mod procs;
mod receiver;
mod report;
mod scenarios;
mod stats;

use clap::{Parser, Subcommand};
use scenarios::Ctx;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "herald-bench",
    version,
    about = "Benchmarks of the Herald webhook server"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Args)]
struct Common {
    /// The herald binary to test [default: the one next to this executable].
    #[arg(long, global = true, value_name = "PATH")]
    herald: Option<PathBuf>,
    /// Passed to `herald serve --database-url` [default: SQLite in a temporary directory].
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// A TOML file for the server, replacing the scenario's own settings.
    #[arg(long, global = true, value_name = "FILE")]
    server_config: Option<PathBuf>,
    /// Concurrent keep-alive connections of the load generator (C).
    #[arg(long, global = true, default_value_t = 32)]
    connections: usize,
    /// Seconds to measure the ceiling for (0 skips it).
    #[arg(long, global = true, default_value_t = 3.0)]
    ceiling_secs: f64,
    /// Longest wait for deliveries to arrive, in seconds.
    #[arg(long, global = true, default_value_t = 900)]
    timeout: u64,
    /// Write the report as JSON here.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw latency distribution and throughput over time as SVG here.
    #[arg(long, global = true, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// No progress bars (they are hidden anyway when stderr is not a terminal).
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Scenario {
    /// Only the ceiling: the load generator against the receiver, no Herald.
    Ceiling,
    /// C publishers for T seconds: accepted events/s and publish latency.
    Ingest {
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Webhooks subscribed to the events (0: ingest only).
        #[arg(long, default_value_t = 0)]
        webhooks: usize,
        /// Events per request: above 1, requests go to `POST /v1/events/batch`.
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// N events to W webhooks as fast as possible: deliveries/s and publish→receipt latency.
    E2e {
        #[arg(long, default_value_t = 20_000)]
        events: u64,
        #[arg(long, default_value_t = 1)]
        webhooks: usize,
    },
    /// A fixed R events/s for T seconds: publish→receipt latency.
    Steady {
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
    },
    /// A healthy webhook alone, then beside a hanging and a failing one, then beside a backlog of
    /// retries falling due.
    Isolation {
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// The hanging webhook's timeout, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        hang_ms: u64,
        /// Retries falling due together half-way through each round's run beside them (0: none).
        #[arg(long, default_value_t = 10_000)]
        retries: u64,
        /// Rounds of the healthy webhook alone then beside the retries; judged on the median of
        /// the rounds' ratios.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// N pending deliveries with the receiver down: RSS, restart time, then the drain rate.
    Backlog {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Timeout of attempts to the down receiver, in milliseconds.
        #[arg(long, default_value_t = 60_000)]
        down_timeout_ms: u64,
    },
    /// J jobs × 3 status changes to one webhook, unordered then `ordering: "key"`: the ratio of
    /// their deliveries/s.
    Ordering {
        #[arg(long, default_value_t = 200)]
        jobs: u64,
    },
    /// The receiver process (started by the scenarios).
    #[command(hide = true)]
    Receiver {
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread: the load generator and the receiver each get a core's worth at most, which
    // leaves the server under test the rest of a small machine.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Scenario::Receiver { listen } = cli.scenario {
        return runtime.block_on(receiver::run(listen));
    }
    runtime.block_on(async {
        tokio::select! {
            result = run(cli) => result,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted; stopping the server and the receiver");
                Ok(())
            }
        }
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let c = cli.common;
    let server_config = c
        .server_config
        .as_ref()
        .map(std::fs::read_to_string)
        .transpose()?;
    let ctx = Ctx {
        herald: procs::find_herald(c.herald.as_deref())?,
        database_url: c.database_url,
        server_config,
        conns: c.connections.max(1),
        ceiling_secs: c.ceiling_secs,
        timeout: Duration::from_secs(c.timeout),
        progress: !c.quiet,
        tmp: tempfile::Builder::new().prefix("herald-bench-").tempdir()?,
    };
    let cpu = stats::CpuTimes::read();
    let mut report = match cli.scenario {
        Scenario::Ceiling => scenarios::ceiling_only(&ctx).await?,
        Scenario::Ingest {
            secs,
            webhooks,
            batch,
        } => scenarios::ingest(&ctx, secs, webhooks, batch.max(1)).await?,
        Scenario::E2e { events, webhooks } => scenarios::e2e(&ctx, events, webhooks).await?,
        Scenario::Steady { rate, secs } => scenarios::steady(&ctx, rate, secs).await?,
        Scenario::Isolation {
            rate,
            secs,
            hang_ms,
            retries,
            rounds,
        } => {
            let hang = Duration::from_millis(hang_ms);
            scenarios::isolation(&ctx, rate, secs, hang, retries, rounds).await?
        }
        Scenario::Backlog {
            events,
            down_timeout_ms,
        } => scenarios::backlog(&ctx, events, Duration::from_millis(down_timeout_ms)).await?,
        Scenario::Ordering { jobs } => scenarios::ordering(&ctx, jobs).await?,
        Scenario::Receiver { .. } => unreachable!("handled before the runtime starts"),
    };
    if let Some(stolen) = stats::stolen_since(cpu) {
        report.add("CPU stolen by the hypervisor over the run (%)", stolen);
    }
    report.print();
    if let Some(path) = &c.json {
        report.write_json(path)?;
    }
    if let Some(path) = &c.plot {
        report.plot(path)?;
    }
    Ok(())
}
