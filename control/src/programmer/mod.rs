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

#[cfg(any(test, feature = "fake-maps"))]
pub mod fake;
mod ingress;
mod nexthops;
pub mod slots;
mod v6;
mod writer;

pub use ingress::{ingress_flags, vrf_ports};
use nexthops::GroupKey;
pub use nexthops::{
    nexthop_info, nexthop_key, offloadable, resolve_nexthop, Leg, LinkInfo, NexthopKey,
};
pub use writer::{MapWriter, Refusals};

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use pf_common::{
    layout::{NH_F_GATEWAY_V6, NH_F_RESOLVED, PORT_F_VLAN},
    maps::ECMP_MAX_LEGS,
    EcmpGroup, Nexthop, NexthopInfo, Port, RouteAction, RouteKind,
};
use slots::{Acquired, Interner, Pool};

/// The `NEXTHOPS` slot of the parked entry: unresolved, so a route whose
/// nexthop points here is looked up by the kernel. Slot 0 means "no
/// entry" to the datapath; real values live from slot 2 on.
pub const PARKED_SLOT: u32 = 1;

use crate::events::Event;
use crate::fast_maps::{FastMap, HashMapExt, PrefixHashMap};
use crate::{
    dir24::{Covering, Dir24Error},
    ecmp::{build_group, Leg as EcmpLeg},
};

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

/// Table sizes the programmer must stay within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub nexthops: u32,
    pub ecmp_groups: u32,
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
    /// Nexthops pointed at the parked (unresolved) entry for want of a
    /// free slot: their neighbour changed faster than grace periods passed.
    #[serde(default)]
    pub nexthops_parked: u64,
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
    links: FastMap<u32, LinkInfo>,
    neighbours: FastMap<NexthopKey, [u8; 6]>,
    nexthop_ids: Interner<NexthopKey>,
    nexthops: FastMap<u32, NexthopState>,
    nexthop_slots: Pool,
    /// Nexthop ids pointing at [`PARKED_SLOT`], to be given a slot again.
    parked: Vec<u32>,
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
    /// /22 slots the IPv6 trie left to the kernel for want of room,
    /// retried when room is reclaimed.
    v6_deferred_slots: std::collections::BTreeSet<u32>,
    /// The `INGRESS` bits written, by ifindex.
    ingress: FastMap<u32, u32>,
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
            links: FastMap::new(),
            neighbours: FastMap::new(),
            nexthop_ids: Interner::new(1, limits.nexthops),
            nexthops: FastMap::new(),
            nexthop_slots: Pool::new(PARKED_SLOT + 1, 2 * limits.nexthops),
            parked: Vec::new(),
            group_ids: Interner::new(1, limits.ecmp_groups),
            group_slots: FastMap::new(),
            group_slot_pool: Pool::new(1, 2 * limits.ecmp_groups),
            routes: PrefixHashMap::new(),
            v4_long_per_block: FastMap::new(),
            v4_deferred_blocks: Default::default(),
            v6_deferred_slots: Default::default(),
            ingress: FastMap::new(),
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
        self.unpark_nexthops();
        self.retry_deferred_v4();
        self.retry_deferred_v6();
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

    /// Blocks and slots the tables left to the kernel after accepting the
    /// writes: their prefixes are deferred, as after an inline refusal.
    fn handle_refused(&mut self, refused: Refusals) {
        for block in refused.v4_blocks {
            self.v4_block_deferred(block);
        }
        for slot in refused.v6_slots {
            self.v6_slot_deferred(slot);
        }
    }

    /// What is programmed for `prefix` (for `diff` and tests).
    pub fn programmed(&self, prefix: &IpNet) -> Option<(RouteAction, bool)> {
        let programmed = self.routes.get(prefix)?.programmed()?;
        Some((programmed.action, programmed.deferred))
    }

    /// The longest programmed prefix holding `address`, with its action and
    /// whether it is deferred: the route the maps answer `address` from.
    /// One probe per prefix length, for `lookup`, not for the data path.
    pub fn longest_match(&self, address: IpAddr) -> Option<(IpNet, RouteAction, bool)> {
        let max = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (0..=max).rev().find_map(|len| {
            let prefix = IpNet::new(address, len).ok()?.trunc();
            self.programmed(&prefix)
                .map(|(action, deferred)| (prefix, action, deferred))
        })
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

    /// IPv6 prefixes in the trie, deferred slots' included.
    pub fn v6_entries(&self) -> u32 {
        self.stats.routes_v6 as u32
    }

    /// Every programmed prefix with its action and whether it is deferred.
    pub fn routes(&self) -> impl Iterator<Item = (IpNet, RouteAction, bool)> + '_ {
        self.routes
            .iter()
            .filter_map(|(p, e)| e.programmed().map(|r| (p, r.action, r.deferred)))
    }

    // ----- links and neighbours -------------------------------------------

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
            IpNet::V6(p) => self.write_v6(p, action, old.is_some_and(|o| o.deferred)),
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
