//! IPv6 longest-prefix match as a compressed multibit trie (Poptrie, Asai
//! and Ohara, SIGCOMM 2015), in arrays the datapath reads and the daemon
//! writes through mmap.
//!
//! `V6_TOP` holds one entry per /22: a route action, or the root of a trie
//! of [`V6Node`]s that consume six address bits each, so a /48 is found in
//! the top entry, at most five nodes and a leaf (a /64: seven nodes),
//! whatever the table's size. Leaves are route actions; equal neighbouring
//! leaves of a node are stored once, so memory follows the number of
//! prefixes, not the address space they span. Prefixes of /22 or shorter
//! live in the top entries only: their slots' tries hold [`V6_INHERIT`]
//! leaves that stand for them.
//!
//! Where one prefix path runs alone (a /48 with no neighbour under its
//! /24, the common case in a full table), the nodes with one child and no
//! prefix of their own are left out: the node below them checks their
//! address bits (`skip`, up to four steps) and answers `miss` when they
//! differ. A lone /48 in a busy /22 is then the top entry, two nodes and
//! a leaf. Builds compress; an incremental update edits the node below a
//! chain when its changes run through the whole chain, rebuilds the
//! subtree from its prefixes when a change leaves or ends in the chain, and
//! leaves an uncompressed node uncompressed (the answers are the same
//! either way).
//!
//! Ordering rules, so the datapath never reads a half-built answer:
//! - nodes and leaves reachable from a head are never written; an update
//!   writes the changed path's new nodes and leaves elsewhere and then
//!   swaps the slot's head, one 32-bit store;
//! - what an update replaced is reused only after two [`V6Trie::reclaim`]
//!   calls (a grace period for readers of the old path; the daemon's
//!   callers go through [`V6Trie::reclaim_at`], which spaces them);
//! - when the arrays are full, the slot answers `Fib` (ask the kernel), not
//!   a covering prefix, until [`V6Trie::retry_deferred`] rebuilds it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use ipnet::Ipv6Net;
use pf_common::{
    layout::{V6Next, V6Node, V6_MAX_SKIP},
    maps::{V6_MAX_DEPTH, V6_STRIDE, V6_TOP_BITS, V6_TOP_SLOTS},
    route::V6_INHERIT,
    RouteAction, RouteKind,
};

/// Read access to the three arrays, as the datapath has it (the tools read
/// the pinned maps through this too).
pub trait V6Read {
    fn head(&self, slot: u32) -> u32;
    fn cover(&self, slot: u32) -> u32;
    fn node(&self, index: u32) -> V6Node;
    fn leaf(&self, index: u32) -> u32;
}

/// Storage of the three arrays (the mmap'd maps, or Vecs in tests).
pub trait V6Store: V6Read {
    fn set_head(&mut self, slot: u32, raw: u32);
    fn set_cover(&mut self, slot: u32, raw: u32);
    fn set_node(&mut self, index: u32, node: &V6Node);
    fn set_leaf(&mut self, index: u32, raw: u32);
    fn node_capacity(&self) -> u32;
    fn leaf_capacity(&self) -> u32;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum V6TrieError {
    /// The node or leaf array is full: the slot now defers to the kernel.
    #[error("no room in the IPv6 trie for {prefix}; its /22 is left to bpf_fib_lookup")]
    OutOfSpace { prefix: Ipv6Net, slot: u32 },
}

/// The /22 slot an address falls in.
pub fn slot_of(addr: u128) -> u32 {
    (addr >> (128 - V6_TOP_BITS)) as u32
}

/// The six bits a node at `offset` consumes (past the address, zeros).
fn index_at(addr: u128, offset: u32) -> usize {
    ((addr << offset) >> (128 - V6_STRIDE)) as usize
}

/// The first address of slot `v` of the node at `offset` over `base`.
fn slot_addr(base: u128, offset: u32, v: usize) -> u128 {
    base | (((v as u128) << (128 - V6_STRIDE)) >> offset)
}

fn last_addr(base: u128, len: u32) -> u128 {
    if len >= 128 {
        base
    } else {
        base | (u128::MAX >> len)
    }
}

fn trunc(addr: u128, len: u32) -> u128 {
    match len {
        0 => 0,
        128.. => addr,
        _ => addr & !(u128::MAX >> len),
    }
}

/// What the datapath answers for `addr`, reading `store` as it does.
pub fn lookup_in<S: V6Read + ?Sized>(store: &S, addr: u128) -> RouteAction {
    walk_in(store, addr).0
}

/// How many nodes the datapath reads to answer `addr` (the top entry and
/// the leaf come on top): each is one more dependent map read, which is
/// what an IPv6 lookup costs beyond IPv4's (`datapath-bench` prints it).
pub fn nodes_read_in<S: V6Read + ?Sized>(store: &S, addr: u128) -> u32 {
    walk_in(store, addr).1
}

/// [`lookup_in`]'s answer and the nodes it read.
fn walk_in<S: V6Read + ?Sized>(store: &S, addr: u128) -> (RouteAction, u32) {
    let slot = slot_of(addr);
    let head = RouteAction(store.head(slot));
    if head.kind() != Some(RouteKind::Tbl8) {
        return (head, 0);
    }
    let resolve = |leaf: u32| {
        RouteAction(if leaf == V6_INHERIT {
            store.cover(slot)
        } else {
            leaf
        })
    };
    let mut node = store.node(head.index());
    let mut offset = V6_TOP_BITS;
    for read in 1..=V6_MAX_DEPTH {
        let width = node.skip_width();
        // Only a node read while it was being reused (the tools read live
        // maps with no grace period) points past the address or skips
        // part of a step.
        if offset + width >= 128 || !width.is_multiple_of(V6_STRIDE) {
            return (RouteAction::simple(RouteKind::Fib), read);
        }
        let strides = width / V6_STRIDE;
        if strides != 0 {
            if skip_key_at(addr, offset, strides) != node.skip_key() {
                return (resolve(node.miss), read);
            }
            offset += strides * V6_STRIDE;
        }
        match node.next(index_at(addr, offset) as u32) {
            V6Next::Child(child) => {
                node = store.node(child);
                offset += V6_STRIDE;
            }
            V6Next::Leaf(leaf) => return (resolve(store.leaf(leaf)), read),
            V6Next::Action(raw) => return (resolve(raw), read),
        }
    }
    (RouteAction::simple(RouteKind::Fib), V6_MAX_DEPTH)
}

/// The address bits of `strides` six-bit steps from `offset` (zeros past
/// the address), as [`V6Node::skip_key`] holds them.
pub fn skip_key_at(addr: u128, offset: u32, strides: u32) -> u32 {
    (addr << offset)
        .checked_shr(128 - strides * V6_STRIDE)
        .unwrap_or(0) as u32
}

/// Contiguous runs of one of the two arrays: first-fit per size (1 to 64),
/// then a bump pointer. Index 0 is never handed out.
struct Arena {
    next: u32,
    capacity: u32,
    free: Vec<Vec<u32>>,
    in_use: u64,
}

impl Arena {
    fn new(capacity: u32) -> Self {
        Self {
            next: 1,
            capacity,
            free: vec![Vec::new(); 65],
            in_use: 0,
        }
    }

    fn alloc(&mut self, size: u32) -> Option<u32> {
        let start = match self.free[size as usize].pop() {
            Some(start) => start,
            None if self.next.checked_add(size)? <= self.capacity => {
                self.next += size;
                self.next - size
            }
            None => {
                // Full: split the smallest larger free run.
                let bigger =
                    (size as usize + 1..self.free.len()).find(|&s| !self.free[s].is_empty())?;
                let start = self.free[bigger].pop()?;
                self.free[bigger - size as usize].push(start + size);
                start
            }
        };
        self.in_use += u64::from(size);
        Some(start)
    }

    fn release(&mut self, start: u32, size: u32) {
        self.free[size as usize].push(start);
        self.in_use -= u64::from(size);
    }
}

#[derive(Debug, Clone, Copy)]
enum Span {
    Nodes(u32, u32),
    Leaves(u32, u32),
}

/// One update's allocations (released if it fails) and replaced spans
/// (quarantined if it succeeds).
#[derive(Default)]
struct Txn {
    allocated: Vec<Span>,
    replaced: Vec<Span>,
}

type Prefixes = BTreeMap<(u128, u8), u32>;

pub struct V6Trie<S> {
    store: S,
    /// Every prefix in the table, by (network, length).
    prefixes: Prefixes,
    /// Per slot: length + 1 of the prefix its cover came from (0: none).
    top_depth: Vec<u8>,
    nodes: Arena,
    leaves: Arena,
    deferred: BTreeSet<u32>,
    quarantined: Vec<Span>,
    aging: Vec<Span>,
    last_reclaim: Option<Instant>,
}

/// The least time between two reclaims by [`V6Trie::reclaim_at`]: a span is
/// reused two reclaims after it was replaced, so at least this long after.
/// An XDP program holds what it read for one run (microseconds, in an RCU
/// read-side section); a table load replaces nodes fast enough that the
/// daemon's 50 ms grace period would let them pile up.
pub const RECLAIM_EVERY: Duration = Duration::from_millis(10);

impl<S: V6Store> V6Trie<S> {
    /// Starts from an empty table (all misses). The store must be zeroed.
    pub fn new(store: S) -> Self {
        Self {
            nodes: Arena::new(store.node_capacity()),
            leaves: Arena::new(store.leaf_capacity()),
            store,
            prefixes: BTreeMap::new(),
            top_depth: vec![0; V6_TOP_SLOTS as usize],
            deferred: BTreeSet::new(),
            quarantined: Vec::new(),
            aging: Vec::new(),
            last_reclaim: None,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn lookup(&self, addr: u128) -> RouteAction {
        lookup_in(&self.store, addr)
    }

    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Nodes and leaves in use (reachable or waiting for reuse).
    pub fn nodes_in_use(&self) -> u64 {
        self.nodes.in_use
    }

    pub fn leaves_in_use(&self) -> u64 {
        self.leaves.in_use
    }

    /// Slots answering `Fib` because the arrays were full.
    pub fn deferred_slots(&self) -> &BTreeSet<u32> {
        &self.deferred
    }

    /// [`Self::reclaim`] if [`RECLAIM_EVERY`] has passed since the last one
    /// made here; any number of callers may call it as often as they like.
    pub fn reclaim_at(&mut self, now: Instant) {
        if self
            .last_reclaim
            .is_some_and(|last| now.saturating_duration_since(last) < RECLAIM_EVERY)
        {
            return;
        }
        self.last_reclaim = Some(now);
        self.reclaim();
    }

    /// Called once per grace period: spans replaced before the previous
    /// call become reusable.
    pub fn reclaim(&mut self) {
        for span in self.aging.drain(..) {
            match span {
                Span::Nodes(start, size) => self.nodes.release(start, size),
                Span::Leaves(start, size) => self.leaves.release(start, size),
            }
        }
        std::mem::swap(&mut self.aging, &mut self.quarantined);
    }

    /// Installs or replaces `prefix`.
    pub fn insert(&mut self, prefix: Ipv6Net, action: RouteAction) -> Result<(), V6TrieError> {
        match self.apply([(prefix, Some(action))]).pop() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Removes `prefix`; its addresses fall back to the longest remaining
    /// prefix over them. Removing from a deferred slot only forgets it.
    pub fn remove(&mut self, prefix: Ipv6Net) {
        // A removal that finds the arrays full defers its slot, which is
        // still right; the caller learns of it from the next insert there.
        let _ = self.apply([(prefix, None)]);
    }

    /// Applies inserts (`Some`) and removals (`None`) in order, rewriting
    /// each changed slot's trie once: a batch from a table load shares the
    /// upper nodes of its paths. Returns the inserts left to the kernel
    /// because their slot is deferred.
    pub fn apply(
        &mut self,
        writes: impl IntoIterator<Item = (Ipv6Net, Option<RouteAction>)>,
    ) -> Vec<V6TrieError> {
        let mut long: Vec<(u128, u8)> = Vec::new();
        let mut inserted: Vec<Ipv6Net> = Vec::new();
        for (prefix, action) in writes {
            let prefix = prefix.trunc();
            let (addr, len) = (u128::from(prefix.network()), prefix.prefix_len());
            let short = u32::from(len) <= V6_TOP_BITS;
            match action {
                Some(action) => {
                    self.prefixes.insert((addr, len), action.0);
                    if short {
                        self.paint_top(addr, len, action.0);
                    } else {
                        inserted.push(prefix);
                    }
                }
                None => {
                    if self.prefixes.remove(&(addr, len)).is_none() {
                        continue;
                    }
                    if short {
                        self.unpaint_top(addr, len);
                    }
                }
            }
            if !short {
                long.push((addr, len));
            }
        }
        long.sort_unstable();
        long.dedup();
        for changes in long.chunk_by(|a, b| slot_of(a.0) == slot_of(b.0)) {
            let _ = self.update_slot(changes);
        }
        inserted
            .into_iter()
            .filter_map(|prefix| {
                let slot = slot_of(u128::from(prefix.network()));
                self.deferred
                    .contains(&slot)
                    .then_some(V6TrieError::OutOfSpace { prefix, slot })
            })
            .collect()
    }

    /// Rebuilds deferred slots while there is room; returns those now
    /// answered from the trie again.
    pub fn retry_deferred(&mut self) -> Vec<u32> {
        let mut done = Vec::new();
        while let Some(&slot) = self.deferred.first() {
            let base = (slot as u128) << (128 - V6_TOP_BITS);
            let mut txn = Txn::default();
            match self.build_root(&mut txn, base, |t, txn| {
                t.build_fresh(txn, base, V6_TOP_BITS, V6_INHERIT)
            }) {
                Ok(head) => {
                    self.store.set_head(slot, head);
                    self.deferred.remove(&slot);
                    done.push(slot);
                }
                Err(()) => {
                    self.rollback(txn);
                    break;
                }
            }
        }
        done
    }

    fn paint_top(&mut self, addr: u128, len: u8, raw: u32) {
        let depth = len + 1;
        let first = slot_of(addr);
        for slot in first..first + (1u32 << (V6_TOP_BITS - u32::from(len))) {
            if self.top_depth[slot as usize] <= depth {
                self.top_depth[slot as usize] = depth;
                self.set_top_action(slot, raw);
            }
        }
    }

    fn unpaint_top(&mut self, addr: u128, len: u8) {
        let (cover_depth, cover) = (0..len)
            .rev()
            .find_map(|l| {
                let raw = self.prefixes.get(&(trunc(addr, l.into()), l))?;
                Some((l + 1, *raw))
            })
            .unwrap_or((0, RouteAction::MISS.0));
        let first = slot_of(addr);
        for slot in first..first + (1u32 << (V6_TOP_BITS - u32::from(len))) {
            if self.top_depth[slot as usize] == len + 1 {
                self.top_depth[slot as usize] = cover_depth;
                self.set_top_action(slot, cover);
            }
        }
    }

    /// Sets the slot's cover, and its head too when it has no trie.
    fn set_top_action(&mut self, slot: u32, raw: u32) {
        self.store.set_cover(slot, raw);
        let head = RouteAction(self.store.head(slot));
        if head.kind() != Some(RouteKind::Tbl8) && !self.deferred.contains(&slot) {
            self.store.set_head(slot, raw);
        }
    }

    /// Rewrites the paths of changed prefixes longer than /22 (sorted, all
    /// in one slot) and swaps the slot's head; on a full array, defers the
    /// slot (returned as the error).
    fn update_slot(&mut self, changes: &[(u128, u8)]) -> Result<(), u32> {
        let slot = slot_of(changes[0].0);
        if self.deferred.contains(&slot) {
            return Err(slot);
        }
        let base = trunc(changes[0].0, V6_TOP_BITS);
        let head = RouteAction(self.store.head(slot));
        let old_root = (head.kind() == Some(RouteKind::Tbl8))
            .then(|| (head.index(), self.store.node(head.index())));
        let mut txn = Txn::default();
        let built = self.build_root(&mut txn, base, |t, txn| match old_root {
            Some((_, root)) => t.rebuild(txn, base, V6_TOP_BITS, V6_INHERIT, root, changes),
            None => t.build_fresh(txn, base, V6_TOP_BITS, V6_INHERIT),
        });
        match built {
            Ok(new_head) => {
                self.store.set_head(slot, new_head);
                if let Some((index, _)) = old_root {
                    txn.replaced.push(Span::Nodes(index, 1));
                }
                self.quarantined.append(&mut txn.replaced);
                Ok(())
            }
            Err(()) => {
                self.rollback(txn);
                self.store
                    .set_head(slot, RouteAction::simple(RouteKind::Fib).0);
                if let Some((index, root)) = old_root {
                    let mut old = Txn::default();
                    self.replace_subtree(&mut old, &root);
                    old.replaced.push(Span::Nodes(index, 1));
                    self.quarantined.append(&mut old.replaced);
                }
                self.deferred.insert(slot);
                Err(slot)
            }
        }
    }

    /// Runs `build` for a slot's root and returns the head that names it
    /// (or the slot's cover when nothing longer than /22 is left).
    fn build_root(
        &mut self,
        txn: &mut Txn,
        base: u128,
        build: impl FnOnce(&mut Self, &mut Txn) -> Result<Option<V6Node>, ()>,
    ) -> Result<u32, ()> {
        match build(self, txn)? {
            Some(root) => {
                let index = self.alloc_nodes(txn, 1)?;
                self.store.set_node(index, &root);
                Ok(RouteAction::new(RouteKind::Tbl8, index).0)
            }
            None => Ok(self.store.cover(slot_of(base))),
        }
    }

    fn rollback(&mut self, txn: Txn) {
        for span in txn.allocated {
            match span {
                Span::Nodes(start, size) => self.nodes.release(start, size),
                Span::Leaves(start, size) => self.leaves.release(start, size),
            }
        }
    }

    fn alloc_nodes(&mut self, txn: &mut Txn, size: u32) -> Result<u32, ()> {
        let start = self.nodes.alloc(size).ok_or(())?;
        txn.allocated.push(Span::Nodes(start, size));
        Ok(start)
    }

    fn alloc_leaves(&mut self, txn: &mut Txn, size: u32) -> Result<u32, ()> {
        let start = self.leaves.alloc(size).ok_or(())?;
        txn.allocated.push(Span::Leaves(start, size));
        Ok(start)
    }

    /// The 64 leaf values of a node.
    fn values(&self, node: &V6Node) -> [u32; 64] {
        if node.holds_leaves() {
            return std::array::from_fn(|v| match node.next(v as u32) {
                V6Next::Action(raw) => raw,
                // A node holding its leaves has no children.
                V6Next::Child(_) | V6Next::Leaf(_) => node.first_leaf,
            });
        }
        let mut values = [0; 64];
        let mut leaf = node.first_leaf;
        for (v, value) in values.iter_mut().enumerate() {
            if node.runs >> v & 1 != 0 && v > 0 {
                leaf += 1;
            }
            *value = self.store.leaf(leaf);
        }
        values
    }

    /// The children of a node by slot.
    fn children(&self, node: &V6Node) -> [Option<V6Node>; 64] {
        let mut children = [None; 64];
        let mut index = node.first_child;
        for (v, child) in children.iter_mut().enumerate() {
            if node.children >> v & 1 != 0 {
                *child = Some(self.store.node(index));
                index += 1;
            }
        }
        children
    }

    /// The leaf value of slot `v` of the node at `offset`: the longest
    /// prefix ending in this node's six bits that covers the slot.
    fn probe(&self, base: u128, offset: u32, v: usize, inherit: u32) -> u32 {
        let addr = slot_addr(base, offset, v);
        (offset + 1..=(offset + V6_STRIDE).min(128))
            .rev()
            .find_map(|len| self.prefixes.get(&(trunc(addr, len), len as u8)).copied())
            .unwrap_or(inherit)
    }

    /// Whether any prefix longer than `offset` lies under `base`/`offset`.
    fn has_longer(&self, base: u128, offset: u32) -> bool {
        self.prefixes
            .range((base, offset as u8 + 1)..=(last_addr(base, offset), u8::MAX))
            .next()
            .is_some()
    }

    /// The node for `base`/`offset` after changes of the prefixes in
    /// `changes` (sorted, all under it and longer than `offset`), reusing
    /// every part of `old` they do not touch. `None`: no prefix longer than
    /// `offset` is left under it.
    fn rebuild(
        &mut self,
        txn: &mut Txn,
        base: u128,
        offset: u32,
        inherit: u32,
        old: V6Node,
        changes: &[(u128, u8)],
    ) -> Result<Option<V6Node>, ()> {
        let strides = old.skip_strides();
        if strides != 0 {
            // Changes that run through the whole chain edit the node below
            // it in place of the chain (no prefix ends in the chain, so its
            // inherited value is this one's).
            let key = old.skip_key();
            let below = offset + strides * V6_STRIDE;
            let through = changes
                .iter()
                .all(|&(a, l)| u32::from(l) > below && skip_key_at(a, offset, strides) == key);
            if through {
                let inner = V6Node {
                    skip: 0,
                    miss: 0,
                    ..old
                };
                let under = trunc(changes[0].0, below);
                let node = self.rebuild(txn, under, below, inherit, inner, changes)?;
                return Ok(node.map(|node| V6Node {
                    skip: old.skip,
                    miss: old.miss,
                    ..node
                }));
            }
            // A change that leaves the chain or ends in it splits it: the
            // subtree is built again from its prefixes (once; the result
            // branches where they part).
            self.replace_subtree(txn, &old);
            return self.build_fresh(txn, base, offset, inherit);
        }
        let mut values = self.values(&old);
        let mut children = self.children(&old);
        let mut leaves_changed = false;
        let end = offset + V6_STRIDE;
        // Prefixes ending in this node: their slots get new leaves, and the
        // tries under them new inherited leaves, so those are built afresh.
        let mut fresh = 0u64;
        // Slots whose block holds nothing longer than the changed prefix:
        // one value for the whole block, and no children.
        let mut uniform: Vec<(u64, u32)> = Vec::new();
        for &(addr, len) in changes.iter().filter(|(_, l)| u32::from(*l) <= end) {
            let first = index_at(addr, offset);
            let block = (u64::MAX >> (64 - (1u32 << (end - u32::from(len))))) << first;
            if block & !fresh != 0 && !self.has_longer(addr, u32::from(len)) {
                uniform.push((block, self.probe(base, offset, first, inherit)));
            }
            fresh |= block;
        }
        for v in (0..64).filter(|v| fresh >> v & 1 != 0) {
            let value = match uniform.iter().find(|(block, _)| block >> v & 1 != 0) {
                Some(&(_, value)) => value,
                None => self.probe(base, offset, v, inherit),
            };
            if value != values[v] {
                values[v] = value;
                leaves_changed = true;
            }
            if let Some(child) = children[v] {
                self.replace_subtree(txn, &child);
            }
            children[v] = if uniform.iter().any(|(block, _)| block >> v & 1 != 0) {
                None
            } else {
                self.build_fresh(txn, slot_addr(base, offset, v), end, values[v])?
            };
        }
        // Longer prefixes: each child on their paths is rebuilt once.
        let deeper: Vec<(u128, u8)> = changes
            .iter()
            .copied()
            .filter(|&(a, l)| u32::from(l) > end && fresh >> index_at(a, offset) & 1 == 0)
            .collect();
        for group in deeper.chunk_by(|a, b| index_at(a.0, offset) == index_at(b.0, offset)) {
            let v = index_at(group[0].0, offset);
            let under = slot_addr(base, offset, v);
            children[v] = match children[v] {
                Some(child) => self.rebuild(txn, under, end, values[v], child, group)?,
                None => self.build_fresh(txn, under, end, values[v])?,
            };
        }
        let old_children = old.children.count_ones();
        if children.iter().all(Option::is_none) && !self.has_longer(base, offset) {
            txn.replaced.extend(leaf_span(&old));
            if old_children > 0 {
                txn.replaced
                    .push(Span::Nodes(old.first_child, old_children));
            }
            return Ok(None);
        }
        let old_leaves = match leaf_span(&old) {
            Some(span) if leaves_changed => {
                txn.replaced.push(span);
                None
            }
            Some(span) => Some(span),
            None => None,
        };
        // The child array is always new: the changed path runs through it.
        if old_children > 0 {
            txn.replaced
                .push(Span::Nodes(old.first_child, old_children));
        }
        self.assemble(txn, &values, &children, old_leaves).map(Some)
    }

    /// Builds the node for `base`/`offset` from the prefixes under it.
    fn build_fresh(
        &mut self,
        txn: &mut Txn,
        base: u128,
        offset: u32,
        inherit: u32,
    ) -> Result<Option<V6Node>, ()> {
        let under: Vec<(u128, u8, u32)> = self
            .prefixes
            .range((base, offset as u8 + 1)..=(last_addr(base, offset), u8::MAX))
            .map(|(&(a, l), &raw)| (a, l, raw))
            .collect();
        if under.is_empty() {
            return Ok(None);
        }
        self.build_from(txn, base, offset, inherit, &under)
            .map(Some)
    }

    /// Builds a node from `under`: sorted prefixes inside its range (those
    /// not longer than `offset` are ignored). Steps where every prefix
    /// goes on through the same slot are left out (path compression).
    fn build_from(
        &mut self,
        txn: &mut Txn,
        base: u128,
        offset: u32,
        inherit: u32,
        under: &[(u128, u8, u32)],
    ) -> Result<V6Node, ()> {
        let longer = |(_, l, _): &&(u128, u8, u32)| u32::from(*l) > offset;
        let first = under.iter().find(longer).map_or(base, |p| p.0);
        let mut strides = 0;
        while strides < V6_MAX_SKIP {
            let at = offset + strides * V6_STRIDE;
            let v = index_at(first, at);
            let chain = under
                .iter()
                .filter(longer)
                .all(|&(a, l, _)| u32::from(l) > at + V6_STRIDE && index_at(a, at) == v);
            if !chain {
                break;
            }
            strides += 1;
        }
        let below = offset + strides * V6_STRIDE;
        let mut node = self.build_node(txn, trunc(first, below), below, inherit, under)?;
        if strides != 0 {
            node.skip = V6Node::skip_of(strides, skip_key_at(first, offset, strides));
            node.miss = inherit;
        }
        Ok(node)
    }

    /// [`Self::build_from`]'s node at `offset`, with no step left out.
    fn build_node(
        &mut self,
        txn: &mut Txn,
        base: u128,
        offset: u32,
        inherit: u32,
        under: &[(u128, u8, u32)],
    ) -> Result<V6Node, ()> {
        let end = offset + V6_STRIDE;
        let mut values = [inherit; 64];
        let mut ending: Vec<&(u128, u8, u32)> = under
            .iter()
            .filter(|(_, l, _)| u32::from(*l) > offset && u32::from(*l) <= end)
            .collect();
        ending.sort_by_key(|(_, l, _)| *l);
        for &&(a, l, raw) in &ending {
            let first = index_at(a, offset);
            values[first..first + (1usize << (end - u32::from(l)))].fill(raw);
        }
        let mut children = [None; 64];
        let mut rest = under;
        while let Some(pos) = rest.iter().position(|(_, l, _)| u32::from(*l) > end) {
            let v = index_at(rest[pos].0, offset);
            let last = last_addr(slot_addr(base, offset, v), end);
            let group_end = pos + rest[pos..].partition_point(|(a, _, _)| *a <= last);
            let group = &rest[pos..group_end];
            children[v] =
                Some(self.build_from(txn, slot_addr(base, offset, v), end, values[v], group)?);
            rest = &rest[group_end..];
        }
        self.assemble(txn, &values, &children, None)
    }

    /// The node over `values` and `children`: holding its leaves when it
    /// can (see [`V6Node`]), else over a leaf array, `old_leaves` if given
    /// (a span already holding exactly `values`, replaced when unused).
    fn assemble(
        &mut self,
        txn: &mut Txn,
        values: &[u32; 64],
        children: &[Option<V6Node>; 64],
        old_leaves: Option<Span>,
    ) -> Result<V6Node, ()> {
        if children.iter().all(Option::is_none) {
            if let Some(node) = V6Node::holding(values) {
                txn.replaced.extend(old_leaves);
                return Ok(node);
            }
        }
        let (first_leaf, runs) = match old_leaves {
            Some(Span::Leaves(first, _)) => (first, runs_of(values)),
            _ => self.write_leaves(txn, values)?,
        };
        let (first_child, bits) = self.write_children(txn, children)?;
        Ok(V6Node {
            children: bits,
            runs,
            first_child,
            first_leaf,
            ..V6Node::default()
        })
    }

    fn write_leaves(&mut self, txn: &mut Txn, values: &[u32; 64]) -> Result<(u32, u64), ()> {
        let runs = runs_of(values);
        let first = self.alloc_leaves(txn, runs.count_ones())?;
        let mut leaf = first;
        for (v, value) in values.iter().enumerate() {
            if runs >> v & 1 != 0 {
                self.store.set_leaf(leaf, *value);
                leaf += 1;
            }
        }
        Ok((first, runs))
    }

    fn write_children(
        &mut self,
        txn: &mut Txn,
        children: &[Option<V6Node>; 64],
    ) -> Result<(u32, u64), ()> {
        let count = children.iter().flatten().count() as u32;
        if count == 0 {
            return Ok((0, 0));
        }
        let first = self.alloc_nodes(txn, count)?;
        let mut bits = 0u64;
        let mut index = first;
        for (v, child) in children.iter().enumerate() {
            if let Some(child) = child {
                self.store.set_node(index, child);
                bits |= 1 << v;
                index += 1;
            }
        }
        Ok((first, bits))
    }

    /// Queues every span under `node` (not its own record) for reuse.
    fn replace_subtree(&self, txn: &mut Txn, node: &V6Node) {
        txn.replaced.extend(leaf_span(node));
        let count = node.children.count_ones();
        if count > 0 {
            for index in node.first_child..node.first_child + count {
                self.replace_subtree(txn, &self.store.node(index));
            }
            txn.replaced.push(Span::Nodes(node.first_child, count));
        }
    }
}

/// The leaf array a node reads, if it does not hold its leaves.
fn leaf_span(node: &V6Node) -> Option<Span> {
    (!node.holds_leaves()).then(|| Span::Leaves(node.first_leaf, node.runs.count_ones()))
}

/// `runs` of a leaf array over `values`: slot 0 and each slot whose value
/// differs from the slot before.
fn runs_of(values: &[u32; 64]) -> u64 {
    let mut runs = 1u64;
    for v in 1..64 {
        if values[v] != values[v - 1] {
            runs |= 1 << v;
        }
    }
    runs
}

/// A heap-backed store for tests and for computing tables offline.
pub struct VecV6Store {
    pub top: Vec<[u32; 2]>,
    pub nodes: Vec<V6Node>,
    pub leaves: Vec<u32>,
}

impl VecV6Store {
    pub fn new(nodes: u32, leaves: u32) -> Self {
        Self {
            top: vec![[0; 2]; V6_TOP_SLOTS as usize],
            nodes: vec![V6Node::default(); nodes as usize],
            leaves: vec![0; leaves as usize],
        }
    }
}

impl V6Read for VecV6Store {
    fn head(&self, slot: u32) -> u32 {
        self.top[slot as usize][0]
    }
    fn cover(&self, slot: u32) -> u32 {
        self.top[slot as usize][1]
    }
    fn node(&self, index: u32) -> V6Node {
        self.nodes[index as usize]
    }
    fn leaf(&self, index: u32) -> u32 {
        self.leaves[index as usize]
    }
}

impl V6Store for VecV6Store {
    fn set_head(&mut self, slot: u32, raw: u32) {
        self.top[slot as usize][0] = raw;
    }
    fn set_cover(&mut self, slot: u32, raw: u32) {
        self.top[slot as usize][1] = raw;
    }
    fn set_node(&mut self, index: u32, node: &V6Node) {
        self.nodes[index as usize] = *node;
    }
    fn set_leaf(&mut self, index: u32, raw: u32) {
        self.leaves[index as usize] = raw;
    }
    fn node_capacity(&self) -> u32 {
        self.nodes.len() as u32
    }
    fn leaf_capacity(&self) -> u32 {
        self.leaves.len() as u32
    }
}

#[cfg(test)]
mod tests;
