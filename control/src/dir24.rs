//! IPv4 longest-prefix match as a DIR-24-8 table (as in DPDK's rte_lpm).
//!
//! `V4_TBL24` holds one route action per /24 block; a block that contains
//! prefixes longer than /24 holds a `Tbl8` action naming a 256-entry group
//! in `V4_TBL8`. The datapath answers with one or two array reads. This
//! module keeps the shadow state (which prefix length wrote each entry) that
//! inserts and removals need, and writes through a [`Dir24Store`].
//!
//! Ordering rules, so the datapath never reads a half-built answer:
//! - a new group is filled before the block is pointed at it;
//! - a group is unhooked before it is reused, and only after [`Dir24::reclaim`]
//!   (called once readers of the old value are gone);
//! - when no group is free, the block answers `Fib` (ask the kernel) rather
//!   than the covering prefix, which would be wrong for the longer one.

use ipnet::Ipv4Net;
use pf_common::{maps::TBL8_GROUP_SIZE, RouteAction, RouteKind};

/// Storage of the two levels (the mmap'd maps, or a Vec in tests).
pub trait Dir24Store {
    fn tbl24(&self, block: u32) -> u32;
    fn set_tbl24(&mut self, block: u32, action: u32);
    fn tbl8(&self, group: u32, offset: u32) -> u32;
    fn set_tbl8(&mut self, group: u32, offset: u32, action: u32);
    fn tbl8_groups(&self) -> u32;
}

/// A prefix that still covers a removed one: its length and action.
pub type Covering = Option<(u8, RouteAction)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dir24Error {
    /// No second-level group was free: the block now defers to the kernel.
    #[error("no free IPv4 second-level group for {0}; the /24 is left to bpf_fib_lookup")]
    OutOfGroups(Ipv4Net),
}

/// Shadow depth values. Real depths are `prefix_len + 1` (1..=33), 0 is "no
/// prefix".
const DEPTH_NONE: u8 = 0;
/// The block points at a tbl8 group.
const DEPTH_EXTENDED: u8 = 0xfe;
/// The block defers to the kernel because a longer prefix could not get a group.
const DEPTH_DEFERRED: u8 = 0xff;

const BLOCKS: usize = 1 << 24;

pub struct Dir24<S> {
    store: S,
    depth24: Vec<u8>,
    depth8: Vec<u8>,
    free_groups: Vec<u32>,
    /// Groups unhooked from the table since the last `reclaim`.
    quarantined: Vec<u32>,
    /// Unhooked before the last `reclaim`: free after the next one.
    aging: Vec<u32>,
    deferred_blocks: usize,
}

fn depth_of(len: u8) -> u8 {
    len + 1
}

impl<S: Dir24Store> Dir24<S> {
    /// Starts from an empty table (all misses). The store must be zeroed.
    pub fn new(store: S) -> Self {
        let groups = store.tbl8_groups();
        Self {
            store,
            depth24: vec![DEPTH_NONE; BLOCKS],
            depth8: vec![DEPTH_NONE; groups as usize * TBL8_GROUP_SIZE],
            free_groups: (0..groups).rev().collect(),
            quarantined: Vec::new(),
            aging: Vec::new(),
            deferred_blocks: 0,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn groups_in_use(&self) -> usize {
        self.store.tbl8_groups() as usize
            - self.free_groups.len()
            - self.quarantined.len()
            - self.aging.len()
    }

    /// Groups ready for reuse.
    pub fn free_groups(&self) -> usize {
        self.free_groups.len()
    }

    /// Blocks answering `Fib` because a group could not be allocated.
    pub fn deferred_blocks(&self) -> usize {
        self.deferred_blocks
    }

    /// Called once per grace period (an XDP run takes microseconds; the
    /// daemon's period is tens of milliseconds): groups unhooked before the
    /// previous call become reusable.
    pub fn reclaim(&mut self) {
        self.free_groups.append(&mut self.aging);
        std::mem::swap(&mut self.aging, &mut self.quarantined);
    }

    /// What the datapath answers for `addr`.
    pub fn lookup(&self, addr: u32) -> RouteAction {
        let action = RouteAction(self.store.tbl24(addr >> 8));
        if action.kind() == Some(RouteKind::Tbl8) {
            RouteAction(self.store.tbl8(action.index(), addr & 0xff))
        } else {
            action
        }
    }

    /// Installs or replaces `prefix`.
    pub fn insert(&mut self, prefix: Ipv4Net, action: RouteAction) -> Result<(), Dir24Error> {
        let prefix = prefix.trunc();
        let len = prefix.prefix_len();
        let depth = depth_of(len);
        let addr = u32::from(prefix.network());
        if len <= 24 {
            let first = addr >> 8;
            let count = 1u32 << (24 - len);
            for block in first..first + count {
                self.write_block_range(block, 0, TBL8_GROUP_SIZE as u32, depth, action, |d| {
                    d <= depth
                });
            }
            return Ok(());
        }
        let block = addr >> 8;
        let group = match self.depth24[block as usize] {
            DEPTH_EXTENDED => RouteAction(self.store.tbl24(block)).index(),
            DEPTH_DEFERRED => return Err(Dir24Error::OutOfGroups(prefix)),
            block_depth => {
                let Some(group) = self.free_groups.pop() else {
                    self.depth24[block as usize] = DEPTH_DEFERRED;
                    self.deferred_blocks += 1;
                    self.store
                        .set_tbl24(block, RouteAction::simple(RouteKind::Fib).0);
                    return Err(Dir24Error::OutOfGroups(prefix));
                };
                let inherited = self.store.tbl24(block);
                for offset in 0..TBL8_GROUP_SIZE as u32 {
                    self.store.set_tbl8(group, offset, inherited);
                    self.depth8[Self::slot(group, offset)] = block_depth;
                }
                self.depth24[block as usize] = DEPTH_EXTENDED;
                self.store
                    .set_tbl24(block, RouteAction::new(RouteKind::Tbl8, group).0);
                group
            }
        };
        let first = addr & 0xff;
        let count = 1u32 << (32 - len);
        for offset in first..first + count {
            let slot = Self::slot(group, offset);
            if self.depth8[slot] <= depth {
                self.depth8[slot] = depth;
                self.store.set_tbl8(group, offset, action.0);
            }
        }
        Ok(())
    }

    /// Removes `prefix`; its addresses fall back to `covering`, the longest
    /// remaining prefix that contains it (or to a miss).
    ///
    /// Removing a prefix longer than /24 from a deferred block, once no other
    /// longer prefix remains there, is what the caller signals with
    /// `last_in_block`: the block then answers `covering` again.
    pub fn remove(&mut self, prefix: Ipv4Net, covering: Covering, last_in_block: bool) {
        let prefix = prefix.trunc();
        let len = prefix.prefix_len();
        let depth = depth_of(len);
        let addr = u32::from(prefix.network());
        let (new_depth, new_action) = match covering {
            Some((clen, caction)) => (depth_of(clen), caction),
            None => (DEPTH_NONE, RouteAction::MISS),
        };
        if len <= 24 {
            let first = addr >> 8;
            let count = 1u32 << (24 - len);
            for block in first..first + count {
                self.write_block_range(
                    block,
                    0,
                    TBL8_GROUP_SIZE as u32,
                    new_depth,
                    new_action,
                    |d| d == depth,
                );
            }
            return;
        }
        let block = addr >> 8;
        match self.depth24[block as usize] {
            DEPTH_EXTENDED => {
                let group = RouteAction(self.store.tbl24(block)).index();
                let first = addr & 0xff;
                for offset in first..first + (1u32 << (32 - len)) {
                    let slot = Self::slot(group, offset);
                    if self.depth8[slot] == depth {
                        self.depth8[slot] = new_depth;
                        self.store.set_tbl8(group, offset, new_action.0);
                    }
                }
                self.collapse_if_short(block, group);
            }
            DEPTH_DEFERRED if last_in_block => {
                // Only prefixes up to /24 can cover the block now; `covering`
                // is the longest of them.
                self.deferred_blocks -= 1;
                self.depth24[block as usize] = new_depth;
                self.store.set_tbl24(block, new_action.0);
            }
            _ => {}
        }
    }

    /// Gives a deferred block a second-level group again, once one is free:
    /// `covering` is the longest prefix up to /24 over the block and `longer`
    /// every prefix longer than /24 inside it. The group is filled before the
    /// block points at it, so the datapath goes from "ask the kernel" to the
    /// full answer in one step and never sees the covering prefix alone.
    pub fn rebuild_deferred(
        &mut self,
        block: u32,
        covering: Covering,
        longer: &[(Ipv4Net, RouteAction)],
    ) -> Result<(), Dir24Error> {
        let Some(&(first, _)) = longer.first() else {
            return Ok(());
        };
        if self.depth24[block as usize] != DEPTH_DEFERRED {
            return Ok(());
        }
        let Some(group) = self.free_groups.pop() else {
            return Err(Dir24Error::OutOfGroups(first));
        };
        let (base_depth, base_action) = match covering {
            Some((len, action)) => (depth_of(len), action),
            None => (DEPTH_NONE, RouteAction::MISS),
        };
        for offset in 0..TBL8_GROUP_SIZE as u32 {
            self.store.set_tbl8(group, offset, base_action.0);
            self.depth8[Self::slot(group, offset)] = base_depth;
        }
        for (prefix, action) in longer {
            let prefix = prefix.trunc();
            let depth = depth_of(prefix.prefix_len());
            let start = u32::from(prefix.network()) & 0xff;
            for offset in start..start + (1u32 << (32 - prefix.prefix_len())) {
                let slot = Self::slot(group, offset);
                if self.depth8[slot] <= depth {
                    self.depth8[slot] = depth;
                    self.store.set_tbl8(group, offset, action.0);
                }
            }
        }
        self.depth24[block as usize] = DEPTH_EXTENDED;
        self.deferred_blocks -= 1;
        self.store
            .set_tbl24(block, RouteAction::new(RouteKind::Tbl8, group).0);
        Ok(())
    }

    /// Writes `action` into the entries of `block` (or of its group) whose
    /// current depth satisfies `replace`.
    fn write_block_range(
        &mut self,
        block: u32,
        first: u32,
        count: u32,
        depth: u8,
        action: RouteAction,
        replace: impl Fn(u8) -> bool,
    ) {
        match self.depth24[block as usize] {
            DEPTH_DEFERRED => {}
            DEPTH_EXTENDED => {
                let group = RouteAction(self.store.tbl24(block)).index();
                for offset in first..first + count {
                    let slot = Self::slot(group, offset);
                    if replace(self.depth8[slot]) {
                        self.depth8[slot] = depth;
                        self.store.set_tbl8(group, offset, action.0);
                    }
                }
            }
            current => {
                if replace(current) {
                    self.depth24[block as usize] = depth;
                    self.store.set_tbl24(block, action.0);
                }
            }
        }
    }

    /// Returns a group to the block when no entry in it is longer than /24.
    fn collapse_if_short(&mut self, block: u32, group: u32) {
        let base = Self::slot(group, 0);
        let entries = &self.depth8[base..base + TBL8_GROUP_SIZE];
        if entries.iter().any(|&d| d > depth_of(24)) {
            return;
        }
        let depth = entries[0];
        let action = self.store.tbl8(group, 0);
        self.store.set_tbl24(block, action);
        self.depth24[block as usize] = depth;
        self.depth8[base..base + TBL8_GROUP_SIZE].fill(DEPTH_NONE);
        self.quarantined.push(group);
    }

    fn slot(group: u32, offset: u32) -> usize {
        group as usize * TBL8_GROUP_SIZE + offset as usize
    }
}

/// A heap-backed store for tests and for computing tables offline.
pub struct VecStore {
    pub tbl24: Vec<u32>,
    pub tbl8: Vec<u32>,
}

impl VecStore {
    pub fn new(groups: u32) -> Self {
        Self {
            tbl24: vec![0; BLOCKS],
            tbl8: vec![0; groups as usize * TBL8_GROUP_SIZE],
        }
    }
}

impl Dir24Store for VecStore {
    fn tbl24(&self, block: u32) -> u32 {
        self.tbl24[block as usize]
    }
    fn set_tbl24(&mut self, block: u32, action: u32) {
        self.tbl24[block as usize] = action;
    }
    fn tbl8(&self, group: u32, offset: u32) -> u32 {
        self.tbl8[group as usize * TBL8_GROUP_SIZE + offset as usize]
    }
    fn set_tbl8(&mut self, group: u32, offset: u32, action: u32) {
        self.tbl8[group as usize * TBL8_GROUP_SIZE + offset as usize] = action;
    }
    fn tbl8_groups(&self) -> u32 {
        (self.tbl8.len() / TBL8_GROUP_SIZE) as u32
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::Ipv4Addr};

    use super::*;
    use crate::test_rng::Rng;

    fn nh(id: u32) -> RouteAction {
        RouteAction::new(RouteKind::Nexthop, id)
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// The reference: longest match over a plain list of prefixes.
    fn reference(routes: &BTreeMap<Ipv4Net, RouteAction>, addr: u32) -> RouteAction {
        routes
            .iter()
            .filter(|(p, _)| p.contains(&Ipv4Addr::from(addr)))
            .max_by_key(|(p, _)| p.prefix_len())
            .map(|(_, a)| *a)
            .unwrap_or(RouteAction::MISS)
    }

    fn covering(routes: &BTreeMap<Ipv4Net, RouteAction>, prefix: Ipv4Net) -> Covering {
        routes
            .iter()
            .filter(|(p, _)| p.prefix_len() < prefix.prefix_len() && p.contains(&prefix.network()))
            .max_by_key(|(p, _)| p.prefix_len())
            .map(|(p, a)| (p.prefix_len(), *a))
    }

    fn last_in_block(routes: &BTreeMap<Ipv4Net, RouteAction>, prefix: Ipv4Net) -> bool {
        let block = u32::from(prefix.network()) >> 8;
        !routes
            .keys()
            .any(|p| p.prefix_len() > 24 && u32::from(p.network()) >> 8 == block)
    }

    #[test]
    fn a_24_answers_for_its_whole_block_only() {
        let mut t = Dir24::new(VecStore::new(4));
        t.insert(net("198.51.100.0/24"), nh(1)).unwrap();
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(198, 51, 100, 0))), nh(1));
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(198, 51, 100, 255))), nh(1));
        assert_eq!(
            t.lookup(u32::from(Ipv4Addr::new(198, 51, 101, 0))),
            RouteAction::MISS
        );
    }

    #[test]
    fn a_longer_prefix_wins_inside_its_covering_prefix() {
        let mut t = Dir24::new(VecStore::new(4));
        t.insert(net("198.51.0.0/16"), nh(1)).unwrap();
        t.insert(net("198.51.100.128/25"), nh(2)).unwrap();
        t.insert(net("198.51.100.200/32"), nh(3)).unwrap();
        let at = |o: u8| t.lookup(u32::from(Ipv4Addr::new(198, 51, 100, o)));
        assert_eq!(at(1), nh(1));
        assert_eq!(at(129), nh(2));
        assert_eq!(at(200), nh(3));
        assert_eq!(t.groups_in_use(), 1);
    }

    #[test]
    fn a_shorter_prefix_added_later_does_not_override_longer_ones() {
        let mut t = Dir24::new(VecStore::new(4));
        t.insert(net("198.51.100.0/24"), nh(2)).unwrap();
        t.insert(net("198.51.100.7/32"), nh(3)).unwrap();
        t.insert(net("198.51.0.0/16"), nh(1)).unwrap();
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(198, 51, 100, 7))), nh(3));
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(198, 51, 100, 8))), nh(2));
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(198, 51, 99, 8))), nh(1));
    }

    #[test]
    fn removing_the_last_long_prefix_collapses_the_group() {
        let mut t = Dir24::new(VecStore::new(1));
        t.insert(net("198.51.0.0/16"), nh(1)).unwrap();
        t.insert(net("198.51.100.7/32"), nh(3)).unwrap();
        t.remove(net("198.51.100.7/32"), Some((16, nh(1))), true);
        assert_eq!(t.groups_in_use(), 0);
        assert_eq!(
            t.store()
                .tbl24(u32::from(Ipv4Addr::new(198, 51, 100, 0)) >> 8),
            nh(1).0
        );
        t.reclaim();
        assert_eq!(t.free_groups(), 0, "a full grace period has not passed");
        t.reclaim();
        assert_eq!(t.free_groups(), 1);
        t.insert(net("203.0.113.9/32"), nh(4)).unwrap();
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(203, 0, 113, 9))), nh(4));
    }

    #[test]
    fn when_groups_run_out_the_block_defers_to_the_kernel_not_to_the_covering_prefix() {
        let mut t = Dir24::new(VecStore::new(1));
        t.insert(net("198.51.0.0/16"), nh(1)).unwrap();
        t.insert(net("198.51.100.7/32"), nh(2)).unwrap();
        let err = t.insert(net("198.51.101.7/32"), nh(3)).unwrap_err();
        assert_eq!(err, Dir24Error::OutOfGroups(net("198.51.101.7/32")));
        let deferred = t.lookup(u32::from(Ipv4Addr::new(198, 51, 101, 7)));
        assert_eq!(deferred.kind(), Some(RouteKind::Fib));
        // The rest of the /16 still answers from the cache.
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(198, 51, 102, 7))), nh(1));
        // A later covering insert must not paper over the deferral.
        t.insert(net("198.51.101.0/24"), nh(4)).unwrap();
        assert_eq!(
            t.lookup(u32::from(Ipv4Addr::new(198, 51, 101, 7))).kind(),
            Some(RouteKind::Fib)
        );
        assert_eq!(t.deferred_blocks(), 1);
        t.remove(net("198.51.101.7/32"), Some((16, nh(1))), true);
        assert_eq!(t.deferred_blocks(), 0);
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(198, 51, 101, 7))), nh(1));
    }

    #[test]
    fn a_default_route_covers_everything_not_more_specific() {
        let mut t = Dir24::new(VecStore::new(2));
        t.insert(net("0.0.0.0/0"), nh(9)).unwrap();
        t.insert(net("203.0.113.0/24"), nh(1)).unwrap();
        assert_eq!(t.lookup(0x0102_0304), nh(9));
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(203, 0, 113, 1))), nh(1));
        t.remove(net("0.0.0.0/0"), None, true);
        assert_eq!(t.lookup(0x0102_0304), RouteAction::MISS);
    }

    #[test]
    fn random_inserts_and_removes_match_a_reference_longest_prefix_match() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut t = Dir24::new(VecStore::new(64));
        let mut routes = BTreeMap::new();
        // Prefixes clustered under 198.51.96.0/19 so they overlap a lot.
        for step in 0..4000u32 {
            let len =
                [8, 16, 19, 20, 22, 23, 24, 24, 25, 26, 28, 30, 31, 32][(rng.next() % 14) as usize];
            let addr = 0xc633_6000u32 | (rng.next() as u32 & 0x1fff);
            let prefix = Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc();
            if rng.next().is_multiple_of(3) && routes.contains_key(&prefix) {
                routes.remove(&prefix);
                let cover = covering(&routes, prefix);
                let last = len <= 24 || last_in_block(&routes, prefix);
                t.remove(prefix, cover, last);
            } else {
                let action = nh(step + 1);
                if t.insert(prefix, action).is_ok() {
                    routes.insert(prefix, action);
                }
            }
            if step.is_multiple_of(64) {
                t.reclaim();
            }
            if step.is_multiple_of(200) {
                for _ in 0..500 {
                    let probe = 0xc633_6000u32 | (rng.next() as u32 & 0x1fff);
                    assert_eq!(
                        t.lookup(probe),
                        reference(&routes, probe),
                        "step {step} addr {}",
                        Ipv4Addr::from(probe)
                    );
                }
            }
        }
    }
}
