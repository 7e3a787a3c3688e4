//! The processes a scenario runs: the Herald server under test and the receiver. Both are
//! killed when their handle is dropped, so an error or Ctrl-C leaves nothing behind.

use crate::load::{Conn, Req};
use crate::receiver::StreamStats;
use anyhow::{Context, bail};
use hyper::Method;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The admin token every server under test gets.
pub const ADMIN: &str = "herald-bench-admin-token";

/// A port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `herald` binary: `explicit`, or the one next to this executable.
pub fn find_herald(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.is_file(), "--herald {}: no such file", p.display());
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe()?;
    let beside = me.with_file_name(format!("herald{}", std::env::consts::EXE_SUFFIX));
    if beside.is_file() {
        return Ok(beside);
    }
    bail!(
        "no herald binary next to {}; build it (cargo build --release -p herald) or pass --herald PATH",
        me.display()
    )
}

fn terminate(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn wait_until_answers(
    addr: SocketAddr,
    path: &str,
    deadline: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let req = Req {
        method: Method::GET,
        path: Arc::from(path),
        token: None,
        body: bytes::Bytes::new(),
    };
    loop {
        let mut conn = Conn::new(addr);
        if let Ok((200, _)) = conn.send(&req).await {
            return Ok(());
        }
        if started.elapsed() > deadline {
            bail!("{addr}{path} did not answer within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How to start the server under test.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// TOML written to a config file and passed with `--config`.
    pub config: String,
}

/// A running `herald serve`.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// From spawn to the first 200 on `/healthz`.
    pub ready_in: Duration,
    log: PathBuf,
}

impl Server {
    pub async fn start(spec: &ServerSpec) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&spec.data_dir)?;
        let config = spec.data_dir.join("bench.toml");
        std::fs::write(&config, &spec.config)?;
        let log = spec.data_dir.join("server.log");
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = Command::new(&spec.binary);
        cmd.args(["serve", "--dev", "--listen", &addr.to_string(), "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&spec.data_dir);
        if let Some(url) = &spec.database_url {
            cmd.args(["--database-url", url]);
        }
        let started = Instant::now();
        let child = cmd
            .env("HERALD_ADMIN_TOKEN", ADMIN)
            .env("HERALD_LOG", "warn")
            .env_remove("HERALD_DEV")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        let mut server = Self {
            child,
            addr,
            ready_in: Duration::ZERO,
            log,
        };
        if let Err(e) = wait_until_answers(addr, "/healthz", Duration::from_secs(60)).await {
            let log = std::fs::read_to_string(&server.log).unwrap_or_default();
            bail!("{e}; server log:\n{log}");
        }
        server.ready_in = started.elapsed();
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server process, from /proc (Linux).
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// CPU time the server process has used so far (user + system), from /proc (Linux). Less
    /// noisy than a rate on a shared machine: the same work costs the same CPU whatever else runs.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the command name (which may hold spaces), from field 3 on.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // USER_HZ is 100 on every Linux this runs on.
        Some(ticks as f64 / 100.0)
    }

    /// Bytes the server process has sent to storage so far: its log's and database file's pages
    /// it dirtied, whoever syncs them (`write_bytes` in /proc, Linux). Like CPU time, the same
    /// work writes about the same bytes whatever else runs, so it compares builds on a noisy
    /// machine where latencies cannot.
    fn disk_writes(&self) -> Option<u64> {
        write_bytes(&std::fs::read_to_string(format!("/proc/{}/io", self.pid())).ok()?)
    }

    /// The server's CPU time and disk writes so far.
    pub fn usage(&self) -> Usage {
        Usage {
            cpu_seconds: self.cpu_seconds(),
            disk_bytes: self.disk_writes(),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(mut self, grace: Duration) {
        terminate(&mut self.child, grace);
    }

    /// One scrape of the server's `/metrics`.
    pub async fn metrics(&self) -> Option<Scrape> {
        let req = Req {
            method: Method::GET,
            path: Arc::from("/metrics"),
            token: None,
            body: bytes::Bytes::new(),
        };
        let (_, body) = Conn::new(self.addr).send(&req).await.ok()?;
        Some(Scrape(String::from_utf8_lossy(&body).into_owned()))
    }
}

/// What a process has used: CPU time (user and system) and bytes written to disk, each where
/// /proc gives it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_seconds: Option<f64>,
    pub disk_bytes: Option<u64>,
}

impl Usage {
    /// What was used between `before` and this.
    pub fn since(self, before: Usage) -> Usage {
        Usage {
            cpu_seconds: (self.cpu_seconds.zip(before.cpu_seconds)).map(|(a, b)| a - b),
            disk_bytes: (self.disk_bytes.zip(before.disk_bytes)).map(|(a, b)| a.saturating_sub(b)),
        }
    }
}

/// The `write_bytes` line of a /proc/<pid>/io page.
fn write_bytes(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// A `/metrics` page, in Prometheus' text format.
pub struct Scrape(String);

impl Scrape {
    /// The value of `series`, written exactly as on the page (name and labels).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// The receiver child process (`herald-bench receiver`).
pub struct Receiver {
    child: Child,
    pub addr: SocketAddr,
}

impl Receiver {
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(std::env::current_exe()?)
            .args(["receiver", "--listen", &addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the receiver process")?;
        let receiver = Self { child, addr };
        wait_until_answers(addr, "/_stats", Duration::from_secs(30)).await?;
        Ok(receiver)
    }

    pub fn url(&self, stream: &str) -> String {
        format!("http://{}/hook/{stream}", self.addr)
    }

    pub async fn stats(&self) -> anyhow::Result<HashMap<String, StreamStats>> {
        let req = Req {
            method: Method::GET,
            path: Arc::from("/_stats"),
            token: None,
            body: bytes::Bytes::new(),
        };
        let (_, body) = Conn::new(self.addr).send(&req).await?;
        Ok(serde_json::from_slice(&body)?)
    }

    pub async fn stream(&self, name: &str) -> anyhow::Result<StreamStats> {
        Ok(self.stats().await?.remove(name).unwrap_or_default())
    }

    pub async fn reset(&self) -> anyhow::Result<()> {
        let req = Req {
            method: Method::POST,
            path: Arc::from("/_reset"),
            token: None,
            body: bytes::Bytes::new(),
        };
        Conn::new(self.addr).send(&req).await?;
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host that accepts connections and never answers: a receiver that is down behind a load
/// balancer. Every attempt to it runs into its timeout. Dropping it closes every connection.
pub struct Blackhole {
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        Ok(Self { task })
    }

    /// Closes the listener and every held connection, and waits until the port is free.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_bytes_comes_from_its_own_line_only() {
        let io = "rchar: 2012\nwchar: 9000\nsyscr: 7\nsyscw: 3\nread_bytes: 4096\n\
                  write_bytes: 122880\ncancelled_write_bytes: 8192\n";
        assert_eq!(write_bytes(io), Some(122_880));
        assert_eq!(write_bytes("rchar: 1\ncancelled_write_bytes: 8192\n"), None);
    }

    #[test]
    fn usage_since_is_the_difference_where_both_readings_have_it() {
        let before = Usage {
            cpu_seconds: Some(1.5),
            disk_bytes: Some(4096),
        };
        let after = Usage {
            cpu_seconds: Some(4.0),
            disk_bytes: None,
        };
        let used = after.since(before);
        assert_eq!(used.cpu_seconds, Some(2.5));
        assert_eq!(used.disk_bytes, None);
    }
}
