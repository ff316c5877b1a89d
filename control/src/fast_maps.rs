//! Hash maps for full-table state.
//!
//! A full table is a million IPv4 and a quarter of a million IPv6 prefixes,
//! and every byte per entry costs a megabyte. Prefix-keyed maps are split by
//! family so an IPv4 key is 5 bytes instead of the 18 of an `IpNet`, and all
//! maps use foldhash: fast, and randomly seeded, because prefixes arrive
//! from BGP peers the router does not control.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use foldhash::{HashMap as FastMap, HashMapExt, HashSet as FastSet, HashSetExt};

/// A map from prefix to `V`, one hash table per address family.
#[derive(Debug, Clone)]
pub struct PrefixHashMap<V> {
    v4: FastMap<Ipv4Net, V>,
    v6: FastMap<Ipv6Net, V>,
}

impl<V> Default for PrefixHashMap<V> {
    fn default() -> Self {
        Self {
            v4: FastMap::new(),
            v6: FastMap::new(),
        }
    }
}

impl<V> PrefixHashMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, prefix: &IpNet) -> Option<&V> {
        match prefix {
            IpNet::V4(p) => self.v4.get(p),
            IpNet::V6(p) => self.v6.get(p),
        }
    }

    pub fn get_mut(&mut self, prefix: &IpNet) -> Option<&mut V> {
        match prefix {
            IpNet::V4(p) => self.v4.get_mut(p),
            IpNet::V6(p) => self.v6.get_mut(p),
        }
    }

    pub fn contains_key(&self, prefix: &IpNet) -> bool {
        self.get(prefix).is_some()
    }

    pub fn insert(&mut self, prefix: IpNet, value: V) -> Option<V> {
        match prefix {
            IpNet::V4(p) => self.v4.insert(p, value),
            IpNet::V6(p) => self.v6.insert(p, value),
        }
    }

    pub fn remove(&mut self, prefix: &IpNet) -> Option<V> {
        match prefix {
            IpNet::V4(p) => self.v4.remove(p),
            IpNet::V6(p) => self.v6.remove(p),
        }
    }

    /// The value for `prefix`, inserted with `make` if absent.
    pub fn get_or_insert_with(&mut self, prefix: IpNet, make: impl FnOnce() -> V) -> &mut V {
        match prefix {
            IpNet::V4(p) => self.v4.entry(p).or_insert_with(make),
            IpNet::V6(p) => self.v6.entry(p).or_insert_with(make),
        }
    }

    /// The entry for `prefix`, found with one probe whether or not it is there.
    pub fn slot(&mut self, prefix: IpNet) -> Slot<'_, V> {
        use std::collections::hash_map::Entry;
        match prefix {
            IpNet::V4(p) => match self.v4.entry(p) {
                Entry::Occupied(e) => Slot::Occupied(e.into_mut()),
                Entry::Vacant(e) => Slot::Vacant(VacantSlot::V4(e)),
            },
            IpNet::V6(p) => match self.v6.entry(p) {
                Entry::Occupied(e) => Slot::Occupied(e.into_mut()),
                Entry::Vacant(e) => Slot::Vacant(VacantSlot::V6(e)),
            },
        }
    }

    pub fn v4(&self) -> &FastMap<Ipv4Net, V> {
        &self.v4
    }

    pub fn v6(&self) -> &FastMap<Ipv6Net, V> {
        &self.v6
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &V)> {
        self.v4
            .iter()
            .map(|(p, v)| (IpNet::V4(*p), v))
            .chain(self.v6.iter().map(|(p, v)| (IpNet::V6(*p), v)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (IpNet, &mut V)> {
        self.v4
            .iter_mut()
            .map(|(p, v)| (IpNet::V4(*p), v))
            .chain(self.v6.iter_mut().map(|(p, v)| (IpNet::V6(*p), v)))
    }

    pub fn keys(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.iter().map(|(p, _)| p)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.v4.values_mut().chain(self.v6.values_mut())
    }

    /// Keeps the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(IpNet, &mut V) -> bool) {
        self.v4.retain(|p, v| keep(IpNet::V4(*p), v));
        self.v6.retain(|p, v| keep(IpNet::V6(*p), v));
    }
}

/// What [`PrefixHashMap::slot`] found.
pub enum Slot<'a, V> {
    Occupied(&'a mut V),
    Vacant(VacantSlot<'a, V>),
}

pub enum VacantSlot<'a, V> {
    V4(std::collections::hash_map::VacantEntry<'a, Ipv4Net, V>),
    V6(std::collections::hash_map::VacantEntry<'a, Ipv6Net, V>),
}

impl<'a, V> VacantSlot<'a, V> {
    pub fn insert(self, value: V) -> &'a mut V {
        match self {
            VacantSlot::V4(e) => e.insert(value),
            VacantSlot::V6(e) => e.insert(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_of_both_families_are_kept_apart_and_found_again() {
        let mut map = PrefixHashMap::new();
        let v4: IpNet = "192.0.2.0/24".parse().unwrap();
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        map.insert(v4, 1);
        map.insert(v6, 2);
        assert_eq!(map.get(&v4), Some(&1));
        assert_eq!(map.get(&v6), Some(&2));
        assert_eq!(map.len(), 2);
        *map.get_or_insert_with(v4, || 0) += 10;
        match map.slot(v6) {
            Slot::Occupied(value) => *value += 1,
            Slot::Vacant(_) => panic!("{v6} is there"),
        }
        let other: IpNet = "2001:db8:1::/48".parse().unwrap();
        match map.slot(other) {
            Slot::Occupied(_) => panic!("{other} is not there"),
            Slot::Vacant(slot) => *slot.insert(5) += 1,
        }
        assert_eq!((map.get(&v6), map.get(&other)), (Some(&3), Some(&6)));
        map.remove(&other);
        assert_eq!(map.remove(&v4), Some(11));
        assert_eq!(map.keys().collect::<Vec<_>>(), vec![v6]);
    }
}
