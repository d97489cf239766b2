//! Merging the gateway settings into `~/.claude/settings.json`.
//!
//! Every key the user already had stays, in its place (serde_json keeps insertion order);
//! only the keys corral manages are set. The values those keys had before corral first set
//! them are kept in the install record so `corral uninstall` can put them back.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use serde_json::{Map, Value};

/// A managed key: either top level (`model`) or inside `env` (`env.AWS_REGION`).
pub type KeyPath = String;

/// The settings corral wants, as (key path, value) in the order they are written.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired(pub Vec<(KeyPath, Value)>);

/// Inputs for [`Desired::for_gateway`].
pub struct GatewaySettings<'a> {
    pub gateway: &'a str,
    pub region: &'a str,
    pub model: Option<&'a str>,
    pub first_party: bool,
    pub helper: &'a Path,
    /// The corporate CA (absolute path): Claude Code trusts it through NODE_EXTRA_CA_CERTS,
    /// which it reads from the settings' `env` block.
    pub ca_file: Option<&'a Path>,
}

impl Desired {
    pub fn for_gateway(s: &GatewaySettings<'_>) -> Desired {
        let mut keys: Vec<(KeyPath, Value)> = Vec::new();
        let mut env = |k: &str, v: &str| keys.push((format!("env.{k}"), Value::from(v)));
        if s.first_party {
            env("ANTHROPIC_BASE_URL", s.gateway);
        } else {
            env("CLAUDE_CODE_USE_BEDROCK", "1");
            env("AWS_REGION", s.region);
            env("ANTHROPIC_BEDROCK_BASE_URL", s.gateway);
            env("CLAUDE_CODE_SKIP_BEDROCK_AUTH", "1");
        }
        if let Some(ca) = s.ca_file {
            env("NODE_EXTRA_CA_CERTS", &ca.to_string_lossy());
        }
        env("DISABLE_AUTOUPDATER", "1");
        env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
        env("CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL", "1");
        if let Some(model) = s.model {
            // Pinning every tier stops the client from probing the gateway for models.
            for k in [
                "ANTHROPIC_MODEL",
                "ANTHROPIC_DEFAULT_OPUS_MODEL",
                "ANTHROPIC_DEFAULT_SONNET_MODEL",
                "ANTHROPIC_DEFAULT_HAIKU_MODEL",
            ] {
                env(k, model);
            }
            keys.push(("model".into(), Value::from(model)));
        }
        keys.push((
            "apiKeyHelper".into(),
            Value::from(s.helper.to_string_lossy().into_owned()),
        ));
        Desired(keys)
    }
}

/// Reads and parses the settings file; a missing file is an empty object. Anything else that
/// is not a JSON object is refused, and the file is left as it is.
pub fn load(path: &Path) -> anyhow::Result<Option<Map<String, Value>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(Some(Map::new()));
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{} is not valid JSON (line {}, column {}: {e}); it was left untouched. Fix it or move it away, then run the installer again",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    match value {
        Value::Object(map) => {
            if map.get("env").is_some_and(|env| !env.is_object()) {
                bail!(
                    "{}: \"env\" is not an object; it was left untouched. Fix it, then run the installer again",
                    path.display()
                );
            }
            Ok(Some(map))
        }
        _ => bail!(
            "{} does not hold a JSON object; it was left untouched. Fix it or move it away, then run the installer again",
            path.display()
        ),
    }
}

/// Current value at a key path.
pub fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match key.strip_prefix("env.") {
        Some(k) => map.get("env")?.as_object()?.get(k),
        None => map.get(key),
    }
}

/// Sets a key path (creating `env` at the end if needed); an existing key keeps its position.
pub fn set(map: &mut Map<String, Value>, key: &str, value: Value) {
    match key.strip_prefix("env.") {
        Some(k) => {
            let env = map
                .entry("env")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(env) = env {
                env.insert(k.to_string(), value);
            }
        }
        None => {
            map.insert(key.to_string(), value);
        }
    }
}

/// Removes a key path; drops `env` if that leaves it empty and `drop_empty_env`.
pub fn remove(map: &mut Map<String, Value>, key: &str, drop_empty_env: bool) {
    match key.strip_prefix("env.") {
        Some(k) => {
            let now_empty = match map.get_mut("env") {
                Some(Value::Object(env)) => {
                    env.shift_remove(k);
                    env.is_empty()
                }
                _ => false,
            };
            if now_empty && drop_empty_env {
                map.shift_remove("env");
            }
        }
        None => {
            map.shift_remove(key);
        }
    }
}

/// Pretty JSON with a trailing newline.
pub fn render(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(map).expect("settings serialise");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_user_keys_and_their_order() {
        let mut map: Map<String, Value> = serde_json::from_str(
            r#"{"theme":"dark","env":{"FOO":"bar","AWS_REGION":"eu-west-1"},"permissions":{"allow":["Bash(ls)"]}}"#,
        )
        .unwrap();
        let desired = Desired::for_gateway(&GatewaySettings {
            gateway: "https://gw.test/bedrock",
            region: "eu-central-1",
            model: Some("m1"),
            first_party: false,
            helper: Path::new("/h/.local/bin/corral-api-key-helper"),
            ca_file: None,
        });
        for (k, v) in &desired.0 {
            set(&mut map, k, v.clone());
        }
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["theme", "env", "permissions", "model", "apiKeyHelper"]
        );
        let env = map["env"].as_object().unwrap();
        let env_keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(&env_keys[..2], ["FOO", "AWS_REGION"]);
        assert_eq!(env["AWS_REGION"], "eu-central-1");
        assert_eq!(env["ANTHROPIC_DEFAULT_HAIKU_MODEL"], "m1");
        remove(&mut map, "env.FOO", true);
        assert!(get(&map, "env.FOO").is_none());
    }

    #[test]
    fn invalid_files_are_refused_with_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, "{\"a\": 1,,}").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(err.contains("left untouched"), "{err}");
        std::fs::write(&path, "[1]").unwrap();
        assert!(load(&path).is_err());
        std::fs::write(&path, r#"{"env": "x"}"#).unwrap();
        assert!(load(&path).is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(load(&path).unwrap().is_none());
    }
}
