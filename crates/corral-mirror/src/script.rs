//! `install.sh`: the POSIX bootstrap the mirror serves, with this deployment's settings baked in.

const TEMPLATE: &str = include_str!("install.sh");

/// The deployment settings baked into `install.sh` (each can still be overridden by the user).
#[derive(Clone, Debug, Default)]
pub struct ScriptSettings {
    pub gateway: Option<String>,
    pub region: Option<String>,
    pub model: Option<String>,
    pub channel: Option<String>,
    pub first_party: bool,
}

impl ScriptSettings {
    /// The script for a mirror reachable at `mirror_url`.
    pub fn render(&self, mirror_url: &str) -> String {
        let opt = |v: &Option<String>| sh_quote(v.as_deref().unwrap_or(""));
        TEMPLATE
            .replace("@MIRROR_DISPLAY@", &mirror_url.replace(['\n', '\r'], ""))
            .replace("@MIRROR@", &sh_quote(mirror_url))
            .replace("@GATEWAY@", &opt(&self.gateway))
            .replace("@REGION@", &opt(&self.region))
            .replace("@MODEL@", &opt(&self.model))
            .replace("@CHANNEL@", &opt(&self.channel))
            .replace("@FIRST_PARTY@", if self.first_party { "1" } else { "0" })
    }
}

/// Quotes `value` for sh. A NUL byte cannot be passed to a shell at all; it is dropped
/// (settings come from the mirror's own command line, never from a request).
fn sh_quote(value: &str) -> String {
    let value = value.replace('\0', "");
    shlex::try_quote(&value)
        .map(|q| q.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The baked settings, as a real `sh` reads them back from the rendered script.
    fn baked(script: &str, name: &str) -> String {
        let assignments: String = script
            .lines()
            .filter(|l| l.starts_with("BAKED_"))
            .map(|l| format!("{l}\n"))
            .collect();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{assignments}printf %s \"${name}\""))
            .output()
            .expect("run sh");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn values_are_quoted_so_they_cannot_run_code() {
        let hostile = "https://gw.test/'; touch /tmp/corral-pwned; '$(id)`id`\"";
        let settings = ScriptSettings {
            gateway: Some(hostile.into()),
            ..Default::default()
        };
        let script = settings.render("https://mirror.test");
        assert_eq!(baked(&script, "BAKED_GATEWAY"), hostile);
        assert_eq!(baked(&script, "BAKED_MIRROR"), "https://mirror.test");
        assert_eq!(baked(&script, "BAKED_REGION"), "");
        for placeholder in ["@MIRROR@", "@GATEWAY@", "@REGION@", "@MODEL@", "@CHANNEL@"] {
            assert!(
                !script.contains(placeholder),
                "{placeholder} left in the script"
            );
        }
    }
}
