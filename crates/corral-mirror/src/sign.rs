//! Signed, expiring storage links (in the manner of S3 pre-signed URLs).
//!
//! A link is `{storage}/{path}?expires={unix seconds}&signature={hex}` where the signature is
//! HMAC-SHA256 over `"{path}\n{expires}"` with a key read from a file. The storage listener
//! checks the signature first (so a tampered expiry is "invalid", not "expired"), then the
//! expiry.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The secret shared by the mirror (which signs) and the storage endpoint (which checks).
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

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
        Ok(SigningKey(bytes))
    }

    /// Hex HMAC-SHA256 of `path` and `expires`.
    pub fn sign(&self, path: &str, expires: u64) -> String {
        hex::encode(hmac_sha256(
            &self.0,
            format!("{path}\n{expires}").as_bytes(),
        ))
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
        let expected = hmac_sha256(&self.0, format!("{path}\n{expires}").as_bytes());
        if !constant_time_eq(&expected, &signature) {
            return Err(LinkError::BadSignature);
        }
        if now > expires {
            return Err(LinkError::Expired { expires, now });
        }
        Ok(())
    }
}

/// HMAC (RFC 2104) over SHA-256.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_with_long_key_matches_rfc4231_case_6() {
        let key = [0xaau8; 131];
        let mac = hmac_sha256(
            &key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
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
