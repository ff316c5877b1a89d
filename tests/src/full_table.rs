//! The full table the control-plane benchmarks load: 2000 gateway nexthop
//! objects, 300 four-way ECMP groups, 1M IPv4 + 250k IPv6 distinct
//! prefixes (every tenth through a group), as the rtnetlink messages zebra
//! sends over FPM.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use pf_common::{RouteAction, RouteKind};
use pf_sidecar::datapath::{Capacities, Datapath};

use crate::{
    fpm_messages::{nexthop_message, route_message},
    synthetic::{v4_prefix, v6_doc_prefix, Rng},
};

pub const V4_ROUTES: usize = 1_000_000;
pub const V6_ROUTES: usize = 250_000;
pub const GATEWAYS: u32 = 2000;
pub const GROUPS: u32 = 300;
/// Group object ids start here; gateway objects are 1..=GATEWAYS.
pub const FIRST_GROUP_ID: u32 = 10_000;

pub struct FullTable {
    /// Distinct; the last is a host route that nothing longer can answer
    /// for, so its arrival in the maps marks the end of a load.
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
}

impl FullTable {
    pub fn new() -> Self {
        let mut rng = Rng(0xfeed_beef_1234_5678);
        let mut seen4 = std::collections::HashSet::new();
        let mut v4: Vec<Ipv4Net> = std::iter::from_fn(|| Some(v4_prefix(&mut rng)))
            .filter(|p| p.prefix_len() < 32 && seen4.insert(*p))
            .take(V4_ROUTES - 1)
            .collect();
        v4.push("126.255.255.254/32".parse().unwrap());
        let mut seen6 = std::collections::HashSet::new();
        let mut v6: Vec<Ipv6Net> = std::iter::from_fn(|| Some(v6_doc_prefix(&mut rng)))
            .filter(|p| seen6.insert(*p))
            .take(V6_ROUTES - 1)
            .collect();
        v6.push("2001:db8:ffff:ffff::1/128".parse().unwrap());
        Self { v4, v6 }
    }

    pub fn routes(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The nexthop object route `i` of a family names.
    pub fn object_of(i: usize) -> u32 {
        if i.is_multiple_of(10) {
            FIRST_GROUP_ID + (i as u32 / 10) % GROUPS
        } else {
            1 + i as u32 % GATEWAYS
        }
    }

    /// RTM_NEWNEXTHOP for every gateway (IPv6, on `ifindex`) and group.
    pub fn nexthop_messages(ifindex: u32) -> Vec<Vec<u8>> {
        let mut messages: Vec<Vec<u8>> = (1..=GATEWAYS)
            .map(|id| {
                let gateway = Ipv6Addr::from((0x2001_0db8_0002u128 << 80) | (0x1000 + id as u128));
                nexthop_message(id, ifindex, Some(gateway.into()), &[])
            })
            .collect();
        for g in 0..GROUPS {
            let members: Vec<u32> = (0..4).map(|k| 1 + (g * 7 + k * 13) % GATEWAYS).collect();
            messages.push(nexthop_message(FIRST_GROUP_ID + g, 0, None, &members));
        }
        messages
    }

    /// RTM_NEWROUTE for every prefix, IPv4 first.
    pub fn route_messages(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        let v4 = self.v4.iter().map(|p| IpNet::V4(*p));
        let v6 = self.v6.iter().map(|p| IpNet::V6(*p));
        v4.enumerate()
            .chain(v6.enumerate())
            .map(|(i, p)| route_message(p, Self::object_of(i)))
    }

    /// `count` /32s in 126.255.0.0/16 that no table prefix covers more
    /// specifically, each with the gateway object it starts on.
    pub fn churn_targets(count: usize) -> Vec<(Ipv4Net, u32)> {
        (0..count)
            .map(|i| {
                let addr = Ipv4Addr::new(126, 255, (i / 250) as u8, (i % 250) as u8);
                (Ipv4Net::new(addr, 32).unwrap(), 1 + i as u32 % GATEWAYS)
            })
            .collect()
    }
}

/// How the floor writes the IPv6 trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpV6Writes {
    /// One trie update (one path rewrite) per prefix.
    OneByOne,
    /// 4096 prefixes per trie batch (each changed slot rewritten once), as
    /// the daemon's writer thread ships them.
    Batched,
}

impl FullTable {
    /// Maps sized for the table, as the benchmarks configure the daemon.
    pub fn capacities() -> Capacities {
        Capacities {
            tbl8_groups: 65_536,
            v6_routes: 300_000,
            nexthops: 4096,
            ecmp_groups: 512,
            ports: 64,
        }
    }

    /// The raw floor: the same route writes into fresh maps in a tight loop,
    /// on one thread; returns how long they took.
    pub fn write_floor(&self, v6: IpV6Writes) -> Duration {
        let dp = Datapath::load(&Self::capacities()).expect("load the datapath");
        let action = |i: usize| RouteAction::new(RouteKind::Nexthop, 1 + i as u32 % GATEWAYS);
        let started = Instant::now();
        {
            let mut table = dp.maps.v4.lock();
            for (i, p) in self.v4.iter().enumerate() {
                table.insert(*p, action(i)).expect("groups enough");
            }
        }
        match v6 {
            IpV6Writes::OneByOne => {
                let mut table = dp.maps.v6.lock();
                for (i, p) in self.v6.iter().enumerate() {
                    table.insert(*p, action(i)).expect("room enough");
                    // Nothing reads these maps: replaced nodes may be
                    // reused at once, as the daemon's writer does every
                    // few milliseconds.
                    if i % 1024 == 1023 {
                        table.reclaim();
                    }
                }
            }
            IpV6Writes::Batched => {
                let mut table = dp.maps.v6.lock();
                for (n, chunk) in self.v6.chunks(4096).enumerate() {
                    let writes = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (*p, Some(action(n * 4096 + i))));
                    assert!(table.apply(writes).is_empty(), "room enough");
                    table.reclaim();
                }
            }
        }
        started.elapsed()
    }
}

impl Default for FullTable {
    fn default() -> Self {
        Self::new()
    }
}

/// Packs messages into FPM frames of at most ~60 KB.
pub fn fpm_frames<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut batch: Vec<&[u8]> = Vec::new();
    let mut size = 0;
    for m in messages {
        if size + m.len() + 4 > 60_000 {
            out.push(pf_control::fpm::frame(&batch));
            batch.clear();
            size = 0;
        }
        batch.push(m);
        size += (m.len() + 3) & !3;
    }
    if !batch.is_empty() {
        out.push(pf_control::fpm::frame(&batch));
    }
    out
}
