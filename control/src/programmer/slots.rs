//! Id and slot allocation for the datapath's indirection tables.
//!
//! Ids (what routes and groups name) are interned by key and reference
//! counted, so a thousand routes over one gateway share one nexthop entry.
//! Slots (where an id's current value lives) are double-buffered: a changed
//! value goes to a fresh slot, the id's pointer is flipped, and the old slot
//! waits in quarantine until no datapath reader can still hold it.

use std::hash::Hash;

use crate::fast_maps::{FastMap, HashMapExt};

/// Hands out integers from `first..limit`, reusing freed ones.
#[derive(Debug)]
pub struct Pool {
    next: u32,
    limit: u32,
    free: Vec<u32>,
    /// Released since the last reclaim.
    quarantined: Vec<u32>,
    /// Released before the last reclaim: free after the next one.
    aging: Vec<u32>,
}

impl Pool {
    pub fn new(first: u32, limit: u32) -> Self {
        Self {
            next: first,
            limit,
            free: Vec::new(),
            quarantined: Vec::new(),
            aging: Vec::new(),
        }
    }

    pub fn take(&mut self) -> Option<u32> {
        if let Some(value) = self.free.pop() {
            return Some(value);
        }
        if self.next < self.limit {
            self.next += 1;
            return Some(self.next - 1);
        }
        None
    }

    /// Returns `value` for reuse once two [`Pool::reclaim`] calls have passed.
    pub fn release(&mut self, value: u32) {
        self.quarantined.push(value);
    }

    /// Called once per grace period: what was released before the previous
    /// call becomes reusable, so every value waits at least one full period
    /// however close to a call it was released.
    pub fn reclaim(&mut self) {
        self.free.append(&mut self.aging);
        std::mem::swap(&mut self.aging, &mut self.quarantined);
    }

    pub fn in_use(&self, first: u32) -> usize {
        (self.next - first) as usize - self.free.len() - self.quarantined.len() - self.aging.len()
    }
}

#[derive(Debug)]
struct Entry {
    id: u32,
    refs: u32,
}

/// Interns keys to ids with reference counts.
#[derive(Debug)]
pub struct Interner<K> {
    ids: Pool,
    by_key: FastMap<K, Entry>,
    by_id: FastMap<u32, K>,
    first: u32,
}

/// What [`Interner::acquire`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The key already had an id; its count went up.
    Existing(u32),
    /// A new id: the caller must write its value before anything points at it.
    New(u32),
}

impl Acquired {
    pub fn id(&self) -> u32 {
        match *self {
            Acquired::Existing(id) | Acquired::New(id) => id,
        }
    }
}

impl<K: Hash + Eq + Clone> Interner<K> {
    /// Ids from `first` (0 is kept for "none") up to `limit` (exclusive).
    pub fn new(first: u32, limit: u32) -> Self {
        Self {
            ids: Pool::new(first, limit),
            by_key: FastMap::new(),
            by_id: FastMap::new(),
            first,
        }
    }

    /// Takes one more reference on `key` if it already has an id.
    pub fn acquire_existing(&mut self, key: &K) -> Option<u32> {
        let entry = self.by_key.get_mut(key)?;
        entry.refs += 1;
        Some(entry.id)
    }

    pub fn acquire(&mut self, key: &K) -> Option<Acquired> {
        if let Some(entry) = self.by_key.get_mut(key) {
            entry.refs += 1;
            return Some(Acquired::Existing(entry.id));
        }
        let id = self.ids.take()?;
        self.by_key.insert(key.clone(), Entry { id, refs: 1 });
        self.by_id.insert(id, key.clone());
        Some(Acquired::New(id))
    }

    /// Drops one reference; returns the id when it was the last one (the id
    /// is quarantined, not yet reusable).
    pub fn release(&mut self, key: &K) -> Option<u32> {
        let entry = self.by_key.get_mut(key)?;
        entry.refs -= 1;
        if entry.refs > 0 {
            return None;
        }
        let id = entry.id;
        self.by_key.remove(key);
        self.by_id.remove(&id);
        self.ids.release(id);
        Some(id)
    }

    /// [`Interner::release`] by id; true when it was the last reference.
    pub fn release_id(&mut self, id: u32) -> bool {
        let Some(entry) = self.by_id.get(&id).and_then(|key| self.by_key.get_mut(key)) else {
            return false;
        };
        entry.refs -= 1;
        if entry.refs > 0 {
            return false;
        }
        if let Some(key) = self.by_id.remove(&id) {
            self.by_key.remove(&key);
        }
        self.ids.release(id);
        true
    }

    pub fn get(&self, key: &K) -> Option<u32> {
        self.by_key.get(key).map(|e| e.id)
    }

    /// The key `id` stands for while it is in use.
    pub fn key_of(&self, id: u32) -> Option<&K> {
        self.by_id.get(&id)
    }

    pub fn reclaim(&mut self) {
        self.ids.reclaim();
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn in_use(&self) -> usize {
        self.ids.in_use(self.first)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, u32)> {
        self.by_key.iter().map(|(k, e)| (k, e.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_shares_one_id_until_its_last_reference_goes() {
        let mut interner = Interner::new(1, 10);
        assert_eq!(interner.acquire(&"gw-a"), Some(Acquired::New(1)));
        assert_eq!(interner.acquire(&"gw-a"), Some(Acquired::Existing(1)));
        assert_eq!(interner.acquire_existing(&"gw-a"), Some(1));
        assert_eq!(interner.acquire_existing(&"gw-b"), None);
        assert_eq!(interner.release(&"gw-a"), None);
        assert_eq!(interner.release(&"gw-a"), None);
        assert_eq!(interner.release(&"gw-a"), Some(1));
        assert!(interner.is_empty());
        let id = interner.acquire(&"gw-b").unwrap().id();
        interner.acquire(&"gw-b");
        assert!(!interner.release_id(id));
        assert!(interner.release_id(id));
        assert!(!interner.release_id(id), "an id no longer in use");
        assert!(interner.is_empty());
    }

    #[test]
    fn a_freed_id_is_not_reused_before_reclaim() {
        let mut interner = Interner::new(1, 3);
        interner.acquire(&"a").unwrap();
        interner.acquire(&"b").unwrap();
        interner.release(&"a");
        assert_eq!(
            interner.acquire(&"c"),
            None,
            "id 1 is quarantined, 2 is taken, 3 is the limit"
        );
        interner.reclaim();
        assert_eq!(
            interner.acquire(&"c"),
            None,
            "a full grace period has not passed"
        );
        interner.reclaim();
        assert_eq!(interner.acquire(&"c"), Some(Acquired::New(1)));
    }

    #[test]
    fn a_pool_counts_what_is_in_use() {
        let mut pool = Pool::new(1, 100);
        let a = pool.take().unwrap();
        pool.take().unwrap();
        pool.release(a);
        assert_eq!(pool.in_use(1), 1);
    }
}
