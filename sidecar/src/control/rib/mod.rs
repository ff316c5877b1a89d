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

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde::Serialize;

use super::decode::{Event, Kind, NextHops, NexthopDef, Op, Route, RouteKey};
use crate::programmer::{Leg, LinkInfo, MapWriter, Programmer, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Kernel,
    Fpm,
}

/// Where the RIB's conclusions go (the map programmer, or a test double).
pub trait FibSink {
    fn upsert(&mut self, prefix: IpNet, target: Target);
    fn remove(&mut self, prefix: IpNet);
    fn set_link(&mut self, ifindex: u32, link: Option<LinkInfo>);
    fn set_neighbour(&mut self, ifindex: u32, ip: IpAddr, mac: Option<[u8; 6]>);
}

impl<W: MapWriter> FibSink for Programmer<W> {
    fn upsert(&mut self, prefix: IpNet, target: Target) {
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

pub struct Rib {
    route_source: Source,
    tables: Vec<u32>,
    routes: HashMap<RouteKey, Entry<Route>>,
    keys_by_prefix: HashMap<IpNet, Vec<RouteKey>>,
    objects: HashMap<u32, Entry<NexthopDef>>,
    links: HashMap<u32, Entry<LinkInfo>>,
    neighbours: HashMap<(u32, IpAddr), Entry<[u8; 6]>>,
    addresses: HashMap<(u32, IpAddr), Entry<()>>,
    /// Host prefixes of the router's addresses, counted (an address can sit
    /// on several interfaces).
    locals: HashMap<IpNet, u32>,
    /// Prefixes whose routes name each nexthop object id.
    object_users: HashMap<u32, BTreeSet<IpNet>>,
    pub stats: RibStats,
}

impl Rib {
    /// `tables` in priority order: a prefix present in several answers from
    /// the first.
    pub fn new(route_source: Source, tables: Vec<u32>) -> Self {
        Self {
            route_source,
            tables,
            routes: HashMap::new(),
            keys_by_prefix: HashMap::new(),
            objects: HashMap::new(),
            links: HashMap::new(),
            neighbours: HashMap::new(),
            addresses: HashMap::new(),
            locals: HashMap::new(),
            object_users: HashMap::new(),
            stats: RibStats::default(),
        }
    }

    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Every prefix and what it should do (for `diff`).
    pub fn desired(&self) -> Vec<(IpNet, Target)> {
        let prefixes: BTreeSet<IpNet> = self
            .keys_by_prefix
            .keys()
            .copied()
            .chain(self.locals.keys().copied())
            .collect();
        prefixes
            .into_iter()
            .filter_map(|p| Some((p, self.target_of(&p)?)))
            .collect()
    }

    /// Applies one batch from `source` and tells `sink` what changed.
    pub fn apply_batch(
        &mut self,
        source: Source,
        events: impl IntoIterator<Item = Event>,
        sink: &mut impl FibSink,
    ) {
        let mut touched = BTreeSet::new();
        for event in events {
            self.stats.events += 1;
            self.apply(source, event, &mut touched, sink);
        }
        for prefix in touched {
            self.publish(prefix, sink);
        }
    }

    fn apply(
        &mut self,
        source: Source,
        event: Event,
        touched: &mut BTreeSet<IpNet>,
        sink: &mut impl FibSink,
    ) {
        match event {
            Event::Route(op, route) => {
                if source != self.route_source {
                    self.stats.ignored_other_source += 1;
                } else if !self.tables.contains(&route.key.table) {
                    self.stats.ignored_other_table += 1;
                } else {
                    touched.insert(route.key.prefix);
                    match op {
                        Op::Upsert => self.insert_route(route),
                        Op::Remove => self.remove_route(&route.key),
                    }
                }
            }
            Event::Nexthop(op, id, def) => {
                if source != self.route_source {
                    self.stats.ignored_other_source += 1;
                    return;
                }
                match (op, def) {
                    (Op::Upsert, Some(def)) => {
                        self.objects.insert(id, Entry::new(def));
                    }
                    _ => {
                        self.objects.remove(&id);
                    }
                }
                touched.extend(self.prefixes_using_object(id));
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
                touched.insert(host_prefix(ip));
            }
        }
    }

    fn insert_address(&mut self, ifindex: u32, ip: IpAddr) {
        if self
            .addresses
            .insert((ifindex, ip), Entry::new(()))
            .is_none()
        {
            *self.locals.entry(host_prefix(ip)).or_default() += 1;
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

    fn insert_route(&mut self, route: Route) {
        let key = route.key;
        if let NextHops::Object(id) = route.next {
            self.object_users.entry(id).or_default().insert(key.prefix);
        }
        match self.routes.insert(key, Entry::new(route)) {
            None => self.keys_by_prefix.entry(key.prefix).or_default().push(key),
            Some(old) => self.forget_object_use(&old.value),
        }
    }

    fn forget_object_use(&mut self, route: &Route) {
        if let NextHops::Object(id) = route.next {
            let still_used = self
                .keys_by_prefix
                .get(&route.key.prefix)
                .into_iter()
                .flatten()
                .any(|k| matches!(self.routes.get(k), Some(e) if e.value.next == NextHops::Object(id)));
            if !still_used {
                if let Some(users) = self.object_users.get_mut(&id) {
                    users.remove(&route.key.prefix);
                    if users.is_empty() {
                        self.object_users.remove(&id);
                    }
                }
            }
        }
    }

    fn remove_route(&mut self, key: &RouteKey) {
        let exact = self.routes.contains_key(key).then_some(*key);
        // A delete may carry no metric; then it names the only route of
        // that prefix in that table.
        let key = exact.or_else(|| {
            let same: Vec<&RouteKey> = self
                .keys_by_prefix
                .get(&key.prefix)?
                .iter()
                .filter(|k| k.table == key.table)
                .collect();
            (same.len() == 1 && key.metric == 0).then(|| *same[0])
        });
        let Some(key) = key else {
            self.stats.unknown_deletes += 1;
            return;
        };
        let Some(old) = self.routes.remove(&key) else {
            return;
        };
        if let Some(keys) = self.keys_by_prefix.get_mut(&key.prefix) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.keys_by_prefix.remove(&key.prefix);
            }
        }
        self.forget_object_use(&old.value);
    }

    /// Prefixes whose route names `id`, directly or through a group.
    fn prefixes_using_object(&self, id: u32) -> Vec<IpNet> {
        // Groups are few (thousands at most); routes may be millions, so
        // those are found through the index.
        let groups = self.objects.iter().filter(|(_, e)| {
            matches!(&e.value, NexthopDef::Group(m) if m.iter().any(|(member, _)| *member == id))
        });
        std::iter::once(id)
            .chain(groups.map(|(gid, _)| *gid))
            .filter_map(|o| self.object_users.get(&o))
            .flatten()
            .copied()
            .collect()
    }

    /// The route that answers for `prefix`: first configured table, then
    /// lowest metric.
    fn winner(&self, prefix: &IpNet) -> Option<&Route> {
        let keys = self.keys_by_prefix.get(prefix)?;
        keys.iter()
            .filter_map(|k| {
                let rank = self.tables.iter().position(|t| *t == k.table)?;
                Some(((rank, k.metric), &self.routes.get(k)?.value))
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, r)| r)
    }

    fn target_of(&self, prefix: &IpNet) -> Option<Target> {
        if self.locals.contains_key(prefix) {
            return Some(Target::Local);
        }
        let route = self.winner(prefix)?;
        Some(match route.kind {
            Kind::Blackhole => Target::Blackhole,
            Kind::Unreachable => Target::Unreachable,
            Kind::Prohibit => Target::Prohibit,
            Kind::Local => Target::Local,
            Kind::Unicast => match &route.next {
                NextHops::None => Target::Kernel,
                NextHops::Inline(legs) => forward(legs.clone()),
                NextHops::Object(id) => self.resolve_object(*id).unwrap_or(Target::Kernel),
            },
        })
    }

    fn resolve_object(&self, id: u32) -> Option<Target> {
        Some(match &self.objects.get(&id)?.value {
            NexthopDef::Blackhole => Target::Blackhole,
            NexthopDef::Gateway { ifindex, gateway } => forward(vec![Leg {
                ifindex: *ifindex,
                gateway: *gateway,
                weight: 1,
            }]),
            NexthopDef::Group(members) => {
                let mut legs = Vec::with_capacity(members.len());
                for (member, weight) in members {
                    match &self.objects.get(member)?.value {
                        NexthopDef::Gateway { ifindex, gateway } => legs.push(Leg {
                            ifindex: *ifindex,
                            gateway: *gateway,
                            weight: *weight,
                        }),
                        NexthopDef::Blackhole | NexthopDef::Group(_) => return None,
                    }
                }
                forward(legs)
            }
        })
    }

    fn publish(&mut self, prefix: IpNet, sink: &mut impl FibSink) {
        match self.target_of(&prefix) {
            Some(Target::Kernel) if self.is_unresolved(&prefix) => {
                self.stats.unresolved_routes += 1;
                sink.upsert(prefix, Target::Kernel);
            }
            Some(target) => sink.upsert(prefix, target),
            None => sink.remove(prefix),
        }
    }

    fn is_unresolved(&self, prefix: &IpNet) -> bool {
        self.winner(prefix)
            .is_some_and(|r| matches!(r.next, NextHops::Object(_)))
    }

    /// Marks everything `source` contributed; the dump or replay that follows
    /// unmarks what it repeats.
    pub fn begin_resync(&mut self, source: Source) {
        self.stats.resyncs += 1;
        if source == self.route_source {
            self.routes.values_mut().for_each(|e| e.marked = true);
            self.objects.values_mut().for_each(|e| e.marked = true);
        }
        if source == Source::Kernel {
            self.links.values_mut().for_each(|e| e.marked = true);
            self.neighbours.values_mut().for_each(|e| e.marked = true);
            self.addresses.values_mut().for_each(|e| e.marked = true);
        }
    }

    /// Removes what `source` did not repeat since [`Rib::begin_resync`].
    pub fn finish_resync(&mut self, source: Source, sink: &mut impl FibSink) {
        let mut touched = BTreeSet::new();
        if source == self.route_source {
            let stale: Vec<RouteKey> = self
                .routes
                .iter()
                .filter(|(_, e)| e.marked)
                .map(|(k, _)| *k)
                .collect();
            for key in stale {
                touched.insert(key.prefix);
                self.remove_route(&key);
                self.stats.swept += 1;
            }
            let stale: Vec<u32> = self
                .objects
                .iter()
                .filter(|(_, e)| e.marked)
                .map(|(k, _)| *k)
                .collect();
            for id in stale {
                self.objects.remove(&id);
                touched.extend(self.prefixes_using_object(id));
                self.stats.swept += 1;
            }
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
                touched.insert(host_prefix(ip));
                self.stats.swept += 1;
            }
        }
        for prefix in touched {
            self.publish(prefix, sink);
        }
    }
}

fn forward(legs: Vec<Leg>) -> Target {
    Target::Forward(legs)
}

fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Decides when an FPM replay is over. zebra sends no end marker: the replay
/// counts as complete once no message has arrived for `quiet`, or once
/// `max` has passed since the connection opened, whichever comes first.
#[derive(Debug, Clone)]
pub struct ReplayTracker {
    quiet: Duration,
    max: Duration,
    state: Option<(Instant, Instant)>,
}

impl ReplayTracker {
    pub fn new(quiet: Duration, max: Duration) -> Self {
        Self {
            quiet,
            max,
            state: None,
        }
    }

    pub fn connected(&mut self, now: Instant) {
        self.state = Some((now, now));
    }

    pub fn message(&mut self, now: Instant) {
        if let Some((_, last)) = &mut self.state {
            *last = now;
        }
    }

    pub fn in_replay(&self) -> bool {
        self.state.is_some()
    }

    /// True once, when the replay has just ended.
    pub fn poll(&mut self, now: Instant) -> bool {
        let Some((start, last)) = self.state else {
            return false;
        };
        if now.duration_since(last) >= self.quiet || now.duration_since(start) >= self.max {
            self.state = None;
            return true;
        }
        false
    }

    pub fn disconnected(&mut self) {
        self.state = None;
    }
}

#[cfg(test)]
mod tests;
