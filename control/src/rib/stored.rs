//! How the RIB stores routes: per prefix, in the entry it shares with the
//! programmer, ranked by table and metric, each with what it resolves to.

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Entry<T> {
    pub(super) value: T,
    pub(super) marked: bool,
}

impl<T> Entry<T> {
    pub(super) fn new(value: T) -> Self {
        Self {
            value,
            marked: false,
        }
    }
}

/// Where a stored route's packets go. Inline gateways are interned, so a
/// route is 16 bytes however many legs it has: a full table is a million.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoredNext {
    None,
    Object(u32),
    /// An id of [`Rib::leg_sets`].
    Legs(u32),
}

/// One route of a prefix; the map key holds the prefix.
#[derive(Debug, Clone, Copy)]
pub(super) struct StoredRoute {
    pub(super) metric: u32,
    pub(super) next: StoredNext,
    /// Position of the route's table in the configured list.
    pub(super) table_rank: u8,
    pub(super) protocol: u8,
    pub(super) kind: Kind,
    pub(super) marked: bool,
}

impl StoredRoute {
    pub(super) fn rank(&self) -> (u8, u32) {
        (self.table_rank, self.metric)
    }

    pub(super) fn object(&self) -> Option<u32> {
        match self.next {
            StoredNext::Object(id) => Some(id),
            _ => None,
        }
    }
}

/// What a route resolves to, found without looking at the prefix again.
#[derive(Debug, Clone, Copy)]
pub(super) enum Resolution {
    Fixed(&'static Target),
    Legs(u32),
    Object(u32),
}

pub(super) static KERNEL: Target = Target::Kernel;
static BLACKHOLE: Target = Target::Blackhole;
static UNREACHABLE: Target = Target::Unreachable;
static PROHIBIT: Target = Target::Prohibit;
static LOCAL: Target = Target::Local;

impl Resolution {
    pub(super) fn of(route: &StoredRoute) -> Self {
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
pub(super) enum PrefixRoutes {
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
    pub(super) routes: PrefixRoutes,
    pub(super) programmed: Option<Programmed>,
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
pub(super) fn routes_of<'a>(
    entries: &'a PrefixHashMap<RibEntry>,
    prefix: &IpNet,
) -> Option<&'a PrefixRoutes> {
    entries
        .get(prefix)
        .map(|e| &e.routes)
        .filter(|r| !r.is_empty())
}

impl PrefixRoutes {
    pub(super) fn as_slice(&self) -> &[StoredRoute] {
        match self {
            PrefixRoutes::None => &[],
            PrefixRoutes::One(r) => std::slice::from_ref(r),
            PrefixRoutes::Many(v) => v,
        }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [StoredRoute] {
        match self {
            PrefixRoutes::None => &mut [],
            PrefixRoutes::One(r) => std::slice::from_mut(r),
            PrefixRoutes::Many(v) => v,
        }
    }

    /// Adds `route`, replacing one of the same table and metric (returned).
    pub(super) fn upsert(&mut self, route: StoredRoute) -> Option<StoredRoute> {
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
    pub(super) fn remove(&mut self, rank: (u8, u32)) -> Option<StoredRoute> {
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

    pub(super) fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    pub(super) fn names_object(&self, id: u32) -> bool {
        self.as_slice()
            .iter()
            .any(|r| r.next == StoredNext::Object(id))
    }

    /// The route that answers: first configured table, then lowest metric.
    pub(super) fn winner(&self) -> Option<&StoredRoute> {
        self.as_slice().iter().min_by_key(|r| r.rank())
    }
}
