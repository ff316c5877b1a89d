//! Route writes on a thread of their own.
//!
//! Writing the route tables is most of a full-table load's work: the IPv4
//! DIR-24-8 arrays (a /16 alone is 256 entries and their shadow depths) and
//! the kernel's IPv6 LPM trie, where every insert or delete is a `bpf()`
//! syscall that allocates or frees a trie node. [`RouteWriter`] hands
//! both to a writer thread in batches, and the programmer goes on deciding
//! the next routes meanwhile. Nexthops and ECMP groups are written inline.
//!
//! What keeps this safe:
//! - One queue, applied in order: a prefix's writes land as they were issued.
//! - Nexthops and groups are still written inline, before the route naming
//!   them is queued, so make-before-break holds.
//! - [`MapWriter::flush`] returns once everything queued is in the maps. The
//!   programmer calls it before freed nexthop, group and second-level ids
//!   may be reused, and the daemon before it tells zebra a route is
//!   offloaded and before a generation goes live.
//! - A write the maps refused (an IPv4 block without a free second-level
//!   group, a trie insert the kernel failed) comes back from `end_batch` or
//!   `flush`, and the programmer leaves that prefix to the kernel, as when an
//!   inline write fails. The IPv4 table defers such a block to the kernel by
//!   itself, so nothing wrong is forwarded meanwhile.
//! - The queue is bounded: when the writer falls behind, the programmer waits.
//! - A small batch (a route change, not a table load) is written at once
//!   when the writer has nothing in hand: a hand-over to another thread
//!   costs a scheduling delay that one change should not wait for, and
//!   with nothing in flight nothing can be overtaken.

use std::{
    ops::{Deref, DerefMut},
    os::fd::AsFd,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    IterableMap, Map, MapData,
};
use ipnet::{Ipv4Net, Ipv6Net};
use pf_common::{maps as names, EcmpGroup, Nexthop, NexthopInfo, Port, RouteAction, V6Key};

use pf_control::dir24::{Covering, Dir24Error};

use super::{batch, maps::SharedDir24, DatapathError, DatapathMaps};
use pf_control::programmer::{FailedWrite, MapWriter, Refusals};

/// Writes shipped to the writer thread at once (and at every batch end).
const SHIP_AT: usize = 4096;
/// Batches up to this many writes are written inline while the writer is idle.
const INLINE_UP_TO: usize = 64;
/// Shipments in flight before the programmer waits for the writer.
const QUEUE_DEPTH: usize = 16;
/// Refused writes kept for the programmer; beyond this they are only counted.
const FAILURES_KEPT: usize = 65_536;

#[derive(Debug, Clone, Copy)]
enum V4Write {
    Insert(Ipv4Net, RouteAction),
    Remove(Ipv4Net, Covering, bool),
}

#[derive(Debug, Clone, Copy)]
enum V6Write {
    Insert(Ipv6Net, RouteAction),
    Remove(Ipv6Net),
}

/// Writes queued together; each family's keep their order (the two tables
/// are independent).
#[derive(Default)]
struct Shipment {
    v4: Vec<V4Write>,
    v6: Vec<V6Write>,
}

impl Shipment {
    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    fn with_capacity() -> Self {
        Self {
            v4: Vec::with_capacity(SHIP_AT),
            v6: Vec::with_capacity(SHIP_AT),
        }
    }
}

enum Work {
    Writes(Shipment),
    Barrier(mpsc::SyncSender<()>),
}

#[derive(Default)]
struct Refused {
    writes: Vec<FailedWrite>,
    /// IPv4 blocks deferred to the kernel (the table never refuses more).
    v4_blocks: std::collections::BTreeSet<u32>,
    /// Refused writes beyond [`FAILURES_KEPT`].
    uncounted: u64,
}

/// The datapath's maps, with route writes made by a writer thread.
pub struct RouteWriter<'a> {
    maps: &'a mut DatapathMaps,
    pending: Shipment,
    work: Option<mpsc::SyncSender<Work>>,
    /// Shipments sent and not yet written.
    in_flight: Arc<AtomicUsize>,
    /// The trie, for writes made inline.
    trie: TrieWriter,
    refused: Arc<Mutex<Refused>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl<'a> RouteWriter<'a> {
    pub fn new(maps: &'a mut DatapathMaps) -> Result<Self, DatapathError> {
        let (work, queue) = mpsc::sync_channel(QUEUE_DEPTH);
        let refused = Arc::new(Mutex::new(Refused::default()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let writer = {
            let refused = refused.clone();
            let in_flight = in_flight.clone();
            let v4 = maps.v4.clone();
            let trie = TrieWriter::new(maps)?;
            thread::Builder::new()
                .name("pf-route-writer".into())
                .spawn(move || write_routes(&v4, trie, queue, &in_flight, &refused))
                .map_err(|source| DatapathError::Io {
                    name: names::V6_ROUTES,
                    source,
                })?
        };
        Ok(Self {
            trie: TrieWriter::new(maps)?,
            maps,
            pending: Shipment::with_capacity(),
            work: Some(work),
            in_flight,
            refused,
            writer: Some(writer),
        })
    }

    fn queued(&mut self) {
        if self.pending.len() >= SHIP_AT {
            self.ship();
        }
    }

    fn ship(&mut self) {
        if self.pending.len() == 0 {
            return;
        }
        let writes = std::mem::replace(&mut self.pending, Shipment::with_capacity());
        if writes.len() <= INLINE_UP_TO && self.in_flight.load(Ordering::Acquire) == 0 {
            return self.write_inline(&writes);
        }
        let Some(work) = &self.work else {
            return self.write_inline(&writes);
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(Work::Writes(writes))) = work.send(Work::Writes(writes)) {
            // Nothing of it was written, and nothing else is in flight.
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            tracing::error!("the route writer thread is gone; routes are written inline");
            self.work = None;
            self.write_inline(&writes);
        }
    }

    fn write_inline(&mut self, writes: &Shipment) {
        write_v4(&self.maps.v4, &writes.v4, &self.refused);
        self.trie.write(&writes.v6, &self.refused);
    }

    /// Returns once everything queued so far is in the maps.
    fn wait_for_writer(&mut self) {
        self.ship();
        if let Some(work) = &self.work {
            let (done, wait) = mpsc::sync_channel(1);
            if work.send(Work::Barrier(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    fn take_refused(&mut self) -> Refusals {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.uncounted > 0 {
            tracing::error!(
                writes = refused.uncounted,
                "more route writes were refused than are kept for retry"
            );
            refused.uncounted = 0;
        }
        Refusals {
            v6: std::mem::take(&mut refused.writes),
            v4_blocks: std::mem::take(&mut refused.v4_blocks).into_iter().collect(),
        }
    }
}

/// The trie's key (`struct bpf_lpm_trie_key` with an IPv6 address), as
/// `pf_common` defines it for both sides.
fn lpm_key(prefix: Ipv6Net) -> V6Key {
    V6Key {
        prefix_len: prefix.prefix_len() as u32,
        addr: prefix.network().octets(),
    }
}

/// The IPv6 trie as the writer thread uses it: batch commands where the
/// kernel has them, single writes otherwise. [`KernelTrie`] is the
/// datapath's; the unit tests use a fake to drive the fallbacks.
trait V6Table {
    fn update_batch(&mut self, keys: &[V6Key], values: &[u32]) -> Result<(), batch::BatchError>;
    fn delete_batch(&mut self, keys: &[V6Key]) -> Result<(), batch::BatchError>;
    fn insert(&mut self, prefix: Ipv6Net, action: u32) -> Result<(), String>;
    fn remove(&mut self, prefix: Ipv6Net) -> Result<(), String>;
}

/// The datapath's LPM trie.
struct KernelTrie(LpmTrie<MapData, [u8; 16], u32>);

impl V6Table for KernelTrie {
    fn update_batch(&mut self, keys: &[V6Key], values: &[u32]) -> Result<(), batch::BatchError> {
        batch::update(self.0.map().fd().as_fd(), keys, values)
    }

    fn delete_batch(&mut self, keys: &[V6Key]) -> Result<(), batch::BatchError> {
        batch::delete(self.0.map().fd().as_fd(), keys)
    }

    fn insert(&mut self, prefix: Ipv6Net, action: u32) -> Result<(), String> {
        self.0
            .insert(&key(prefix), action, 0)
            .map_err(|e| e.to_string())
    }

    fn remove(&mut self, prefix: Ipv6Net) -> Result<(), String> {
        self.0.remove(&key(prefix)).map_err(|e| e.to_string())
    }
}

/// Writes the trie on the writer thread: runs of inserts and of removals in
/// one batch syscall each where the kernel has them, one by one otherwise.
struct TrieWriter<T = KernelTrie> {
    trie: T,
    batches: bool,
    keys: Vec<V6Key>,
    values: Vec<u32>,
}

impl TrieWriter {
    /// A writer over its own handle on the datapath's trie.
    fn new(maps: &DatapathMaps) -> Result<Self, DatapathError> {
        let fd = maps
            .v6_routes
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| DatapathError::Io {
                name: names::V6_ROUTES,
                source,
            })?;
        let data = MapData::from_fd(fd).map_err(|source| DatapathError::Map {
            name: names::V6_ROUTES,
            source,
        })?;
        let trie = Map::LpmTrie(data)
            .try_into()
            .map_err(|source| DatapathError::Map {
                name: names::V6_ROUTES,
                source,
            })?;
        Ok(Self::over(KernelTrie(trie)))
    }
}

impl<T: V6Table> TrieWriter<T> {
    fn over(trie: T) -> Self {
        Self {
            trie,
            batches: true,
            keys: Vec::with_capacity(SHIP_AT),
            values: Vec::with_capacity(SHIP_AT),
        }
    }

    fn write(&mut self, writes: &[V6Write], refused: &Mutex<Refused>) {
        let inserting = |w: &V6Write| matches!(w, V6Write::Insert(..));
        for run in writes.chunk_by(|a, b| inserting(a) == inserting(b)) {
            if self.batches {
                self.write_batch(run, refused);
            } else {
                for write in run {
                    self.write_one(*write, refused);
                }
            }
        }
    }

    fn write_batch(&mut self, run: &[V6Write], refused: &Mutex<Refused>) {
        self.keys.clear();
        self.values.clear();
        for write in run {
            match *write {
                V6Write::Insert(prefix, action) => {
                    self.keys.push(lpm_key(prefix));
                    self.values.push(action.0);
                }
                V6Write::Remove(prefix) => self.keys.push(lpm_key(prefix)),
            }
        }
        let mut from = 0;
        while from < run.len() {
            let result = if inserting_run(run) {
                self.trie
                    .update_batch(&self.keys[from..], &self.values[from..])
            } else {
                self.trie.delete_batch(&self.keys[from..])
            };
            match result {
                Ok(()) => return,
                Err(err) if from == 0 && err.unsupported() => {
                    tracing::info!(error = %err.error, "no batch writes for the IPv6 trie on this kernel; writing one by one");
                    self.batches = false;
                    for write in run {
                        self.write_one(*write, refused);
                    }
                    return;
                }
                Err(err) => {
                    // Clamped: an element past the run cannot have failed.
                    let failed = (from + err.done).min(run.len() - 1);
                    refuse(refused, run[failed], err.error.to_string());
                    from = failed + 1;
                }
            }
        }
    }

    fn write_one(&mut self, write: V6Write, refused: &Mutex<Refused>) {
        let result = match write {
            V6Write::Insert(prefix, action) => self.trie.insert(prefix, action.0),
            V6Write::Remove(prefix) => self.trie.remove(prefix),
        };
        if let Err(err) = result {
            refuse(refused, write, err);
        }
    }
}

fn inserting_run(run: &[V6Write]) -> bool {
    matches!(run.first(), Some(V6Write::Insert(..)))
}

fn refuse(refused: &Mutex<Refused>, write: V6Write, error: String) {
    let (prefix, action) = match write {
        V6Write::Insert(prefix, action) => (prefix, Some(action)),
        V6Write::Remove(prefix) => (prefix, None),
    };
    let mut refused = refused.lock().unwrap_or_else(|e| e.into_inner());
    if refused.writes.len() < FAILURES_KEPT {
        refused.writes.push(FailedWrite {
            prefix,
            action,
            error,
        });
    } else {
        refused.uncounted += 1;
    }
}

/// Applies a run of IPv4 writes under one hold of the table's lock.
fn write_v4(v4: &SharedDir24, writes: &[V4Write], refused: &Mutex<Refused>) {
    if writes.is_empty() {
        return;
    }
    let mut deferred = Vec::new();
    let mut table = v4.lock();
    for write in writes {
        match *write {
            V4Write::Insert(prefix, action) => {
                if table.insert(prefix, action).is_err() {
                    deferred.push(u32::from(prefix.network()) >> 8);
                }
            }
            V4Write::Remove(prefix, covering, last_in_block) => {
                table.remove(prefix, covering, last_in_block)
            }
        }
    }
    drop(table);
    if !deferred.is_empty() {
        let mut refused = refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.v4_blocks.extend(deferred);
    }
}

fn write_routes(
    v4: &SharedDir24,
    mut trie: TrieWriter,
    queue: mpsc::Receiver<Work>,
    in_flight: &AtomicUsize,
    refused: &Mutex<Refused>,
) {
    for work in queue {
        match work {
            Work::Writes(writes) => {
                write_v4(v4, &writes.v4, refused);
                trie.write(&writes.v6, refused);
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            Work::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn key(prefix: Ipv6Net) -> Key<[u8; 16]> {
    Key::new(prefix.prefix_len() as u32, prefix.network().octets())
}

impl Drop for RouteWriter<'_> {
    fn drop(&mut self) {
        self.ship();
        // Closing the queue ends the writer once it has written everything.
        self.work = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Deref for RouteWriter<'_> {
    type Target = DatapathMaps;
    fn deref(&self) -> &DatapathMaps {
        self.maps
    }
}

impl DerefMut for RouteWriter<'_> {
    fn deref_mut(&mut self) -> &mut DatapathMaps {
        self.maps
    }
}

impl MapWriter for RouteWriter<'_> {
    type Error = DatapathError;

    fn write_nexthop(&mut self, id: u32, slot: u32, nexthop: &Nexthop) -> Result<(), Self::Error> {
        self.maps.write_nexthop(id, slot, nexthop)
    }
    fn write_nexthop_info(&mut self, id: u32, info: &NexthopInfo) -> Result<(), Self::Error> {
        MapWriter::write_nexthop_info(self.maps, id, info)
    }
    fn write_group(&mut self, id: u32, slot: u32, group: &EcmpGroup) -> Result<(), Self::Error> {
        self.maps.write_group(id, slot, group)
    }
    /// Queued: a block without a free second-level group comes back from
    /// `end_batch` or `flush`.
    fn insert_v4(&mut self, prefix: Ipv4Net, action: RouteAction) -> Result<(), Dir24Error> {
        self.pending.v4.push(V4Write::Insert(prefix, action));
        self.queued();
        Ok(())
    }
    fn remove_v4(&mut self, prefix: Ipv4Net, covering: Covering, last_in_block: bool) {
        self.pending
            .v4
            .push(V4Write::Remove(prefix, covering, last_in_block));
        self.queued();
    }
    /// Made at once, after everything queued: the caller needs the answer.
    fn rebuild_v4_block(
        &mut self,
        block: u32,
        covering: Covering,
        longer: &[(Ipv4Net, RouteAction)],
    ) -> Result<(), Dir24Error> {
        self.wait_for_writer();
        self.maps
            .v4
            .lock()
            .rebuild_deferred(block, covering, longer)
    }
    /// Queued: a refusal comes back from `end_batch` or `flush`.
    fn insert_v6(&mut self, prefix: Ipv6Net, action: RouteAction) -> Result<(), Self::Error> {
        self.pending.v6.push(V6Write::Insert(prefix, action));
        self.queued();
        Ok(())
    }
    fn remove_v6(&mut self, prefix: Ipv6Net) -> Result<(), Self::Error> {
        self.pending.v6.push(V6Write::Remove(prefix));
        self.queued();
        Ok(())
    }
    /// Inline: only the `bpf_fib_lookup` path reads it, in no order with
    /// the route writes.
    fn write_vlan_port(&mut self, ifindex: u32, port: Option<&Port>) -> Result<(), Self::Error> {
        MapWriter::write_vlan_port(self.maps, ifindex, port)
    }
    /// Inline, like the VLAN ports: read before any route.
    fn write_ingress(&mut self, ifindex: u32, flags: u32) -> Result<(), Self::Error> {
        MapWriter::write_ingress(self.maps, ifindex, flags)
    }
    fn end_batch(&mut self) -> Refusals {
        self.ship();
        self.take_refused()
    }
    fn flush(&mut self) -> Refusals {
        self.wait_for_writer();
        self.take_refused()
    }
    /// After everything queued: second-level groups unhooked by queued
    /// removals age from the moment they were unhooked.
    fn reclaim(&mut self) {
        self.wait_for_writer();
        self.maps.v4.lock().reclaim()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A trie in memory whose kernel has no batch commands, or refuses one
    /// prefix (as a full trie refuses an insert).
    #[derive(Default)]
    struct FakeTrie {
        entries: BTreeMap<Ipv6Net, u32>,
        no_batches: bool,
        refuse: Option<Ipv6Net>,
        batch_calls: usize,
        single_calls: usize,
    }

    fn prefix_of(key: &V6Key) -> Ipv6Net {
        Ipv6Net::new(key.addr.into(), key.prefix_len as u8).unwrap()
    }

    impl FakeTrie {
        fn batch(
            &mut self,
            keys: &[V6Key],
            mut apply: impl FnMut(&mut Self, usize, Ipv6Net),
        ) -> Result<(), batch::BatchError> {
            self.batch_calls += 1;
            if self.no_batches {
                return Err(batch::BatchError {
                    done: 0,
                    error: std::io::Error::from_raw_os_error(libc::EINVAL),
                });
            }
            for (i, key) in keys.iter().enumerate() {
                let prefix = prefix_of(key);
                if self.refuse == Some(prefix) {
                    return Err(batch::BatchError {
                        done: i,
                        error: std::io::Error::from_raw_os_error(libc::ENOSPC),
                    });
                }
                apply(self, i, prefix);
            }
            Ok(())
        }
    }

    impl V6Table for FakeTrie {
        fn update_batch(
            &mut self,
            keys: &[V6Key],
            values: &[u32],
        ) -> Result<(), batch::BatchError> {
            self.batch(keys, |trie, i, prefix| {
                trie.entries.insert(prefix, values[i]);
            })
        }

        fn delete_batch(&mut self, keys: &[V6Key]) -> Result<(), batch::BatchError> {
            self.batch(keys, |trie, _, prefix| {
                trie.entries.remove(&prefix);
            })
        }

        fn insert(&mut self, prefix: Ipv6Net, action: u32) -> Result<(), String> {
            self.single_calls += 1;
            if self.refuse == Some(prefix) {
                return Err("no room".into());
            }
            self.entries.insert(prefix, action);
            Ok(())
        }

        fn remove(&mut self, prefix: Ipv6Net) -> Result<(), String> {
            self.single_calls += 1;
            self.entries.remove(&prefix);
            Ok(())
        }
    }

    fn prefix(i: u16) -> Ipv6Net {
        format!("2001:db8:{i:x}::/48").parse().unwrap()
    }

    fn inserts(range: std::ops::Range<u16>) -> Vec<V6Write> {
        range
            .map(|i| V6Write::Insert(prefix(i), RouteAction(u32::from(i) + 100)))
            .collect()
    }

    fn refused_prefixes(refused: &Mutex<Refused>) -> Vec<Ipv6Net> {
        refused
            .lock()
            .unwrap()
            .writes
            .iter()
            .map(|w| w.prefix)
            .collect()
    }

    #[test]
    fn a_kernel_without_batch_commands_gets_every_write_one_by_one_from_then_on() {
        let mut writer = TrieWriter::over(FakeTrie {
            no_batches: true,
            ..Default::default()
        });
        let refused = Mutex::new(Refused::default());
        let mut writes = inserts(0..5);
        writes.push(V6Write::Remove(prefix(1)));
        writer.write(&writes, &refused);
        assert!(!writer.batches);
        assert_eq!(writer.trie.batch_calls, 1, "one try, then no more");
        assert_eq!(writer.trie.single_calls, 6);
        writer.write(&inserts(5..8), &refused);
        assert_eq!(writer.trie.batch_calls, 1);
        let held: Vec<Ipv6Net> = writer.trie.entries.keys().copied().collect();
        assert_eq!(
            held,
            [0, 2, 3, 4, 5, 6, 7].map(prefix).to_vec(),
            "every write landed, in order"
        );
        assert!(refused_prefixes(&refused).is_empty());
    }

    #[test]
    fn a_write_refused_inside_a_batch_is_refused_alone_and_the_rest_is_written() {
        for refused_at in [0, 2, 4] {
            let mut writer = TrieWriter::over(FakeTrie {
                refuse: Some(prefix(refused_at)),
                ..Default::default()
            });
            let refused = Mutex::new(Refused::default());
            writer.write(&inserts(0..5), &refused);
            assert!(
                writer.batches,
                "a refusal at element {refused_at} is not missing batch support"
            );
            assert_eq!(refused_prefixes(&refused), vec![prefix(refused_at)]);
            let held: Vec<Ipv6Net> = writer.trie.entries.keys().copied().collect();
            let expected: Vec<Ipv6Net> = (0..5).filter(|i| *i != refused_at).map(prefix).collect();
            assert_eq!(held, expected);
            assert_eq!(writer.trie.single_calls, 0);
        }
    }
}
