//! The keys of an `[[exporter]]` block's `config` that the node reads
//! itself; the rest of the table goes to the plugin untouched.

use std::time::Duration;

use crate::api::decode::parse_duration;
use crate::config::PluginBlock;

/// How the runner drives one exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Export only instances with no critical check (Registrator exports
    /// what runs; Consul consumers ask for `?passing`). Default true.
    pub only_passing: bool,
    /// Most changes handed to one `apply` call.
    pub batch: usize,
    /// Deadline of one `open`, `apply` or `tick` call; `resync` gets three
    /// times as long.
    pub call_timeout: Duration,
    /// The config the plugin sees (JSON), without the keys above.
    pub plugin_config: String,
}

/// Keys the node reads and does not pass on.
const NODE_KEYS: [&str; 3] = ["only_passing", "batch", "call_timeout"];

impl Settings {
    /// Reads the node's keys of `block.config`; the error names the field.
    pub fn from_block(block: &PluginBlock) -> Result<Settings, String> {
        let field =
            |key: &str, why: &str| format!("exporter \"{}\": config.{key}: {why}", block.name);
        let mut settings = Settings {
            only_passing: true,
            batch: 512,
            call_timeout: Duration::from_secs(10),
            plugin_config: String::new(),
        };
        if let Some(v) = block.config.get("only_passing") {
            settings.only_passing = v
                .as_bool()
                .ok_or_else(|| field("only_passing", "must be true or false"))?;
        }
        if let Some(v) = block.config.get("batch") {
            settings.batch = v
                .as_integer()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| field("batch", "must be a number from 1 to 10000"))?
                as usize;
        }
        if let Some(v) = block.config.get("call_timeout") {
            let text = v
                .as_str()
                .ok_or_else(|| field("call_timeout", "must be a duration such as \"10s\""))?;
            settings.call_timeout = parse_duration(text)
                .ok()
                .filter(|d| *d >= Duration::from_millis(100))
                .ok_or_else(|| {
                    field(
                        "call_timeout",
                        "must be a duration of at least 100ms, such as \"10s\"",
                    )
                })?;
        }
        let mut rest = block.config.clone();
        for key in NODE_KEYS {
            rest.remove(key);
        }
        settings.plugin_config =
            serde_json::Value::Object(crate::plugins::toml_to_json(&rest)).to_string();
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(config: &str) -> PluginBlock {
        PluginBlock {
            name: "etcd".into(),
            plugin: "builtin:etcd-exporter".into(),
            grant: Default::default(),
            config: toml::from_str(config).unwrap(),
            memory_mb: None,
            fuel: None,
        }
    }

    #[test]
    fn node_keys_are_read_and_not_passed_on() {
        let s = Settings::from_block(&block("only_passing = false\nbatch = 10\nprefix = \"/x\""))
            .unwrap();
        assert!(!s.only_passing);
        assert_eq!(s.batch, 10);
        assert_eq!(s.plugin_config, r#"{"prefix":"/x"}"#);
        let d = Settings::from_block(&block("")).unwrap();
        assert!(d.only_passing);
        assert_eq!(d.plugin_config, "{}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = Settings::from_block(&block("only_passing = \"yes\"")).unwrap_err();
        assert!(e.contains("config.only_passing"), "{e}");
        let e = Settings::from_block(&block("batch = 0")).unwrap_err();
        assert!(e.contains("config.batch"), "{e}");
        let e = Settings::from_block(&block("call_timeout = \"soon\"")).unwrap_err();
        assert!(e.contains("config.call_timeout"), "{e}");
    }
}
