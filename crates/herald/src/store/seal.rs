//! Webhook secrets at rest: sealed with the operator's key (`HERALD_SECRETS_KEY`) before they
//! are written, opened when they are read.
//!
//! A sealed value is `enc1:` + base64(nonce ‖ ciphertext ‖ tag): XChaCha20-Poly1305 with a
//! random 24-byte nonce per write. The associated data names the column and the row
//! (`webhooks.secret/wh_…`), so a sealed value copied into another row or column does not open.
//! Without a key, values are written as they are; plaintext is read with or without one, and the
//! store seals what it finds in plaintext when it opens with a key ([`Sealer::reseal`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// Marks a sealed value (version 1 of the format).
pub const SEALED_PREFIX: &str = "enc1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The environment variable the key is read from; named in every message about it.
pub const KEY_VARIABLE: &str = "HERALD_SECRETS_KEY";

/// The key webhook secrets are sealed with: 32 random bytes, given as standard base64.
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretsKey([u8; 32]);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(…)")
    }
}

impl SecretsKey {
    /// Accepts the standard base64 (padded or not) of exactly 32 bytes. The error never
    /// repeats the input.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                format!(
                    "{KEY_VARIABLE} must be the base64 of 32 random bytes (`herald gen-secrets-key` makes one)"
                )
            })?;
        Ok(Self(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The key as `HERALD_SECRETS_KEY` takes it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

/// The columns that hold secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    WebhookSecret,
    WebhookPreviousSecret,
    /// The signing mode, which holds the token of `bearer` and the value of `header`.
    WebhookSigning,
    AccountSigningSecret,
}

impl Column {
    pub fn name(self) -> &'static str {
        match self {
            Self::WebhookSecret => "webhooks.secret",
            Self::WebhookPreviousSecret => "webhooks.previous_secret",
            Self::WebhookSigning => "webhooks.signing",
            Self::AccountSigningSecret => "accounts.signing_secret",
        }
    }

    fn associated_data(self, row: &str) -> Vec<u8> {
        format!("herald/{}/{row}", self.name()).into_bytes()
    }
}

/// Why a stored value could not be read or kept.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "{0} of {1} is encrypted, but {KEY_VARIABLE} is not set: start Herald with the key the secrets were encrypted with"
    )]
    NoKey(&'static str, String),
    #[error(
        "{0} of {1} does not decrypt with {KEY_VARIABLE}: it is not the key the secrets were encrypted with (or the value was altered or moved)"
    )]
    WrongKey(&'static str, String),
}

/// Seals and opens secret columns; without a key it passes plaintext through.
#[derive(Clone, Default)]
pub struct Sealer {
    cipher: Option<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("has_key", &self.has_key())
            .finish()
    }
}

impl Sealer {
    pub fn new(key: Option<&SecretsKey>) -> Self {
        Self {
            cipher: key.map(|k| XChaCha20Poly1305::new(&k.0.into())),
        }
    }

    pub fn has_key(&self) -> bool {
        self.cipher.is_some()
    }

    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_PREFIX)
    }

    /// The value to store for `plaintext` in `column` of `row`: sealed when there is a key.
    pub fn seal(&self, column: Column, row: &str, plaintext: &str) -> String {
        let Some(cipher) = &self.cipher else {
            return plaintext.to_owned();
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = column.associated_data(row);
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message under 256 GiB");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", STANDARD.encode(out))
    }

    /// The plaintext of a stored value: a sealed one opened with the key, plaintext as it is.
    pub fn open(&self, column: Column, row: &str, stored: &str) -> Result<String, SealError> {
        let Some(body) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let Some(cipher) = &self.cipher else {
            return Err(SealError::NoKey(column.name(), row.to_owned()));
        };
        let wrong = || SealError::WrongKey(column.name(), row.to_owned());
        let raw = STANDARD.decode(body).map_err(|_| wrong())?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(wrong());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
        let aad = column.associated_data(row);
        let plain = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| wrong())?;
        String::from_utf8(plain).map_err(|_| wrong())
    }

    /// The start-up check of one stored value: with a key, a plaintext value comes back sealed
    /// (to be written over it) and a sealed one must open; without a key, a sealed value is an
    /// error. `None`: keep the value as it is.
    pub fn reseal(
        &self,
        column: Column,
        row: &str,
        stored: &str,
    ) -> Result<Option<String>, SealError> {
        let plaintext = self.open(column, row, stored)?;
        Ok(
            (self.has_key() && !Self::is_sealed(stored))
                .then(|| self.seal(column, row, &plaintext)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed() -> Sealer {
        Sealer::new(Some(&SecretsKey::generate()))
    }

    #[test]
    fn sealed_values_open_only_in_their_own_column_and_row() {
        let s = keyed();
        let sealed = s.seal(Column::WebhookSecret, "wh_1", "whsec_abc");
        assert!(sealed.starts_with(SEALED_PREFIX) && !sealed.contains("whsec_abc"));
        assert_eq!(
            s.open(Column::WebhookSecret, "wh_1", &sealed).unwrap(),
            "whsec_abc"
        );
        assert_ne!(
            sealed,
            s.seal(Column::WebhookSecret, "wh_1", "whsec_abc"),
            "a fresh nonce per write"
        );
        for (column, row) in [
            (Column::WebhookSecret, "wh_2"),
            (Column::WebhookPreviousSecret, "wh_1"),
        ] {
            assert!(matches!(
                s.open(column, row, &sealed),
                Err(SealError::WrongKey(..))
            ));
        }
    }

    #[test]
    fn without_the_right_key_sealed_values_do_not_open() {
        let sealed = keyed().seal(Column::AccountSigningSecret, "acc_1", "whsec_x");
        let no_key = Sealer::default().open(Column::AccountSigningSecret, "acc_1", &sealed);
        assert!(matches!(no_key, Err(SealError::NoKey(..))));
        assert!(no_key.unwrap_err().to_string().contains(KEY_VARIABLE));
        let wrong = keyed().open(Column::AccountSigningSecret, "acc_1", &sealed);
        assert!(wrong.unwrap_err().to_string().contains(KEY_VARIABLE));
        for garbage in ["enc1:", "enc1:!!", "enc1:AAAA"] {
            assert!(
                keyed()
                    .open(Column::WebhookSecret, "wh_1", garbage)
                    .is_err()
            );
        }
    }

    #[test]
    fn plaintext_reads_as_is_and_is_resealed_only_with_a_key() {
        let plain = Sealer::default();
        assert_eq!(plain.seal(Column::WebhookSigning, "wh_1", "{}"), "{}");
        assert_eq!(plain.reseal(Column::WebhookSigning, "wh_1", "{}"), Ok(None));
        let s = keyed();
        assert_eq!(
            s.open(Column::WebhookSecret, "wh_1", "whsec_a").unwrap(),
            "whsec_a"
        );
        let resealed = s
            .reseal(Column::WebhookSecret, "wh_1", "whsec_a")
            .unwrap()
            .unwrap();
        assert_eq!(
            s.reseal(Column::WebhookSecret, "wh_1", &resealed),
            Ok(None),
            "idempotent"
        );
    }

    #[test]
    fn keys_parse_from_base64_of_32_bytes_and_hide_in_debug() {
        let key = SecretsKey::generate();
        let text = key.to_base64();
        assert_eq!(SecretsKey::parse(&text).unwrap(), key);
        assert_eq!(SecretsKey::parse(text.trim_end_matches('=')).unwrap(), key);
        assert!(!format!("{key:?}").contains(&text));
        for bad in [
            "",
            "short",
            &STANDARD.encode([1u8; 31]),
            &STANDARD.encode([1u8; 33]),
        ] {
            let err = SecretsKey::parse(bad).unwrap_err();
            assert!(err.contains(KEY_VARIABLE) && (bad.is_empty() || !err.contains(bad)));
        }
    }
}
