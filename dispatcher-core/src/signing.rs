//! Optional message signing: HMAC-SHA256 with a shared secret, on task and control messages and
//! on control replies.
//!
//! A signed payload is an envelope around the original text, so the signature covers exactly
//! the bytes that were sent (no JSON canonicalisation):
//!
//! ```json
//! {"__dispatcher_signed__": "v1", "ts": 1727354869512, "payload": "{\"task\": ...}", "hmac": "9f3c..."}
//! ```
//!
//! `hmac` is the lowercase hex HMAC-SHA256 of `"v1\n" + ts + "\n" + payload`, where `ts` is the
//! signing time in milliseconds since the Unix epoch. A service that requires signatures rejects
//! (and counts) unsigned payloads, forged or altered ones, and ones whose `ts` is older than
//! `max_age` or more than a minute in the future (a bound on replays). Large signed payloads are
//! chunked like any other: the envelope is split, reassembled, then verified.
//!
//! Signing is off by default, so plain dispatcherd messages keep working.
//!
//! ```
//! use dispatcher_core::signing::SigningKey;
//! let key = SigningKey::new(b"a long shared secret, 32 bytes or more").unwrap();
//! let signed = key.sign(r#"{"task": "demo.noop"}"#).unwrap();
//! assert_eq!(key.verify(&signed).unwrap(), r#"{"task": "demo.noop"}"#);
//! let forged = signed.replace("demo.noop", "demo.boom");
//! assert!(key.verify(&forged).is_err());
//! ```

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};

/// The envelope marker.
pub const SIGNED_MARKER: &str = "__dispatcher_signed__";

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(rename = "__dispatcher_signed__")]
    version: String,
    ts: u64,
    payload: String,
    hmac: String,
}

/// A shared secret for signing and verifying payloads.
#[derive(Clone)]
pub struct SigningKey {
    secret: Vec<u8>,
    max_age: Duration,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("secret", &"<redacted>")
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// True when `payload` looks like a signed envelope.
pub fn is_signed(payload: &str) -> bool {
    payload.trim_start().starts_with('{') && payload.contains(SIGNED_MARKER)
}

fn now_ms() -> u64 {
    (crate::call::now_epoch() * 1000.0) as u64
}

impl SigningKey {
    /// A key from a secret of at least [`MIN_SECRET_LEN`] bytes; signatures older than five
    /// minutes are refused.
    pub fn new(secret: &[u8]) -> Result<Self> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::Config(format!(
                "the signing secret is {} bytes long; use at least {MIN_SECRET_LEN} (32 random bytes are best)",
                secret.len()
            )));
        }
        Ok(SigningKey {
            secret: secret.to_vec(),
            max_age: Duration::from_secs(300),
        })
    }

    /// Sets how old a signature may be.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    fn mac(&self, ts: u64, payload: &str) -> Result<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .map_err(|e| Error::Config(format!("signing key: {e}")))?;
        mac.update(b"v1\n");
        mac.update(ts.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(payload.as_bytes());
        Ok(mac)
    }

    /// Wraps `payload` in a signed envelope.
    pub fn sign(&self, payload: &str) -> Result<String> {
        let ts = now_ms();
        let tag = self.mac(ts, payload)?.finalize().into_bytes();
        let env = Envelope {
            version: "v1".to_owned(),
            ts,
            payload: payload.to_owned(),
            hmac: hex::encode(tag),
        };
        serde_json::to_string(&env).map_err(|source| Error::Serialize {
            what: "signed envelope".into(),
            source,
        })
    }

    /// Checks a signed envelope and returns the payload inside; every failure says why.
    pub fn verify(&self, envelope: &str) -> Result<String> {
        let env: Envelope = serde_json::from_str(envelope).map_err(|e| {
            Error::Signature(format!(
                "message is not a signed envelope ({e}); this service requires signed messages"
            ))
        })?;
        if env.version != "v1" {
            return Err(Error::Signature(format!(
                "unsupported signature version {:?}",
                env.version
            )));
        }
        let tag =
            hex::decode(&env.hmac).map_err(|_| Error::Signature("the hmac is not hex".into()))?;
        self.mac(env.ts, &env.payload)?
            .verify_slice(&tag)
            .map_err(|_| {
                Error::Signature(
                    "bad signature: the message was altered or signed with another secret".into(),
                )
            })?;
        let now = now_ms();
        let age = now.saturating_sub(env.ts);
        if age > self.max_age.as_millis() as u64 {
            return Err(Error::Signature(format!(
                "signature is {:.1}s old, more than the {}s allowed (replayed, or clocks apart)",
                age as f64 / 1000.0,
                self.max_age.as_secs()
            )));
        }
        if env.ts > now + 60_000 {
            return Err(Error::Signature(format!(
                "signature is {:.1}s in the future (clocks apart)",
                (env.ts - now) as f64 / 1000.0
            )));
        }
        Ok(env.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused() {
        assert!(SigningKey::new(b"short").is_err());
    }

    #[test]
    fn other_secret_unsigned_and_garbage_fail() {
        let a = SigningKey::new(b"0123456789abcdef-a").unwrap();
        let b = SigningKey::new(b"0123456789abcdef-b").unwrap();
        let signed = a.sign("{\"task\":\"t\"}").unwrap();
        assert!(b
            .verify(&signed)
            .unwrap_err()
            .to_string()
            .contains("bad signature"));
        assert!(a
            .verify("{\"task\":\"t\"}")
            .unwrap_err()
            .to_string()
            .contains("requires signed"));
        let mut env: serde_json::Value = serde_json::from_str(&signed).unwrap();
        env["hmac"] = "zz".into();
        assert!(a
            .verify(&env.to_string())
            .unwrap_err()
            .to_string()
            .contains("not hex"));
    }

    #[test]
    fn old_signatures_are_refused() {
        let k = SigningKey::new(b"0123456789abcdef")
            .unwrap()
            .with_max_age(Duration::from_secs(10));
        let ts = now_ms() - 20_000;
        let tag = k.mac(ts, "x").unwrap().finalize().into_bytes();
        let env = serde_json::json!({"__dispatcher_signed__": "v1", "ts": ts, "payload": "x", "hmac": hex::encode(tag)});
        let e = k.verify(&env.to_string()).unwrap_err().to_string();
        assert!(e.contains("old"), "{e}");
    }
}
