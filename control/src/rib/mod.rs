//! The desired forwarding state, built from decoded events.
//!
//! Routes and nexthop objects come from the configured route source (FPM or
//! the kernel); links, neighbours and addresses always come from the
//! kernel. Events are applied in batches (an FPM frame, a burst of kernel
//! messages): every prefix the batch touched is re-evaluated once at the end,
//! so FRR 8.4's DELROUTE + NEWROUTE pair in one frame becomes one update and
//! never a gap.
//!
//! After a (re)connect or an overrun, [`Rib::begin_resync`] marks what a
//! source contributed; whatever the new dump or replay does not repeat is
//! removed by [`Rib::finish_resync`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::change::{Change, Kind, NextHops, NexthopDef, Op, Route, RouteKey};
use link_local::LinkLocalPeers;
use users::ObjectUsers;

use crate::{
    fast_maps::{FastMap, FastSet, HashMapExt, PrefixHashMap, Slot},
    programmer::{
        slots::Interner, Leg, LinkInfo, MapWriter, Programmed, ProgrammedEntry, Programmer, Target,
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Kernel,
    Fpm,
}

/// Where the RIB's conclusions go (the map programmer, or a test double).
pub trait FibSink {
    /// The per-prefix table: the RIB keeps a prefix's routes in its entry,
    /// the sink what it programmed for the prefix, so a route costs one
    /// lookup of a million-entry table and not two.
    fn entries(&self) -> &PrefixHashMap<RibEntry>;
    fn entries_mut(&mut self) -> &mut PrefixHashMap<RibEntry>;
    fn upsert(&mut self, prefix: IpNet, target: &Target);
    fn remove(&mut self, prefix: IpNet);
    fn set_link(&mut self, ifindex: u32, link: Option<LinkInfo>);
    fn set_neighbour(&mut self, ifindex: u32, ip: IpAddr, mac: Option<[u8; 6]>);
    /// The batch is over: nothing more is coming until the next one.
    fn end_batch(&mut self) {}
}

impl<W: MapWriter> FibSink for Programmer<W, RibEntry> {
    fn entries(&self) -> &PrefixHashMap<RibEntry> {
        Programmer::entries(self)
    }
    fn entries_mut(&mut self) -> &mut PrefixHashMap<RibEntry> {
        Programmer::entries_mut(self)
    }
    fn upsert(&mut self, prefix: IpNet, target: &Target) {
        Programmer::upsert(self, prefix, target)
    }
    fn remove(&mut self, prefix: IpNet) {
        Programmer::remove(self, prefix)
    }
    fn set_link(&mut self, ifindex: u32, link: Option<LinkInfo>) {
        Programmer::set_link(self, ifindex, link)
    }
    fn set_neighbour(&mut self, ifindex: u32, ip: IpAddr, mac: Option<[u8; 6]>) {
        Programmer::set_neighbour(self, ifindex, ip, mac)
    }
    fn end_batch(&mut self) {
        Programmer::end_batch(self)
    }
}

#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct RibStats {
    pub events: u64,
    /// Route or nexthop events from the source routes are not taken from.
    pub ignored_other_source: u64,
    pub ignored_other_table: u64,
    /// Routes whose nexthop object (or a group member) is unknown: left to
    /// the kernel until it arrives.
    pub unresolved_routes: u64,
    pub resyncs: u64,
    pub swept: u64,
    /// Deletes of routes that were not there.
    pub unknown_deletes: u64,
}

/// A route as the RIB holds it, for readers such as `diff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WinningRoute {
    pub table: u32,
    pub metric: u32,
    pub protocol: u8,
}

pub struct Rib {
    route_source: Source,
    tables: Vec<u32>,
    /// Routes live in the sink's per-prefix table ([`FibSink::entries`]).
    route_count: usize,
    objects: FastMap<u32, Entry<NexthopDef>>,
    links: FastMap<u32, Entry<LinkInfo>>,
    neighbours: FastMap<(u32, IpAddr), Entry<[u8; 6]>>,
    addresses: FastMap<(u32, IpAddr), Entry<()>>,
    /// Host prefixes of the router's addresses, counted (an address can sit
    /// on several interfaces).
    locals: PrefixHashMap<u32>,
    /// Prefixes whose routes name each nexthop object id.
    object_users: ObjectUsers,
    /// Inline gateway sets of routes, interned and counted, each kept as
    /// the target it resolves to.
    leg_sets: Interner<Target>,
    /// With FPM as the route source: the IPv6 link-local peers the kernel
    /// forwards through, for zebra's inline `169.254.0.1` gateways.
    link_local: LinkLocalPeers,
    /// What nexthop objects resolve to, filled as routes are published and
    /// emptied whenever an object changes (a group depends on its members).
    /// (`None` while the object or a group member is unknown).
    object_targets: FastMap<u32, Option<Target>>,
    /// The prefixes the last batch or resync published.
    last_published: Vec<IpNet>,
    /// Whether `last_published` is kept (only offload replies read it).
    track_published: bool,
    /// The route source went away long enough ago that its routes are no
    /// longer trusted: every route it has not repeated since (a marked
    /// one) is left to the kernel, until a resync completes.
    stale: bool,
    /// A resync of the route source began and neither finished nor was
    /// abandoned: the marks say what it has not repeated yet.
    resync_open: bool,
    pub stats: RibStats,
}

impl Rib {
    /// `tables` in priority order: a prefix present in several answers from
    /// the first. Only the first 255 are followed.
    pub fn new(route_source: Source, mut tables: Vec<u32>) -> Self {
        tables.truncate(u8::MAX as usize);
        Self {
            route_source,
            tables,
            route_count: 0,
            objects: FastMap::new(),
            links: FastMap::new(),
            neighbours: FastMap::new(),
            addresses: FastMap::new(),
            locals: PrefixHashMap::new(),
            object_users: ObjectUsers::new(),
            leg_sets: Interner::new(1, u32::MAX),
            link_local: LinkLocalPeers::new(),
            object_targets: FastMap::new(),
            last_published: Vec::new(),
            track_published: false,
            stale: false,
            resync_open: false,
            stats: RibStats::default(),
        }
    }

    pub fn route_count(&self) -> usize {
        self.route_count
    }

    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Every prefix and what it should do (for `diff`).
    pub fn desired(&self, sink: &impl FibSink) -> Vec<(IpNet, Target)> {
        let entries = sink.entries();
        let mut prefixes: Vec<IpNet> = entries
            .iter()
            .filter(|(_, e)| !e.routes.is_empty())
            .map(|(p, _)| p)
            .chain(self.locals.keys())
            .collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        prefixes
            .into_iter()
            .filter_map(|p| Some((p, self.target_of(&p, entries)?)))
            .collect()
    }

    /// The route that answers for `prefix`, if one does.
    pub fn winning_route(&self, prefix: &IpNet, sink: &impl FibSink) -> Option<WinningRoute> {
        let route = routes_of(sink.entries(), prefix)?.winner()?;
        Some(WinningRoute {
            table: self.tables[route.table_rank as usize],
            metric: route.metric,
            protocol: route.protocol,
        })
    }

    /// Applies one batch from `source` and tells `sink` what changed.
    ///
    /// A route added or replaced is published at once, while its entry is
    /// still in cache. A prefix whose route the batch removed, and every
    /// prefix the batch touches after that, waits for the end of the batch,
    /// so that a delete followed by an add is one update and never a gap.
    pub fn apply_batch(
        &mut self,
        source: Source,
        events: impl IntoIterator<Item = Change>,
        sink: &mut impl FibSink,
    ) {
        let mut touched = Touched::default();
        for event in events {
            self.stats.events += 1;
            self.apply(source, event, &mut touched, sink);
        }
        self.publish_all(touched, sink);
    }

    fn publish_all(&mut self, touched: Touched, sink: &mut impl FibSink) {
        let Touched {
            mut published,
            mut deferred,
            ..
        } = touched;
        deferred.sort_unstable();
        deferred.dedup();
        for prefix in &deferred {
            self.publish(*prefix, sink);
        }
        if self.track_published {
            published.append(&mut deferred);
            published.sort_unstable();
            published.dedup();
            self.last_published = published;
        }
        self.leg_sets.reclaim();
        sink.end_batch();
    }

    /// Keeps the prefixes each batch re-evaluated for [`Rib::last_published`].
    pub fn track_published(&mut self, on: bool) {
        self.track_published = on;
        self.last_published.clear();
    }

    /// The prefixes the last batch or resync re-evaluated (for offload
    /// replies), when [`Rib::track_published`] is on.
    pub fn last_published(&self) -> &[IpNet] {
        &self.last_published
    }

    fn apply(
        &mut self,
        source: Source,
        event: Change,
        touched: &mut Touched,
        sink: &mut impl FibSink,
    ) {
        match event {
            Change::Route(op, route) => self.apply_route(source, op, route, touched, sink),
            Change::Nexthop(op, id, def) => self.apply_object(source, op, id, def, touched, sink),
            Change::Link(op, ifindex, info) => {
                let info = if op == Op::Upsert { info } else { None };
                match info {
                    Some(info) => {
                        let previous = self.links.insert(ifindex, Entry::new(info));
                        if previous.map(|p| p.value) != Some(info) {
                            sink.set_link(ifindex, Some(info));
                        }
                    }
                    None => {
                        if self.links.remove(&ifindex).is_some() {
                            sink.set_link(ifindex, None);
                        }
                    }
                }
            }
            Change::Neighbour(ifindex, ip, mac) => match mac {
                Some(mac) => {
                    let previous = self.neighbours.insert((ifindex, ip), Entry::new(mac));
                    if previous.map(|p| p.value) != Some(mac) {
                        sink.set_neighbour(ifindex, ip, Some(mac));
                    }
                }
                None => {
                    if self.neighbours.remove(&(ifindex, ip)).is_some() {
                        sink.set_neighbour(ifindex, ip, None);
                    }
                }
            },
            Change::Address(op, ifindex, ip) => {
                match op {
                    Op::Upsert => self.insert_address(ifindex, ip),
                    Op::Remove => self.remove_address(ifindex, ip),
                }
                touched.deferred.push(host_prefix(ip));
            }
        }
    }

    fn apply_route(
        &mut self,
        source: Source,
        op: Op,
        route: Route,
        touched: &mut Touched,
        sink: &mut impl FibSink,
    ) {
        if source != self.route_source {
            self.stats.ignored_other_source += 1;
            return;
        }
        let Some(rank) = self.tables.iter().position(|t| *t == route.key.table) else {
            self.stats.ignored_other_table += 1;
            return;
        };
        let prefix = route.key.prefix;
        match op {
            Op::Upsert => {
                let stored = self.store(rank as u8, route);
                if touched.removed.contains(&prefix) {
                    self.insert_route(prefix, stored, sink);
                    touched.deferred.push(prefix);
                } else {
                    // Resolved from the route itself, so publishing finds
                    // the prefix's entry still in cache.
                    let resolution = Resolution::of(&stored);
                    let wins = self.insert_route(prefix, stored, sink);
                    // A route that does not win, or a prefix that is one of
                    // the router's own, changes nothing.
                    if wins && !self.locals.contains_key(&prefix) {
                        self.publish_target(prefix, Some(resolution), sink);
                    }
                    if self.track_published {
                        touched.published.push(prefix);
                    }
                }
            }
            Op::Remove => {
                self.remove_route(rank as u8, &route.key, sink);
                touched.removed.insert(prefix);
                touched.deferred.push(prefix);
            }
        }
    }

    fn apply_object(
        &mut self,
        source: Source,
        op: Op,
        id: u32,
        def: Option<NexthopDef>,
        touched: &mut Touched,
        sink: &mut impl FibSink,
    ) {
        if source == Source::Kernel && self.route_source == Source::Fpm {
            let def = if op == Op::Upsert { def.as_ref() } else { None };
            if self.link_local.kernel_object(id, def) {
                touched.deferred.extend(self.prefixes_over_ipv4_ll(sink));
            }
        }
        if source != self.route_source {
            self.stats.ignored_other_source += 1;
            return;
        }
        let changed = match (op, def) {
            (Op::Upsert, Some(def)) => self
                .objects
                .insert(id, Entry::new(def.clone()))
                .is_none_or(|previous| previous.value != def),
            _ => self.objects.remove(&id).is_some(),
        };
        // A replay repeats every object: only a change re-publishes the
        // routes that name it.
        if changed {
            self.object_targets.clear();
            touched
                .deferred
                .extend(self.prefixes_using_object(id, sink));
        }
    }

    fn insert_address(&mut self, ifindex: u32, ip: IpAddr) {
        if self
            .addresses
            .insert((ifindex, ip), Entry::new(()))
            .is_none()
        {
            *self.locals.get_or_insert_with(host_prefix(ip), || 0) += 1;
        }
    }

    fn remove_address(&mut self, ifindex: u32, ip: IpAddr) {
        if self.addresses.remove(&(ifindex, ip)).is_some() {
            let prefix = host_prefix(ip);
            if let Some(count) = self.locals.get_mut(&prefix) {
                *count -= 1;
                if *count == 0 {
                    self.locals.remove(&prefix);
                }
            }
        }
    }

    /// A decoded route as the RIB keeps it (its inline legs interned).
    fn store(&mut self, table_rank: u8, route: Route) -> StoredRoute {
        let next = match route.next {
            NextHops::None => StoredNext::None,
            NextHops::Object(id) => StoredNext::Object(id),
            // Beyond four billion distinct leg sets the route is left to
            // the kernel rather than stored wrongly.
            NextHops::Inline(legs) => match self.leg_sets.acquire(&Target::Forward(legs)) {
                Some(acquired) => StoredNext::Legs(acquired.id()),
                None => StoredNext::None,
            },
        };
        StoredRoute {
            metric: route.key.metric,
            next,
            table_rank,
            protocol: route.protocol,
            kind: route.kind,
            marked: false,
        }
    }

    /// Stores `stored` for `prefix`; true when it is now the prefix's winner.
    fn insert_route(
        &mut self,
        prefix: IpNet,
        stored: StoredRoute,
        sink: &mut impl FibSink,
    ) -> bool {
        let object = stored.object();
        let rank = stored.rank();
        let (replaced, newly_named, wins) = match sink.entries_mut().slot(prefix) {
            Slot::Occupied(entry) => {
                let routes = &mut entry.routes;
                let named_before = object.is_some_and(|id| routes.names_object(id));
                let replaced = routes.upsert(stored);
                let wins = routes.winner().is_some_and(|w| w.rank() == rank);
                (replaced, !named_before, wins)
            }
            Slot::Vacant(slot) => {
                slot.insert(RibEntry {
                    routes: PrefixRoutes::One(stored),
                    programmed: None,
                });
                (None, true, true)
            }
        };
        if let Some(id) = object.filter(|_| newly_named) {
            if self.object_users.started(id, prefix) {
                let entries = sink.entries();
                self.object_users.compact(id, |p| {
                    routes_of(entries, p).is_some_and(|r| r.names_object(id))
                });
            }
        }
        match replaced {
            None => self.route_count += 1,
            Some(old) => self.forget(prefix, &old, sink),
        }
        wins
    }

    /// Lets go of what a route that is gone held: its leg set, or its place
    /// among the users of its nexthop object.
    fn forget(&mut self, prefix: IpNet, route: &StoredRoute, sink: &impl FibSink) {
        let id = match route.next {
            StoredNext::None => return,
            StoredNext::Legs(set) => {
                self.leg_sets.release_id(set);
                return;
            }
            StoredNext::Object(id) => id,
        };
        let still_named =
            routes_of(sink.entries(), &prefix).is_some_and(|routes| routes.names_object(id));
        if !still_named {
            self.object_users.stopped(id);
        }
    }

    fn remove_route(&mut self, table_rank: u8, key: &RouteKey, sink: &mut impl FibSink) {
        let entries = sink.entries_mut();
        let Some(entry) = entries.get_mut(&key.prefix) else {
            self.stats.unknown_deletes += 1;
            return;
        };
        let routes = &mut entry.routes;
        // A delete may carry no metric; then it names the only route of
        // that prefix in that table.
        let exact = (table_rank, key.metric);
        let rank = if routes.as_slice().iter().any(|r| r.rank() == exact) {
            Some(exact)
        } else {
            let mut same = routes
                .as_slice()
                .iter()
                .filter(|r| r.table_rank == table_rank);
            match (same.next(), same.next(), key.metric) {
                (Some(only), None, 0) => Some(only.rank()),
                _ => None,
            }
        };
        let Some(old) = rank.and_then(|rank| routes.remove(rank)) else {
            self.stats.unknown_deletes += 1;
            return;
        };
        // A programmed prefix keeps its entry until the sink is told.
        if entry.is_vacant() {
            entries.remove(&key.prefix);
        }
        self.route_count -= 1;
        self.forget(key.prefix, &old, sink);
    }

    /// Prefixes whose route names `id`, directly or through a group.
    fn prefixes_using_object(&mut self, id: u32, sink: &impl FibSink) -> Vec<IpNet> {
        // Groups are few (thousands at most); routes may be millions, so
        // those are found through the index.
        let objects: Vec<u32> = std::iter::once(id)
            .chain(
                self.objects
                    .iter()
                    .filter(|(_, e)| {
                        matches!(&e.value, NexthopDef::Group(m) if m.iter().any(|(member, _)| *member == id))
                    })
                    .map(|(gid, _)| *gid),
            )
            .collect();
        let mut prefixes = Vec::new();
        for object in objects {
            let entries = sink.entries();
            prefixes.extend(self.object_users.listed(object).iter().filter(|p| {
                routes_of(entries, p).is_some_and(|routes| routes.names_object(object))
            }));
        }
        prefixes.sort_unstable();
        prefixes.dedup();
        prefixes
    }

    /// Prefixes whose winning route has an inline `169.254.0.1` gateway
    /// (a link-local peer changed: a full walk, and a rare one).
    fn prefixes_over_ipv4_ll(&self, sink: &impl FibSink) -> Vec<IpNet> {
        sink.entries()
            .iter()
            .filter(|(_, entry)| {
                entry.routes.winner().is_some_and(|route| match route.next {
                    StoredNext::Legs(set) => self
                        .leg_sets
                        .key_of(set)
                        .is_some_and(link_local::names_ipv4_ll),
                    _ => false,
                })
            })
            .map(|(prefix, _)| prefix)
            .collect()
    }

    /// What `prefix` should do, for readers (`desired`).
    fn target_of(&self, prefix: &IpNet, entries: &PrefixHashMap<RibEntry>) -> Option<Target> {
        if self.locals.contains_key(prefix) {
            return Some(Target::Local);
        }
        Some(
            match self.resolution(routes_of(entries, prefix)?.winner()?) {
                Resolution::Fixed(target) => target.clone(),
                Resolution::Legs(set) => self.link_local.resolve(self.leg_sets.key_of(set)?),
                Resolution::Object(id) => {
                    resolve_object(&self.objects, id).unwrap_or(Target::Kernel)
                }
            },
        )
    }

    fn publish(&mut self, prefix: IpNet, sink: &mut impl FibSink) {
        if self.locals.contains_key(&prefix) {
            sink.upsert(prefix, &Target::Local);
            return;
        }
        let resolution = routes_of(sink.entries(), &prefix)
            .and_then(PrefixRoutes::winner)
            .map(|route| self.resolution(route));
        self.publish_target(prefix, resolution, sink);
    }

    /// What `route` resolves to now: the kernel decides for a route of a
    /// stale source that the source has not repeated since it came back.
    fn resolution(&self, route: &StoredRoute) -> Resolution {
        if self.stale && route.marked {
            Resolution::Fixed(&KERNEL)
        } else {
            Resolution::of(route)
        }
    }

    /// Tells `sink` what the prefix's winning route (none: removed) resolves to.
    fn publish_target(
        &mut self,
        prefix: IpNet,
        resolution: Option<Resolution>,
        sink: &mut impl FibSink,
    ) {
        let through_peer;
        let target = match resolution {
            None => return sink.remove(prefix),
            Some(Resolution::Fixed(target)) => target,
            Some(Resolution::Legs(set)) => match self.leg_sets.key_of(set) {
                Some(target) if self.link_local.applies(target) => {
                    through_peer = self.link_local.resolve(target);
                    &through_peer
                }
                Some(target) => target,
                None => &KERNEL,
            },
            Some(Resolution::Object(id)) => {
                let objects = &self.objects;
                let resolved = self
                    .object_targets
                    .entry(id)
                    .or_insert_with(|| resolve_object(objects, id));
                match resolved {
                    Some(target) => target,
                    None => {
                        self.stats.unresolved_routes += 1;
                        &KERNEL
                    }
                }
            }
        };
        sink.upsert(prefix, target);
    }
}

/// The prefixes one batch touched, by when they are published.
#[derive(Default)]
struct Touched {
    /// Published as their event was applied.
    published: Vec<IpNet>,
    /// Published at the end of the batch.
    deferred: Vec<IpNet>,
    /// Prefixes the batch removed a route of.
    removed: FastSet<IpNet>,
}

/// What nexthop object `id` resolves to; `None` while it or a group
/// member is unknown.
fn resolve_object(objects: &FastMap<u32, Entry<NexthopDef>>, id: u32) -> Option<Target> {
    Some(match &objects.get(&id)?.value {
        NexthopDef::Blackhole => Target::Blackhole,
        NexthopDef::Encapsulated => Target::Kernel,
        NexthopDef::Gateway { ifindex, gateway } => Target::Forward(vec![Leg {
            ifindex: *ifindex,
            gateway: *gateway,
            weight: 1,
        }]),
        NexthopDef::Group(members) => {
            let mut legs = Vec::with_capacity(members.len());
            for (member, weight) in members {
                match &objects.get(member)?.value {
                    NexthopDef::Gateway { ifindex, gateway } => legs.push(Leg {
                        ifindex: *ifindex,
                        gateway: *gateway,
                        weight: *weight,
                    }),
                    NexthopDef::Encapsulated => return Some(Target::Kernel),
                    NexthopDef::Blackhole | NexthopDef::Group(_) => return None,
                }
            }
            Target::Forward(legs)
        }
    })
}

fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

mod link_local;
mod resync;
mod stored;

pub use stored::RibEntry;
use stored::{routes_of, Entry, PrefixRoutes, Resolution, StoredNext, StoredRoute, KERNEL};
#[cfg(test)]
mod tests;
mod users;
