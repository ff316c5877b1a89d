//! Which prefixes name each nexthop object, so that a changed object
//! re-publishes exactly its routes.
//!
//! A full table puts a million prefixes on a few thousand objects, and every
//! route insert lands here, so the common path must not miss the cache: a
//! new user is appended to one short log, and the log is sorted into the
//! per-object lists only when it fills or when a list is read. A prefix that
//! stops naming an object is not looked for in the lists; readers re-check
//! what they find, and an object's list is compacted once its stale entries
//! outnumber the live ones, so a list holds at most about twice its users.

use ipnet::IpNet;

use crate::fast_maps::{FastMap, HashMapExt};

/// Entries the log holds before it is sorted into the lists: small enough
/// that sorting it is a short pause, large enough to make it rare.
const LOG_CAPACITY: usize = 1 << 16;

/// Slack a list may carry before it is compacted, so that small lists are
/// never compacted over and over.
const SLACK: usize = 16;

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    /// Prefixes naming the object now.
    live: usize,
    /// Entries for the object in its list and the log, stale ones included.
    listed: usize,
}

#[derive(Debug)]
pub(super) struct ObjectUsers {
    counts: FastMap<u32, Count>,
    lists: FastMap<u32, Vec<IpNet>>,
    log: Vec<(u32, IpNet)>,
}

impl ObjectUsers {
    pub fn new() -> Self {
        Self {
            counts: FastMap::new(),
            lists: FastMap::new(),
            log: Vec::new(),
        }
    }

    /// `prefix` started naming object `id`. True when the object's list
    /// should now be compacted with [`ObjectUsers::compact`].
    pub fn started(&mut self, id: u32, prefix: IpNet) -> bool {
        if self.log.len() == LOG_CAPACITY {
            self.sort_log();
        }
        self.log.push((id, prefix));
        let count = self.counts.entry(id).or_default();
        count.live += 1;
        count.listed += 1;
        count.listed > 2 * count.live + SLACK
    }

    /// A prefix stopped naming object `id`.
    pub fn stopped(&mut self, id: u32) {
        let Some(count) = self.counts.get_mut(&id) else {
            return;
        };
        count.live = count.live.saturating_sub(1);
        if count.live == 0 {
            // Its entries left in the log are dropped when the log is sorted.
            self.counts.remove(&id);
            self.lists.remove(&id);
        }
    }

    /// The prefixes listed for `id`: every live user, possibly with stale or
    /// repeated entries the caller filters out.
    pub fn listed(&mut self, id: u32) -> &[IpNet] {
        if !self.log.is_empty() {
            self.sort_log();
        }
        self.lists.get(&id).map(Vec::as_slice).unwrap_or_default()
    }

    /// Keeps only the listed prefixes that still name `id`, once each.
    pub fn compact(&mut self, id: u32, still_names: impl Fn(&IpNet) -> bool) {
        if !self.log.is_empty() {
            self.sort_log();
        }
        let Some(list) = self.lists.get_mut(&id) else {
            return;
        };
        list.sort_unstable();
        list.dedup();
        list.retain(still_names);
        list.shrink_to(2 * list.len() + SLACK);
        let live = list.len();
        if live == 0 {
            self.lists.remove(&id);
            self.counts.remove(&id);
        } else {
            self.counts.insert(id, Count { live, listed: live });
        }
    }

    /// Moves the log into the per-object lists, object by object.
    fn sort_log(&mut self) {
        self.log.sort_unstable_by_key(|(id, _)| *id);
        for run in self.log.chunk_by(|a, b| a.0 == b.0) {
            let id = run[0].0;
            if !self.counts.contains_key(&id) {
                // Every user has left since: the entries are all stale.
                continue;
            }
            self.lists
                .entry(id)
                .or_default()
                .extend(run.iter().map(|(_, prefix)| *prefix));
        }
        self.log.clear();
    }

    /// Objects with at least one user (for tests).
    #[cfg(test)]
    pub fn objects(&self) -> usize {
        self.counts.len()
    }

    /// Entries held over all objects, the log included (for tests).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.log.len() + self.lists.values().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn a_prefix_that_leaves_and_returns_is_listed_until_compaction_then_once() {
        let mut users = ObjectUsers::new();
        users.started(7, p("192.0.2.0/24"));
        users.stopped(7);
        assert_eq!(users.objects(), 0, "the last user leaving drops the object");
        assert!(users.listed(7).is_empty());
        users.started(7, p("192.0.2.0/24"));
        users.started(7, p("198.51.100.0/24"));
        users.stopped(7);
        users.started(7, p("198.51.100.0/24"));
        assert_eq!(users.listed(7).len(), 3);
        users.compact(7, |_| true);
        assert_eq!(users.listed(7), &[p("192.0.2.0/24"), p("198.51.100.0/24")]);
    }

    #[test]
    fn entries_of_an_object_whose_users_all_left_are_dropped_from_the_log() {
        let mut users = ObjectUsers::new();
        users.started(1, p("192.0.2.0/24"));
        users.started(2, p("198.51.100.0/24"));
        users.stopped(1);
        assert_eq!(users.listed(2), &[p("198.51.100.0/24")]);
        assert_eq!(users.held(), 1);
    }

    #[test]
    fn a_full_log_is_sorted_into_the_lists_and_nothing_is_lost() {
        let mut users = ObjectUsers::new();
        let prefixes: Vec<IpNet> = (0..(LOG_CAPACITY as u32 + 1000))
            .map(|i| IpNet::new(std::net::Ipv4Addr::from(i << 8).into(), 24).unwrap())
            .collect();
        for (i, prefix) in prefixes.iter().enumerate() {
            users.started(i as u32 % 7, *prefix);
        }
        let mut found: Vec<IpNet> = (0..7).flat_map(|id| users.listed(id).to_vec()).collect();
        found.sort_unstable();
        let mut expected = prefixes.clone();
        expected.sort_unstable();
        assert_eq!(found, expected);
    }

    #[test]
    fn churn_on_one_object_keeps_its_list_within_twice_its_users_plus_slack() {
        let mut users = ObjectUsers::new();
        let live: Vec<IpNet> = (0..100u32)
            .map(|i| {
                IpNet::new(std::net::Ipv4Addr::from(0xc000_0200 + (i << 8)).into(), 24).unwrap()
            })
            .collect();
        for prefix in &live {
            users.started(1, *prefix);
        }
        // One prefix flaps 10,000 times; the list is compacted whenever asked.
        let flapping = p("203.0.113.0/24");
        let mut present = false;
        for _ in 0..10_000 {
            if present {
                users.stopped(1);
            } else if users.started(1, flapping) {
                users.compact(1, |q| live.contains(q) || *q == flapping);
            }
            present = !present;
            assert!(users.held() <= 2 * 101 + SLACK + 1);
        }
    }
}
