//! `herald listen --forward-to` as a test drives it: the built binary as a child process, its
//! output collected line by line, stopped with Ctrl-C (SIGINT) or `kill -9`.

use super::eventually;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const WAIT: Duration = Duration::from_secs(20);

/// A running `herald listen --forward-to`, its output collected line by line.
pub struct ListenCli {
    pub child: tokio::process::Child,
    out: Arc<Mutex<Vec<String>>>,
}

impl ListenCli {
    /// Starts the CLI against `api` for `key`, forwarding to `to`, with `extra` arguments.
    pub fn start(api: &str, key: &str, to: &str, extra: &[&str]) -> Self {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["listen", "--api", api, "--key", key, "--forward-to", to])
            .args(extra)
            .env("HERALD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, _) in std::env::vars() {
            if key.starts_with("HERALD_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd.spawn().expect("herald listen starts");
        let out = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    out.lock().unwrap().push(line);
                }
            });
        }
        Self { child, out }
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }

    /// Waits for a line containing `needle`, and returns it.
    pub async fn line(&self, needle: &str) -> String {
        eventually(
            &format!("herald listen to print {needle:?}"),
            WAIT,
            || async {
                self.out
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.contains(needle))
                    .cloned()
            },
        )
        .await
    }

    /// The signing secret the CLI printed, and the listener webhook's id.
    pub async fn ready(&self) -> (String, String) {
        let ready = self.line("Ready! Your webhook signing secret is ").await;
        let secret = ready
            .split_whitespace()
            .find(|w| w.starts_with("whsec_"))
            .expect("a whsec_ secret")
            .to_owned();
        let forwarding = self.line("Forwarding ").await;
        let webhook = forwarding
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .find(|w| w.starts_with("wh_"))
            .expect("the webhook id")
            .to_owned();
        (secret, webhook)
    }

    /// Ctrl-C, and the exit status.
    pub async fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("herald listen exits after Ctrl-C")
            .unwrap();
        // The pipes drain once the process is gone.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status, self.output())
    }

    /// SIGKILL: no close frame, no goodbye.
    pub async fn kill_9(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}
