//! IPv6 route writes on a thread of their own.
//!
//! The IPv6 table is the kernel's LPM trie: every insert or delete is a
//! `bpf()` syscall that allocates or frees a trie node, about a quarter of
//! the control plane's time on a full table. [`PipelinedMaps`] hands those
//! writes to a writer thread in batches, and the programmer goes on deciding
//! the next routes meanwhile. Everything else is written inline.
//!
//! What keeps this safe:
//! - One queue, applied in order: a prefix's writes land as they were issued.
//! - Nexthops and groups are still written inline, before the route naming
//!   them is queued, so make-before-break holds.
//! - [`MapWriter::flush`] returns once everything queued is in the trie. The
//!   programmer calls it before freed nexthop and group ids may be reused,
//!   and the daemon before it tells zebra a route is offloaded.
//! - A write the kernel refused comes back from `end_batch` or `flush`, and
//!   the programmer leaves that prefix to the kernel, as when an inline write
//!   fails.
//! - The queue is bounded: when the writer falls behind, the programmer waits.

use std::{
    ops::{Deref, DerefMut},
    os::fd::AsFd,
    sync::{mpsc, Arc, Mutex},
    thread,
};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    IterableMap, Map, MapData,
};
use ipnet::{Ipv4Net, Ipv6Net};
use pf_common::{maps as names, EcmpGroup, Nexthop, NexthopInfo, RouteAction};

use super::{
    batch,
    dir24::{Covering, Dir24Error},
    DatapathError, DatapathMaps,
};
use crate::programmer::{FailedWrite, MapWriter};

/// Writes shipped to the writer thread at once (and at every batch end).
const SHIP_AT: usize = 4096;
/// Shipments in flight before the programmer waits for the writer.
const QUEUE_DEPTH: usize = 16;
/// Refused writes kept for the programmer; beyond this they are only counted.
const FAILURES_KEPT: usize = 65_536;

#[derive(Debug, Clone, Copy)]
enum V6Write {
    Insert(Ipv6Net, RouteAction),
    Remove(Ipv6Net),
}

enum Work {
    Writes(Vec<V6Write>),
    Barrier(mpsc::SyncSender<()>),
}

#[derive(Default)]
struct Refused {
    writes: Vec<FailedWrite>,
    /// Refused writes beyond [`FAILURES_KEPT`].
    uncounted: u64,
}

/// The datapath's maps, with IPv6 route writes made by a writer thread.
pub struct PipelinedMaps<'a> {
    maps: &'a mut DatapathMaps,
    pending: Vec<V6Write>,
    work: Option<mpsc::SyncSender<Work>>,
    refused: Arc<Mutex<Refused>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl<'a> PipelinedMaps<'a> {
    pub fn new(maps: &'a mut DatapathMaps) -> Result<Self, DatapathError> {
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
        let trie: LpmTrie<MapData, [u8; 16], u32> =
            Map::LpmTrie(data)
                .try_into()
                .map_err(|source| DatapathError::Map {
                    name: names::V6_ROUTES,
                    source,
                })?;
        let (work, queue) = mpsc::sync_channel(QUEUE_DEPTH);
        let refused = Arc::new(Mutex::new(Refused::default()));
        let writer = {
            let refused = refused.clone();
            thread::Builder::new()
                .name("pf-v6-writer".into())
                .spawn(move || {
                    let writer = TrieWriter {
                        trie,
                        batches: true,
                        keys: Vec::with_capacity(SHIP_AT),
                        values: Vec::with_capacity(SHIP_AT),
                    };
                    write_v6(writer, queue, &refused)
                })
                .map_err(|source| DatapathError::Io {
                    name: names::V6_ROUTES,
                    source,
                })?
        };
        Ok(Self {
            maps,
            pending: Vec::with_capacity(SHIP_AT),
            work: Some(work),
            refused,
            writer: Some(writer),
        })
    }

    fn queue(&mut self, write: V6Write) {
        self.pending.push(write);
        if self.pending.len() >= SHIP_AT {
            self.ship();
        }
    }

    fn ship(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let writes = std::mem::replace(&mut self.pending, Vec::with_capacity(SHIP_AT));
        if let Some(work) = &self.work {
            if work.send(Work::Writes(writes)).is_err() {
                tracing::error!(
                    "the IPv6 writer thread is gone; IPv6 routes are no longer written"
                );
            }
        }
    }

    fn take_refused(&mut self) -> Vec<FailedWrite> {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.uncounted > 0 {
            tracing::error!(
                writes = refused.uncounted,
                "more IPv6 writes were refused than are kept for retry"
            );
            refused.uncounted = 0;
        }
        std::mem::take(&mut refused.writes)
    }
}

/// `struct bpf_lpm_trie_key` with an IPv6 address: the trie's key layout.
#[repr(C)]
#[derive(Clone, Copy)]
struct LpmKey6 {
    prefix_len: u32,
    address: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<LpmKey6>() == 20);

fn lpm_key(prefix: Ipv6Net) -> LpmKey6 {
    LpmKey6 {
        prefix_len: prefix.prefix_len() as u32,
        address: prefix.network().octets(),
    }
}

/// Writes the trie on the writer thread: runs of inserts and of removals in
/// one batch syscall each where the kernel has them, one by one otherwise.
struct TrieWriter {
    trie: LpmTrie<MapData, [u8; 16], u32>,
    batches: bool,
    keys: Vec<LpmKey6>,
    values: Vec<u32>,
}

impl TrieWriter {
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
            let fd = self.trie.map().fd().as_fd();
            let result = if inserting_run(run) {
                batch::update(fd, &self.keys[from..], &self.values[from..])
            } else {
                batch::delete(fd, &self.keys[from..])
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
                    let failed = from + err.done;
                    refuse(refused, run[failed], err.error.to_string());
                    from = failed + 1;
                }
            }
        }
    }

    fn write_one(&mut self, write: V6Write, refused: &Mutex<Refused>) {
        let result = match write {
            V6Write::Insert(prefix, action) => self.trie.insert(&key(prefix), action.0, 0),
            V6Write::Remove(prefix) => self.trie.remove(&key(prefix)),
        };
        if let Err(err) = result {
            refuse(refused, write, err.to_string());
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

fn write_v6(mut writer: TrieWriter, queue: mpsc::Receiver<Work>, refused: &Mutex<Refused>) {
    for work in queue {
        match work {
            Work::Writes(writes) => writer.write(&writes, refused),
            Work::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn key(prefix: Ipv6Net) -> Key<[u8; 16]> {
    Key::new(prefix.prefix_len() as u32, prefix.network().octets())
}

impl Drop for PipelinedMaps<'_> {
    fn drop(&mut self) {
        self.ship();
        // Closing the queue ends the writer once it has written everything.
        self.work = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Deref for PipelinedMaps<'_> {
    type Target = DatapathMaps;
    fn deref(&self) -> &DatapathMaps {
        self.maps
    }
}

impl DerefMut for PipelinedMaps<'_> {
    fn deref_mut(&mut self) -> &mut DatapathMaps {
        self.maps
    }
}

impl MapWriter for PipelinedMaps<'_> {
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
    fn insert_v4(&mut self, prefix: Ipv4Net, action: RouteAction) -> Result<(), Dir24Error> {
        self.maps.v4.insert(prefix, action)
    }
    fn remove_v4(&mut self, prefix: Ipv4Net, covering: Covering, last_in_block: bool) {
        self.maps.v4.remove(prefix, covering, last_in_block)
    }
    fn rebuild_v4_block(
        &mut self,
        block: u32,
        covering: Covering,
        longer: &[(Ipv4Net, RouteAction)],
    ) -> Result<(), Dir24Error> {
        self.maps.v4.rebuild_deferred(block, covering, longer)
    }
    /// Queued: a refusal comes back from `end_batch` or `flush`.
    fn insert_v6(&mut self, prefix: Ipv6Net, action: RouteAction) -> Result<(), Self::Error> {
        self.queue(V6Write::Insert(prefix, action));
        Ok(())
    }
    fn remove_v6(&mut self, prefix: Ipv6Net) -> Result<(), Self::Error> {
        self.queue(V6Write::Remove(prefix));
        Ok(())
    }
    fn end_batch(&mut self) -> Vec<FailedWrite> {
        self.ship();
        self.take_refused()
    }
    fn flush(&mut self) -> Vec<FailedWrite> {
        self.ship();
        if let Some(work) = &self.work {
            let (done, wait) = mpsc::sync_channel(1);
            if work.send(Work::Barrier(done)).is_ok() {
                let _ = wait.recv();
            }
        }
        self.take_refused()
    }
    fn reclaim(&mut self) {
        self.maps.v4.reclaim()
    }
}
