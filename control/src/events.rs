//! What the control plane reports as it goes: route, nexthop and neighbour
//! writes, resyncs, drift, the fail-safe and stale sources. The daemon
//! publishes them (pf-sidecar's `events` module, ZeroMQ PUB); `watch`
//! prints them.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Events a subscriber sees. The topic is the `event` tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A route's entry was written or removed.
    Route {
        prefix: IpNet,
        /// `upsert` or `remove`.
        op: String,
        /// What the entry does: `nexthop 3`, `group 1`, `blackhole`, `kernel`, …
        action: String,
        /// Left to `bpf_fib_lookup` because a table is full.
        deferred: bool,
    },
    /// A nexthop entry was (re)written.
    Nexthop {
        id: u32,
        ifindex: u32,
        gateway: IpAddr,
        resolved: bool,
        dmac: String,
    },
    /// A neighbour became usable (with its MAC) or unusable.
    Neighbour {
        ifindex: u32,
        ip: IpAddr,
        mac: Option<String>,
    },
    /// More programming events than one message each is worth (a replay or
    /// a full dump): how many were folded into this one.
    Bulk { routes: u64, nexthops: u64 },
    /// A full resync started (`source`: kernel or fpm).
    Resync { source: String, reason: String },
    /// A resync ended; `swept` stale entries were removed.
    ResyncDone { source: String, swept: u64 },
    /// The maps or the RIB held state the source no longer had.
    Drift { detail: String, entries: u64 },
    /// The datapath's fail-safe (forwarding with `bpf_fib_lookup` only).
    FailSafe { active: bool, detail: String },
    /// The route source (`fpm` or `kernel`) has been gone longer than
    /// `routes.stale_after_ms` (`active`: its `prefixes` are now left to
    /// `bpf_fib_lookup`), or is trusted again after a completed resync.
    Stale {
        source: String,
        active: bool,
        prefixes: u64,
        detail: String,
    },
}

impl Event {
    pub fn topic(&self) -> &'static str {
        match self {
            Event::Route { .. } => "route",
            Event::Nexthop { .. } => "nexthop",
            Event::Neighbour { .. } => "neighbour",
            Event::Bulk { .. } => "bulk",
            Event::Resync { .. } => "resync",
            Event::ResyncDone { .. } => "resync_done",
            Event::Drift { .. } => "drift",
            Event::FailSafe { .. } => "fail_safe",
            Event::Stale { .. } => "stale",
        }
    }
}
