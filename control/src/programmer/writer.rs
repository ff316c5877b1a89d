//! The map writes the programmer makes, behind a trait so that it runs
//! against the real maps or a test double.

use super::*;
use crate::v6trie::V6TrieError;

/// Map writes, so the programmer runs against real maps or a test double.
pub trait MapWriter {
    type Error: std::fmt::Display;
    /// Writes the nexthop into `slot`, then points `id` at it.
    fn write_nexthop(&mut self, id: u32, slot: u32, nexthop: &Nexthop) -> Result<(), Self::Error>;
    /// Records what nexthop `id` stands for (read by `diff` and `lookup`).
    fn write_nexthop_info(&mut self, id: u32, info: &NexthopInfo) -> Result<(), Self::Error>;
    /// Writes the group into `slot`, then points `id` at it.
    fn write_group(&mut self, id: u32, slot: u32, group: &EcmpGroup) -> Result<(), Self::Error>;
    fn insert_v4(&mut self, prefix: Ipv4Net, action: RouteAction) -> Result<(), Dir24Error>;
    fn remove_v4(&mut self, prefix: Ipv4Net, covering: Covering, last_in_block: bool);
    /// Gives a deferred /24 block a second-level group again (see
    /// [`crate::dir24::Dir24::rebuild_deferred`]).
    fn rebuild_v4_block(
        &mut self,
        block: u32,
        covering: Covering,
        longer: &[(Ipv4Net, RouteAction)],
    ) -> Result<(), Dir24Error>;
    /// Writes an IPv6 prefix into the trie; an error says its /22 slot is
    /// left to the kernel (the trie keeps the prefix for a retry).
    fn insert_v6(&mut self, prefix: Ipv6Net, action: RouteAction) -> Result<(), V6TrieError>;
    fn remove_v6(&mut self, prefix: Ipv6Net);
    /// Rebuilds deferred IPv6 slots while the trie has room; returns those
    /// answered from the trie again.
    fn retry_v6_slots(&mut self) -> Vec<u32>;
    /// Records VLAN device `ifindex` for the `bpf_fib_lookup` path (which
    /// answers with the VLAN device): its frames leave by its parent with
    /// its tag. `None` forgets it.
    fn write_vlan_port(&mut self, ifindex: u32, port: Option<&Port>) -> Result<(), Self::Error>;
    /// Sets the `INGRESS` bits (`ING_F_*`, 0: in no VRF) of ifindex
    /// `ifindex`.
    fn write_ingress(&mut self, ifindex: u32, flags: u32) -> Result<(), Self::Error>;
    /// Lets quarantined second-level IPv4 groups and IPv6 trie nodes be
    /// reused.
    fn reclaim(&mut self);
    /// Sends writes a writer queued on their way, and returns those the
    /// maps refused since the last call (writers that write inline have
    /// nothing queued and report failures from the write itself).
    fn end_batch(&mut self) -> Refusals {
        Refusals::default()
    }
    /// Returns once every write made so far is in the maps, with the
    /// writes the maps refused.
    fn flush(&mut self) -> Refusals {
        Refusals::default()
    }
}

/// What the tables left to the kernel after a writer had accepted it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refusals {
    /// /24 blocks the IPv4 table left to the kernel for want of a
    /// second-level group (it answers `Fib` for them already).
    pub v4_blocks: Vec<u32>,
    /// /22 slots the IPv6 trie left to the kernel for want of room.
    pub v6_slots: Vec<u32>,
}

impl<W: MapWriter> MapWriter for &mut W {
    type Error = W::Error;
    fn write_nexthop(&mut self, id: u32, slot: u32, nexthop: &Nexthop) -> Result<(), Self::Error> {
        (**self).write_nexthop(id, slot, nexthop)
    }
    fn write_nexthop_info(&mut self, id: u32, info: &NexthopInfo) -> Result<(), Self::Error> {
        (**self).write_nexthop_info(id, info)
    }
    fn write_group(&mut self, id: u32, slot: u32, group: &EcmpGroup) -> Result<(), Self::Error> {
        (**self).write_group(id, slot, group)
    }
    fn insert_v4(&mut self, prefix: Ipv4Net, action: RouteAction) -> Result<(), Dir24Error> {
        (**self).insert_v4(prefix, action)
    }
    fn remove_v4(&mut self, prefix: Ipv4Net, covering: Covering, last_in_block: bool) {
        (**self).remove_v4(prefix, covering, last_in_block)
    }
    fn rebuild_v4_block(
        &mut self,
        block: u32,
        covering: Covering,
        longer: &[(Ipv4Net, RouteAction)],
    ) -> Result<(), Dir24Error> {
        (**self).rebuild_v4_block(block, covering, longer)
    }
    fn insert_v6(&mut self, prefix: Ipv6Net, action: RouteAction) -> Result<(), V6TrieError> {
        (**self).insert_v6(prefix, action)
    }
    fn remove_v6(&mut self, prefix: Ipv6Net) {
        (**self).remove_v6(prefix)
    }
    fn retry_v6_slots(&mut self) -> Vec<u32> {
        (**self).retry_v6_slots()
    }
    fn write_vlan_port(&mut self, ifindex: u32, port: Option<&Port>) -> Result<(), Self::Error> {
        (**self).write_vlan_port(ifindex, port)
    }
    fn write_ingress(&mut self, ifindex: u32, flags: u32) -> Result<(), Self::Error> {
        (**self).write_ingress(ifindex, flags)
    }
    fn reclaim(&mut self) {
        (**self).reclaim()
    }
    fn end_batch(&mut self) -> Refusals {
        (**self).end_batch()
    }
    fn flush(&mut self) -> Refusals {
        (**self).flush()
    }
}
