//! The README quickstart, run verbatim against the real binaries on their default ports.

use crate::common;

use common::eventually;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn quickstart() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("<!-- quickstart:start -->")
        .expect("quickstart start marker");
    let end = readme
        .find("<!-- quickstart:end -->")
        .expect("quickstart end marker");
    let block = &readme[start..end];
    let body = block.split_once("```sh\n").expect("sh block").1;
    body.rsplit_once("```").expect("block end").0.to_owned()
}

fn herald(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args).current_dir(dir).env("HERALD_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") && key != "HERALD_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[tokio::test]
async fn the_readme_quickstart_works_verbatim() {
    herald::install_tls_provider();
    for port in [8080, 9000] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "the quickstart uses port {port}, which something else holds"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let _server = Killed(
        herald(dir.path(), &["serve", "--dev"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut listener = herald(dir.path(), &["listen"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = Arc::new(Mutex::new(String::new()));
    let stdout = listener.stdout.take().unwrap();
    let sink = printed.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let _listener = Killed(listener);
    let client = reqwest::Client::new();
    eventually("the server on :8080", Duration::from_secs(30), || async {
        client
            .get("http://127.0.0.1:8080/healthz")
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    eventually("the receiver on :9000", Duration::from_secs(30), || async {
        printed.lock().unwrap().contains("Listening").then_some(())
    })
    .await;

    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new("bash")
                .args(["-euo", "pipefail", "-c", &quickstart()])
                .current_dir(dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quickstart failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The last command printed the delivery with its attempts.
    let delivery: serde_json::Value = {
        let last = stdout
            .rfind("\n{\n")
            .map(|i| &stdout[i + 1..])
            .expect("a JSON document at the end");
        serde_json::from_str(last).expect("the delivery as JSON")
    };
    assert_eq!(delivery["status"], "succeeded", "{stdout}");
    assert_eq!(delivery["attempts"][0]["status_code"], 200);
    assert!(delivery["id"].as_str().unwrap().starts_with("dlv_"));
    let seen = printed.lock().unwrap().clone();
    assert!(
        seen.contains("type=tts.completed"),
        "the receiver printed the webhook:\n{seen}"
    );
    assert!(
        seen.contains(&format!("webhook-id={}", delivery["id"].as_str().unwrap())),
        "{seen}"
    );
}

#[test]
fn the_readme_configuration_example_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let block = readme
        .split_once("```toml\n")
        .expect("a toml block")
        .1
        .split_once("```")
        .unwrap()
        .0;
    let settings: herald::config::Settings = toml::from_str(block).expect("the example parses");
    settings
        .check()
        .expect("the example passes the start-up checks");
    assert_eq!(settings.job_kinds.len(), 4);
}
