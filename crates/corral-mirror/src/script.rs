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

/// Single-quotes `value` for sh.
pub fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_so_they_cannot_run_code() {
        let settings = ScriptSettings {
            gateway: Some("https://gw.test/'; rm -rf ~; '".into()),
            ..Default::default()
        };
        let script = settings.render("https://mirror.test");
        assert!(script.contains(r"BAKED_GATEWAY='https://gw.test/'\''; rm -rf ~; '\'''"));
        assert!(script.contains("BAKED_MIRROR='https://mirror.test'"));
        for placeholder in ["@MIRROR@", "@GATEWAY@", "@REGION@", "@MODEL@", "@CHANNEL@"] {
            assert!(
                !script.contains(placeholder),
                "{placeholder} left in the script"
            );
        }
    }
}
