//! `diff`: what the maps do, against what a route source says they should.
//!
//! The comparison is by behaviour, because the maps hold no prefixes for
//! IPv4 (DIR-24-8 expands them) and name nexthops by ids the daemon chose.
//! The expected routes are expanded into a DIR-24-8 table of their own, and
//! both tables are walked block by block, so every IPv4 address is compared;
//! a difference is reported against the longest expected prefix covering
//! it, or, where none does, as an extra range. IPv6 is compared the same
//! way: the expected routes are built into a trie of their own and both
//! tries are walked node by node. Nexthops used by the maps are compared with what the
//! kernel's links and neighbours say they should hold.

use std::{fmt, net::IpAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use pf_common::{maps::ECMP_BUCKETS, Nexthop, RouteAction, RouteKind};
use prefix_trie::PrefixMap;
use serde::Serialize;

use crate::{
    dir24::{Dir24, Dir24Store, VecStore},
    ecmp::{build_group, Leg as EcmpLeg},
    fast_maps::{FastMap, FastSet, HashMapExt, HashSetExt},
    programmer::{offloadable, NexthopKey, Target},
    v6trie::{V6Read, V6Trie, VecV6Store},
};

/// One way out of a forwarding behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Path {
    pub ifindex: u32,
    pub gateway: IpAddr,
    /// Buckets of the ECMP table (1 for a single nexthop).
    pub share: u32,
}

/// What the datapath does with a packet, independent of ids and slots.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Behaviour {
    /// No entry, or an explicit hand-off to `bpf_fib_lookup`.
    Kernel,
    Blackhole,
    Unreachable,
    Prohibit,
    Local,
    Forward {
        paths: Vec<Path>,
    },
    /// An entry the datapath cannot use (an unknown kind or a dangling id).
    Invalid {
        action: u32,
    },
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Behaviour::Kernel => f.write_str("kernel"),
            Behaviour::Blackhole => f.write_str("blackhole"),
            Behaviour::Unreachable => f.write_str("unreachable"),
            Behaviour::Prohibit => f.write_str("prohibit"),
            Behaviour::Local => f.write_str("local"),
            Behaviour::Invalid { action } => write!(f, "invalid entry {action:#x}"),
            Behaviour::Forward { paths } => {
                for (i, p) in paths.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "via {} ifindex {}", p.gateway, p.ifindex)?;
                    if paths.len() > 1 {
                        write!(f, " ({}/{ECMP_BUCKETS})", p.share)?;
                    }
                }
                Ok(())
            }
        }
    }
}

fn merge_paths(mut paths: Vec<Path>) -> Vec<Path> {
    paths.sort();
    let mut merged: Vec<Path> = Vec::with_capacity(paths.len());
    for p in paths {
        match merged.last_mut() {
            Some(last) if last.ifindex == p.ifindex && last.gateway == p.gateway => {
                last.share += p.share
            }
            _ => merged.push(p),
        }
    }
    merged
}

/// What the programmer writes for `target`, as a behaviour.
pub fn expected_behaviour(target: &Target) -> Behaviour {
    match target {
        Target::Blackhole => Behaviour::Blackhole,
        Target::Unreachable => Behaviour::Unreachable,
        Target::Prohibit => Behaviour::Prohibit,
        Target::Local => Behaviour::Local,
        Target::Kernel => Behaviour::Kernel,
        Target::Forward(legs) if !offloadable(legs) => Behaviour::Kernel,
        Target::Forward(legs) => {
            let mut keyed: Vec<(NexthopKey, u32)> = legs
                .iter()
                .filter_map(|l| {
                    Some((
                        NexthopKey {
                            ifindex: l.ifindex,
                            gateway: l.gateway?,
                        },
                        l.weight.max(1),
                    ))
                })
                .collect();
            if let [(key, _)] = keyed.as_slice() {
                return Behaviour::Forward {
                    paths: vec![Path {
                        ifindex: key.ifindex,
                        gateway: key.gateway,
                        share: 1,
                    }],
                };
            }
            // The programmer orders a group's legs this way before it builds
            // the bucket table, so the shares come out the same.
            keyed.sort();
            let ecmp: Vec<EcmpLeg> = keyed
                .iter()
                .enumerate()
                .map(|(i, (_, weight))| EcmpLeg {
                    nexthop_id: i as u32,
                    weight: *weight,
                })
                .collect();
            let Ok(group) = build_group(&ecmp) else {
                return Behaviour::Kernel;
            };
            let mut shares = vec![0u32; keyed.len()];
            for id in &group.buckets[..group.bucket_count as usize] {
                shares[*id as usize] += 1;
            }
            let paths = keyed
                .iter()
                .zip(shares)
                .map(|((key, _), share)| Path {
                    ifindex: key.ifindex,
                    gateway: key.gateway,
                    share,
                })
                .collect();
            Behaviour::Forward {
                paths: merge_paths(paths),
            }
        }
    }
}

/// Read access to a datapath's maps.
pub trait MapsView {
    /// The raw `V4_TBL24` action of a /24 block.
    fn tbl24(&self, block: u32) -> u32;
    /// The raw action at `offset` of second-level group `group`.
    fn tbl8(&self, group: u32, offset: u32) -> u32;
    /// The IPv6 trie's arrays.
    fn v6(&self) -> &dyn V6Read;
    /// Nexthop `id`: the gateway it stands for and its current value.
    fn nexthop(&self, id: u32) -> Option<(NexthopKey, Nexthop)>;
    /// The bucket table (nexthop ids) of group `id`.
    fn group_buckets(&self, id: u32) -> Option<Vec<u32>>;
}

/// Turns raw actions into behaviours, remembering each and the nexthops seen.
struct Resolver<'a, V: MapsView> {
    view: &'a V,
    cache: FastMap<u32, Behaviour>,
    nexthops_seen: FastSet<u32>,
}

impl<'a, V: MapsView> Resolver<'a, V> {
    fn new(view: &'a V) -> Self {
        Self {
            view,
            cache: FastMap::new(),
            nexthops_seen: FastSet::new(),
        }
    }

    fn behaviour(&mut self, raw: u32) -> Behaviour {
        if let Some(b) = self.cache.get(&raw) {
            return b.clone();
        }
        let behaviour = self.resolve(RouteAction(raw));
        self.cache.insert(raw, behaviour.clone());
        behaviour
    }

    fn path(&mut self, id: u32, share: u32) -> Option<Path> {
        let (key, _) = self.view.nexthop(id)?;
        self.nexthops_seen.insert(id);
        Some(Path {
            ifindex: key.ifindex,
            gateway: key.gateway,
            share,
        })
    }

    fn resolve(&mut self, action: RouteAction) -> Behaviour {
        let invalid = Behaviour::Invalid { action: action.0 };
        match action.kind() {
            Some(RouteKind::Miss | RouteKind::Fib) => Behaviour::Kernel,
            Some(RouteKind::Blackhole) => Behaviour::Blackhole,
            Some(RouteKind::Unreachable) => Behaviour::Unreachable,
            Some(RouteKind::Prohibit) => Behaviour::Prohibit,
            Some(RouteKind::Local) => Behaviour::Local,
            Some(RouteKind::Nexthop) => match self.path(action.index(), 1) {
                Some(path) => Behaviour::Forward { paths: vec![path] },
                None => invalid,
            },
            Some(RouteKind::Group) => {
                let Some(buckets) = self.view.group_buckets(action.index()) else {
                    return invalid;
                };
                let mut counts: FastMap<u32, u32> = FastMap::new();
                for id in buckets {
                    *counts.entry(id).or_default() += 1;
                }
                let mut paths = Vec::with_capacity(counts.len());
                for (id, share) in counts {
                    match self.path(id, share) {
                        Some(p) => paths.push(p),
                        None => return invalid,
                    }
                }
                Behaviour::Forward {
                    paths: merge_paths(paths),
                }
            }
            Some(RouteKind::Tbl8) | None => invalid,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftKind {
    /// An expected prefix whose packets the maps leave to the kernel.
    Missing,
    /// Addresses no expected prefix covers that the maps handle.
    Extra,
    /// An expected prefix the maps handle differently.
    Different,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub kind: DriftKind,
    pub prefix: IpNet,
    pub expected: Behaviour,
    pub actual: Behaviour,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NexthopDrift {
    pub id: u32,
    pub ifindex: u32,
    pub gateway: IpAddr,
    pub expected: String,
    pub actual: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub drift: Vec<Drift>,
    pub nexthops: Vec<NexthopDrift>,
    pub compared_prefixes: usize,
    pub compared_nexthops: usize,
}

impl Report {
    pub fn in_sync(&self) -> bool {
        self.drift.is_empty() && self.nexthops.is_empty()
    }

    pub fn count(&self, kind: DriftKind) -> usize {
        self.drift.iter().filter(|d| d.kind == kind).count()
    }
}

/// Progress callback: (step done, steps in all).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

const BLOCKS: u32 = 1 << 24;

/// Compares the maps behind `view` with the `expected` routes; `resolve`
/// says what a nexthop entry should hold.
pub fn compare(
    view: &impl MapsView,
    expected: &[(IpNet, Target)],
    resolve: &dyn Fn(&NexthopKey) -> Nexthop,
    progress: Progress<'_>,
) -> anyhow::Result<Report> {
    let mut resolver = Resolver::new(view);
    let mut report = Report {
        compared_prefixes: expected.len(),
        ..Default::default()
    };
    let (v4, v6): (Vec<_>, Vec<_>) = expected
        .iter()
        .map(|(p, t)| (*p, expected_behaviour(t)))
        .partition(|(p, _)| p.addr().is_ipv4());
    let v4: Vec<(Ipv4Net, Behaviour)> = v4
        .into_iter()
        .filter_map(|(p, b)| match p {
            IpNet::V4(p) => Some((p.trunc(), b)),
            IpNet::V6(_) => None,
        })
        .collect();
    compare_v4(&mut resolver, &v4, &mut report, progress);
    let v6: Vec<(Ipv6Net, Behaviour)> = v6
        .into_iter()
        .filter_map(|(p, b)| match p {
            IpNet::V6(p) => Some((p.trunc(), b)),
            IpNet::V4(_) => None,
        })
        .collect();
    compare_v6(&mut resolver, &v6, &mut report);
    let mut seen: Vec<u32> = resolver.nexthops_seen.iter().copied().collect();
    seen.sort_unstable();
    report.compared_nexthops = seen.len();
    for id in seen {
        let Some((key, actual)) = view.nexthop(id) else {
            continue;
        };
        let expected = resolve(&key);
        if expected != actual {
            report.nexthops.push(NexthopDrift {
                id,
                ifindex: key.ifindex,
                gateway: key.gateway,
                expected: describe_nexthop(&expected),
                actual: describe_nexthop(&actual),
            });
        }
    }
    report.drift.sort_by_key(|d| (d.kind, d.prefix));
    Ok(report)
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn describe_nexthop(n: &Nexthop) -> String {
    let state = if n.is_resolved() {
        format!("resolved {}", mac(n.dmac))
    } else {
        "unresolved".to_string()
    };
    let vlan = if n.vlan_id != 0 {
        format!(" vlan {} ({:#06x})", n.vlan_id, n.vlan_proto)
    } else {
        String::new()
    };
    format!(
        "{state}, out ifindex {} from {}{vlan}, mtu {}",
        n.tx_ifindex,
        mac(n.smac),
        n.mtu
    )
}

/// Expected behaviours by id, written into an expected table as
/// `Nexthop(id)` actions; 0 is "kernel", which a missing entry means.
struct Behaviours {
    ids: FastMap<Behaviour, u32>,
    by_id: Vec<Behaviour>,
}

impl Behaviours {
    fn new() -> Self {
        let mut ids = FastMap::new();
        ids.insert(Behaviour::Kernel, 0);
        Self {
            ids,
            by_id: vec![Behaviour::Kernel],
        }
    }

    fn id(&mut self, behaviour: &Behaviour) -> u32 {
        if let Some(id) = self.ids.get(behaviour) {
            return *id;
        }
        self.by_id.push(behaviour.clone());
        let id = self.by_id.len() as u32 - 1;
        self.ids.insert(behaviour.clone(), id);
        id
    }

    /// The behaviour id of a raw entry of an expected table.
    fn id_at(raw: u32) -> u32 {
        if raw == 0 {
            0
        } else {
            RouteAction(raw).index()
        }
    }
}

/// A drift against the expected prefix `prefix`, once per prefix.
fn report_covered(
    reported: &mut FastSet<IpNet>,
    prefix: IpNet,
    expected: &Behaviour,
    got: Behaviour,
    report: &mut Report,
) {
    if !reported.insert(prefix) {
        return;
    }
    let kind = if got == Behaviour::Kernel {
        DriftKind::Missing
    } else {
        DriftKind::Different
    };
    report.drift.push(Drift {
        kind,
        prefix,
        expected: expected.clone(),
        actual: got,
    });
}

/// The expected IPv4 behaviours as a DIR-24-8 table of behaviour ids, so
/// that it can be walked block by block beside the maps.
struct ExpectedV4 {
    table: Dir24<VecStore>,
    /// The expected prefixes, for naming the one an address falls in.
    covering: PrefixMap<Ipv4Net, u32>,
    behaviours: Behaviours,
}

impl ExpectedV4 {
    fn new(expected: &[(Ipv4Net, Behaviour)]) -> Self {
        let mut behaviours = Behaviours::new();
        let long_blocks: FastSet<u32> = expected
            .iter()
            .filter(|(p, _)| p.prefix_len() > 24)
            .map(|(p, _)| u32::from(p.network()) >> 8)
            .collect();
        let mut table = Dir24::new(VecStore::new(long_blocks.len() as u32 + 1));
        let mut covering: PrefixMap<Ipv4Net, u32> = PrefixMap::new();
        for (prefix, behaviour) in expected {
            let id = behaviours.id(behaviour);
            // Groups are sized for every long block, so this cannot defer.
            let _ = table.insert(*prefix, RouteAction::new(RouteKind::Nexthop, id));
            covering.insert(*prefix, id);
        }
        Self {
            table,
            covering,
            behaviours,
        }
    }
}

/// Addresses where the maps and the expected table disagree, gathered
/// into one drift per expected prefix, and ranges no expected prefix
/// covers into the fewest prefixes.
#[derive(Default)]
struct V4Mismatches {
    reported: FastSet<IpNet>,
    /// The contiguous range being extended, with what the maps do there.
    extra: Option<(u32, u32, Behaviour)>,
    extras: Vec<(u32, u32, Behaviour)>,
}

impl V4Mismatches {
    fn note(
        &mut self,
        expected: &ExpectedV4,
        addr: u32,
        len: u32,
        want: u32,
        got: Behaviour,
        report: &mut Report,
    ) {
        let lpm = expected
            .covering
            .get_lpm(&Ipv4Net::new(addr.into(), 32).expect("32 is valid"));
        match lpm {
            Some((prefix, _)) => report_covered(
                &mut self.reported,
                IpNet::V4(prefix),
                &expected.behaviours.by_id[want as usize],
                got,
                report,
            ),
            None => match &mut self.extra {
                Some((_, end, b)) if *end == addr && *b == got => *end = addr + len,
                _ => {
                    if let Some(done) = self.extra.replace((addr, addr.wrapping_add(len), got)) {
                        self.extras.push(done);
                    }
                }
            },
        }
    }

    fn finish(mut self, report: &mut Report) {
        self.extras.extend(self.extra);
        for (start, end, actual) in self.extras {
            // `end` wraps to 0 for a range that reaches 255.255.255.255.
            let last = end.wrapping_sub(1);
            for prefix in ipnet::Ipv4Subnets::new(start.into(), last.into(), 0) {
                report.drift.push(Drift {
                    kind: DriftKind::Extra,
                    prefix: IpNet::V4(prefix),
                    expected: Behaviour::Kernel,
                    actual: actual.clone(),
                });
            }
        }
    }
}

fn compare_v4<V: MapsView>(
    resolver: &mut Resolver<'_, V>,
    expected: &[(Ipv4Net, Behaviour)],
    report: &mut Report,
    progress: Progress<'_>,
) {
    let expected = ExpectedV4::new(expected);
    let mut mismatches = V4Mismatches::default();
    let store = expected.table.store();
    // Neighbouring blocks mostly hold the same pair of entries.
    let mut last_equal: Option<(u32, u32)> = None;
    for block in 0..BLOCKS {
        if block % (1 << 16) == 0 {
            progress(block as u64, BLOCKS as u64);
        }
        let want_raw = store.tbl24(block);
        let got_raw = resolver.view.tbl24(block);
        let want_ext = RouteAction(want_raw).kind() == Some(RouteKind::Tbl8);
        let got_ext = RouteAction(got_raw).kind() == Some(RouteKind::Tbl8);
        let base = block << 8;
        if !want_ext && !got_ext {
            if last_equal == Some((want_raw, got_raw)) {
                continue;
            }
            let want = Behaviours::id_at(want_raw);
            let got = resolver.behaviour(got_raw);
            if expected.behaviours.by_id[want as usize] == got {
                last_equal = Some((want_raw, got_raw));
            } else {
                mismatches.note(&expected, base, 256, want, got, report);
            }
            continue;
        }
        for offset in 0..256u32 {
            let want = Behaviours::id_at(if want_ext {
                store.tbl8(RouteAction(want_raw).index(), offset)
            } else {
                want_raw
            });
            let got = if got_ext {
                resolver.behaviour(resolver.view.tbl8(RouteAction(got_raw).index(), offset))
            } else {
                resolver.behaviour(got_raw)
            };
            if expected.behaviours.by_id[want as usize] != got {
                mismatches.note(&expected, base + offset, 1, want, got, report);
            }
        }
    }
    progress(BLOCKS as u64, BLOCKS as u64);
    mismatches.finish(report);
}

/// The expected IPv6 routes as a trie of behaviour ids (0: the kernel).
struct ExpectedV6 {
    table: V6Trie<VecV6Store>,
    covering: PrefixMap<Ipv6Net, u32>,
    behaviours: Behaviours,
}

impl ExpectedV6 {
    fn new(expected: &[(Ipv6Net, Behaviour)]) -> Self {
        let mut behaviours = Behaviours::new();
        let mut covering: PrefixMap<Ipv6Net, u32> = PrefixMap::new();
        let mut writes = Vec::with_capacity(expected.len());
        for (prefix, behaviour) in expected {
            let id = behaviours.id(behaviour);
            covering.insert(*prefix, id);
            writes.push((*prefix, Some(RouteAction::new(RouteKind::Nexthop, id))));
        }
        // One batch builds every slot once, from nothing: a prefix needs
        // at most one node and two leaves per six bits, 22 and 44 in all.
        let n = expected.len() as u32;
        let mut table = V6Trie::new(VecV6Store::new(22 * n + 2, 44 * n + 2));
        table.apply(writes);
        Self {
            table,
            covering,
            behaviours,
        }
    }
}

/// One side of the walk at a range: a leaf's action, or a node to descend.
#[derive(Clone, Copy)]
enum V6Side {
    Leaf(u32),
    /// A node, and how many of the steps its `skip` stands for the walk
    /// has passed.
    Node(pf_common::layout::V6Node, u32),
}

impl V6Side {
    fn of_head(store: &dyn V6Read, head: u32) -> Self {
        let action = RouteAction(head);
        if action.kind() == Some(RouteKind::Tbl8) {
            Self::Node(store.node(action.index()), 0)
        } else {
            Self::Leaf(head)
        }
    }

    /// What slot `v` of this side holds (a leaf stands for all of its slots;
    /// a step a compressed node left out has one way on, and `miss`).
    fn at(self, store: &dyn V6Read, v: usize, cover: u32) -> Self {
        use pf_common::{layout::V6Next, maps::V6_STRIDE};
        let resolve = |leaf: u32| {
            Self::Leaf(if leaf == pf_common::route::V6_INHERIT {
                cover
            } else {
                leaf
            })
        };
        match self {
            Self::Leaf(raw) => Self::Leaf(raw),
            // Part of a step: only a corrupt node (see `v6trie::lookup_in`).
            Self::Node(node, _) if !node.skip_width().is_multiple_of(V6_STRIDE) => {
                Self::Leaf(RouteAction::simple(RouteKind::Fib).0)
            }
            Self::Node(node, passed) if passed < node.skip_strides() => {
                // In u64: a corrupt node may claim five steps.
                let step =
                    u64::from(node.skip_key()) >> (V6_STRIDE * (node.skip_strides() - 1 - passed));
                if step & 63 == v as u64 {
                    Self::Node(node, passed + 1)
                } else {
                    resolve(node.miss)
                }
            }
            Self::Node(node, _) => match node.next(v as u32) {
                V6Next::Child(child) => Self::Node(store.node(child), 0),
                V6Next::Leaf(leaf) => resolve(store.leaf(leaf)),
                V6Next::Action(raw) => resolve(raw),
            },
        }
    }
}

/// Ranges where the maps and the expected trie disagree: one drift per
/// expected prefix, and ranges no expected prefix covers merged into the
/// fewest prefixes.
#[derive(Default)]
struct V6Mismatches {
    reported: FastSet<IpNet>,
    /// The contiguous range (first and last address) being extended.
    extra: Option<(u128, u128, Behaviour)>,
    extras: Vec<(u128, u128, Behaviour)>,
}

impl V6Mismatches {
    fn note(
        &mut self,
        expected: &ExpectedV6,
        range: Ipv6Net,
        want: u32,
        got: Behaviour,
        report: &mut Report,
    ) {
        match expected.covering.get_lpm(&range) {
            Some((prefix, _)) => report_covered(
                &mut self.reported,
                IpNet::V6(prefix),
                &expected.behaviours.by_id[want as usize],
                got,
                report,
            ),
            None => {
                let (first, last) = (u128::from(range.network()), u128::from(range.broadcast()));
                match &mut self.extra {
                    Some((_, end, b)) if end.checked_add(1) == Some(first) && *b == got => {
                        *end = last
                    }
                    _ => {
                        if let Some(done) = self.extra.replace((first, last, got)) {
                            self.extras.push(done);
                        }
                    }
                }
            }
        }
    }

    fn finish(mut self, report: &mut Report) {
        self.extras.extend(self.extra);
        for (first, last, actual) in self.extras {
            for prefix in ipnet::Ipv6Subnets::new(first.into(), last.into(), 0) {
                report.drift.push(Drift {
                    kind: DriftKind::Extra,
                    prefix: IpNet::V6(prefix),
                    expected: Behaviour::Kernel,
                    actual: actual.clone(),
                });
            }
        }
    }
}

struct V6Walk<'w, 'a, V: MapsView> {
    resolver: &'w mut Resolver<'a, V>,
    expected: &'w ExpectedV6,
    mismatches: V6Mismatches,
    /// The two sides' covers of the slot being walked.
    covers: (u32, u32),
}

impl<V: MapsView> V6Walk<'_, '_, V> {
    fn range(&mut self, want: V6Side, got: V6Side, base: u128, len: u32, report: &mut Report) {
        use pf_common::maps::V6_STRIDE;
        // A node still to descend at the last bit (only in corrupt maps):
        // the datapath gives up there and asks the kernel.
        let (want, got) = if len >= 128 {
            let fib = RouteAction::simple(RouteKind::Fib).0;
            let settle = |side| match side {
                V6Side::Node(..) => V6Side::Leaf(fib),
                leaf => leaf,
            };
            (settle(want), settle(got))
        } else {
            (want, got)
        };
        if let (V6Side::Leaf(want), V6Side::Leaf(got)) = (want, got) {
            let want = Behaviours::id_at(want);
            let got = self.resolver.behaviour(got);
            if self.expected.behaviours.by_id[want as usize] != got {
                let range = Ipv6Net::new(base.into(), len as u8).expect("len <= 128");
                self.mismatches
                    .note(self.expected, range, want, got, report);
            }
            return;
        }
        let want_store = self.expected.table.store() as &dyn V6Read;
        let got_store = self.resolver.view.v6();
        // Past the address's 128 bits, slots repeat the last real one.
        let step = 1usize << (len + V6_STRIDE).saturating_sub(128);
        for v in (0..64).step_by(step) {
            let w = want.at(want_store, v, self.covers.0);
            let g = got.at(got_store, v, self.covers.1);
            let under = base | (((v as u128) << (128 - V6_STRIDE)) >> len);
            self.range(w, g, under, (len + V6_STRIDE).min(128), report);
        }
    }
}

fn compare_v6<V: MapsView>(
    resolver: &mut Resolver<'_, V>,
    expected: &[(Ipv6Net, Behaviour)],
    report: &mut Report,
) {
    use pf_common::maps::{V6_TOP_BITS, V6_TOP_SLOTS};
    let expected = ExpectedV6::new(expected);
    let mut walk = V6Walk {
        resolver,
        expected: &expected,
        mismatches: V6Mismatches::default(),
        covers: (0, 0),
    };
    let want_store = expected.table.store();
    for slot in 0..V6_TOP_SLOTS {
        let got_store = walk.resolver.view.v6();
        let (want_head, got_head) = (want_store.head(slot), got_store.head(slot));
        walk.covers = (want_store.cover(slot), got_store.cover(slot));
        let want = V6Side::of_head(want_store, want_head);
        let got = V6Side::of_head(got_store, got_head);
        let base = (slot as u128) << (128 - V6_TOP_BITS);
        walk.range(want, got, base, V6_TOP_BITS, report);
    }
    walk.mismatches.finish(report);
}

#[cfg(test)]
mod tests;
