//! `herald verify`: checks a captured delivery's signature offline and says exactly why it
//! fails (the checks themselves are in [`super::diagnose`]).
//!
//! The body comes on standard input, byte for byte; the headers from `--header 'name: value'`
//! and/or `--headers FILE` (one `name: value` a line, as a capture tool or `curl -D` writes them).

use super::diagnose::{Capture, Finding, Key, diagnose};
use crate::domain::duration::parse_duration;
use crate::domain::{PublicKey, SigningSecret};
use anyhow::{Context, bail};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("key").required(true).args(["secret", "public_key"])))]
pub struct VerifyArgs {
    /// The webhook's signing secret (whsec_…), as `GET /v1/webhooks/{id}/secret` shows it.
    #[arg(long, env = "HERALD_VERIFY_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The webhook's public key (whpk_…), for ed25519 (`v1a`) signatures.
    #[arg(long, value_name = "WHPK")]
    pub public_key: Option<String>,
    /// A header of the delivery, `name: value`; repeat for each.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub header: Vec<String>,
    /// A file of the delivery's headers, one `name: value` a line (a request or status line and
    /// `#` comments are skipped; a blank line after the headers ends them, so a raw HTTP capture
    /// works). `--header` adds to it and wins.
    #[arg(long = "headers", value_name = "FILE")]
    pub headers_file: Option<PathBuf>,
    /// How far webhook-timestamp may be from now (receivers' libraries allow 5 minutes).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub tolerance: Duration,
}

/// Reads the body from standard input and verifies; `Ok` only when the signature is valid.
pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let key = match (&args.secret, &args.public_key) {
        (Some(secret), _) => {
            Key::Secret(SigningSecret::parse(secret.trim()).map_err(anyhow::Error::msg)?)
        }
        (None, Some(public)) => {
            Key::Public(PublicKey::parse(public.trim()).map_err(anyhow::Error::msg)?)
        }
        (None, None) => bail!("pass --secret whsec_… or --public-key whpk_…"),
    };
    let mut headers = match &args.headers_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse_header_lines(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Vec::new(),
    };
    for line in &args.header {
        let (name, value) = parse_header(line).context("--header")?;
        headers.retain(|(n, _)| *n != name);
        headers.push((name, value));
    }
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading the body from standard input")?;
    let now = crate::domain::Timestamp::now().unix_seconds();
    let capture = Capture {
        headers: &headers,
        body: &body,
    };
    match diagnose(&key, &capture, now, args.tolerance) {
        Finding::Valid => {
            println!("signature valid");
            Ok(())
        }
        failure => bail!("{failure}"),
    }
}

/// `name: value` → (lower-case name, trimmed value).
fn parse_header(line: &str) -> anyhow::Result<(String, String)> {
    let (name, value) = line
        .split_once(':')
        .filter(|(n, _)| !n.trim().is_empty() && !n.trim().contains(' '))
        .with_context(|| format!("{line:?} is not a header: expected `name: value`"))?;
    Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
}

/// Header lines as a capture holds them; the first of a name counts.
fn parse_header_lines(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let request_or_status = headers.is_empty()
            && (line.starts_with("HTTP/")
                || line.ends_with(" HTTP/1.1")
                || line.ends_with(" HTTP/2"));
        if line.is_empty() && !headers.is_empty() {
            break; // the end of a capture's head: what follows is its body
        }
        if line.is_empty() || line.starts_with('#') || request_or_status {
            continue;
        }
        let (name, value) = parse_header(line).with_context(|| format!("line {}", n + 1))?;
        if !headers.iter().any(|(h, _)| *h == name) {
            headers.push((name, value));
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_files_are_read_as_captures_write_them() {
        let text = "\nPOST /hooks HTTP/1.1\r\nWebhook-Id: dlv_1\r\n# note\r\nwebhook-signature: v1,abc= v1,def=\r\ncontent-type: application/json\r\n\r\n{\"type\": 1}\r\n";
        let headers = parse_header_lines(text).unwrap();
        assert_eq!(headers[0], ("webhook-id".to_owned(), "dlv_1".to_owned()));
        assert_eq!(headers[1].1, "v1,abc= v1,def=");
        assert_eq!(
            headers.len(),
            3,
            "the body after the blank line is not read: {headers:?}"
        );
        let err = parse_header_lines("webhook-id: a\nnot a header\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(parse_header("webhook-timestamp:1700000000").is_ok());
    }
}
