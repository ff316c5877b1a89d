//! The 32-bit route action stored in every prefix table.
//!
//! The top four bits say what to do, the low 28 bits name a nexthop id, an
//! ECMP group id or (for [`RouteKind::Tbl8`]) a second-level group. Zero means
//! "no entry", so freshly created maps are all misses.

pub const KIND_SHIFT: u32 = 28;
pub const INDEX_MASK: u32 = (1 << KIND_SHIFT) - 1;
/// Largest id that fits in a route action.
pub const MAX_INDEX: u32 = INDEX_MASK;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    /// No entry: ask the kernel with `bpf_fib_lookup`.
    Miss = 0,
    /// Forward to one nexthop id.
    Nexthop = 1,
    /// Forward over an ECMP group id.
    Group = 2,
    /// Drop.
    Blackhole = 3,
    /// Pass, so the kernel sends ICMP unreachable.
    Unreachable = 4,
    /// Pass, so the kernel sends ICMP administratively prohibited.
    Prohibit = 5,
    /// Addressed to the router itself: pass.
    Local = 6,
    /// Deliberately left to `bpf_fib_lookup` (a more specific prefix could
    /// not be installed, so the covering entry must not answer).
    Fib = 7,
    /// Continue in the table's next level: in `V4_TBL24`, the second-level
    /// group named by the index; in an IPv6 head, the root node named by the
    /// index; in an IPv6 leaf ([`V6_INHERIT`]), the slot's covering action.
    Tbl8 = 8,
}

impl RouteKind {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::Miss,
            1 => Self::Nexthop,
            2 => Self::Group,
            3 => Self::Blackhole,
            4 => Self::Unreachable,
            5 => Self::Prohibit,
            6 => Self::Local,
            7 => Self::Fib,
            8 => Self::Tbl8,
            _ => return None,
        })
    }
}

/// An IPv6 leaf answering with its slot's covering action (the longest
/// prefix of /22 or shorter), kept beside the head so that a change of a
/// short prefix is one store per slot, not a rebuild of every trie under it.
pub const V6_INHERIT: u32 = (RouteKind::Tbl8 as u32) << KIND_SHIFT;

#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteAction(pub u32);

impl RouteAction {
    pub const MISS: Self = Self(0);

    /// Builds an action; the index is masked to 28 bits, so callers check
    /// `index <= MAX_INDEX` when the id comes from outside.
    pub const fn new(kind: RouteKind, index: u32) -> Self {
        Self(((kind as u32) << KIND_SHIFT) | (index & INDEX_MASK))
    }

    pub const fn simple(kind: RouteKind) -> Self {
        Self::new(kind, 0)
    }

    pub const fn kind_raw(self) -> u32 {
        self.0 >> KIND_SHIFT
    }

    pub const fn kind(self) -> Option<RouteKind> {
        RouteKind::from_u32(self.kind_raw())
    }

    pub const fn index(self) -> u32 {
        self.0 & INDEX_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_an_action() {
        for raw in 0..=8 {
            let kind = RouteKind::from_u32(raw).unwrap();
            let action = RouteAction::new(kind, 12345);
            assert_eq!(action.kind(), Some(kind));
            assert_eq!(action.index(), 12345);
        }
    }

    #[test]
    fn a_zeroed_entry_is_a_miss() {
        assert_eq!(RouteAction(0).kind(), Some(RouteKind::Miss));
    }

    #[test]
    fn unknown_kinds_are_rejected() {
        assert_eq!(RouteAction(9 << KIND_SHIFT).kind(), None);
    }
}
