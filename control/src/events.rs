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

/// Every topic, as [`Event::topic`] names them (what `watch --topic` takes).
pub const TOPICS: [&str; 9] = [
    "route",
    "nexthop",
    "neighbour",
    "bulk",
    "resync",
    "resync_done",
    "drift",
    "fail_safe",
    "stale",
];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_names_a_topic_of_the_list() {
        let events = [
            Event::Bulk {
                routes: 0,
                nexthops: 0,
            },
            Event::Resync {
                source: "fpm".into(),
                reason: String::new(),
            },
            Event::ResyncDone {
                source: "fpm".into(),
                swept: 0,
            },
            Event::Drift {
                detail: String::new(),
                entries: 0,
            },
            Event::FailSafe {
                active: true,
                detail: String::new(),
            },
            Event::Stale {
                source: "fpm".into(),
                active: true,
                prefixes: 0,
                detail: String::new(),
            },
            Event::Neighbour {
                ifindex: 1,
                ip: "192.0.2.1".parse().unwrap(),
                mac: None,
            },
            Event::Nexthop {
                id: 1,
                ifindex: 1,
                gateway: "192.0.2.1".parse().unwrap(),
                resolved: false,
                dmac: String::new(),
            },
            Event::Route {
                prefix: "192.0.2.0/24".parse().unwrap(),
                op: "upsert".into(),
                action: "kernel".into(),
                deferred: false,
            },
        ];
        let mut topics: Vec<_> = events.iter().map(Event::topic).collect();
        topics.sort_unstable();
        let mut listed = TOPICS.to_vec();
        listed.sort_unstable();
        assert_eq!(topics, listed);
    }
}
