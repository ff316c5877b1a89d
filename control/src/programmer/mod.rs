//! The map programmer: turns the desired forwarding state into map writes.
//!
//! Input is FIB-level (a prefix and what to do with it), plus the links and
//! neighbours that resolve gateways into MAC addresses. The programmer keeps
//! what it has programmed, so it writes only differences, and it orders every
//! change so the datapath never sees a half-written answer:
//!
//! 1. a route's new nexthop or group is written (into a fresh slot) first,
//! 2. then the route's action is switched,
//! 3. then the old nexthop or group is released; its slot is reused only
//!    after [`Programmer::reclaim`], once readers of the old value are done.
//!
//! A neighbour or link change rewrites the affected nexthop entries alone;
//! routes keep pointing at the same nexthop ids.
//!
//! When a table is full the prefix gets no entry rather than a wrong one:
//! it is counted, left to `bpf_fib_lookup`, and its covering prefix is made
//! to defer to the kernel too, so it never answers for the longer prefix.

#[cfg(test)]
pub(crate) mod fake;
pub mod slots;

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use pf_common::{
    layout::{NH_F_GATEWAY_V6, NH_F_RESOLVED},
    maps::ECMP_MAX_LEGS,
    EcmpGroup, Nexthop, NexthopInfo, RouteAction, RouteKind,
};
use prefix_trie::PrefixMap;
use slots::{Acquired, Interner, Pool};

use crate::events::Event;
use crate::fast_maps::{FastMap, HashMapExt, PrefixHashMap};
use crate::{
    dir24::{Covering, Dir24Error},
    ecmp::{build_group, Leg as EcmpLeg},
};

/// One path of a route: out of `ifindex`, via `gateway` (none: the
/// destination is on the link).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Leg {
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
    pub weight: u32,
}

/// What a prefix should do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Forward(Vec<Leg>),
    Blackhole,
    Unreachable,
    Prohibit,
    Local,
    /// Leave it to `bpf_fib_lookup` (what the datapath does without an entry,
    /// but an explicit entry stops a covering prefix from answering).
    Kernel,
}

/// What the programmer needs to know about an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    pub mac: [u8; 6],
    pub mtu: u32,
    pub up: bool,
    /// For a VLAN device: (VLAN id, TPID, parent ifindex).
    pub vlan: Option<(u16, u16, u32)>,
}

/// A gateway on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NexthopKey {
    pub ifindex: u32,
    pub gateway: IpAddr,
}

type GroupKey = Vec<(NexthopKey, u32)>;

/// The `NH_INFO` record of a nexthop key.
pub fn nexthop_info(key: &NexthopKey) -> NexthopInfo {
    let mut info = NexthopInfo {
        ifindex: key.ifindex,
        ..Default::default()
    };
    match key.gateway {
        IpAddr::V4(a) => {
            info.family = 4;
            info.gateway[..4].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            info.family = 6;
            info.gateway = a.octets();
        }
    }
    info
}

/// The nexthop key an `NH_INFO` record stands for.
pub fn nexthop_key(info: &NexthopInfo) -> Option<NexthopKey> {
    let gateway = match info.family {
        4 => IpAddr::from(<[u8; 4]>::try_from(&info.gateway[..4]).ok()?),
        6 => IpAddr::from(info.gateway),
        _ => return None,
    };
    Some(NexthopKey {
        ifindex: info.ifindex,
        gateway,
    })
}

/// The `NEXTHOPS` entry for a gateway, given its interface and neighbour.
pub fn resolve_nexthop(
    key: &NexthopKey,
    link: Option<&LinkInfo>,
    neighbour: Option<&[u8; 6]>,
) -> Nexthop {
    let mut nexthop = Nexthop {
        tx_ifindex: key.ifindex,
        ..Default::default()
    };
    if key.gateway.is_ipv6() {
        nexthop.flags |= NH_F_GATEWAY_V6;
    }
    let Some(link) = link else {
        return nexthop;
    };
    nexthop.smac = link.mac;
    nexthop.mtu = link.mtu.min(u16::MAX as u32) as u16;
    if let Some((vlan_id, tpid, parent)) = link.vlan {
        nexthop.tx_ifindex = parent;
        nexthop.vlan_id = vlan_id;
        nexthop.vlan_proto = tpid;
    }
    if let (true, Some(mac)) = (link.up, neighbour) {
        nexthop.dmac = *mac;
        nexthop.flags |= NH_F_RESOLVED;
    }
    nexthop
}

/// Whether the datapath can forward `legs` itself: every leg has a gateway
/// (on-link destinations each need their own neighbour, which the kernel's
/// lookup resolves) and a group holds them all.
pub fn offloadable(legs: &[Leg]) -> bool {
    !legs.is_empty() && legs.len() <= ECMP_MAX_LEGS && legs.iter().all(|l| l.gateway.is_some())
}

/// Map writes, so the programmer runs against real maps or a test double.
pub trait MapWriter {
    type Error: std::fmt::Display;
    /// Writes the nexthop into `slot`, then points `id` at it.
    fn write_nexthop(&mut self, id: u32, slot: u32, nexthop: &Nexthop) -> Result<(), Self::Error>;
    /// Records what nexthop `id` stands for (read by `diff` and `lookup`).
    fn write_nexthop_info(&mut self, id: u32, info: &NexthopInfo) -> Result<(), Self::Error>;
    /// Writes the group into `slot`, then points `id` at it.
    fn write_group(&mut self, id: u32, slot: u32, group: &EcmpGroup) -> Result<(), Self::Error>;
    fn insert_v4(&mut self, prefix: Ipv4Net, action: RouteAction) -> Result<(), Dir24Error>;
    fn remove_v4(&mut self, prefix: Ipv4Net, covering: Covering, last_in_block: bool);
    /// Gives a deferred /24 block a second-level group again (see
    /// [`crate::dir24::Dir24::rebuild_deferred`]).
    fn rebuild_v4_block(
        &mut self,
        block: u32,
        covering: Covering,
        longer: &[(Ipv4Net, RouteAction)],
    ) -> Result<(), Dir24Error>;
    fn insert_v6(&mut self, prefix: Ipv6Net, action: RouteAction) -> Result<(), Self::Error>;
    fn remove_v6(&mut self, prefix: Ipv6Net) -> Result<(), Self::Error>;
    /// Lets quarantined second-level IPv4 groups be reused.
    fn reclaim(&mut self);
    /// Sends writes a writer queued on their way, and returns those the
    /// maps refused since the last call (writers that write inline have
    /// nothing queued and report failures from the write itself).
    fn end_batch(&mut self) -> Refusals {
        Refusals::default()
    }
    /// Returns once every write made so far is in the maps, with the
    /// writes the maps refused.
    fn flush(&mut self) -> Refusals {
        Refusals::default()
    }
}

/// What the maps refused after a writer had accepted it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refusals {
    pub v6: Vec<FailedWrite>,
    /// /24 blocks the IPv4 table left to the kernel for want of a
    /// second-level group (it answers `Fib` for them already).
    pub v4_blocks: Vec<u32>,
}

/// An IPv6 route write the maps refused after the writer had accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedWrite {
    pub prefix: Ipv6Net,
    /// The action written, or `None` for a removal.
    pub action: Option<RouteAction>,
    pub error: String,
}

impl<W: MapWriter> MapWriter for &mut W {
    type Error = W::Error;
    fn write_nexthop(&mut self, id: u32, slot: u32, nexthop: &Nexthop) -> Result<(), Self::Error> {
        (**self).write_nexthop(id, slot, nexthop)
    }
    fn write_nexthop_info(&mut self, id: u32, info: &NexthopInfo) -> Result<(), Self::Error> {
        (**self).write_nexthop_info(id, info)
    }
    fn write_group(&mut self, id: u32, slot: u32, group: &EcmpGroup) -> Result<(), Self::Error> {
        (**self).write_group(id, slot, group)
    }
    fn insert_v4(&mut self, prefix: Ipv4Net, action: RouteAction) -> Result<(), Dir24Error> {
        (**self).insert_v4(prefix, action)
    }
    fn remove_v4(&mut self, prefix: Ipv4Net, covering: Covering, last_in_block: bool) {
        (**self).remove_v4(prefix, covering, last_in_block)
    }
    fn rebuild_v4_block(
        &mut self,
        block: u32,
        covering: Covering,
        longer: &[(Ipv4Net, RouteAction)],
    ) -> Result<(), Dir24Error> {
        (**self).rebuild_v4_block(block, covering, longer)
    }
    fn insert_v6(&mut self, prefix: Ipv6Net, action: RouteAction) -> Result<(), Self::Error> {
        (**self).insert_v6(prefix, action)
    }
    fn remove_v6(&mut self, prefix: Ipv6Net) -> Result<(), Self::Error> {
        (**self).remove_v6(prefix)
    }
    fn reclaim(&mut self) {
        (**self).reclaim()
    }
    fn end_batch(&mut self) -> Refusals {
        (**self).end_batch()
    }
    fn flush(&mut self) -> Refusals {
        (**self).flush()
    }
}

/// Table sizes the programmer must stay within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub nexthops: u32,
    pub ecmp_groups: u32,
    pub v6_routes: u32,
}

/// Counters a reader of `status` and the metrics cares about.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProgrammerStats {
    pub routes_v4: u64,
    pub routes_v6: u64,
    /// Prefixes left to the kernel because a table was full.
    pub deferred_v4: u64,
    pub deferred_v6: u64,
    pub overflow_nexthops: u64,
    pub overflow_groups: u64,
    pub overflow_v4_groups: u64,
    pub overflow_v6_routes: u64,
    /// Routes with more legs than a group holds, or an on-link leg in a multipath.
    pub unsupported_routes: u64,
    pub nexthop_writes: u64,
    pub group_writes: u64,
    pub write_errors: u64,
}

/// What a prefix is programmed with. The action names the nexthop or group
/// id the route holds a reference to, so nothing else needs keeping: a full
/// table is a million of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Programmed {
    action: RouteAction,
    /// The route has no entry (its table was full).
    deferred: bool,
}

/// One entry of the programmer's per-prefix table. A full table means a
/// million prefixes, and two tables keyed by prefix cost a cache miss each
/// per route; so the table is shared: its owner (the RIB) keeps its own
/// per-prefix state in the same entry, and the programmer its part.
pub trait ProgrammedEntry: Default {
    fn programmed(&self) -> Option<Programmed>;
    fn programmed_mut(&mut self) -> &mut Option<Programmed>;
    /// Nothing is kept in the entry any more: it can go.
    fn is_vacant(&self) -> bool;
}

/// The entry of a programmer used on its own.
impl ProgrammedEntry for Option<Programmed> {
    fn programmed(&self) -> Option<Programmed> {
        *self
    }
    fn programmed_mut(&mut self) -> &mut Option<Programmed> {
        self
    }
    fn is_vacant(&self) -> bool {
        self.is_none()
    }
}

struct NexthopState {
    slot: u32,
    value: Nexthop,
}

pub struct Programmer<W: MapWriter, E: ProgrammedEntry = Option<Programmed>> {
    writer: W,
    limits: Limits,
    links: FastMap<u32, LinkInfo>,
    neighbours: FastMap<NexthopKey, [u8; 6]>,
    nexthop_ids: Interner<NexthopKey>,
    nexthops: FastMap<u32, NexthopState>,
    nexthop_slots: Pool,
    group_ids: Interner<GroupKey>,
    group_slots: FastMap<u32, u32>,
    group_slot_pool: Pool,
    routes: PrefixHashMap<E>,
    /// Programmed IPv4 prefixes longer than /24 per /24 block: the block's
    /// second-level group is released with the last of them.
    v4_long_per_block: FastMap<u32, u32>,
    /// /24 blocks left to the kernel for want of a second-level group,
    /// retried when groups are reclaimed.
    v4_deferred_blocks: std::collections::BTreeSet<u32>,
    /// Deferred IPv6 prefixes, each with the installed prefix that covers
    /// it (and answers `Fib` while it does). An IPv6 prefix is installed
    /// when `routes` holds it and it is not deferred.
    v6_deferred: PrefixMap<Ipv6Net, Option<Ipv6Net>>,
    /// Installed IPv6 prefixes answering `Fib` because a deferred prefix lies under them.
    v6_shadowed: FastMap<Ipv6Net, u32>,
    v6_count: u32,
    recorder: Option<Recorder>,
    pub stats: ProgrammerStats,
}

/// Programming events kept for the event stream until the daemon drains them.
#[derive(Default)]
struct Recorder {
    events: Vec<Event>,
    folded_routes: u64,
    folded_nexthops: u64,
}

/// Events kept between drains; beyond this they are folded into counts.
const RECORDED_EVENTS: usize = 1024;

impl Recorder {
    fn record(&mut self, event: Event) {
        if self.events.len() < RECORDED_EVENTS {
            self.events.push(event);
        } else if matches!(event, Event::Route { .. }) {
            self.folded_routes += 1;
        } else {
            self.folded_nexthops += 1;
        }
    }
}

/// How an action reads in events and logs.
pub fn describe_action(action: RouteAction) -> String {
    match action.kind() {
        Some(RouteKind::Nexthop) => format!("nexthop {}", action.index()),
        Some(RouteKind::Group) => format!("group {}", action.index()),
        Some(RouteKind::Blackhole) => "blackhole".into(),
        Some(RouteKind::Unreachable) => "unreachable".into(),
        Some(RouteKind::Prohibit) => "prohibit".into(),
        Some(RouteKind::Local) => "local".into(),
        Some(RouteKind::Fib) | Some(RouteKind::Miss) => "kernel".into(),
        Some(RouteKind::Tbl8) | None => format!("invalid {:#x}", action.0),
    }
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl<W: MapWriter> Programmer<W> {
    /// A programmer that keeps its per-prefix table to itself.
    pub fn new(writer: W, limits: Limits) -> Self {
        Self::sharing_table(writer, limits)
    }
}

impl<W: MapWriter, E: ProgrammedEntry> Programmer<W, E> {
    /// A programmer whose per-prefix table also holds its owner's state
    /// (see [`ProgrammedEntry`]).
    pub fn sharing_table(writer: W, limits: Limits) -> Self {
        Self {
            writer,
            limits,
            links: FastMap::new(),
            neighbours: FastMap::new(),
            nexthop_ids: Interner::new(1, limits.nexthops),
            nexthops: FastMap::new(),
            nexthop_slots: Pool::new(1, 2 * limits.nexthops),
            group_ids: Interner::new(1, limits.ecmp_groups),
            group_slots: FastMap::new(),
            group_slot_pool: Pool::new(1, 2 * limits.ecmp_groups),
            routes: PrefixHashMap::new(),
            v4_long_per_block: FastMap::new(),
            v4_deferred_blocks: Default::default(),
            v6_deferred: PrefixMap::new(),
            v6_shadowed: FastMap::new(),
            v6_count: 0,
            recorder: None,
            stats: ProgrammerStats::default(),
        }
    }

    /// Starts (or stops) keeping programming events for [`Programmer::take_events`].
    pub fn record_events(&mut self, on: bool) {
        self.recorder = on.then(Recorder::default);
    }

    /// The events since the last call; a flood is folded into one `Bulk`.
    pub fn take_events(&mut self) -> Vec<Event> {
        let Some(recorder) = &mut self.recorder else {
            return Vec::new();
        };
        let taken = std::mem::take(recorder);
        if taken.folded_routes + taken.folded_nexthops == 0 {
            return taken.events;
        }
        let routes = taken
            .events
            .iter()
            .filter(|e| matches!(e, Event::Route { .. }))
            .count() as u64;
        let nexthops = taken.events.len() as u64 - routes;
        vec![Event::Bulk {
            routes: routes + taken.folded_routes,
            nexthops: nexthops + taken.folded_nexthops,
        }]
    }

    fn record(&mut self, event: impl FnOnce() -> Event) {
        if let Some(recorder) = &mut self.recorder {
            recorder.record(event());
        }
    }

    pub fn writer(&self) -> &W {
        &self.writer
    }

    pub fn writer_mut(&mut self) -> &mut W {
        &mut self.writer
    }

    /// Reuse of freed ids and slots; call when no datapath reader can still
    /// hold them (the caller waits a grace period after the last change).
    pub fn reclaim(&mut self) {
        // A queued route write may still name an id released since; it must
        // be in the maps before that id can be handed out again.
        self.flush();
        self.nexthop_ids.reclaim();
        self.nexthop_slots.reclaim();
        self.group_ids.reclaim();
        self.group_slot_pool.reclaim();
        self.writer.reclaim();
        self.retry_deferred_v4();
    }

    /// The IPv4 table left `block` to the kernel after its writes were
    /// accepted: its longer prefixes are deferred, as an inline refusal
    /// defers them.
    fn v4_block_deferred(&mut self, block: u32) {
        let mut deferred = 0;
        for prefix in longer_prefixes_of(block) {
            if let Some(route) = self.programmed_mut(IpNet::V4(prefix)) {
                if !route.deferred {
                    route.deferred = true;
                    deferred += 1;
                }
            }
        }
        if deferred == 0 {
            return;
        }
        tracing::warn!(
            block = %std::net::Ipv4Addr::from(block << 8),
            prefixes = deferred,
            "no free IPv4 second-level group; the /24's longer prefixes are left to bpf_fib_lookup"
        );
        self.stats.overflow_v4_groups += deferred;
        self.stats.deferred_v4 += deferred;
        self.v4_deferred_blocks.insert(block);
    }

    /// Gives deferred /24 blocks their second-level group back while groups
    /// are free, with every prefix of the block at once.
    fn retry_deferred_v4(&mut self) {
        while let Some(&block) = self.v4_deferred_blocks.first() {
            let base = std::net::Ipv4Addr::from(block << 8);
            let covering = (0..=24u8).rev().find_map(|len| {
                let above = Ipv4Net::new(base, len).ok()?.trunc();
                let programmed = self.programmed_v4(above)?;
                (!programmed.deferred).then_some((len, programmed.action))
            });
            let longer: Vec<(Ipv4Net, RouteAction)> = longer_prefixes_of(block)
                .filter_map(|p| self.programmed_v4(p).map(|r| (p, r.action)))
                .collect();
            if self
                .writer
                .rebuild_v4_block(block, covering, &longer)
                .is_err()
            {
                return;
            }
            self.v4_deferred_blocks.remove(&block);
            for (prefix, _) in &longer {
                if let Some(route) = self.programmed_mut(IpNet::V4(*prefix)) {
                    if std::mem::take(&mut route.deferred) {
                        self.stats.deferred_v4 -= 1;
                    }
                }
            }
            tracing::info!(
                block = %base,
                prefixes = longer.len(),
                "a second-level IPv4 group is free again: the /24's longer prefixes are installed"
            );
        }
    }

    /// Ends a batch of changes: queued map writes go out, and writes the
    /// maps refused are handled.
    pub fn end_batch(&mut self) {
        let refused = self.writer.end_batch();
        self.handle_refused(refused);
    }

    /// Returns once every change so far is in the maps.
    pub fn flush(&mut self) {
        let refused = self.writer.flush();
        self.handle_refused(refused);
    }

    /// A refused write that is still the prefix's current entry leaves the
    /// prefix to the kernel, as an inline failure does; one already
    /// superseded by a later write only counts.
    fn handle_refused(&mut self, refused: Refusals) {
        for block in refused.v4_blocks {
            self.v4_block_deferred(block);
        }
        for write in refused.v6 {
            self.stats.write_errors += 1;
            let prefix = write.prefix;
            let Some(action) = write.action else {
                tracing::error!(%prefix, error = %write.error, "removing an IPv6 route failed");
                continue;
            };
            let current = self.v6_installed(prefix).map(|installed| {
                if self.v6_shadowed.get(&prefix).copied().unwrap_or(0) > 0 {
                    RouteAction::simple(RouteKind::Fib)
                } else {
                    installed
                }
            });
            if current != Some(action) {
                tracing::warn!(%prefix, error = %write.error, "an IPv6 route write was refused; a later write replaced it");
                continue;
            }
            tracing::error!(%prefix, error = %write.error, "writing an IPv6 route failed; left to the kernel");
            self.leave_v6_to_kernel(prefix, true);
        }
    }

    /// What is programmed for `prefix` (for `diff` and tests).
    pub fn programmed(&self, prefix: &IpNet) -> Option<(RouteAction, bool)> {
        let programmed = self.routes.get(prefix)?.programmed()?;
        Some((programmed.action, programmed.deferred))
    }

    pub fn route_count(&self) -> usize {
        (self.stats.routes_v4 + self.stats.routes_v6) as usize
    }

    /// The per-prefix table, with what its owner keeps in the entries.
    pub fn entries(&self) -> &PrefixHashMap<E> {
        &self.routes
    }

    pub fn entries_mut(&mut self) -> &mut PrefixHashMap<E> {
        &mut self.routes
    }

    fn programmed_v4(&self, prefix: Ipv4Net) -> Option<Programmed> {
        self.routes.v4().get(&prefix)?.programmed()
    }

    fn programmed_v6(&self, prefix: Ipv6Net) -> Option<Programmed> {
        self.routes.v6().get(&prefix)?.programmed()
    }

    fn programmed_mut(&mut self, prefix: IpNet) -> Option<&mut Programmed> {
        self.routes.get_mut(&prefix)?.programmed_mut().as_mut()
    }

    pub fn nexthop_id(&self, key: &NexthopKey) -> Option<u32> {
        self.nexthop_ids.get(key)
    }

    pub fn nexthop_value(&self, id: u32) -> Option<Nexthop> {
        self.nexthops.get(&id).map(|s| s.value)
    }

    pub fn nexthops_in_use(&self) -> usize {
        self.nexthop_ids.len()
    }

    pub fn groups_in_use(&self) -> usize {
        self.group_ids.len()
    }

    /// IPv6 entries in the trie (installed routes, not deferred ones).
    pub fn v6_entries(&self) -> u32 {
        self.v6_count
    }

    /// Every programmed prefix with its action and whether it is deferred.
    pub fn routes(&self) -> impl Iterator<Item = (IpNet, RouteAction, bool)> + '_ {
        self.routes
            .iter()
            .filter_map(|(p, e)| e.programmed().map(|r| (p, r.action, r.deferred)))
    }

    // ----- links and neighbours -------------------------------------------

    pub fn set_link(&mut self, ifindex: u32, link: Option<LinkInfo>) {
        match link {
            Some(link) => {
                if self.links.insert(ifindex, link) == Some(link) {
                    return;
                }
            }
            None => {
                if self.links.remove(&ifindex).is_none() {
                    return;
                }
            }
        }
        let affected: Vec<u32> = self
            .nexthop_ids
            .iter()
            .filter(|(k, _)| k.ifindex == ifindex)
            .map(|(_, id)| id)
            .collect();
        for id in affected {
            self.refresh_nexthop(id);
        }
    }

    /// A neighbour's MAC, or `None` when it is unusable (failed, incomplete, gone).
    pub fn set_neighbour(&mut self, ifindex: u32, ip: IpAddr, mac: Option<[u8; 6]>) {
        let key = NexthopKey {
            ifindex,
            gateway: ip,
        };
        let changed = match mac {
            Some(mac) => self.neighbours.insert(key, mac) != Some(mac),
            None => self.neighbours.remove(&key).is_some(),
        };
        if changed {
            self.record(|| Event::Neighbour {
                ifindex,
                ip,
                mac: mac.as_ref().map(mac_text),
            });
            if let Some(id) = self.nexthop_ids.get(&key) {
                self.refresh_nexthop(id);
            }
        }
    }

    fn resolve(&self, key: &NexthopKey) -> Nexthop {
        resolve_nexthop(key, self.links.get(&key.ifindex), self.neighbours.get(key))
    }

    /// Rewrites nexthop `id` into a fresh slot if its value changed.
    fn refresh_nexthop(&mut self, id: u32) {
        let Some(key) = self.nexthop_ids.key_of(id).copied() else {
            return;
        };
        let value = self.resolve(&key);
        let Some(state) = self.nexthops.get(&id) else {
            return;
        };
        if state.value == value {
            return;
        }
        let old_slot = state.slot;
        let Some(slot) = self.nexthop_slots.take() else {
            // Both slots of every id are taken only if reclaim never ran;
            // rewrite in place rather than leave a stale MAC.
            self.write_nexthop_slot(id, old_slot, value);
            return;
        };
        if self.write_nexthop_slot(id, slot, value) {
            self.nexthop_slots.release(old_slot);
        } else {
            self.nexthop_slots.release(slot);
        }
    }

    fn write_nexthop_slot(&mut self, id: u32, slot: u32, value: Nexthop) -> bool {
        self.stats.nexthop_writes += 1;
        match self.writer.write_nexthop(id, slot, &value) {
            Ok(()) => {
                self.nexthops.insert(id, NexthopState { slot, value });
                if let Some(key) = self.nexthop_ids.key_of(id).copied() {
                    self.record(|| Event::Nexthop {
                        id,
                        ifindex: key.ifindex,
                        gateway: key.gateway,
                        resolved: value.is_resolved(),
                        dmac: mac_text(&value.dmac),
                    });
                }
                true
            }
            Err(err) => {
                self.stats.write_errors += 1;
                tracing::error!(id, slot, %err, "writing a nexthop failed");
                false
            }
        }
    }

    fn acquire_nexthop(&mut self, key: &NexthopKey) -> Option<u32> {
        match self.nexthop_ids.acquire(key) {
            Some(Acquired::Existing(id)) => Some(id),
            Some(Acquired::New(id)) => {
                if let Err(err) = self.writer.write_nexthop_info(id, &nexthop_info(key)) {
                    self.stats.write_errors += 1;
                    tracing::error!(id, %err, "recording a nexthop's gateway failed");
                }
                let value = self.resolve(key);
                let written = match self.nexthop_slots.take() {
                    Some(slot) => {
                        let ok = self.write_nexthop_slot(id, slot, value);
                        if !ok {
                            self.nexthop_slots.release(slot);
                        }
                        ok
                    }
                    None => false,
                };
                if !written {
                    self.nexthop_ids.release(key);
                    self.stats.overflow_nexthops += 1;
                    return None;
                }
                Some(id)
            }
            None => {
                self.stats.overflow_nexthops += 1;
                None
            }
        }
    }

    fn release_nexthop(&mut self, key: &NexthopKey) {
        if let Some(id) = self.nexthop_ids.release(key) {
            if let Some(state) = self.nexthops.remove(&id) {
                self.nexthop_slots.release(state.slot);
            }
        }
    }

    fn acquire_group(&mut self, key: &GroupKey) -> Option<u32> {
        // An existing group already holds its legs.
        if let Some(id) = self.group_ids.acquire_existing(key) {
            return Some(id);
        }
        // Legs first, so the group never names a nexthop id that is not written.
        let mut legs = Vec::with_capacity(key.len());
        for (i, (leg, weight)) in key.iter().enumerate() {
            match self.acquire_nexthop(leg) {
                Some(id) => legs.push(EcmpLeg {
                    nexthop_id: id,
                    weight: *weight,
                }),
                None => {
                    for (leg, _) in &key[..i] {
                        self.release_nexthop(leg);
                    }
                    return None;
                }
            }
        }
        let release_legs = |this: &mut Self| {
            for (leg, _) in key {
                this.release_nexthop(leg);
            }
        };
        match self.group_ids.acquire(key) {
            Some(Acquired::Existing(id)) => {
                // The group already holds references to its legs.
                release_legs(self);
                Some(id)
            }
            Some(Acquired::New(id)) => {
                let written = build_group(&legs).ok().and_then(|group| {
                    let slot = self.group_slot_pool.take()?;
                    self.stats.group_writes += 1;
                    match self.writer.write_group(id, slot, &group) {
                        Ok(()) => Some(slot),
                        Err(err) => {
                            self.stats.write_errors += 1;
                            tracing::error!(id, slot, %err, "writing an ECMP group failed");
                            self.group_slot_pool.release(slot);
                            None
                        }
                    }
                });
                match written {
                    Some(slot) => {
                        self.group_slots.insert(id, slot);
                        Some(id)
                    }
                    None => {
                        self.group_ids.release(key);
                        release_legs(self);
                        self.stats.overflow_groups += 1;
                        None
                    }
                }
            }
            None => {
                release_legs(self);
                self.stats.overflow_groups += 1;
                None
            }
        }
    }

    fn release_group(&mut self, key: &GroupKey) {
        if let Some(id) = self.group_ids.release(key) {
            if let Some(slot) = self.group_slots.remove(&id) {
                self.group_slot_pool.release(slot);
            }
            for (leg, _) in key {
                self.release_nexthop(leg);
            }
        }
    }

    /// Drops the reference `action` holds on a nexthop or group.
    fn release(&mut self, action: RouteAction) {
        match action.kind() {
            Some(RouteKind::Nexthop) => {
                if let Some(key) = self.nexthop_ids.key_of(action.index()).copied() {
                    self.release_nexthop(&key);
                }
            }
            Some(RouteKind::Group) => {
                if let Some(key) = self.group_ids.key_of(action.index()).cloned() {
                    self.release_group(&key);
                }
            }
            _ => {}
        }
    }

    /// Acquires what `target` needs and returns the action that names it.
    fn realise(&mut self, target: &Target) -> RouteAction {
        let simple = RouteAction::simple;
        match target {
            Target::Blackhole => simple(RouteKind::Blackhole),
            Target::Unreachable => simple(RouteKind::Unreachable),
            Target::Prohibit => simple(RouteKind::Prohibit),
            Target::Local => simple(RouteKind::Local),
            Target::Kernel => simple(RouteKind::Fib),
            Target::Forward(legs) => {
                if !offloadable(legs) {
                    if legs.iter().all(|l| l.gateway.is_some()) {
                        self.stats.unsupported_routes += 1;
                    }
                    return simple(RouteKind::Fib);
                }
                if let [leg] = legs.as_slice() {
                    let key = NexthopKey {
                        ifindex: leg.ifindex,
                        gateway: leg.gateway.expect("checked"),
                    };
                    return match self.acquire_nexthop(&key) {
                        Some(id) => RouteAction::new(RouteKind::Nexthop, id),
                        None => simple(RouteKind::Fib),
                    };
                }
                let mut key: GroupKey = legs
                    .iter()
                    .map(|l| {
                        (
                            NexthopKey {
                                ifindex: l.ifindex,
                                gateway: l.gateway.expect("checked"),
                            },
                            l.weight.max(1),
                        )
                    })
                    .collect();
                key.sort();
                match self.acquire_group(&key) {
                    Some(id) => RouteAction::new(RouteKind::Group, id),
                    None => simple(RouteKind::Fib),
                }
            }
        }
    }

    // ----- routes ----------------------------------------------------------

    /// Installs or changes a route.
    pub fn upsert(&mut self, prefix: IpNet, target: &Target) {
        let prefix = prefix.trunc();
        let action = self.realise(target);
        // Stored before the maps are written, so the prefix is looked up once
        // (its owner has usually just looked it up too); the rare deferral is
        // recorded after.
        let slot = self
            .routes
            .get_or_insert_with(prefix, E::default)
            .programmed_mut();
        let old = slot.replace(Programmed {
            action,
            deferred: false,
        });
        if let Some(old) = old {
            if old.action == action {
                // Same nexthop or group: drop the reference just taken.
                *slot = Some(old);
                self.release(action);
                return;
            }
        }
        let deferred = match prefix {
            IpNet::V4(p) => self.write_v4(p, action, old.is_some_and(|o| o.deferred)),
            IpNet::V6(p) => self.write_v6(p, action, old.is_some_and(|o| !o.deferred)),
        };
        if deferred {
            if let Some(programmed) = self.programmed_mut(prefix) {
                programmed.deferred = true;
            }
        }
        if let Some(old) = old {
            self.release(old.action);
        } else {
            match prefix {
                IpNet::V4(p) => {
                    self.stats.routes_v4 += 1;
                    if p.prefix_len() > 24 {
                        *self.v4_long_per_block.entry(block_of(p)).or_default() += 1;
                    }
                }
                IpNet::V6(_) => self.stats.routes_v6 += 1,
            }
        }
        self.record(|| Event::Route {
            prefix,
            op: "upsert".into(),
            action: describe_action(action),
            deferred,
        });
    }

    /// Removes a route.
    pub fn remove(&mut self, prefix: IpNet) {
        let prefix = prefix.trunc();
        let Some(entry) = self.routes.get_mut(&prefix) else {
            return;
        };
        let old = entry.programmed_mut().take();
        if entry.is_vacant() {
            self.routes.remove(&prefix);
        }
        let Some(old) = old else {
            return;
        };
        match prefix {
            IpNet::V4(p) => {
                self.stats.routes_v4 -= 1;
                self.remove_v4(p, old.deferred);
            }
            IpNet::V6(p) => {
                self.stats.routes_v6 -= 1;
                self.remove_v6(p, old.deferred);
            }
        }
        self.release(old.action);
        self.record(|| Event::Route {
            prefix,
            op: "remove".into(),
            action: describe_action(old.action),
            deferred: old.deferred,
        });
    }

    fn write_v4(&mut self, prefix: Ipv4Net, action: RouteAction, was_deferred: bool) -> bool {
        if was_deferred {
            // The block still defers; only the bookkeeping changes.
            return true;
        }
        match self.writer.insert_v4(prefix, action) {
            Ok(()) => false,
            Err(err) => {
                tracing::warn!(%err, "IPv4 prefix deferred to the kernel");
                self.stats.overflow_v4_groups += 1;
                self.stats.deferred_v4 += 1;
                self.v4_deferred_blocks.insert(block_of(prefix));
                true
            }
        }
    }

    fn remove_v4(&mut self, prefix: Ipv4Net, deferred: bool) {
        if deferred {
            self.stats.deferred_v4 -= 1;
        }
        // The longest installed prefix above this one: at most 32 probes,
        // and removals are rare next to lookups of a million-entry trie.
        let covering = (0..prefix.prefix_len()).rev().find_map(|len| {
            let above = Ipv4Net::new(prefix.network(), len).ok()?.trunc();
            let programmed = self.programmed_v4(above)?;
            (!programmed.deferred).then_some((len, programmed.action))
        });
        let last_in_block = prefix.prefix_len() <= 24 || {
            let block = block_of(prefix);
            let remaining = self.v4_long_per_block.get_mut(&block).map(|n| {
                *n -= 1;
                *n
            });
            if remaining == Some(0) {
                self.v4_long_per_block.remove(&block);
            }
            remaining.unwrap_or(0) == 0
        };
        if deferred && last_in_block {
            self.v4_deferred_blocks.remove(&block_of(prefix));
        }
        self.writer.remove_v4(prefix, covering, last_in_block);
    }

    /// What the trie holds for an installed IPv6 prefix (before shadowing).
    fn v6_installed(&self, prefix: Ipv6Net) -> Option<RouteAction> {
        let programmed = self.programmed_v6(prefix)?;
        (!programmed.deferred).then_some(programmed.action)
    }

    /// The longest installed IPv6 prefix strictly above `prefix`. At most
    /// 128 probes, and only deferred prefixes (a full table) ask.
    fn v6_cover(&self, prefix: Ipv6Net) -> Option<Ipv6Net> {
        (0..prefix.prefix_len()).rev().find_map(|len| {
            let above = Ipv6Net::new(prefix.network(), len).ok()?.trunc();
            self.v6_installed(above).map(|_| above)
        })
    }

    /// Writes `prefix` into the trie (the route table already holds its
    /// new action); returns whether it ended up deferred instead.
    fn write_v6(&mut self, prefix: Ipv6Net, action: RouteAction, was_installed: bool) -> bool {
        if !was_installed && self.v6_count >= self.limits.v6_routes {
            self.stats.overflow_v6_routes += 1;
            self.leave_v6_to_kernel(prefix, false);
            return true;
        }
        let shown = if self.v6_shadowed.get(&prefix).copied().unwrap_or(0) > 0 {
            RouteAction::simple(RouteKind::Fib)
        } else {
            action
        };
        if let Err(err) = self.writer.insert_v6(prefix, shown) {
            self.stats.write_errors += 1;
            tracing::error!(%prefix, %err, "writing an IPv6 route failed; left to the kernel");
            self.leave_v6_to_kernel(prefix, was_installed);
            return true;
        }
        if !was_installed {
            self.v6_count += 1;
        }
        if let Some(cover) = self.v6_deferred.remove(&prefix) {
            self.stats.deferred_v6 -= 1;
            if let Some(cover) = cover {
                self.unshadow_v6(cover);
            }
        }
        self.reshadow_v6_under(prefix);
        false
    }

    /// Takes `prefix` out of the trie (when `installed`, whatever it holds
    /// there is stale) and defers it: the kernel answers for it, and so does
    /// its covering prefix while it is deferred.
    fn leave_v6_to_kernel(&mut self, prefix: Ipv6Net, installed: bool) {
        if installed {
            if let Err(err) = self.writer.remove_v6(prefix) {
                tracing::error!(%prefix, %err, "removing a refused IPv6 route failed");
            }
            self.v6_count -= 1;
        }
        if let Some(route) = self.programmed_mut(IpNet::V6(prefix)) {
            route.deferred = true;
        }
        if !self.v6_deferred.contains_key(&prefix) {
            self.stats.deferred_v6 += 1;
            self.v6_deferred.insert(prefix, None);
        }
        self.reshadow_v6_under(prefix);
    }

    fn remove_v6(&mut self, prefix: Ipv6Net, deferred: bool) {
        if deferred {
            if let Some(cover) = self.v6_deferred.remove(&prefix) {
                self.stats.deferred_v6 -= 1;
                if let Some(cover) = cover {
                    self.unshadow_v6(cover);
                }
            }
            return;
        }
        self.v6_shadowed.remove(&prefix);
        self.v6_count -= 1;
        if let Err(err) = self.writer.remove_v6(prefix) {
            self.stats.write_errors += 1;
            tracing::error!(%prefix, %err, "removing an IPv6 route failed");
        }
        self.reshadow_v6_under(prefix);
        self.retry_deferred_v6();
    }

    /// Installs deferred IPv6 prefixes while there is room.
    fn retry_deferred_v6(&mut self) {
        while self.v6_count < self.limits.v6_routes {
            let Some(prefix) = self.v6_deferred.keys().next() else {
                return;
            };
            let Some(action) = self.programmed_v6(prefix).map(|r| r.action) else {
                self.v6_deferred.remove(&prefix);
                continue;
            };
            // Installed from here on, so the prefix covers its own deferred
            // prefixes; `write_v6` defers it again if it must.
            if let Some(route) = self.programmed_mut(IpNet::V6(prefix)) {
                route.deferred = false;
            }
            if self.write_v6(prefix, action, false) {
                return;
            }
        }
    }

    /// Re-points every deferred IPv6 prefix under `root` at its current
    /// covering installed prefix, which must answer `Fib` while it covers one.
    fn reshadow_v6_under(&mut self, root: Ipv6Net) {
        let deferred: Vec<(Ipv6Net, Option<Ipv6Net>)> = self
            .v6_deferred
            .children(&root)
            .map(|(p, c)| (p, *c))
            .collect();
        for (prefix, old_cover) in deferred {
            let new_cover = self.v6_cover(prefix);
            if new_cover == old_cover {
                continue;
            }
            if let Some(cover) = new_cover {
                let count = self.v6_shadowed.entry(cover).or_insert(0);
                *count += 1;
                if *count == 1 {
                    self.write_v6_raw(cover, RouteAction::simple(RouteKind::Fib));
                }
            }
            if let Some(cover) = old_cover {
                self.unshadow_v6(cover);
            }
            if let Some(slot) = self.v6_deferred.get_mut(&prefix) {
                *slot = new_cover;
            }
        }
    }

    fn unshadow_v6(&mut self, cover: Ipv6Net) {
        let Some(count) = self.v6_shadowed.get_mut(&cover) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.v6_shadowed.remove(&cover);
            if let Some(action) = self.v6_installed(cover) {
                self.write_v6_raw(cover, action);
            }
        }
    }

    fn write_v6_raw(&mut self, prefix: Ipv6Net, action: RouteAction) {
        if let Err(err) = self.writer.insert_v6(prefix, action) {
            self.stats.write_errors += 1;
            tracing::error!(%prefix, %err, "rewriting an IPv6 route failed");
        }
    }

    /// Prefixes whose entry currently answers `Fib` because of a deferred
    /// longer prefix (for status and tests).
    pub fn shadowed_v6(&self) -> std::collections::BTreeSet<Ipv6Net> {
        self.v6_shadowed.keys().copied().collect()
    }
}

/// Every prefix longer than /24 inside `block` (510 of them).
fn longer_prefixes_of(block: u32) -> impl Iterator<Item = Ipv4Net> {
    (25..=32u8).flat_map(move |len| {
        (0..256u32)
            .step_by(1 << (32 - len))
            .filter_map(move |offset| {
                Ipv4Net::new(std::net::Ipv4Addr::from((block << 8) | offset), len).ok()
            })
    })
}

/// The /24 block an IPv4 prefix lies in.
fn block_of(prefix: Ipv4Net) -> u32 {
    u32::from(prefix.network()) >> 8
}

#[cfg(test)]
mod tests;
