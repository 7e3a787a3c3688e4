//! Property tests of the parsers and the signature: URL validation, event filters, durations,
//! Standard Webhooks signing. 256 cases each, so they run with the normal suite.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_domain::duration::{format_duration, parse_duration};
use herald_domain::{EventFilter, EventType, SigningSecret, WebhookUrl};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// A written-out IPv4 address the way `url` may be handed one: dotted, short, decimal or hex.
fn ipv4_host() -> impl Strategy<Value = String> {
    (any::<u32>(), 0..4u8).prop_map(|(n, form)| {
        let ip = Ipv4Addr::from(n);
        let o = ip.octets();
        match form {
            0 => ip.to_string(),
            1 => format!("{}.{}", o[0], n & 0x00ff_ffff),
            2 => n.to_string(),
            _ => format!("0x{n:x}"),
        }
    })
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        ipv4_host(),
        any::<u128>().prop_map(|n| format!("[{}]", Ipv6Addr::from(n))),
        any::<u32>().prop_map(|n| format!("[::ffff:{}]", Ipv4Addr::from(n))),
        any::<u32>().prop_map(|n| format!("[64:ff9b::{}]", Ipv4Addr::from(n))),
        "[a-z0-9-]{1,12}(\\.[a-z0-9-]{1,8}){0,3}\\.?",
        Just("localhost".to_owned()),
        Just("LocalHost.".to_owned()),
        "[a-z]{1,8}\\.localhost",
        "[^/?#@]{0,12}",
    ]
}

/// URL-shaped text, weighted towards what could pass (https, no user info) so that both
/// branches of the property are well exercised.
fn url_like() -> impl Strategy<Value = String> {
    (
        prop_oneof![6 => Just("https".to_owned()), 1 => "http|HTTPS|ftp|[a-z]{1,5}"],
        prop_oneof![8 => Just(""), 1 => Just("user@"), 1 => Just("u:p@")],
        host(),
        prop_oneof![
            Just(String::new()),
            (0..70_000u32).prop_map(|p| format!(":{p}"))
        ],
        prop_oneof![4 => "[a-z0-9/._-]{0,20}", 1 => "[ -~]{0,20}"],
    )
        .prop_map(|(scheme, auth, host, port, rest)| {
            format!("{scheme}://{auth}{host}{port}/{rest}")
        })
}

/// Non-public IPv4, written out independently of the server's own check.
fn v4_is_private(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0)
        || a >= 224
}

fn ip_is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_private(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_is_private(v4);
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || s[0] & 0xff00 == 0xff00
                || s[0] & 0xfe00 == 0xfc00
                || s[0] & 0xffc0 == 0xfe80
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                    && v4_is_private(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]))))
        }
    }
}

fn event_type() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,6}(\\.[a-z0-9_-]{1,6}){0,3}"
}

/// Checked with an explicit runner so the test can also show it is not vacuous: a fair share
/// of the generated URLs is accepted and a fair share refused.
#[test]
fn a_url_accepted_outside_dev_is_https_to_a_public_host() {
    let (accepted, refused) = (Cell::new(0), Cell::new(0));
    let mut runner = TestRunner::new(config());
    runner
        .run(&url_like(), |input| {
            let Ok(url) = WebhookUrl::parse(&input, false) else {
                refused.set(refused.get() + 1);
                return Ok(());
            };
            accepted.set(accepted.get() + 1);
            prop_assert!(
                WebhookUrl::parse(&input, true).is_ok(),
                "dev mode refused {input}"
            );
            let url = url::Url::parse(url.as_str()).unwrap();
            prop_assert_eq!(url.scheme(), "https");
            prop_assert_ne!(url.port(), Some(0));
            match url.host().unwrap() {
                url::Host::Ipv4(ip) => prop_assert!(!ip_is_private(IpAddr::V4(ip)), "{}", input),
                url::Host::Ipv6(ip) => prop_assert!(!ip_is_private(IpAddr::V6(ip)), "{}", input),
                url::Host::Domain(d) => {
                    let d = d.trim_end_matches('.').to_ascii_lowercase();
                    prop_assert!(d != "localhost" && !d.ends_with(".localhost"), "{}", input);
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(
        accepted.get() >= 25 && refused.get() >= 25,
        "{} accepted, {} refused",
        accepted.get(),
        refused.get()
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn url_parsing_never_panics_on_any_text(input in "\\PC{0,80}") {
        let _ = WebhookUrl::parse(&input, false);
        let _ = WebhookUrl::parse(&input, true);
    }

    #[test]
    fn a_prefix_filter_matches_exactly_the_types_under_it(
        prefix in event_type(),
        others in proptest::collection::vec(event_type(), 1..8),
        suffix in event_type(),
    ) {
        let filter = EventFilter::parse(&format!("{prefix}.*")).unwrap();
        let under = format!("{prefix}.{suffix}");
        prop_assert!(filter.matches(&under));
        prop_assert!(!filter.matches(&prefix), "the prefix alone is not under itself");
        for t in others.iter().chain([&under, &prefix]) {
            prop_assert!(EventType::parse(t).is_ok());
            prop_assert_eq!(filter.matches(t), t.starts_with(&format!("{prefix}.")), "{}", t);
            let exact = EventFilter::parse(t).unwrap();
            prop_assert_eq!(exact.matches(&under), *t == under);
            prop_assert!(EventFilter::parse("*").unwrap().matches(t));
        }
        prop_assert_eq!(EventFilter::parse(&filter.to_pattern()).unwrap(), filter);
    }

    #[test]
    fn filter_parsing_never_panics_and_only_accepts_well_formed_patterns(input in "\\PC{0,40}") {
        if let Ok(f) = EventFilter::parse(&input) {
            prop_assert_eq!(f.to_pattern(), input);
        }
    }

    #[test]
    fn a_formatted_duration_parses_back_to_itself(ms in 0..1_000_000_000_000u64) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn a_written_duration_formats_to_an_equal_one(n in 0..1_000_000u64, unit in "ms|s|m|h|d") {
        let d = parse_duration(&format!("{n}{unit}")).unwrap();
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn duration_parsing_never_panics(input in "\\PC{0,24}") {
        let _ = parse_duration(&input);
    }

    #[test]
    fn a_signature_verifies_and_any_one_byte_change_breaks_it(
        key in proptest::collection::vec(any::<u8>(), 24..=64),
        id in "msg_[A-Za-z0-9]{1,24}",
        timestamp in 0..4_000_000_000i64,
        body in proptest::collection::vec(any::<u8>(), 0..256),
        at in any::<proptest::sample::Index>(),
        flip in 1..=255u8,
        ed25519 in any::<bool>(),
    ) {
        let secret = if ed25519 {
            SigningSecret::parse(&format!("whsk_{}", STANDARD.encode(key.iter().cycle().take(32).copied().collect::<Vec<u8>>()))).unwrap()
        } else {
            SigningSecret::parse(&format!("whsec_{}", STANDARD.encode(&key))).unwrap()
        };
        let signature = secret.sign(&id, timestamp, &body);
        prop_assert!(secret.verify(&id, timestamp, &body, &signature));

        if !body.is_empty() {
            let mut changed = body.clone();
            changed[at.index(body.len())] ^= flip;
            prop_assert!(!secret.verify(&id, timestamp, &changed, &signature));
        }
        prop_assert!(!secret.verify(&id, timestamp + 1, &body, &signature));

        let mut changed_id = id.clone().into_bytes();
        let i = at.index(changed_id.len());
        changed_id[i] = if changed_id[i] == b'x' { b'y' } else { b'x' };
        prop_assert!(!secret.verify(std::str::from_utf8(&changed_id).unwrap(), timestamp, &body, &signature));

        // One printable character of the header replaced by another.
        let mut header = signature.clone().into_bytes();
        let i = at.index(header.len());
        header[i] = b'!' + (header[i] - b'!' + (flip % 93).max(1)) % 94;
        prop_assert_ne!(&header, signature.as_bytes());
        prop_assert!(!secret.verify(&id, timestamp, &body, std::str::from_utf8(&header).unwrap()));
    }
}
