//! Signed, expiring storage links (in the manner of S3 pre-signed URLs).
//!
//! A link is `{storage}/{path}?expires={unix seconds}&signature={hex}` where the signature is
//! HMAC-SHA256 over `"{path}\n{expires}"` with a key read from a file. The storage listener
//! checks the signature first (so a tampered expiry is "invalid", not "expired"), then the
//! expiry.

use std::path::Path;

use ring::hmac;

/// The secret shared by the mirror (which signs) and the storage endpoint (which checks).
#[derive(Clone)]
pub struct SigningKey(hmac::Key);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// Why a link was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link has no valid expires/signature parameters")]
    Missing,
    #[error("the link's signature does not match (tampered, or signed with another key)")]
    BadSignature,
    #[error("the link expired at {expires} (now {now}); ask the mirror for a fresh one")]
    Expired { expires: u64, now: u64 },
}

impl SigningKey {
    /// Reads a key file (raw bytes; one trailing newline ignored). At least 16 bytes.
    pub fn from_file(path: &Path) -> anyhow::Result<SigningKey> {
        let mut bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read signing key {}: {e}", path.display()))?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        SigningKey::new(bytes).map_err(|e| anyhow::anyhow!("signing key {}: {e}", path.display()))
    }

    pub fn new(bytes: Vec<u8>) -> Result<SigningKey, String> {
        if bytes.len() < 16 {
            return Err(format!(
                "is {} bytes; use at least 16 (e.g. `head -c 32 /dev/urandom > key`)",
                bytes.len()
            ));
        }
        Ok(SigningKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// Hex HMAC-SHA256 of `path` and `expires`.
    pub fn sign(&self, path: &str, expires: u64) -> String {
        hex::encode(hmac::sign(&self.0, format!("{path}\n{expires}").as_bytes()))
    }

    /// The query string (`expires=…&signature=…`) for `path`.
    pub fn query(&self, path: &str, expires: u64) -> String {
        format!("expires={expires}&signature={}", self.sign(path, expires))
    }

    /// Checks a request's path and query string at time `now`.
    pub fn check(&self, path: &str, query: Option<&str>, now: u64) -> Result<(), LinkError> {
        let mut expires = None;
        let mut signature = None;
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("expires", v)) => expires = v.parse::<u64>().ok(),
                Some(("signature", v)) => signature = hex::decode(v).ok(),
                _ => {}
            }
        }
        let (Some(expires), Some(signature)) = (expires, signature) else {
            return Err(LinkError::Missing);
        };
        // `verify` compares in constant time.
        if hmac::verify(&self.0, format!("{path}\n{expires}").as_bytes(), &signature).is_err() {
            return Err(LinkError::BadSignature);
        }
        if now > expires {
            return Err(LinkError::Expired { expires, now });
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented format, so storage written in another language can check links:
    /// hex HMAC-SHA256 over `"{path}\n{expires}"` (value from Python's `hmac` module).
    #[test]
    fn the_signature_is_hmac_sha256_of_path_and_expiry() {
        let key = SigningKey::new(vec![7; 32]).unwrap();
        assert_eq!(
            key.sign("/1.0/linux-x64/claude", 100),
            "713b8d407847a3bb8bb6a4acfbe119458d36481c797bf66f92a5da9f1b3e516e"
        );
    }

    #[test]
    fn links_are_checked_for_signature_then_expiry() {
        let key = SigningKey::new(vec![7; 32]).unwrap();
        let q = key.query("/1.0/linux-x64/claude", 100);
        assert_eq!(key.check("/1.0/linux-x64/claude", Some(&q), 100), Ok(()));
        assert_eq!(
            key.check("/1.0/linux-x64/claude", Some(&q), 101),
            Err(LinkError::Expired {
                expires: 100,
                now: 101
            })
        );
        assert_eq!(
            key.check("/1.0/linux-arm64/claude", Some(&q), 50),
            Err(LinkError::BadSignature)
        );
        let longer = q.replace("expires=100", "expires=1000");
        assert_eq!(
            key.check("/1.0/linux-x64/claude", Some(&longer), 50),
            Err(LinkError::BadSignature)
        );
        assert_eq!(key.check("/x", None, 0), Err(LinkError::Missing));
        let other = SigningKey::new(vec![8; 32]).unwrap();
        assert_eq!(
            other.check("/1.0/linux-x64/claude", Some(&q), 50),
            Err(LinkError::BadSignature)
        );
    }
}
