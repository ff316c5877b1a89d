//! Route writes on a thread of their own.
//!
//! Writing the route tables is most of a full-table load's work: the IPv4
//! DIR-24-8 arrays (a /16 alone is 256 entries and their shadow depths) and
//! the IPv6 trie (new nodes for every changed path, one rebuild per slot
//! and shipment). [`RouteWriter`] hands both to a writer thread in batches, and the programmer goes on deciding
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
//! - A block or slot a table left to the kernel (an IPv4 /24 without a
//!   free second-level group, an IPv6 /22 without room in the trie) comes
//!   back from `end_batch` or `flush`, and the programmer counts its
//!   prefixes as deferred, as when an inline write fails. The tables defer
//!   such a block or slot to the kernel by themselves, so nothing wrong is
//!   forwarded meanwhile.
//! - The queue is bounded: when the writer falls behind, the programmer waits.
//! - A small batch (a route change, not a table load) is written at once
//!   when the writer has nothing in hand: a hand-over to another thread
//!   costs a scheduling delay that one change should not wait for, and
//!   with nothing in flight nothing can be overtaken.

use std::{
    ops::{Deref, DerefMut},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
};

use ipnet::{Ipv4Net, Ipv6Net};
use pf_common::{maps as names, EcmpGroup, Nexthop, NexthopInfo, Port, RouteAction};

use pf_control::{
    dir24::{Covering, Dir24Error},
    v6trie::V6TrieError,
};

use super::{
    maps::{SharedDir24, SharedV6},
    DatapathError, DatapathMaps,
};
use pf_control::programmer::{MapWriter, Refusals};

/// Writes shipped to the writer thread at once (and at every batch end).
const SHIP_AT: usize = 4096;
/// Batches up to this many writes are written inline while the writer is idle.
const INLINE_UP_TO: usize = 64;
/// Shipments in flight before the programmer waits for the writer.
const QUEUE_DEPTH: usize = 16;

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

/// Blocks and slots the tables left to the kernel since the programmer
/// last asked.
#[derive(Default)]
struct Refused {
    v4_blocks: std::collections::BTreeSet<u32>,
    v6_slots: std::collections::BTreeSet<u32>,
}

/// The datapath's maps, with route writes made by a writer thread.
pub struct RouteWriter<'a> {
    maps: &'a mut DatapathMaps,
    pending: Shipment,
    work: Option<mpsc::SyncSender<Work>>,
    /// Shipments sent and not yet written.
    in_flight: Arc<AtomicUsize>,
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
            let (v4, v6) = (maps.v4.clone(), maps.v6.clone());
            thread::Builder::new()
                .name("pf-route-writer".into())
                .spawn(move || write_routes(&v4, &v6, queue, &in_flight, &refused))
                .map_err(|source| DatapathError::Io {
                    name: names::V6_NODES,
                    source,
                })?
        };
        Ok(Self {
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
        write_v6(&self.maps.v6, &writes.v6, &self.refused);
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
        Refusals {
            v4_blocks: std::mem::take(&mut refused.v4_blocks).into_iter().collect(),
            v6_slots: std::mem::take(&mut refused.v6_slots).into_iter().collect(),
        }
    }
}

/// Applies a run of IPv6 writes as one batch of the trie (each changed
/// slot rebuilt once) under one hold of its lock.
fn write_v6(v6: &SharedV6, writes: &[V6Write], refused: &Mutex<Refused>) {
    if writes.is_empty() {
        return;
    }
    let mut table = v6.lock();
    // A table load replaces trie nodes faster than the daemon's grace
    // period comes round: let them age here too.
    table.reclaim_at(std::time::Instant::now());
    let deferred = table.apply(writes.iter().map(|w| match *w {
        V6Write::Insert(prefix, action) => (prefix, Some(action)),
        V6Write::Remove(prefix) => (prefix, None),
    }));
    drop(table);
    if !deferred.is_empty() {
        let mut refused = refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.v6_slots.extend(
            deferred
                .into_iter()
                .map(|V6TrieError::OutOfSpace { slot, .. }| slot),
        );
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
    v6: &SharedV6,
    queue: mpsc::Receiver<Work>,
    in_flight: &AtomicUsize,
    refused: &Mutex<Refused>,
) {
    for work in queue {
        match work {
            Work::Writes(writes) => {
                write_v4(v4, &writes.v4, refused);
                write_v6(v6, &writes.v6, refused);
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            Work::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
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
    /// Queued: a slot left to the kernel comes back from `end_batch` or
    /// `flush`.
    fn insert_v6(&mut self, prefix: Ipv6Net, action: RouteAction) -> Result<(), V6TrieError> {
        self.pending.v6.push(V6Write::Insert(prefix, action));
        self.queued();
        Ok(())
    }
    fn remove_v6(&mut self, prefix: Ipv6Net) {
        self.pending.v6.push(V6Write::Remove(prefix));
        self.queued();
    }
    /// Made at once, after everything queued: the caller needs the answer.
    fn retry_v6_slots(&mut self) -> Vec<u32> {
        self.wait_for_writer();
        self.maps.v6.lock().retry_deferred()
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
    /// After everything queued: second-level groups and trie nodes
    /// replaced by queued writes age from the moment they were replaced.
    fn reclaim(&mut self) {
        self.wait_for_writer();
        self.maps.v4.lock().reclaim();
        self.maps.v6.lock().reclaim_at(std::time::Instant::now());
    }
}
