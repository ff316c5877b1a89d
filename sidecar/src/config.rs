//! Daemon configuration: built-in defaults, then the TOML file, then
//! `PF_SIDECAR_<SECTION>__<KEY>` environment variables, then command-line
//! overrides. Every key is documented in `frr-integration/pf-sidecar.toml`.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::datapath::Capacities;

mod toml_check;

use toml_check::check_types;

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
stale_after_ms = 30000

[fpm]
listen = "127.0.0.1:2620"
allow = []
offload_replies = false
replay_quiet_ms = 1000
replay_max_ms = 60000
allowed_users = ["frr", "root"]
idle_timeout_ms = 10000
frame_timeout_ms = 5000

[kernel]
receive_buffer = 8388608

[metrics]
listen = "127.0.0.1:9469"

[events]
endpoint = ""

[frr]
pathspace = ""
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
    pub frr: Frr,
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
    /// How long the routes of a source that went away (the FPM session
    /// closed, the kernel source failing) keep forwarding from the cache.
    pub stale_after_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fpm {
    pub listen: String,
    pub allow: Vec<String>,
    pub offload_replies: bool,
    pub replay_quiet_ms: u64,
    pub replay_max_ms: u64,
    /// Users whose loopback connections may feed routes: names or uids.
    pub allowed_users: Vec<String>,
    /// A session must deliver its first complete frame within this.
    pub idle_timeout_ms: u64,
    /// A frame that has begun must complete within this.
    pub frame_timeout_ms: u64,
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

/// The FRR instance the CLI asks (`diff --against frr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frr {
    /// `vtysh -N`: empty for the default instance.
    pub pathspace: String,
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
    /// A value of the wrong TOML type (a string where a number belongs).
    #[error("`{key}` = {value}: {expected}")]
    Type {
        key: String,
        value: String,
        expected: String,
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
        let text = if file.exists() {
            Some(
                std::fs::read_to_string(&file)
                    .map_err(|e| ConfigError::Read(format!("reading {}: {e}", file.display())))?,
            )
        } else {
            None
        };
        Self::load_text(text.as_deref(), &file, env, overrides)
    }

    /// [`Config::load_from`] on the text of the file (`None`: no file),
    /// named `file` in messages.
    pub fn load_text(
        text: Option<&str>,
        file: &Path,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        use config::{Environment, File, FileFormat};
        if let Some(text) = text {
            check_types(text, file)?;
        }
        let env_source = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("general.interfaces")
            .with_list_parse_key("routes.tables")
            .with_list_parse_key("fpm.allow")
            .with_list_parse_key("fpm.allowed_users")
            .try_parsing(true)
            .source(Some(
                env.iter()
                    .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
                    .cloned()
                    .collect(),
            ));
        let mut builder = config::Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::from_str(text.unwrap_or(""), FileFormat::Toml))
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

    /// The checks run in the order of the file's sections, so the first
    /// problem in that order is the one reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_general()?;
        self.validate_datapath()?;
        validate_interfaces(&self.general.interfaces)?;
        validate_capacities(&self.capacity)?;
        self.validate_routes()?;
        self.validate_fpm()?;
        self.validate_time_bounds()?;
        self.validate_outputs()
    }

    fn validate_general(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate_datapath(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate_routes(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Who may connect as zebra, and how its replay is recognised.
    fn validate_fpm(&self) -> Result<(), ConfigError> {
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
        // The names are looked up when the daemon starts; here only their form.
        crate::source::fpm_peer::resolve_users(&self.fpm.allowed_users, |_| Some(0)).map_err(
            |e| {
                invalid(
                    "fpm.allowed_users",
                    &self.fpm.allowed_users,
                    format!("user names or uids: {e}"),
                )
            },
        )?;
        Ok(())
    }

    /// The bounds on an FPM session and on a route source that went away.
    fn validate_time_bounds(&self) -> Result<(), ConfigError> {
        for (key, value, min, max) in [
            (
                "fpm.idle_timeout_ms",
                self.fpm.idle_timeout_ms,
                100,
                3_600_000,
            ),
            (
                "fpm.frame_timeout_ms",
                self.fpm.frame_timeout_ms,
                100,
                3_600_000,
            ),
            (
                "routes.stale_after_ms",
                self.routes.stale_after_ms,
                100,
                3_600_000,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(invalid(
                    key,
                    value,
                    format!("{min} to {max} (milliseconds)"),
                ));
            }
        }
        Ok(())
    }

    /// The netlink socket, and where metrics and events are offered.
    fn validate_outputs(&self) -> Result<(), ConfigError> {
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

    /// The keys of `new` that differ from this configuration and that a
    /// reload cannot apply (the datapath section and the interface list
    /// it can).
    pub fn needs_restart(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let (a, b) = (&self.general, &new.general);
        for (key, changed) in [
            ("general.log_level", a.log_level != b.log_level),
            ("general.pin_dir", a.pin_dir != b.pin_dir),
            ("general.xdp_mode", a.xdp_mode != b.xdp_mode),
            ("capacity", self.capacity != new.capacity),
            ("routes", self.routes != new.routes),
            ("fpm", self.fpm != new.fpm),
            ("kernel", self.kernel != new.kernel),
            ("metrics", self.metrics != new.metrics),
            ("events", self.events != new.events),
        ] {
            if changed {
                keys.push(key);
            }
        }
        keys
    }

    /// Kernel memory the maps pin, by table: arrays are allocated whole
    /// when the maps are created; the IPv6 trie grows with its routes.
    pub fn pinned_memory(&self) -> Vec<(&'static str, u64)> {
        let c = &self.capacity;
        let mut tables = vec![(
            "the IPv4 first level (fixed)",
            pf_common::maps::TBL24_ELEMENTS as u64 * 8,
        )];
        for (key, value, _, bytes_each) in capacity_bounds(c) {
            tables.push((key, value as u64 * bytes_each));
        }
        tables
    }

    /// A warning naming the memory the capacities pin, when that is 1 GiB
    /// or more.
    pub fn memory_warning(&self) -> Option<String> {
        let tables = self.pinned_memory();
        let total: u64 = tables.iter().map(|(_, b)| b).sum();
        (total >= 1 << 30).then(|| {
            let parts: Vec<String> = tables
                .iter()
                .filter(|(_, b)| *b >= 64 << 20)
                .map(|(k, b)| format!("{k} {}", gib(*b)))
                .collect();
            format!(
                "the [capacity] settings pin about {} of kernel memory once full ({}); lower them unless the router needs that many entries",
                gib(total),
                parts.join(", ")
            )
        })
    }

    /// What the control loop needs of the configuration, with what the
    /// daemon found at start: links forwarding from an earlier generation
    /// (wait until reconciled before going live), its fail-safe engaged,
    /// and whether events are published.
    pub fn control_settings(
        &self,
        wait_for_reconcile: bool,
        fail_safe_at_start: bool,
        record_events: bool,
    ) -> pf_control::controller::Settings {
        use std::time::Duration;
        pf_control::controller::Settings {
            route_source: self.route_source(),
            tables: self.routes.tables.clone(),
            offload_replies: self.fpm.offload_replies,
            replay_quiet: Duration::from_millis(self.fpm.replay_quiet_ms),
            replay_max: Duration::from_millis(self.fpm.replay_max_ms),
            stale_after: Duration::from_millis(self.routes.stale_after_ms),
            record_events,
            wait_for_reconcile,
            fail_safe_at_start,
            limits: pf_control::programmer::Limits {
                nexthops: self.capacity.nexthops,
                ecmp_groups: self.capacity.ecmp_groups,
            },
        }
    }

    /// `routes.from` (validated: anything but `kernel` is `fpm`).
    pub fn route_source(&self) -> pf_control::rib::Source {
        match self.routes.from.as_str() {
            "kernel" => pf_control::rib::Source::Kernel,
            _ => pf_control::rib::Source::Fpm,
        }
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

    /// `fpm.allowed_users` resolved against the system's user database; an
    /// error if, with routes from FPM, no entry names a user of this system.
    pub fn fpm_allowed_users(&self) -> Result<crate::source::fpm_peer::AllowedUsers, ConfigError> {
        use crate::source::fpm_peer::{resolve_users, uid_of_user};
        let allowed = resolve_users(&self.fpm.allowed_users, uid_of_user).map_err(|e| {
            invalid(
                "fpm.allowed_users",
                &self.fpm.allowed_users,
                format!("user names or uids: {e}"),
            )
        })?;
        if allowed.uids.is_empty() && self.routes.from == "fpm" {
            return Err(invalid(
                "fpm.allowed_users",
                &self.fpm.allowed_users,
                format!(
                    "at least one user of this system ({} not found): zebra could never connect",
                    allowed.missing.join(", ")
                ),
            ));
        }
        Ok(allowed)
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

/// Each capacity key: its value, the most it may be, and the bytes of
/// kernel memory one unit pins (array elements are rounded up to 8 bytes;
/// nexthops and ECMP groups are double-buffered).
fn capacity_bounds(c: &Capacities) -> [(&'static str, u32, u32, u64); 5] {
    use pf_common::{EcmpGroup, Nexthop, NexthopInfo};
    let element = |size: usize| (size as u64).div_ceil(8) * 8;
    [
        // One 256-entry second-level group per /24 with longer prefixes.
        ("capacity.tbl8_groups", c.tbl8_groups, 1 << 20, 1024),
        // The IPv6 trie's node and leaf arrays, allocated at creation.
        (
            "capacity.v6_routes",
            c.v6_routes,
            16 << 20,
            u64::from(pf_common::maps::V6_NODES_PER_ROUTE) * size_of::<pf_common::V6Node>() as u64
                + u64::from(pf_common::maps::V6_LEAVES_PER_ROUTE) * 4,
        ),
        (
            "capacity.nexthops",
            c.nexthops,
            1 << 22,
            element(4) + 2 * element(size_of::<Nexthop>()) + element(size_of::<NexthopInfo>()),
        ),
        (
            "capacity.ecmp_groups",
            c.ecmp_groups,
            1 << 16,
            element(4) + 2 * element(size_of::<EcmpGroup>()),
        ),
        // PORTS (a preallocated hash) and TX_PORTS.
        ("capacity.ports", c.ports, 1 << 16, 128),
    ]
}

/// Each capacity is at least 1 and no more than its bound; past the bound
/// the error says how much kernel memory the value would pin.
fn validate_capacities(capacity: &Capacities) -> Result<(), ConfigError> {
    for (key, value, max, bytes_each) in capacity_bounds(capacity) {
        if value == 0 || value > max {
            let memory = if value > max {
                format!(
                    " ({value} would pin {} of kernel memory, {bytes_each} bytes each)",
                    gib(value as u64 * bytes_each)
                )
            } else {
                String::new()
            };
            return Err(invalid(key, value, format!("1 to {max}{memory}")));
        }
    }
    Ok(())
}

fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// Interface names become pin names (`link_<name>`): each must be a
/// kernel interface name, listed once, and not the loopback.
fn validate_interfaces(interfaces: &[String]) -> Result<(), ConfigError> {
    const KEY: &str = "general.interfaces";
    for (i, name) in interfaces.iter().enumerate() {
        if name.is_empty()
            || name.len() > 15
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                KEY,
                interfaces,
                format!(
                    "{name:?} is not an interface name (1 to 15 characters, no '/', ':' or spaces)"
                ),
            ));
        }
        if name == "lo" {
            return Err(invalid(
                KEY,
                interfaces,
                "lo is the loopback: nothing is forwarded through it; remove it",
            ));
        }
        if interfaces[..i].contains(name) {
            return Err(invalid(
                KEY,
                interfaces,
                format!("{name} is listed twice; list each interface once"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
