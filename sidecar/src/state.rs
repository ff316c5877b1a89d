//! What the running daemon publishes about itself in
//! `/run/pf-sidecar/<name>.state.json`, rewritten on every tick: its
//! sources, replay, staleness, programmer and RIB counts, and ports.
//! `status` and the metrics read it; it is one of the daemon's channels
//! (docs/architecture.md lists them all).

use std::path::{Path, PathBuf};

use serde::Serialize;

use pf_control::controller::ControlStatus;

use crate::ports::PortState;

/// What `status` reads about the daemon: the control loop's own status,
/// and what only the daemon knows (its generation, the FPM listener, the
/// ports).
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct DaemonState {
    pub pid: u32,
    pub generation: String,
    #[serde(flatten)]
    pub control: ControlStatus,
    pub fpm_sessions: u64,
    /// Connections refused before a byte was read, by reason: a peer
    /// address not allowed, a loopback peer whose socket's owner is not in
    /// `fpm.allowed_users`, a session already open (`fpm_refused` is their
    /// sum).
    pub fpm_refused: u64,
    #[serde(default)]
    pub fpm_refused_address: u64,
    #[serde(default)]
    pub fpm_refused_user: u64,
    #[serde(default)]
    pub fpm_refused_busy: u64,
    /// The uids `fpm.allowed_users` resolved to.
    #[serde(default)]
    pub fpm_allowed_uids: Vec<u32>,
    pub v4_tbl8_groups: usize,
    /// IPv6 trie nodes in use (reachable, or waiting for a grace period).
    #[serde(default)]
    pub v6_trie_nodes: usize,
    /// The links run this daemon's generation on a device now (false
    /// before it goes live, and after its links or pins were removed from
    /// outside).
    #[serde(default)]
    pub live: bool,
    /// Each configured interface as the kernel has it now.
    #[serde(default)]
    pub interfaces: Vec<PortState>,
    /// Frames lost after `XDP_REDIRECT`, per egress interface.
    #[serde(default)]
    pub redirect_failures: crate::redirect_errors::Report,
}

/// Where the daemon publishes [`DaemonState`].
pub fn state_path(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("pf-sidecar");
    PathBuf::from("/run/pf-sidecar").join(format!("{name}.state.json"))
}

pub fn write_state(path: &Path, state: &DaemonState) {
    let Ok(json) = serde_json::to_vec_pretty(state) else {
        return;
    };
    let tmp = path.with_extension("tmp");
    use std::os::unix::fs::OpenOptionsExt;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &json));
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Reads what a running daemon published, if one is running.
pub fn read_state(pin_dir: &Path) -> Option<DaemonState> {
    let state: DaemonState =
        serde_json::from_slice(&std::fs::read(state_path(pin_dir)).ok()?).ok()?;
    std::path::Path::new(&format!("/proc/{}", state.pid))
        .exists()
        .then_some(state)
}
