//! Verifying Herald's signatures the way a customer would: with the independent Python
//! `standardwebhooks` package, in the venv the README's test command sets up.

use super::Received;
use serde_json::json;
use std::path::PathBuf;

/// The Python interpreter that has the independent `standardwebhooks` package.
pub fn python_with_standardwebhooks() -> PathBuf {
    if let Ok(p) = std::env::var("HERALD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with standardwebhooks at {}: run the README's test command (scripts/test), which sets it up",
        venv.display()
    );
    venv
}

/// Runs one of the Python verifiers in `tests/` over `cases`; fails the test unless it
/// verifies them all.
pub fn verify_with_python(script: &str, cases: &serde_json::Value) {
    use std::io::Write;
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = std::process::Command::new(python_with_standardwebhooks())
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} rejected a delivery: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deliveries verified"));
}

impl Received {
    /// The Standard Webhooks headers and body, as a verifier case.
    pub fn signed_case(&self) -> serde_json::Value {
        json!({
            "body": String::from_utf8(self.body.to_vec()).unwrap(),
            "headers": {
                "webhook-id": self.header("webhook-id"),
                "webhook-timestamp": self.header("webhook-timestamp"),
                "webhook-signature": self.header("webhook-signature"),
            },
        })
    }
}
