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
        validate_interfaces(&self.general.interfaces)?;
        for (key, value, max, bytes_each) in capacity_bounds(&self.capacity) {
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
        // The IPv6 LPM trie allocates a node per route as it fills.
        ("capacity.v6_routes", c.v6_routes, 16 << 20, 96),
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

/// What a TOML value is, in words.
/// Every key, at any depth, is a plain name. The `config` crate reads a key
/// as a path, `a[N]` as index N of an array it grows to that length, so a
/// quoted key such as `"x[99999999999]"` would allocate terabytes and abort
/// the process.
fn check_key_names(
    table: &std::collections::HashMap<String, config::Value>,
    prefix: &str,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !plain {
            return Err(ConfigError::Read(format!(
                "key {name:?}: keys are names of letters, digits, `_` and `-`"
            )));
        }
        match &value.kind {
            config::ValueKind::Table(inner) => check_key_names(inner, &name)?,
            config::ValueKind::Array(items) => {
                for item in items {
                    if let config::ValueKind::Table(inner) = &item.kind {
                        check_key_names(inner, &name)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn kind_name(kind: &config::ValueKind) -> &'static str {
    use config::ValueKind as K;
    match kind {
        K::Nil => "nothing",
        K::Boolean(_) => "a boolean",
        K::I64(_) | K::I128(_) | K::U64(_) | K::U128(_) => "an integer",
        K::Float(_) => "a decimal number",
        K::String(_) => "a string",
        K::Table(_) => "a table",
        K::Array(_) => "an array",
    }
}

/// The value as it was written, for messages.
fn written(kind: &config::ValueKind) -> String {
    match kind {
        config::ValueKind::String(s) => format!("{s:?}"),
        config::ValueKind::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|v| written(&v.kind))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        config::ValueKind::Table(_) => "{...}".into(),
        other => other.to_string(),
    }
}

/// The element type of list keys whose default is empty.
const EMPTY_LIST_ELEMENTS: [(&str, &str); 2] = [
    ("general.interfaces", "a string"),
    ("fpm.allow", "a string"),
];

/// Checks that every key the file sets has the TOML type of its default:
/// the `config` crate would turn `"500"` into 500, and a typo in a type is
/// a mistake to point at, not to guess around. Unknown keys are left to
/// the deserializer, which names them.
fn check_types(text: &str, file: &Path) -> Result<(), ConfigError> {
    use config::{File, FileFormat, Source, ValueKind};
    let read =
        |e: config::ConfigError| ConfigError::Read(format!("reading {}: {e}", file.display()));
    let given = File::from_str(text, FileFormat::Toml)
        .collect()
        .map_err(read)?;
    let defaults = File::from_str(DEFAULTS, FileFormat::Toml)
        .collect()
        .map_err(read)?;
    let type_error = |key: String, value: &ValueKind, expected: &str| {
        let hint = match value {
            ValueKind::String(s) if s.trim().parse::<f64>().is_ok() => {
                format!("; write {} without quotes", s.trim())
            }
            ValueKind::String(s) if matches!(s.trim(), "true" | "false") => {
                format!("; write {} without quotes", s.trim())
            }
            ValueKind::I64(_) | ValueKind::U64(_) | ValueKind::I128(_) | ValueKind::U128(_)
                if expected.contains("string") =>
            {
                format!("; write \"{value}\" in quotes")
            }
            _ => String::new(),
        };
        ConfigError::Type {
            key,
            value: written(value),
            expected: format!("expected {expected}, found {}{hint}", kind_name(value)),
        }
    };
    check_key_names(&given, "")?;
    for (section, value) in &given {
        let Some(ValueKind::Table(default_keys)) = defaults.get(section).map(|d| &d.kind) else {
            continue;
        };
        let ValueKind::Table(keys) = &value.kind else {
            return Err(type_error(
                section.clone(),
                &value.kind,
                "a table ([section])",
            ));
        };
        for (key, value) in keys {
            let Some(default) = default_keys.get(key) else {
                continue;
            };
            let name = format!("{section}.{key}");
            let expected = kind_name(&default.kind);
            if kind_name(&value.kind) != expected {
                return Err(type_error(name, &value.kind, expected));
            }
            if let (ValueKind::Array(items), ValueKind::Array(default_items)) =
                (&value.kind, &default.kind)
            {
                let element = default_items
                    .first()
                    .map(|d| kind_name(&d.kind))
                    .or_else(|| {
                        EMPTY_LIST_ELEMENTS
                            .iter()
                            .find(|(k, _)| *k == name)
                            .map(|(_, e)| *e)
                    });
                if let Some(element) = element {
                    if let Some(bad) = items.iter().find(|v| kind_name(&v.kind) != element) {
                        let plural = match element {
                            "a string" => "strings",
                            "an integer" => "integers",
                            other => other,
                        };
                        return Err(type_error(
                            name,
                            &bad.kind,
                            &format!("{plural} in this array"),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
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
    fn a_string_where_a_number_belongs_is_an_error_naming_the_key() {
        let err = load("[datapath]\nheartbeat_interval_ms = \"500\"\n", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "`datapath.heartbeat_interval_ms` = \"500\": expected an integer, found a string; write 500 without quotes"
        );
        for (toml, key) in [
            ("[datapath]\ndry_run = \"true\"\n", "datapath.dry_run"),
            ("[capacity]\nnexthops = 1.5\n", "capacity.nexthops"),
            ("[routes]\ntables = [\"254\"]\n", "routes.tables"),
            ("[general]\ninterfaces = \"eth0\"\n", "general.interfaces"),
            ("[general]\ninterfaces = [1]\n", "general.interfaces"),
            ("[fpm]\nlisten = 2620\n", "fpm.listen"),
            ("general = 1\n", "general"),
        ] {
            let err = load(toml, &[]).unwrap_err().to_string();
            assert!(err.starts_with(&format!("`{key}` = ")), "{toml}: {err}");
            assert!(err.contains("expected "), "{toml}: {err}");
        }
        // The environment is text by nature: numbers there are parsed.
        let config = load("", &[("PF_SIDECAR_DATAPATH__HEARTBEAT_INTERVAL_MS", "250")]).unwrap();
        assert_eq!(config.datapath.heartbeat_interval_ms, 250);
    }

    #[test]
    fn lo_duplicates_and_bad_names_in_the_interface_list_are_refused() {
        for (list, says) in [
            ("[\"r0\", \"lo\"]", "lo is the loopback"),
            ("[\"r0\", \"r1\", \"r0\"]", "r0 is listed twice"),
            ("[\"../x\"]", "is not an interface name"),
            ("[\"\"]", "is not an interface name"),
            ("[\"a-name-longer-than-15\"]", "is not an interface name"),
        ] {
            let err = load(&format!("[general]\ninterfaces = {list}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("`general.interfaces` = ") && err.contains(says),
                "{list}: {err}"
            );
        }
        assert!(load("[general]\ninterfaces = [\"eth0\", \"eth1.100\"]\n", &[]).is_ok());
    }

    #[test]
    fn a_capacity_that_would_pin_gibibytes_is_refused_with_the_figure() {
        let err = load("[capacity]\nnexthops = 134217727\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`capacity.nexthops` = 134217727: 1 to 4194304")
                && err.contains("would pin 10.0 GiB of kernel memory, 80 bytes each"),
            "{err}"
        );
        let defaults = load("", &[]).unwrap();
        assert_eq!(defaults.memory_warning(), None);
        let big = load("[capacity]\ntbl8_groups = 1048576\n", &[]).unwrap();
        let warning = big.memory_warning().expect("over 1 GiB");
        assert!(
            warning.contains("capacity.tbl8_groups 1.0 GiB"),
            "{warning}"
        );
    }

    #[test]
    fn a_reload_names_what_it_cannot_apply() {
        let old = load("", &[]).unwrap();
        let new = load(
            "[general]\ninterfaces = [\"eth0\"]\n[datapath]\ndry_run = true\n[capacity]\nports = 64\n[fpm]\nreplay_quiet_ms = 500\n",
            &[],
        )
        .unwrap();
        assert_eq!(old.needs_restart(&new), vec!["capacity", "fpm"]);
        assert!(old.needs_restart(&old).is_empty());
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

    #[test]
    fn fpm_users_and_session_bounds_have_defaults_and_limits() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.fpm.allowed_users, vec!["frr", "root"]);
        assert_eq!(
            (
                config.fpm.idle_timeout_ms,
                config.fpm.frame_timeout_ms,
                config.routes.stale_after_ms
            ),
            (10_000, 5_000, 30_000)
        );
        assert!(
            config.fpm_allowed_users().unwrap().contains(0),
            "root is always there"
        );
        let config = load("", &[("PF_SIDECAR_FPM__ALLOWED_USERS", "frr,1001")]).unwrap();
        assert_eq!(config.fpm.allowed_users, vec!["frr", "1001"]);
        assert!(config.fpm_allowed_users().unwrap().contains(1001));
        for (toml, key) in [
            ("[fpm]\nidle_timeout_ms = 0\n", "fpm.idle_timeout_ms"),
            ("[fpm]\nframe_timeout_ms = 99\n", "fpm.frame_timeout_ms"),
            (
                "[routes]\nstale_after_ms = 3600001\n",
                "routes.stale_after_ms",
            ),
            ("[fpm]\nallowed_users = [\"\"]\n", "fpm.allowed_users"),
            (
                "[fpm]\nallowed_users = [\"4294967296\"]\n",
                "fpm.allowed_users",
            ),
        ] {
            let err = load(toml, &[]).unwrap_err().to_string();
            assert!(err.starts_with(&format!("`{key}` = ")), "{toml}: {err}");
        }
        let nobody_here = load(
            "[fpm]\nallowed_users = [\"pf-sidecar-no-such-user\"]\n",
            &[],
        )
        .unwrap();
        let err = nobody_here.fpm_allowed_users().unwrap_err().to_string();
        assert!(
            err.contains("fpm.allowed_users") && err.contains("pf-sidecar-no-such-user not found"),
            "{err}"
        );
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

    #[test]
    fn a_key_that_reads_as_an_array_index_is_refused_not_allocated() {
        for text in [
            "[ \"6[ 33333333331111]\"]\n",
            "[general]\n\"log_level[99999999999]\" = 1\n",
            "[general]\nx = { \"a[99999999999]\" = 1 }\n",
        ] {
            let err = Config::load_text(
                Some(text),
                Path::new("bad.toml"),
                &[],
                &Overrides::default(),
            )
            .unwrap_err();
            assert!(err.to_string().contains("keys are names"), "{text}: {err}");
        }
    }
}
