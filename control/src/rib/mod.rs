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

use super::decode::{Event, Kind, NextHops, NexthopDef, Op, Route, RouteKey};
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

#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    marked: bool,
}

impl<T> Entry<T> {
    fn new(value: T) -> Self {
        Self {
            value,
            marked: false,
        }
    }
}

/// Where a stored route's packets go. Inline gateways are interned, so a
/// route is 16 bytes however many legs it has: a full table is a million.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoredNext {
    None,
    Object(u32),
    /// An id of [`Rib::leg_sets`].
    Legs(u32),
}

/// One route of a prefix; the map key holds the prefix.
#[derive(Debug, Clone, Copy)]
struct StoredRoute {
    metric: u32,
    next: StoredNext,
    /// Position of the route's table in the configured list.
    table_rank: u8,
    protocol: u8,
    kind: Kind,
    marked: bool,
}

impl StoredRoute {
    fn rank(&self) -> (u8, u32) {
        (self.table_rank, self.metric)
    }

    fn object(&self) -> Option<u32> {
        match self.next {
            StoredNext::Object(id) => Some(id),
            _ => None,
        }
    }
}

/// What a route resolves to, found without looking at the prefix again.
#[derive(Debug, Clone, Copy)]
enum Resolution {
    Fixed(&'static Target),
    Legs(u32),
    Object(u32),
}

static KERNEL: Target = Target::Kernel;
static BLACKHOLE: Target = Target::Blackhole;
static UNREACHABLE: Target = Target::Unreachable;
static PROHIBIT: Target = Target::Prohibit;
static LOCAL: Target = Target::Local;

impl Resolution {
    fn of(route: &StoredRoute) -> Self {
        match route.kind {
            Kind::Blackhole => Self::Fixed(&BLACKHOLE),
            Kind::Unreachable => Self::Fixed(&UNREACHABLE),
            Kind::Prohibit => Self::Fixed(&PROHIBIT),
            Kind::Local => Self::Fixed(&LOCAL),
            Kind::Unicast => match route.next {
                StoredNext::None => Self::Fixed(&KERNEL),
                StoredNext::Legs(id) => Self::Legs(id),
                StoredNext::Object(id) => Self::Object(id),
            },
        }
    }
}

/// The routes of one prefix: nearly always exactly one, so that one is kept
/// inline (and the rare list boxed, to keep the entry small).
#[derive(Debug, Clone, Default)]
enum PrefixRoutes {
    /// The prefix is only programmed (one of the router's addresses), or its
    /// last route just went.
    #[default]
    None,
    One(StoredRoute),
    // A boxed Vec is one pointer: the entry stays small.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<StoredRoute>>),
}

/// A prefix's entry in the table the RIB shares with its sink.
#[derive(Debug, Default)]
pub struct RibEntry {
    routes: PrefixRoutes,
    programmed: Option<Programmed>,
}

impl ProgrammedEntry for RibEntry {
    fn programmed(&self) -> Option<Programmed> {
        self.programmed
    }
    fn programmed_mut(&mut self) -> &mut Option<Programmed> {
        &mut self.programmed
    }
    fn is_vacant(&self) -> bool {
        self.routes.is_empty() && self.programmed.is_none()
    }
}

// A full table is a million of these entries.
const _: () = assert!(std::mem::size_of::<(ipnet::Ipv4Net, RibEntry)>() <= 32);

/// The routes of `prefix`, if it has any.
fn routes_of<'a>(entries: &'a PrefixHashMap<RibEntry>, prefix: &IpNet) -> Option<&'a PrefixRoutes> {
    entries
        .get(prefix)
        .map(|e| &e.routes)
        .filter(|r| !r.is_empty())
}

impl PrefixRoutes {
    fn as_slice(&self) -> &[StoredRoute] {
        match self {
            PrefixRoutes::None => &[],
            PrefixRoutes::One(r) => std::slice::from_ref(r),
            PrefixRoutes::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [StoredRoute] {
        match self {
            PrefixRoutes::None => &mut [],
            PrefixRoutes::One(r) => std::slice::from_mut(r),
            PrefixRoutes::Many(v) => v,
        }
    }

    /// Adds `route`, replacing one of the same table and metric (returned).
    fn upsert(&mut self, route: StoredRoute) -> Option<StoredRoute> {
        if let Some(slot) = self
            .as_mut_slice()
            .iter_mut()
            .find(|r| r.rank() == route.rank())
        {
            return Some(std::mem::replace(slot, route));
        }
        match self {
            PrefixRoutes::None => *self = PrefixRoutes::One(route),
            PrefixRoutes::One(first) => *self = PrefixRoutes::Many(Box::new(vec![*first, route])),
            PrefixRoutes::Many(routes) => routes.push(route),
        }
        None
    }

    /// Removes the route ranked `rank`; `None` when there is none.
    fn remove(&mut self, rank: (u8, u32)) -> Option<StoredRoute> {
        match self {
            PrefixRoutes::None => None,
            PrefixRoutes::One(r) if r.rank() == rank => {
                let removed = *r;
                *self = PrefixRoutes::None;
                Some(removed)
            }
            PrefixRoutes::One(_) => None,
            PrefixRoutes::Many(routes) => {
                let at = routes.iter().position(|r| r.rank() == rank)?;
                let removed = routes.swap_remove(at);
                match routes.as_slice() {
                    [] => *self = PrefixRoutes::None,
                    [only] => *self = PrefixRoutes::One(*only),
                    _ => {}
                }
                Some(removed)
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    fn names_object(&self, id: u32) -> bool {
        self.as_slice()
            .iter()
            .any(|r| r.next == StoredNext::Object(id))
    }

    /// The route that answers: first configured table, then lowest metric.
    fn winner(&self) -> Option<&StoredRoute> {
        self.as_slice().iter().min_by_key(|r| r.rank())
    }
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
        events: impl IntoIterator<Item = Event>,
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
        event: Event,
        touched: &mut Touched,
        sink: &mut impl FibSink,
    ) {
        match event {
            Event::Route(op, route) => {
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
                            // Resolved from the route itself, so publishing
                            // finds the prefix's entry still in cache.
                            let resolution = Resolution::of(&stored);
                            let wins = self.insert_route(prefix, stored, sink);
                            // A route that does not win, or a prefix that is
                            // one of the router's own, changes nothing.
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
            Event::Nexthop(op, id, def) => {
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
                // A replay repeats every object: only a change re-publishes
                // the routes that name it.
                if changed {
                    self.object_targets.clear();
                    touched
                        .deferred
                        .extend(self.prefixes_using_object(id, sink));
                }
            }
            Event::Link(op, ifindex, info) => {
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
            Event::Neighbour(ifindex, ip, mac) => match mac {
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
            Event::Address(op, ifindex, ip) => {
                match op {
                    Op::Upsert => self.insert_address(ifindex, ip),
                    Op::Remove => self.remove_address(ifindex, ip),
                }
                touched.deferred.push(host_prefix(ip));
            }
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

    /// A resync of `source` ended without completing (the session closed
    /// in the middle of a replay, the kernel dump failed): it sweeps
    /// nothing, and its marks mean nothing until the next one.
    pub fn abandon_resync(&mut self, source: Source) {
        if source == self.route_source {
            self.resync_open = false;
        }
    }

    /// The route source has been gone too long: every route it has not
    /// repeated in a resync now in progress is left to the kernel
    /// (`Target::Kernel`, forwarded with `bpf_fib_lookup`) and stays in the
    /// RIB, so a returning source's replay restores what it repeats and
    /// the sweep at its end removes the rest. Returns how many prefixes
    /// were handed to the kernel.
    pub fn go_stale(&mut self, sink: &mut impl FibSink) -> usize {
        if !self.resync_open {
            // No resync in progress: nothing of the source is vouched for.
            mark_routes(sink);
        }
        self.stale = true;
        let deferred: Vec<IpNet> = sink
            .entries()
            .iter()
            .filter(|(prefix, entry)| {
                !self.locals.contains_key(prefix)
                    && entry.routes.winner().is_some_and(|route| route.marked)
            })
            .map(|(prefix, _)| prefix)
            .collect();
        let handed = deferred.len();
        self.publish_all(
            Touched {
                deferred,
                ..Default::default()
            },
            sink,
        );
        handed
    }

    /// Whether the route source's routes are left to the kernel
    /// ([`Rib::go_stale`]) until a resync completes.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Marks everything `source` contributed; the dump or replay that follows
    /// unmarks what it repeats.
    pub fn begin_resync(&mut self, source: Source, sink: &mut impl FibSink) {
        self.stats.resyncs += 1;
        if source == self.route_source {
            mark_routes(sink);
            self.objects.values_mut().for_each(|e| e.marked = true);
            self.resync_open = true;
        }
        if source == Source::Kernel {
            self.links.values_mut().for_each(|e| e.marked = true);
            self.neighbours.values_mut().for_each(|e| e.marked = true);
            self.addresses.values_mut().for_each(|e| e.marked = true);
        }
    }

    /// Removes what `source` did not repeat since [`Rib::begin_resync`].
    pub fn finish_resync(&mut self, source: Source, sink: &mut impl FibSink) {
        let mut touched = Touched::default();
        if source == self.route_source {
            let stale: Vec<(IpNet, u8, u32)> = sink
                .entries()
                .iter()
                .flat_map(|(prefix, entry)| {
                    entry
                        .routes
                        .as_slice()
                        .iter()
                        .filter(|r| r.marked)
                        .map(move |r| (prefix, r.table_rank, r.metric))
                })
                .collect();
            for (prefix, table_rank, metric) in stale {
                touched.deferred.push(prefix);
                let key = RouteKey {
                    table: self.tables[table_rank as usize],
                    prefix,
                    metric,
                };
                self.remove_route(table_rank, &key, sink);
                self.stats.swept += 1;
            }
            let stale: Vec<u32> = self
                .objects
                .iter()
                .filter(|(_, e)| e.marked)
                .map(|(k, _)| *k)
                .collect();
            if !stale.is_empty() {
                self.object_targets.clear();
            }
            for id in stale {
                self.objects.remove(&id);
                touched
                    .deferred
                    .extend(self.prefixes_using_object(id, sink));
                self.stats.swept += 1;
            }
            // What is left was repeated, and published as it was: the
            // source is trusted again.
            self.resync_open = false;
            self.stale = false;
        }
        if source == Source::Kernel {
            let stale: Vec<u32> = self
                .links
                .iter()
                .filter(|(_, e)| e.marked)
                .map(|(k, _)| *k)
                .collect();
            for ifindex in stale {
                self.links.remove(&ifindex);
                sink.set_link(ifindex, None);
                self.stats.swept += 1;
            }
            let stale: Vec<(u32, IpAddr)> = self
                .neighbours
                .iter()
                .filter(|(_, e)| e.marked)
                .map(|(k, _)| *k)
                .collect();
            for (ifindex, ip) in stale {
                self.neighbours.remove(&(ifindex, ip));
                sink.set_neighbour(ifindex, ip, None);
                self.stats.swept += 1;
            }
            let stale: Vec<(u32, IpAddr)> = self
                .addresses
                .iter()
                .filter(|(_, e)| e.marked)
                .map(|(k, _)| *k)
                .collect();
            for (ifindex, ip) in stale {
                self.remove_address(ifindex, ip);
                touched.deferred.push(host_prefix(ip));
                self.stats.swept += 1;
            }
        }
        self.publish_all(touched, sink);
    }
}

/// Marks every route in the table (the RIB holds only the route source's).
fn mark_routes(sink: &mut impl FibSink) {
    for entry in sink.entries_mut().values_mut() {
        entry
            .routes
            .as_mut_slice()
            .iter_mut()
            .for_each(|r| r.marked = true);
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
#[cfg(test)]
mod tests;
mod users;
