//! Signing secrets and Standard Webhooks signatures.
//!
//! Spec: <https://www.standardwebhooks.com/> — the signed content is `{id}.{timestamp}.{body}`.
//! Symmetric: the secret is `whsec_` + base64 of the key bytes and the signature
//! `v1,` + base64(HMAC-SHA256(key, content)). Asymmetric: the secret is `whsk_` + base64 of the
//! 32-byte ed25519 seed, the public key `whpk_` + base64 of the 32-byte verifying key, and the
//! signature `v1a,` + base64(ed25519(content)).
//!
//! An ed25519 secret is a private key: whoever holds it can sign deliveries, so it never leaves
//! the server. What the API shows of a secret is its [`ReceiverKey`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Serialize;
use sha2::Sha256;

const HMAC_PREFIX: &str = "whsec_";
const ED25519_PREFIX: &str = "whsk_";
const PUBLIC_PREFIX: &str = "whpk_";
const MIN_KEY: usize = 24;
const MAX_KEY: usize = 64;

#[derive(Clone)]
enum Key {
    Hmac(Vec<u8>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

/// A webhook's signing secret, symmetric or ed25519. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningSecret {
    text: String,
    key: Key,
}

impl PartialEq for SigningSecret {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for SigningSecret {}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

/// What a receiver verifies deliveries with, and the only form in which the API shows a signing
/// secret: an HMAC secret whole (it is shared with the receiver by design), an ed25519 key by its
/// public half. Serializes as `{"secret": "whsec_…"}` or `{"public_key": "whpk_…"}`.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKey {
    Secret(String),
    PublicKey(String),
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

impl SigningSecret {
    /// A fresh symmetric secret of 32 random bytes.
    pub fn generate() -> Self {
        let key = random::<32>().to_vec();
        Self {
            text: format!("{HMAC_PREFIX}{}", STANDARD.encode(&key)),
            key: Key::Hmac(key),
        }
    }

    /// A fresh ed25519 key pair.
    pub fn generate_ed25519() -> Self {
        let seed = random::<32>();
        Self {
            text: format!("{ED25519_PREFIX}{}", STANDARD.encode(seed)),
            key: Key::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(&seed))),
        }
    }

    /// Accepts `whsec_` + standard base64 of 24 to 64 bytes, or `whsk_` + base64 of a 32-byte
    /// ed25519 seed.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(b64) = s.strip_prefix(ED25519_PREFIX) {
            let seed: [u8; 32] = STANDARD
                .decode(b64)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or_else(|| format!("an ed25519 secret is \"{ED25519_PREFIX}\" followed by the base64 of a 32-byte seed"))?;
            let key = Key::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(&seed)));
            return Ok(Self {
                text: s.to_owned(),
                key,
            });
        }
        let bad = || {
            format!(
                "secret must be \"{HMAC_PREFIX}\" followed by the base64 of {MIN_KEY} to {MAX_KEY} random bytes"
            )
        };
        let b64 = s.strip_prefix(HMAC_PREFIX).ok_or_else(bad)?;
        let key = STANDARD.decode(b64).map_err(|_| bad())?;
        if !(MIN_KEY..=MAX_KEY).contains(&key.len()) {
            return Err(bad());
        }
        Ok(Self {
            text: s.to_owned(),
            key: Key::Hmac(key),
        })
    }

    /// The secret's text, for the store to seal. Never for an answer: for an ed25519 secret it
    /// is the private key; show [`Self::receiver_key`] instead.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// What a receiver verifies this secret's signatures with.
    pub fn receiver_key(&self) -> ReceiverKey {
        match self.public_key() {
            Some(public) => ReceiverKey::PublicKey(public),
            None => ReceiverKey::Secret(self.text.clone()),
        }
    }

    pub fn is_ed25519(&self) -> bool {
        matches!(self.key, Key::Ed25519(_))
    }

    /// The `whpk_…` public key of an ed25519 secret.
    pub fn public_key(&self) -> Option<String> {
        match &self.key {
            Key::Ed25519(k) => Some(format!(
                "{PUBLIC_PREFIX}{}",
                STANDARD.encode(k.verifying_key().to_bytes())
            )),
            Key::Hmac(_) => None,
        }
    }

    /// One `webhook-signature` entry for a message: `v1,…` or `v1a,…`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let content = signed_content(msg_id, timestamp, body);
        match &self.key {
            Key::Hmac(key) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
                mac.update(&content);
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            }
            Key::Ed25519(k) => format!("v1a,{}", STANDARD.encode(k.sign(&content).to_bytes())),
        }
    }

    /// Whether any of the space-separated signatures in a `webhook-signature` header is this
    /// secret's signature of the message (compared in constant time).
    pub fn verify(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.sign(msg_id, timestamp, body);
        header
            .split(' ')
            .any(|candidate| bool::from(candidate.as_bytes().ct_eq(expected.as_bytes())))
    }
}

/// What a signature signs: `{id}.{timestamp}.{body}`.
fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(msg_id.len() + body.len() + 24);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// An ed25519 public key as a receiver holds it, `whpk_` + base64 of 32 bytes: what verifies
/// `v1a` signatures (`herald verify --public-key`).
#[derive(Clone, Debug)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            || format!("a public key is \"{PUBLIC_PREFIX}\" followed by the base64 of 32 bytes");
        let bytes: [u8; 32] = s
            .strip_prefix(PUBLIC_PREFIX)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .and_then(|k| k.try_into().ok())
            .ok_or_else(bad)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| format!("{s} is not an ed25519 public key"))
    }

    /// Whether `signature` (the decoded bytes of a `v1a` entry) signs the message.
    pub fn verifies(&self, msg_id: &str, timestamp: i64, body: &[u8], signature: &[u8]) -> bool {
        use ed25519_dalek::Verifier;
        ed25519_dalek::Signature::from_slice(signature).is_ok_and(|sig| {
            self.0
                .verify(&signed_content(msg_id, timestamp, body), &sig)
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        // The reference vector published with the Standard Webhooks libraries.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let body = br#"{"test": 2432232314}"#;
        assert!(secret.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            &format!("v1a,xyz {sig}")
        ));
        assert!(!secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, &sig));
    }

    #[test]
    fn generated_secrets_round_trip_and_hide_in_debug() {
        for s in [SigningSecret::generate(), SigningSecret::generate_ed25519()] {
            assert_eq!(SigningSecret::parse(s.expose()).unwrap(), s);
            assert!(!format!("{s:?}").contains(s.expose()));
        }
        assert!(SigningSecret::generate().expose().starts_with("whsec_"));
        assert!(
            SigningSecret::generate_ed25519()
                .expose()
                .starts_with("whsk_")
        );
    }

    #[test]
    fn ed25519_signatures_verify_with_the_public_key() {
        use ed25519_dalek::Verifier;
        let s = SigningSecret::generate_ed25519();
        let sig = s.sign("msg_1", 1_700_000_000, b"{}");
        let raw = STANDARD.decode(sig.strip_prefix("v1a,").unwrap()).unwrap();
        let public = STANDARD
            .decode(s.public_key().unwrap().strip_prefix("whpk_").unwrap())
            .unwrap();
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&public.try_into().unwrap()).unwrap();
        let signature = ed25519_dalek::Signature::from_slice(&raw).unwrap();
        assert!(vk.verify(b"msg_1.1700000000.{}", &signature).is_ok());
        assert!(vk.verify(b"msg_1.1700000001.{}", &signature).is_err());
        let key = PublicKey::parse(&s.public_key().unwrap()).unwrap();
        assert!(key.verifies("msg_1", 1_700_000_000, b"{}", &raw));
        assert!(!key.verifies("msg_1", 1_700_000_000, b"{} ", &raw));
        assert!(!key.verifies("msg_1", 1_700_000_000, b"{}", &raw[1..]));
        assert!(
            PublicKey::parse("whpk_c2hvcnQ=").is_err() && PublicKey::parse(s.expose()).is_err()
        );
    }

    #[test]
    fn receivers_get_an_hmac_secret_whole_and_an_ed25519_key_by_its_public_half() {
        let hmac = SigningSecret::generate();
        assert!(hmac.receiver_key() == ReceiverKey::Secret(hmac.expose().to_owned()));
        let ed = SigningSecret::generate_ed25519();
        let shown = serde_json::to_string(&ed.receiver_key()).unwrap();
        let public = ed.public_key().unwrap();
        assert_eq!(shown, format!(r#"{{"public_key":"{public}"}}"#));
        let seed = ed.expose().strip_prefix("whsk_").unwrap();
        assert!(!shown.contains("whsk_") && !shown.contains(seed));
    }

    #[test]
    fn rejects_malformed_secrets() {
        for bad in [
            "",
            "secret",
            "whsec_",
            "whsec_!!!!",
            "whsec_c2hvcnQ=",
            "whsk_c2hvcnQ=",
        ] {
            assert!(SigningSecret::parse(bad).is_err(), "{bad:?}");
        }
    }
}
