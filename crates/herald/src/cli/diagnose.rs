//! Why a captured delivery's Standard Webhooks signature does or does not verify: the pure part
//! of `herald verify`, from headers, body, key and the time to a [`Finding`].
//!
//! Checks run in the order receivers' libraries run them, each failure named: the three headers
//! are there, the timestamp is a number, the signature header is well formed, the timestamp is
//! within the tolerance (and if not, whether the signature would still match), the signature.
//! HMAC cannot tell a wrong secret from a changed body, so before saying "no match" the usual
//! ways a captured body gets changed are undone one by one; if one verifies, that is the cause.

use crate::domain::shown::shown;
use crate::domain::{PublicKey, SigningSecret};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::time::Duration;

/// What verifies: the webhook's secret (`whsec_…`, or an ed25519 `whsk_…`), or an ed25519
/// public key (`whpk_…`).
pub enum Key {
    Secret(SigningSecret),
    Public(PublicKey),
}

impl Key {
    /// The signature version this key checks.
    fn version(&self) -> &'static str {
        match self {
            Self::Secret(s) if !s.is_ed25519() => "v1",
            _ => "v1a",
        }
    }

    fn matches(&self, id: &str, timestamp: i64, body: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Secret(secret) => {
                let expected = secret.sign(id, timestamp, body);
                let b64 = expected.split_once(',').map_or("", |(_, b)| b);
                STANDARD.decode(b64).is_ok_and(|e| e == signature)
            }
            Self::Public(public) => public.verifies(id, timestamp, body, signature),
        }
    }
}

/// The verdict on one capture.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    Valid,
    MissingHeader(&'static str),
    BadTimestamp(String),
    MalformedSignature(String),
    Stale {
        /// How far the timestamp is from now, and whether it is ahead of now.
        off_by: Duration,
        ahead: bool,
        tolerance: Duration,
        /// What the signature check says, done anyway.
        signature: Box<Finding>,
    },
    /// A signature matches the body once `how` is undone.
    ChangedBody(&'static str),
    NoMatch {
        version: &'static str,
        signatures: usize,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Valid => f.write_str("signature valid"),
            Self::MissingHeader(name) => write!(
                f,
                "missing header {name}: a Standard Webhooks delivery carries webhook-id, \
                 webhook-timestamp and webhook-signature (pass them with --header or --headers)"
            ),
            Self::BadTimestamp(why) | Self::MalformedSignature(why) => f.write_str(why),
            Self::Stale {
                off_by,
                ahead,
                tolerance,
                signature,
            } => {
                let when = if *ahead { "ahead of now" } else { "old" };
                write!(
                    f,
                    "stale timestamp: webhook-timestamp is {} {when}, outside the tolerance of {} \
                     (receivers refuse it, so an old delivery cannot be replayed to them); ",
                    human(*off_by),
                    human(*tolerance)
                )?;
                match **signature {
                    Finding::Valid => f.write_str(
                        "the signature itself matches this body, so the capture is genuine but too \
                         old (pass a larger --tolerance to check an old capture)",
                    ),
                    ref other => {
                        write!(f, "the signature does not match this body either: {other}")
                    }
                }
            }
            Self::ChangedBody(how) => write!(
                f,
                "the body was changed after it was signed: {how}; with that undone the signature \
                 matches, so the secret is right (verify the body exactly as received, byte for byte)"
            ),
            Self::NoMatch {
                version,
                signatures,
            } => write!(
                f,
                "no signature matches this body under this key ({signatures} {version} signature{} \
                 checked): the key is wrong, or the body was changed in a way other than a \
                 trailing newline, CRLF line ends, a byte-order mark or re-formatted JSON; also check \
                 that webhook-id, webhook-timestamp and webhook-signature come from the same attempt",
                if *signatures == 1 { "" } else { "s" }
            ),
        }
    }
}

/// A captured delivery: header names in lower case, the body as received.
pub struct Capture<'a> {
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Capture<'_> {
    fn header(&self, name: &'static str) -> Result<&str, Finding> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .ok_or(Finding::MissingHeader(name))
    }
}

/// Checks `capture` under `key` at `now` (Unix seconds).
pub fn diagnose(key: &Key, capture: &Capture<'_>, now: i64, tolerance: Duration) -> Finding {
    match check(key, capture, now, tolerance) {
        Ok(finding) | Err(finding) => finding,
    }
}

fn check(
    key: &Key,
    capture: &Capture<'_>,
    now: i64,
    tolerance: Duration,
) -> Result<Finding, Finding> {
    let id = capture.header("webhook-id")?;
    let timestamp_text = capture.header("webhook-timestamp")?;
    let header = capture.header("webhook-signature")?;
    let timestamp: i64 = timestamp_text.parse().map_err(|_| {
        Finding::BadTimestamp(format!(
            "malformed webhook-timestamp {}: it is the signing time in whole seconds since the \
             Unix epoch, like 1700000000",
            shown(timestamp_text)
        ))
    })?;
    let signatures = signatures_of(header, key.version())?;
    let signature = signature_finding(key, id, timestamp, capture.body, &signatures);
    let off = now.abs_diff(timestamp);
    if Duration::from_secs(off) > tolerance {
        return Ok(Finding::Stale {
            off_by: Duration::from_secs(off),
            ahead: timestamp > now,
            tolerance,
            signature: Box::new(signature),
        });
    }
    Ok(signature)
}

/// The decoded signatures of `version` in a `webhook-signature` header; a malformed entry, or
/// none of the version, is a [`Finding::MalformedSignature`] naming what is wrong.
fn signatures_of(header: &str, version: &'static str) -> Result<Vec<Vec<u8>>, Finding> {
    let malformed =
        |why: String| Finding::MalformedSignature(format!("malformed webhook-signature: {why}"));
    let mut found = Vec::new();
    let mut versions = Vec::new();
    for entry in header.split(' ') {
        if entry.is_empty() {
            return Err(malformed(
                "an empty entry (two spaces in a row): signatures are separated by single spaces"
                    .into(),
            ));
        }
        let Some((v, b64)) = entry.split_once(',') else {
            return Err(malformed(format!(
                "the entry {} has no version: each entry is a version, a comma and the base64 \
                 signature, like v1,K5oZ…",
                shown(entry)
            )));
        };
        versions.push(v.to_owned());
        // Other versions are skipped, as receivers' libraries skip them.
        let expected_len = match v {
            "v1" => 32,
            "v1a" => 64,
            _ => continue,
        };
        let bytes = STANDARD.decode(b64).map_err(|e| {
            malformed(format!(
                "the {v} signature {} is not valid base64 ({e})",
                shown(b64)
            ))
        })?;
        if bytes.len() != expected_len {
            let what = if v == "v1" {
                "an HMAC-SHA256"
            } else {
                "an ed25519"
            };
            return Err(malformed(format!(
                "the {v} signature is {} bytes long; {what} signature is {expected_len}",
                bytes.len()
            )));
        }
        if v == version {
            found.push(bytes);
        }
    }
    if found.is_empty() {
        let hint = match version {
            "v1" if versions.iter().any(|v| v == "v1a") => {
                " (it has v1a: an ed25519 signature; verify it with --public-key whpk_…)"
            }
            "v1a" if versions.iter().any(|v| v == "v1") => {
                " (it has v1: an HMAC signature; verify it with --secret whsec_…)"
            }
            _ => "",
        };
        return Err(malformed(format!(
            "no {version} signature (found versions: {}){hint}",
            versions.join(", ")
        )));
    }
    Ok(found)
}

fn signature_finding(
    key: &Key,
    id: &str,
    timestamp: i64,
    body: &[u8],
    signatures: &[Vec<u8>],
) -> Finding {
    let verifies = |b: &[u8]| signatures.iter().any(|s| key.matches(id, timestamp, b, s));
    if verifies(body) {
        return Finding::Valid;
    }
    for (how, undone) in undo_changes(body) {
        if verifies(&undone) {
            return Finding::ChangedBody(how);
        }
    }
    Finding::NoMatch {
        version: key.version(),
        signatures: signatures.len(),
    }
}

/// The body with each usual change undone, most specific first, each with what was changed.
fn undo_changes(body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut tries: Vec<(&'static str, Vec<u8>)> = Vec::new();
    if let Some(b) = body.strip_suffix(b"\r\n") {
        tries.push(("a trailing CRLF line end was added", b.to_vec()));
    }
    if let Some(b) = body.strip_suffix(b"\n") {
        tries.push((
            "a trailing newline was added (the signed body has none)",
            b.to_vec(),
        ));
    }
    let trimmed = body.trim_ascii_end();
    if trimmed.len() < body.len() {
        tries.push(("whitespace was added at its end", trimmed.to_vec()));
    }
    tries.push((
        "its trailing newline was removed (the signed body ends with one)",
        [body, b"\n"].concat(),
    ));
    if let Some(b) = body.strip_prefix(b"\xEF\xBB\xBF") {
        tries.push((
            "a byte-order mark (EF BB BF) was added at its start",
            b.to_vec(),
        ));
    }
    if body.windows(2).any(|w| w == b"\r\n") {
        let lf = replace(body, b"\r\n", b"\n");
        tries.push(("its line ends were changed from LF to CRLF", lf.clone()));
        tries.push((
            "its line ends were changed from LF to CRLF and a trailing line end was added",
            lf.trim_ascii_end().to_vec(),
        ));
    } else if body.contains(&b'\n') {
        tries.push((
            "its line ends were changed from CRLF to LF",
            replace(body, b"\n", b"\r\n"),
        ));
    }
    if let Some(compact) = compact_json(body)
        && compact != body.trim_ascii()
    {
        tries.push((
            "its JSON was re-formatted (pretty-printed or re-indented); the signed body is the \
             compact form, with the same keys in the same order",
            compact,
        ));
    }
    tries
}

fn replace(body: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    let mut rest = body;
    while !rest.is_empty() {
        if rest.starts_with(from) {
            out.extend_from_slice(to);
            rest = &rest[from.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// `body` without the whitespace JSON allows between tokens, keys and values untouched and in
/// their order (a parse into a map would sort the keys, or change how numbers are written).
/// `None` when the body is not JSON.
fn compact_json(body: &[u8]) -> Option<Vec<u8>> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).ok()?;
    let mut out = Vec::with_capacity(body.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            out.push(b);
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(b);
        }
    }
    Some(out)
}

/// `3h 2m 5s`, to the second (under a second, in milliseconds).
pub fn human(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut parts = Vec::new();
    for (unit, per) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= per {
            parts.push(format!("{}{unit}", secs / per));
            secs %= per;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const BODY: &[u8] = br#"{"type":"tts.completed","timestamp":"2027-01-15T08:00:00Z","data":{"id":"tts-1","duration":2.50}}"#;

    fn secret() -> SigningSecret {
        SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    fn headers(timestamp: i64, signature: &str) -> Vec<(String, String)> {
        vec![
            ("webhook-id".into(), "dlv_1".into()),
            ("webhook-timestamp".into(), timestamp.to_string()),
            ("webhook-signature".into(), signature.to_owned()),
        ]
    }

    fn run(key: &Key, headers: &[(String, String)], body: &[u8]) -> Finding {
        diagnose(
            key,
            &Capture { headers, body },
            NOW,
            Duration::from_secs(300),
        )
    }

    #[test]
    fn a_good_capture_is_valid_also_beside_other_versions() {
        let key = Key::Secret(secret());
        let sig = secret().sign("dlv_1", NOW - 10, BODY);
        assert_eq!(run(&key, &headers(NOW - 10, &sig), BODY), Finding::Valid);
        let both = format!(
            "v1,{} v1a,{} {sig}",
            STANDARD.encode([0u8; 32]),
            STANDARD.encode([0u8; 64])
        );
        assert_eq!(run(&key, &headers(NOW - 10, &both), BODY), Finding::Valid);
        let ed = SigningSecret::generate_ed25519();
        let sig = ed.sign("dlv_1", NOW, BODY);
        let public = Key::Public(PublicKey::parse(&ed.public_key().unwrap()).unwrap());
        assert_eq!(run(&public, &headers(NOW, &sig), BODY), Finding::Valid);
    }

    #[test]
    fn each_failure_names_its_cause() {
        let key = Key::Secret(secret());
        let sig = secret().sign("dlv_1", NOW, BODY);
        let mut missing = headers(NOW, &sig);
        missing.remove(1);
        assert_eq!(
            run(&key, &missing, BODY),
            Finding::MissingHeader("webhook-timestamp")
        );
        let text = |h: &[(String, String)], body: &[u8]| run(&key, h, body).to_string();
        assert!(text(&headers(NOW, "K5oZ"), BODY).contains("has no version"));
        assert!(text(&headers(NOW, "v1,!!!"), BODY).contains("not valid base64"));
        assert!(text(&headers(NOW, "v1,c2hvcnQ="), BODY).contains("5 bytes long"));
        assert!(text(&headers(NOW, &format!("{sig}  {sig}")), BODY).contains("empty entry"));
        let ed_only = format!("v1a,{}", STANDARD.encode([1u8; 64]));
        assert!(text(&headers(NOW, &ed_only), BODY).contains("no v1 signature"));

        let stale = secret().sign("dlv_1", NOW - 7200, BODY);
        let finding = run(&key, &headers(NOW - 7200, &stale), BODY);
        let says = finding.to_string();
        assert!(
            says.contains("2h old")
                && says.contains("tolerance of 5m")
                && says.contains("matches this body"),
            "{says}"
        );
        let says = text(&headers(NOW + 600, &sig), BODY);
        assert!(
            says.contains("10m ahead") && says.contains("does not match this body either"),
            "{says}"
        );

        let wrong = SigningSecret::generate();
        let says = run(&Key::Secret(wrong), &headers(NOW, &sig), BODY).to_string();
        assert!(says.starts_with("no signature matches"), "{says}");
        assert!(text(&headers(NOW, "v1,!!!"), b"x").starts_with("malformed webhook-signature"));
    }

    #[test]
    fn the_usual_changes_to_a_body_are_named() {
        let key = Key::Secret(secret());
        let h = headers(NOW, &secret().sign("dlv_1", NOW, BODY));
        // Pretty-printed with the keys in the same order (as jq or an editor does), and 2.50
        // kept as written.
        let pretty = b"{\n  \"type\": \"tts.completed\",\n  \"timestamp\": \"2027-01-15T08:00:00Z\",\n  \"data\": {\n    \"id\": \"tts-1\",\n    \"duration\": 2.50\n  }\n}\n";
        let cases: [(Vec<u8>, &str); 5] = [
            ([BODY, b"\n"].concat(), "trailing newline was added"),
            ([BODY, b"\r\n"].concat(), "trailing CRLF"),
            (
                [b"\xEF\xBB\xBF".as_slice(), BODY].concat(),
                "byte-order mark",
            ),
            (pretty.to_vec(), "re-formatted"),
            (replace(pretty, b"\n", b"\r\n"), "re-formatted"),
        ];
        for (body, says) in cases {
            let finding = run(&key, &h, &body);
            assert!(matches!(finding, Finding::ChangedBody(_)), "{finding:?}");
            assert!(finding.to_string().contains(says), "{finding}");
        }
        let with_newline = [BODY, b"\n"].concat();
        let h = headers(NOW, &secret().sign("dlv_1", NOW, &with_newline));
        assert!(
            run(&key, &h, BODY)
                .to_string()
                .contains("trailing newline was removed")
        );
        let changed = BODY
            .to_vec()
            .into_iter()
            .map(|b| if b == b'1' { b'2' } else { b })
            .collect::<Vec<_>>();
        assert!(matches!(run(&key, &h, &changed), Finding::NoMatch { .. }));
    }

    #[test]
    fn compacting_keeps_strings_and_order() {
        let body = br#"{ "b" : "a b\" c", "a": [1, 2.50] }"#;
        assert_eq!(
            compact_json(body).unwrap(),
            br#"{"b":"a b\" c","a":[1,2.50]}"#
        );
        assert!(compact_json(b"not json").is_none());
        assert_eq!(human(Duration::from_secs(7325)), "2h 2m 5s");
    }
}
