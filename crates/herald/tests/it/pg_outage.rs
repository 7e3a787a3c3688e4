//! PostgreSQL stopped for 10 s under load: the nodes keep running, publishing answers 503 while
//! the database is down, and every event acknowledged before or after is delivered.
//!
//! The test runs a private PostgreSQL (`initdb` into a temp dir, its own port, the machine's
//! PostgreSQL binaries) so stopping it disturbs no other test.

use crate::common;

use common::{ADMIN, Backend, ServerProcess, TestEnv, TestReceiver, eventually};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_root: bool,
}

impl PrivatePostgres {
    fn init() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists())
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false);
        if as_root {
            // PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
            assert!(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path())
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Self {
            bin,
            dir,
            port,
            as_root,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        pg.start();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if self.as_root {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(exe)
                .args(args)
                .output()
        } else {
            Command::new(exe).args(args).output()
        };
    }
}

/// What the producers saw.
#[derive(Default)]
struct Log {
    acknowledged: HashSet<i64>,
    unavailable_while_down: usize,
    other_failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10s_database_outage_under_load_loses_no_acknowledged_event() {
    herald::install_tls_provider();
    let pg = PrivatePostgres::init();
    let env = TestEnv::on_database(Backend::Postgres, pg.url());
    let config = "[delivery]\nlease = \"3s\"\n";
    let mut nodes = vec![
        ServerProcess::start(&env, "node-a", config).await,
        ServerProcess::start(&env, "node-b", config).await,
    ];
    let receiver = TestReceiver::start().await;
    let client = reqwest::Client::new();
    let account: Value = client
        .post(format!("{}/v1/accounts", nodes[0].base))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "Acme" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = client
        .post(format!("{}/v1/webhooks", nodes[0].base))
        .bearer_auth(account["api_key"].as_str().unwrap())
        .json(&json!({ "url": receiver.url("/"), "events": ["*"], "retry": { "schedule": vec!["1s"; 40] } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // Four producers publish steadily through both nodes until told to stop.
    let down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..4i64 {
        let (client, bases, account_id) = (
            client.clone(),
            bases.clone(),
            account["id"].as_str().unwrap().to_owned(),
        );
        let (down, stop, log) = (down.clone(), stop.clone(), log.clone());
        producers.spawn(async move {
            let mut n = p;
            while !stop.load(Ordering::SeqCst) {
                let base = &bases[(n as usize) % bases.len()];
                let body =
                    json!({ "account": account_id, "type": "tts.completed", "data": { "n": n } });
                let was_down = down.load(Ordering::SeqCst);
                let sent = client
                    .post(format!("{base}/v1/events"))
                    .bearer_auth(ADMIN)
                    .json(&body)
                    .send()
                    .await;
                {
                    let mut log = log.lock().unwrap();
                    match sent.map(|r| r.status().as_u16()) {
                        Ok(202) => {
                            log.acknowledged.insert(n);
                        }
                        Ok(503) if was_down && down.load(Ordering::SeqCst) => {
                            log.unavailable_while_down += 1
                        }
                        Ok(503) => {} // the edges of the outage
                        other => log.other_failures.push(format!("event {n}: {other:?}")),
                    }
                }
                n += 4;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }

    let run = |secs| tokio::time::sleep(Duration::from_secs(secs));
    run(2).await;
    let before = log.lock().unwrap().acknowledged.len();
    assert!(before > 0, "events were acknowledged before the outage");
    let ready = |base: String| {
        let client = client.clone();
        async move {
            let resp = client.get(format!("{base}/readyz")).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    for node in &nodes {
        assert_eq!(
            ready(node.base.clone()).await.0,
            200,
            "ready before the outage"
        );
    }
    pg.stop();
    down.store(true, Ordering::SeqCst);
    let outage = Instant::now();
    let (status, answer) = ready(nodes[1].base.clone()).await;
    assert_eq!(
        status, 503,
        "not ready while the database is down: {answer}"
    );
    assert_eq!(answer["error"]["code"], "not_ready");
    run(10).await;
    down.store(false, Ordering::SeqCst);
    pg.start();
    println!("database down for {:?}", outage.elapsed());
    for node in &nodes {
        eventually(
            "the node to be ready again",
            Duration::from_secs(30),
            || async { (ready(node.base.clone()).await.0 == 200).then_some(()) },
        )
        .await;
    }
    run(3).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(done) = producers.join_next().await {
        done.unwrap();
    }

    let (acknowledged, unavailable, failures) = {
        let log = log.lock().unwrap();
        (
            log.acknowledged.clone(),
            log.unavailable_while_down,
            log.other_failures.clone(),
        )
    };
    println!(
        "acknowledged {} events ({before} before the outage); {unavailable} answered 503 while it lasted",
        acknowledged.len()
    );
    assert!(
        failures.is_empty(),
        "publishing only ever answered 202 or 503: {failures:?}"
    );
    assert!(
        unavailable > 0,
        "publishing answered 503 while the database was down"
    );
    assert!(
        acknowledged.len() > before,
        "publishing resumed after the outage"
    );
    for node in &mut nodes {
        assert!(node.is_running(), "a node died during the outage");
    }

    eventually(
        "every acknowledged event to be delivered",
        Duration::from_secs(120),
        || async {
            let seen: HashSet<i64> = receiver
                .received()
                .iter()
                .map(|r| r.json()["data"]["n"].as_i64().unwrap())
                .collect();
            acknowledged.is_subset(&seen).then_some(())
        },
    )
    .await;
    drop(nodes); // stop the nodes before their database
}
