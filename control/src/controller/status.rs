//! What the control loop reports about itself: its sources, zebra's
//! replay, staleness, offload replies, and the RIB's and programmer's
//! counts. The daemon adds what only it knows (ports, the FPM listener) and
//! publishes the whole as its state file, which `status` and the metrics
//! read.

use serde::{Deserialize, Serialize};

use crate::{programmer::ProgrammerStats, rib::RibStats};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ControlStatus {
    /// `kernel` or `fpm`.
    pub route_source: String,
    pub fpm_connected: bool,
    pub fpm_peer: Option<String>,
    pub fpm_frame_errors: u64,
    pub fpm_last_message_age_ms: Option<u64>,
    pub fpm_replay_complete: bool,
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
    pub programmer: ProgrammerStats,
    pub rib: RibStats,
    /// The links were moved to this generation (at start when nothing
    /// forwarded before, otherwise once it was reconciled).
    pub taken_over: bool,
}
