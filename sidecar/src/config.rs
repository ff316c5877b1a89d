//! Daemon configuration: built-in defaults, then the TOML file, then
//! `PF_SIDECAR_<SECTION>__<KEY>` environment variables, then command-line
//! overrides. Every key is documented in `frr-integration/pf-sidecar.toml`.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::datapath::Capacities;

pub const DEFAULT_PATH: &str = "/etc/pf-sidecar/pf-sidecar.toml";
const ENV_PREFIX: &str = "PF_SIDECAR";

/// The defaults, as TOML, so the first layer reads like the file an
/// operator writes.
const DEFAULTS: &str = r#"
[general]
log_level = "info"
pin_dir = "/sys/fs/bpf/pf-sidecar"
interfaces = []
xdp_mode = "auto"

[datapath]
mode = "cache+fib"
dry_run = false
hash_seed = 0
heartbeat_interval_ms = 500
fail_safe_after_ms = 3000

[capacity]
tbl8_groups = 4096
v6_routes = 300000
nexthops = 16384
ecmp_groups = 2048
ports = 1024

[routes]
from = "fpm"
tables = [254]

[fpm]
listen = "127.0.0.1:2620"
allow = []
offload_replies = false
replay_quiet_ms = 1000
replay_max_ms = 60000

[kernel]
receive_buffer = 8388608

[metrics]
listen = "127.0.0.1:9469"

[events]
endpoint = ""
"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub general: General,
    pub datapath: DatapathConfig,
    pub capacity: Capacities,
    pub routes: Routes,
    pub fpm: Fpm,
    pub kernel: Kernel,
    pub metrics: Metrics,
    pub events: Events,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    pub log_level: String,
    pub pin_dir: PathBuf,
    pub interfaces: Vec<String>,
    pub xdp_mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatapathConfig {
    pub mode: String,
    pub dry_run: bool,
    pub hash_seed: u32,
    pub heartbeat_interval_ms: u64,
    pub fail_safe_after_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    pub from: String,
    pub tables: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fpm {
    pub listen: String,
    pub allow: Vec<String>,
    pub offload_replies: bool,
    pub replay_quiet_ms: u64,
    pub replay_max_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    pub receive_buffer: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    pub endpoint: String,
}

/// A configuration problem, naming the key, the value and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Read(String),
    #[error("`{key}` = {value}: {allowed}")]
    Invalid {
        key: &'static str,
        value: String,
        allowed: String,
    },
}

fn invalid(
    key: &'static str,
    value: impl std::fmt::Debug,
    allowed: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: format!("{value:?}"),
        allowed: allowed.into(),
    }
}

/// Command-line values that override every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub pin_dir: Option<PathBuf>,
    pub log_level: Option<String>,
}

impl Config {
    /// Loads the layers. A missing file at the default path is fine; a
    /// missing file that was named explicitly is an error.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(path, &env, overrides)
    }

    /// [`Config::load`] with the environment given explicitly (for tests).
    pub fn load_from(
        path: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        use config::{Environment, File, FileFormat};
        let (file, required) = match path {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        if required && !file.exists() {
            return Err(ConfigError::Read(format!(
                "configuration file {} does not exist",
                file.display()
            )));
        }
        let env_source = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("general.interfaces")
            .with_list_parse_key("routes.tables")
            .with_list_parse_key("fpm.allow")
            .try_parsing(true)
            .source(Some(
                env.iter()
                    .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
                    .cloned()
                    .collect(),
            ));
        let mut builder = config::Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(
                File::from(file.clone())
                    .format(FileFormat::Toml)
                    .required(required),
            )
            .add_source(env_source);
        if let Some(pin_dir) = &overrides.pin_dir {
            builder = builder
                .set_override("general.pin_dir", pin_dir.display().to_string())
                .map_err(|e| ConfigError::Read(e.to_string()))?;
        }
        if let Some(level) = &overrides.log_level {
            builder = builder
                .set_override("general.log_level", level.clone())
                .map_err(|e| ConfigError::Read(e.to_string()))?;
        }
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Read(format!("reading {}: {e}", file.display())))?;
        let config: Config = merged.try_deserialize().map_err(|e| {
            ConfigError::Read(format!(
                "in {} or PF_SIDECAR_* variables: {e}",
                file.display()
            ))
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
        if !LEVELS.contains(&self.general.log_level.as_str()) {
            return Err(invalid(
                "general.log_level",
                &self.general.log_level,
                format!("one of {LEVELS:?}"),
            ));
        }
        if !["auto", "native", "generic"].contains(&self.general.xdp_mode.as_str()) {
            return Err(invalid(
                "general.xdp_mode",
                &self.general.xdp_mode,
                "one of auto, native, generic",
            ));
        }
        if !self.general.pin_dir.is_absolute() {
            return Err(invalid(
                "general.pin_dir",
                &self.general.pin_dir,
                "an absolute path on bpffs",
            ));
        }
        if self.datapath_mode().is_none() {
            return Err(invalid(
                "datapath.mode",
                &self.datapath.mode,
                "one of cache+fib, fib-only, cache-only",
            ));
        }
        if self.datapath.heartbeat_interval_ms == 0 {
            return Err(invalid("datapath.heartbeat_interval_ms", 0, "at least 1"));
        }
        let fail_safe = self.datapath.fail_safe_after_ms;
        if fail_safe != 0 && fail_safe < 2 * self.datapath.heartbeat_interval_ms {
            return Err(invalid(
                "datapath.fail_safe_after_ms",
                fail_safe,
                "0 (off) or at least twice datapath.heartbeat_interval_ms",
            ));
        }
        let c = &self.capacity;
        for (key, value, max) in [
            ("capacity.tbl8_groups", c.tbl8_groups, 1 << 20),
            ("capacity.v6_routes", c.v6_routes, 16 << 20),
            (
                "capacity.nexthops",
                c.nexthops,
                pf_common::route::MAX_INDEX / 2,
            ),
            ("capacity.ecmp_groups", c.ecmp_groups, 1 << 16),
            ("capacity.ports", c.ports, 1 << 16),
        ] {
            if value == 0 || value > max {
                return Err(invalid(key, value, format!("1 to {max}")));
            }
        }
        if !["fpm", "kernel"].contains(&self.routes.from.as_str()) {
            return Err(invalid(
                "routes.from",
                &self.routes.from,
                "fpm (FRR zebra's FPM stream) or kernel (rtnetlink, for BIRD)",
            ));
        }
        if self.routes.tables.is_empty() {
            return Err(invalid(
                "routes.tables",
                &self.routes.tables,
                "at least one table id (254 is main)",
            ));
        }
        let listen = self.fpm_listen()?;
        let allow = self.fpm_allow()?;
        if !listen.ip().is_loopback() && allow.is_empty() {
            return Err(invalid(
                "fpm.allow",
                &self.fpm.allow,
                format!("a non-empty list of peer addresses, because fpm.listen ({listen}) is not loopback"),
            ));
        }
        if self.fpm.replay_quiet_ms == 0 || self.fpm.replay_max_ms < self.fpm.replay_quiet_ms {
            return Err(invalid(
                "fpm.replay_quiet_ms",
                self.fpm.replay_quiet_ms,
                "at least 1 and no more than fpm.replay_max_ms",
            ));
        }
        if self.kernel.receive_buffer < 64 * 1024 {
            return Err(invalid(
                "kernel.receive_buffer",
                self.kernel.receive_buffer,
                "at least 65536 bytes",
            ));
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "metrics.listen",
                &self.metrics.listen,
                "\"\" (off) or ADDRESS:PORT, e.g. \"127.0.0.1:9469\"",
            ));
        }
        let endpoint = &self.events.endpoint;
        let loopback_tcp = endpoint
            .strip_prefix("tcp://")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .is_some_and(|a| a.ip().is_loopback());
        if !endpoint.is_empty() && !endpoint.starts_with("ipc://") && !loopback_tcp {
            return Err(invalid(
                "events.endpoint",
                endpoint,
                "\"\" (off), ipc://PATH, or tcp://LOOPBACK:PORT",
            ));
        }
        Ok(())
    }

    pub fn datapath_mode(&self) -> Option<pf_common::Mode> {
        use pf_common::Mode;
        [Mode::CacheAndFib, Mode::FibOnly, Mode::CacheOnly]
            .into_iter()
            .find(|m| m.name() == self.datapath.mode)
    }

    pub fn fpm_listen(&self) -> Result<SocketAddr, ConfigError> {
        self.fpm
            .listen
            .parse()
            .map_err(|_| invalid("fpm.listen", &self.fpm.listen, "ADDRESS:PORT"))
    }

    pub fn fpm_allow(&self) -> Result<Vec<IpAddr>, ConfigError> {
        self.fpm
            .allow
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|_| invalid("fpm.allow", a, "IP addresses"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut file = tempfile_in_target();
        file.1.write_all(toml.as_bytes()).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(Some(&file.0), &env, &Overrides::default())
    }

    fn tempfile_in_target() -> (PathBuf, std::fs::File) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "pf-sidecar-config-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&path).unwrap();
        (path, file)
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.fpm.listen, "127.0.0.1:2620");
        assert_eq!(config.routes.from, "fpm");
        assert_eq!(config.routes.tables, vec![254]);
        assert_eq!(config.capacity, Capacities::default());
    }

    #[test]
    fn the_file_then_the_environment_then_flags_win_in_that_order() {
        let toml = "[routes]\nfrom = \"kernel\"\n[general]\nlog_level = \"debug\"\n";
        let config = load(
            toml,
            &[
                ("PF_SIDECAR_GENERAL__LOG_LEVEL", "warn"),
                ("PF_SIDECAR_ROUTES__TABLES", "254,100"),
            ],
        )
        .unwrap();
        assert_eq!(config.routes.from, "kernel");
        assert_eq!(config.general.log_level, "warn");
        assert_eq!(config.routes.tables, vec![254, 100]);
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let err = load("[fpm]\nlisten_port = 2620\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn a_bad_value_names_the_key_the_value_and_what_is_allowed() {
        let err = load("[routes]\nfrom = \"bgp\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes.from") && err.contains("\"bgp\"") && err.contains("kernel"),
            "{err}"
        );
    }

    #[test]
    fn a_non_loopback_fpm_listener_needs_an_allow_list() {
        let err = load("[fpm]\nlisten = \"0.0.0.0:2620\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("fpm.allow"), "{err}");
        assert!(load(
            "[fpm]\nlisten = \"0.0.0.0:2620\"\nallow = [\"192.0.2.1\"]\n",
            &[]
        )
        .is_ok());
    }

    #[test]
    fn events_go_to_ipc_or_loopback_tcp_and_metrics_to_an_address_and_port() {
        for ok in [
            "[events]\nendpoint = \"ipc:///run/pf-sidecar/events\"\n",
            "[events]\nendpoint = \"tcp://127.0.0.1:9470\"\n",
            "[metrics]\nlisten = \"\"\n",
        ] {
            assert!(load(ok, &[]).is_ok(), "{ok}");
        }
        let err = load("[events]\nendpoint = \"tcp://192.0.2.1:9470\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("events.endpoint"), "{err}");
        let err = load("[metrics]\nlisten = \"localhost\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("metrics.listen"), "{err}");
    }

    #[test]
    fn a_named_file_that_does_not_exist_is_an_error() {
        let err = Config::load_from(
            Some(Path::new("/nonexistent/pf.toml")),
            &[],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}

#[cfg(test)]
mod example {
    use super::*;

    const EXAMPLE: &str = include_str!("../../frr-integration/pf-sidecar.toml");

    #[test]
    fn the_commented_example_parses_to_the_defaults() {
        let path =
            std::env::temp_dir().join(format!("pf-sidecar-example-{}.toml", std::process::id()));
        std::fs::write(&path, EXAMPLE).unwrap();
        let from_example = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap();
        let empty =
            std::env::temp_dir().join(format!("pf-sidecar-empty-{}.toml", std::process::id()));
        std::fs::write(&empty, "").unwrap();
        let defaults = Config::load_from(Some(&empty), &[], &Overrides::default()).unwrap();
        assert_eq!(from_example, defaults);
    }

    #[test]
    fn every_default_key_is_documented_in_the_example() {
        for line in DEFAULTS.lines().filter(|l| l.contains(" = ")) {
            let key = line.split(" = ").next().unwrap().trim();
            assert!(
                EXAMPLE.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "{key} is not in the example"
            );
        }
    }
}
