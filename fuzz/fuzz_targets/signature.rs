//! Signing secrets and Standard Webhooks signatures: parsing any string never panics and what
//! parses prints back to itself; a signature verifies for the content it was made for; and
//! `verify` never accepts a header that does not carry the signature `sign` makes for that
//! content, whatever else the header holds.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_domain::SigningSecret;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Message<'a> {
    id: &'a str,
    timestamp: i64,
    body: &'a [u8],
}

impl Message<'_> {
    /// What is signed: `{id}.{timestamp}.{body}`.
    fn content(&self) -> Vec<u8> {
        let mut c = format!("{}.{}.", self.id, self.timestamp).into_bytes();
        c.extend_from_slice(self.body);
        c
    }
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Any text offered as a secret.
    text: &'a str,
    /// A well-formed secret: ed25519 (32 bytes of seed) or HMAC (24 to 64 key bytes).
    ed25519: bool,
    key: [u8; 64],
    key_len: u8,
    message: Message<'a>,
    /// Another message, to check a signature does not carry over to different content.
    other: Message<'a>,
    header: &'a str,
}

fn check(secret: &SigningSecret, input: &Input<'_>) {
    let m = &input.message;
    let signature = secret.sign(m.id, m.timestamp, m.body);
    assert!(signature.starts_with(if secret.is_ed25519() { "v1a," } else { "v1," }));
    assert!(secret.verify(m.id, m.timestamp, m.body, &signature));
    let with_others = format!("{} {signature}", input.header);
    assert!(secret.verify(m.id, m.timestamp, m.body, &with_others));

    // An arbitrary header is accepted only when one of its entries is exactly the signature.
    let accepted = secret.verify(m.id, m.timestamp, m.body, input.header);
    let carries = input.header.split(' ').any(|s| s == signature);
    assert_eq!(accepted, carries, "header {:?}", input.header);

    // Different signed content, different signature (equal content is the same message: the
    // `{id}.{timestamp}.{body}` encoding does not separate an id holding dots from the rest).
    let o = &input.other;
    if o.content() != m.content() {
        assert!(!secret.verify(o.id, o.timestamp, o.body, &signature));
    }
}

fuzz_target!(|input: Input<'_>| {
    if let Ok(secret) = SigningSecret::parse(input.text) {
        assert_eq!(SigningSecret::parse(secret.expose()).as_ref(), Ok(&secret));
        check(&secret, &input);
    }
    let text = if input.ed25519 {
        format!("whsk_{}", STANDARD.encode(&input.key[..32]))
    } else {
        let len = 24 + usize::from(input.key_len) % (64 - 24 + 1);
        format!("whsec_{}", STANDARD.encode(&input.key[..len]))
    };
    let secret = SigningSecret::parse(&text).expect("a well-formed secret parses");
    assert_eq!(secret.is_ed25519(), input.ed25519);
    check(&secret, &input);
});
