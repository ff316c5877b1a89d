//! What the running daemon publishes about itself in
//! `/run/pf-sidecar/<name>.state.json`, rewritten on every tick: its
//! sources, replay, staleness, programmer and RIB counts, and ports.
//! `status` and the metrics read it; it is one of the daemon's channels
//! (docs/architecture.md lists them all).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ports::PortState;

/// What `status` reads about the daemon (written to `<pin_dir>/../` is not
/// possible on bpffs, so it goes to the state file).
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct DaemonState {
    pub pid: u32,
    pub generation: String,
    pub route_source: String,
    pub fpm_connected: bool,
    pub fpm_peer: Option<String>,
    pub fpm_sessions: u64,
    pub fpm_refused: u64,
    pub fpm_frame_errors: u64,
    pub fpm_last_message_age_ms: Option<u64>,
    pub fpm_replay_complete: bool,
    /// Connections refused before a byte was read, by reason: a peer
    /// address not allowed, a loopback peer whose socket's owner is not in
    /// `fpm.allowed_users`, a session already open (`fpm_refused` is their
    /// sum).
    #[serde(default)]
    pub fpm_refused_address: u64,
    #[serde(default)]
    pub fpm_refused_user: u64,
    #[serde(default)]
    pub fpm_refused_busy: u64,
    /// The uids `fpm.allowed_users` resolved to.
    #[serde(default)]
    pub fpm_allowed_uids: Vec<u32>,
    /// Sessions dropped for sending no complete frame within
    /// `fpm.idle_timeout_ms`, and for a frame left incomplete for
    /// `fpm.frame_timeout_ms`.
    #[serde(default)]
    pub fpm_dropped_idle: u64,
    #[serde(default)]
    pub fpm_dropped_partial_frame: u64,
    /// How long the route source has been gone (the FPM session closed and
    /// no replay since; the kernel source failing), if it is.
    #[serde(default)]
    pub route_source_down_ms: Option<u64>,
    /// The route source has been gone longer than `routes.stale_after_ms`:
    /// the routes it has not repeated since are left to `bpf_fib_lookup`.
    #[serde(default)]
    pub routes_stale: bool,
    /// How many prefixes that was when it happened.
    #[serde(default)]
    pub stale_prefixes: u64,
    pub kernel_synced: bool,
    pub kernel_resyncs: u64,
    pub last_resync_reason: Option<String>,
    pub decode_errors: u64,
    pub routes: usize,
    pub nexthops: usize,
    pub ecmp_groups: usize,
    pub v6_entries: u32,
    /// Offload replies sent to zebra, and dropped because it did not read them.
    pub offload_replies_sent: u64,
    pub offload_replies_dropped: u64,
    /// Of the replies sent, those flagged OFFLOAD for a route the kernel
    /// forwards after `XDP_PASS`, and those flagged OFFLOAD_FAILED (nothing
    /// forwards the route).
    #[serde(default)]
    pub offload_replies_kernel: u64,
    #[serde(default)]
    pub offload_replies_failed: u64,
    /// `fpm.offload_replies`.
    #[serde(default)]
    pub offload_replies: bool,
    pub v4_tbl8_groups: usize,
    pub programmer: pf_control::programmer::ProgrammerStats,
    pub rib: pf_control::rib::RibStats,
    pub taken_over: bool,
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
