//! The plugin's configuration: the `config` table of its TOML block, as
//! JSON text.

use serde::de::IgnoredAny;

/// Where the definitions are when the config does not say.
pub const DEFAULT_DIR: &str = "/etc/muster/services.d";

/// What the plugin reads from its config.
#[derive(Debug, PartialEq, Eq)]
pub struct Config {
    /// The directory of definition files (not read recursively).
    pub dir: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    dir: Option<String>,
    // Read by the node itself (how often to reconcile, whether to clean up
    // at start); accepted here so that they are not "unknown".
    #[serde(default)]
    #[allow(dead_code)]
    resync: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    cleanup: Option<IgnoredAny>,
}

impl Config {
    /// Parses the config. Empty text is an empty table. The error names the
    /// key: `config: unknown field `x`, expected one of ...`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig {
                dir: None,
                resync: None,
                cleanup: None,
            }
        } else {
            serde_json::from_str(text).map_err(|e| format!("config: {e}"))?
        };
        let dir = raw.dir.unwrap_or_else(|| DEFAULT_DIR.to_string());
        if dir.is_empty() {
            return Err("config.dir: must not be empty".to_string());
        }
        Ok(Config { dir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        assert_eq!(Config::parse("{}").map(|c| c.dir), Ok(DEFAULT_DIR.into()));
        assert_eq!(Config::parse("").map(|c| c.dir), Ok(DEFAULT_DIR.into()));
    }

    #[test]
    fn dir_and_node_keys() {
        let config = Config::parse(r#"{"dir": "/srv/defs", "resync": "30s", "cleanup": false}"#);
        assert_eq!(config.map(|c| c.dir), Ok("/srv/defs".into()));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse(r#"{"directory": "/srv"}"#).expect_err("unknown key");
        assert!(
            err.starts_with("config: unknown field `directory`"),
            "{err}"
        );
    }

    #[test]
    fn bad_dir() {
        let err = Config::parse(r#"{"dir": 5}"#).expect_err("not a string");
        assert!(
            err.starts_with("config: invalid type: integer `5`"),
            "{err}"
        );
        let err = Config::parse(r#"{"dir": ""}"#).expect_err("empty");
        assert_eq!(err, "config.dir: must not be empty");
    }
}
