//! Gateway keys: the keys file, hashing, live reload and authentication.
//!
//! A key is `cgw_<id>_<64 hex digits>`: 256 random bits from the system RNG. The file stores
//! only `sha256:<hex>` of the whole key. A fast hash is enough here because the secret has
//! full entropy (no dictionary to try); a slow password hash would only add latency to every
//! request. The id inside the key finds the record; the hashes are compared in constant time.
//!
//! The file is TOML and is re-read when its size, mtime or inode changes (checked on every
//! request, one `stat`), so a revocation takes effect on the next request. An unreadable or
//! invalid file keeps the last good set in force and is reported in the log.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock;

pub const KEY_PREFIX: &str = "cgw_";
/// How corral's placeholders for a gateway key begin (`corral install` uses
/// `corral-placeholder-gateway-key`; docs/policy.md suggests the prefix).
pub const PLACEHOLDER_PREFIX: &str = "corral-placeholder";

/// Requests and tokens per minute; absent means unlimited.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

/// One key record as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    /// `sha256:<hex>` of the whole key string.
    pub hash: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Client-visible model ids this key may use (`*` and trailing-`*` prefixes allowed).
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: Limits,
    /// RFC 3339; the key is refused from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// RFC 3339 time of revocation; a revoked key is kept for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

fn all_models() -> Vec<String> {
    vec!["*".into()]
}

/// The whole keys file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// Per-team limits, shared by all the team's keys.
    #[serde(default)]
    pub teams: BTreeMap<String, Limits>,
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
}

impl KeysFile {
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<KeysFile> {
        let file: KeysFile = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("keys file {}: {e}", path.display()))?;
        let mut seen = std::collections::HashSet::new();
        for key in &file.keys {
            if !valid_id(&key.id) {
                anyhow::bail!(
                    "keys file {}: key id {:?} must be 1-64 characters of a-z, 0-9 and '-'",
                    path.display(),
                    key.id
                );
            }
            if !seen.insert(key.id.as_str()) {
                anyhow::bail!(
                    "keys file {}: key id {:?} appears twice",
                    path.display(),
                    key.id
                );
            }
            if parse_hash(&key.hash).is_none() {
                anyhow::bail!(
                    "keys file {}: key {:?} has hash {:?}; expected sha256:<64 hex digits>",
                    path.display(),
                    key.id,
                    key.hash
                );
            }
            if let Some(exp) = &key.expires {
                if clock::parse_rfc3339(exp).is_none() {
                    anyhow::bail!(
                        "keys file {}: key {:?} has expires = {:?}; use RFC 3339 like 2027-01-31T00:00:00Z",
                        path.display(),
                        key.id,
                        exp
                    );
                }
            }
        }
        Ok(file)
    }

    pub fn load(path: &Path) -> anyhow::Result<KeysFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => KeysFile::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeysFile::default()),
            Err(e) => Err(anyhow::anyhow!(
                "cannot read keys file {}: {e}",
                path.display()
            )),
        }
    }

    /// Writes the file atomically (temp file, fsync, rename), mode 0600.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = format!(
            "# corral gateway keys: managed by `corral gateway keys`. Only hashes are stored.\n{}",
            toml::to_string_pretty(self)?
        );
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("keys"),
            std::process::id()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
            .map_err(|e| anyhow::anyhow!("cannot replace {}: {e}", path.display()))?;
        Ok(())
    }
}

pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    let v = hex::decode(hex).ok()?;
    v.try_into().ok()
}

pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// A new key for `id`: `(key, hash)`.
pub fn generate(id: &str) -> anyhow::Result<(String, String)> {
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let key = format!("{KEY_PREFIX}{id}_{}", hex::encode(secret));
    let hash = hash_key(&key);
    Ok((key, hash))
}

/// A random key id (`k` + 10 hex digits).
pub fn random_id() -> anyhow::Result<String> {
    let mut b = [0u8; 5];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(format!("k{}", hex::encode(b)))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the optimiser from short-circuiting the loop.
    std::hint::black_box(diff) == 0
}

/// Who is calling, once authenticated.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: String,
    pub owner: String,
    pub team: Option<String>,
    pub models: Vec<String>,
    pub limits: Limits,
    pub team_limits: Limits,
}

impl Caller {
    /// Whether this key may use the client-visible model `id`.
    pub fn may_use(&self, id: &str) -> bool {
        self.models.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => p == id,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no credentials: send your corral gateway key as `x-api-key` or `Authorization: Bearer`"
    )]
    Missing,
    #[error("AWS SigV4-signed requests are not accepted by the corral gateway: it never sees your AWS secret. Use your gateway key as a bearer token (AWS_BEARER_TOKEN_BEDROCK, or apiKeyHelper with CLAUDE_CODE_SKIP_BEDROCK_AUTH=1)")]
    SigV4Unsupported,
    #[error("the credential is not a corral gateway key (expected cgw_<id>_<secret>)")]
    Malformed,
    /// A placeholder of corral's `credentials`, which reached the gateway unreplaced.
    #[error("the credential is a corral placeholder, not a gateway key: corral run's proxy puts the key in its place only in requests of the programs its policy's `credentials` bind it to, to the endpoint they bind it to (with `tls: terminate`). Run the client inside corral run with such a policy (docs/gateway.md, \"The key the sandbox never holds\")")]
    Placeholder,
    #[error("unknown or wrong gateway key (key id {0})")]
    Unknown(String),
    #[error("gateway key {0} was revoked")]
    Revoked(String),
    #[error("gateway key {0} expired")]
    Expired(String),
}

impl AuthError {
    /// The key id named by the credential, for the audit log.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            AuthError::Unknown(id) | AuthError::Revoked(id) | AuthError::Expired(id) => Some(id),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let md = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: md.ino(),
        len: md.len(),
        mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
    })
}

/// The live keys file.
pub struct KeyStore {
    path: PathBuf,
    state: Mutex<(Option<Stamp>, Arc<KeysFile>)>,
}

impl KeyStore {
    /// Loads `path`; a missing file is an error here (serving with no keys is a misconfiguration).
    pub fn open(path: &Path) -> anyhow::Result<KeyStore> {
        if !path.exists() {
            anyhow::bail!(
                "keys file {} does not exist: create a key with `corral gateway keys add --keys-file {} --owner NAME`",
                path.display(),
                path.display()
            );
        }
        let st = stamp(path);
        let file = KeysFile::load(path)?;
        Ok(KeyStore {
            path: path.to_path_buf(),
            state: Mutex::new((st, Arc::new(file))),
        })
    }

    /// The current keys, re-read if the file changed.
    pub fn current(&self) -> Arc<KeysFile> {
        let now = stamp(&self.path);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now != state.0 {
            state.0 = now;
            if now.is_none() {
                // Fail closed: a deleted keys file revokes everything.
                tracing::error!(path = %self.path.display(), "keys file disappeared: refusing every key until it is back");
                state.1 = Arc::new(KeysFile::default());
            } else {
                match KeysFile::load(&self.path) {
                    Ok(file) => {
                        tracing::info!(path = %self.path.display(), keys = file.keys.len(), "keys file reloaded");
                        state.1 = Arc::new(file);
                    }
                    Err(e) => tracing::error!("{e:#}; keeping the previous keys in force"),
                }
            }
        }
        state.1.clone()
    }

    /// Checks a presented key.
    pub fn authenticate(&self, presented: &str) -> Result<Caller, AuthError> {
        let presented = presented.trim();
        if presented.starts_with(PLACEHOLDER_PREFIX) {
            return Err(AuthError::Placeholder);
        }
        let rest = presented
            .strip_prefix(KEY_PREFIX)
            .ok_or(AuthError::Malformed)?;
        let (id, secret) = rest.rsplit_once('_').ok_or(AuthError::Malformed)?;
        if !valid_id(id) || secret.len() != 64 {
            return Err(AuthError::Malformed);
        }
        let file = self.current();
        let record = file
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| AuthError::Unknown(id.to_string()))?;
        let want = parse_hash(&record.hash).ok_or_else(|| AuthError::Unknown(id.to_string()))?;
        let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if !constant_time_eq(&want, &got) {
            return Err(AuthError::Unknown(id.to_string()));
        }
        if record.revoked.is_some() {
            return Err(AuthError::Revoked(id.to_string()));
        }
        if let Some(exp) = record.expires.as_deref().and_then(clock::parse_rfc3339) {
            if clock::now_secs() >= exp {
                return Err(AuthError::Expired(id.to_string()));
            }
        }
        let team_limits = record
            .team
            .as_ref()
            .and_then(|t| file.teams.get(t).copied())
            .unwrap_or_default();
        Ok(Caller {
            key_id: record.id.clone(),
            owner: record.owner.clone(),
            team: record.team.clone(),
            models: record.models.clone(),
            limits: record.limits,
            team_limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(file: &KeysFile) -> (tempfile::TempDir, KeyStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        file.save(&path).unwrap();
        let store = KeyStore::open(&path).unwrap();
        (dir, store)
    }

    fn record(id: &str, hash: String) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            hash,
            owner: "alice".into(),
            team: Some("eng".into()),
            models: vec!["claude-*".into()],
            limits: Limits::default(),
            expires: None,
            created: None,
            revoked: None,
        }
    }

    #[test]
    fn a_generated_key_authenticates_and_a_tampered_one_does_not() {
        let (key, hash) = generate("alice-laptop").unwrap();
        let (_d, store) = store_with(&KeysFile {
            keys: vec![record("alice-laptop", hash)],
            ..Default::default()
        });
        let caller = store.authenticate(&key).unwrap();
        assert_eq!(caller.owner, "alice");
        assert!(caller.may_use("claude-sonnet"));
        assert!(!caller.may_use("gpt"));
        let mut bad = key.clone();
        bad.pop();
        bad.push('0');
        if bad == key {
            bad.pop();
            bad.push('1');
        }
        assert_eq!(
            store.authenticate(&bad).unwrap_err(),
            AuthError::Unknown("alice-laptop".into())
        );
        assert_eq!(
            store.authenticate("sk-ant-xyz").unwrap_err(),
            AuthError::Malformed
        );
        assert_eq!(
            store
                .authenticate("corral-placeholder-gateway-key")
                .unwrap_err(),
            AuthError::Placeholder
        );
    }

    #[test]
    fn revocation_is_seen_on_the_next_request() {
        let (key, hash) = generate("k1").unwrap();
        let mut file = KeysFile {
            keys: vec![record("k1", hash)],
            ..Default::default()
        };
        let (dir, store) = store_with(&file);
        assert!(store.authenticate(&key).is_ok());
        file.keys[0].revoked = Some(clock::rfc3339(clock::now_secs()));
        file.save(&dir.path().join("keys.toml")).unwrap();
        assert_eq!(
            store.authenticate(&key).unwrap_err(),
            AuthError::Revoked("k1".into())
        );
    }

    #[test]
    fn expired_keys_and_invalid_files_are_refused() {
        let (key, hash) = generate("k2").unwrap();
        let mut rec = record("k2", hash);
        rec.expires = Some("2001-01-01".into());
        let (_d, store) = store_with(&KeysFile {
            keys: vec![rec],
            ..Default::default()
        });
        assert_eq!(
            store.authenticate(&key).unwrap_err(),
            AuthError::Expired("k2".into())
        );
        let err = KeysFile::parse(
            "[[keys]]\nid = \"A B\"\nhash=\"x\"\nowner=\"o\"\n",
            Path::new("k"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("a-z"), "{err}");
    }
}
