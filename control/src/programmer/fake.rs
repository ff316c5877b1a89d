//! Maps in memory for unit tests of the programmer and of `diff`, and for
//! the controller's conformance tests (feature `fake-maps`).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::{Ipv4Net, Ipv6Net};
use pf_common::{EcmpGroup, Nexthop, NexthopInfo, Port, RouteAction, RouteKind};

use super::{MapWriter, Refusals};
use crate::{
    dir24::{Covering, Dir24, Dir24Error, VecStore},
    v6trie::{V6Trie, V6TrieError, VecV6Store},
};

/// Maps in memory, with a log of writes in order.
pub struct FakeMaps {
    pub v4: Dir24<VecStore>,
    pub v6: V6Trie<VecV6Store>,
    pub nh_ptr: HashMap<u32, u32>,
    pub nexthops: HashMap<u32, Nexthop>,
    pub info: HashMap<u32, NexthopInfo>,
    pub grp_ptr: HashMap<u32, u32>,
    pub groups: HashMap<u32, EcmpGroup>,
    /// VLAN devices for the `bpf_fib_lookup` path.
    pub ports: HashMap<u32, Port>,
    /// `INGRESS` bits, by ifindex (absent: 0).
    pub ingress: HashMap<u32, u32>,
    pub log: Vec<String>,
    /// IPv6 inserts are accepted and a slot left to the kernel is reported
    /// at the end of the batch, as the writer thread does.
    pub queue_v6: bool,
    deferred_slots: Vec<u32>,
    /// IPv4 inserts are accepted and a block without a group is reported
    /// at the end of the batch, as the writer thread does.
    pub queue_v4: bool,
    deferred_blocks: Vec<u32>,
}

impl Default for FakeMaps {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeMaps {
    pub fn new() -> Self {
        Self {
            v4: Dir24::new(VecStore::new(4)),
            v6: V6Trie::new(VecV6Store::new(4096, 4096)),
            nh_ptr: HashMap::new(),
            nexthops: HashMap::new(),
            info: HashMap::new(),
            grp_ptr: HashMap::new(),
            groups: HashMap::new(),
            log: Vec::new(),
            queue_v6: false,
            deferred_slots: Vec::new(),
            ports: HashMap::new(),
            ingress: HashMap::new(),
            queue_v4: false,
            deferred_blocks: Vec::new(),
        }
    }

    /// What the datapath would see for an IPv4 address: the action and,
    /// for a nexthop, its value.
    pub fn lookup_v4(&self, addr: Ipv4Addr) -> (RouteAction, Option<Nexthop>) {
        let action = self.v4.lookup(u32::from(addr));
        (action, self.nexthop_of(action))
    }

    /// Maps whose IPv6 trie has room for `nodes` nodes and `leaves` leaves.
    pub fn with_v6_room(nodes: u32, leaves: u32) -> Self {
        Self {
            v6: V6Trie::new(VecV6Store::new(nodes, leaves)),
            ..Self::new()
        }
    }

    pub fn lookup_v6(&self, addr: Ipv6Addr) -> RouteAction {
        self.v6.lookup(addr.into())
    }

    pub fn nexthop_of(&self, action: RouteAction) -> Option<Nexthop> {
        if action.kind() != Some(RouteKind::Nexthop) {
            return None;
        }
        let slot = self.nh_ptr.get(&action.index())?;
        self.nexthops.get(slot).copied()
    }
}

impl MapWriter for FakeMaps {
    type Error = String;
    fn write_nexthop(&mut self, id: u32, slot: u32, nexthop: &Nexthop) -> Result<(), String> {
        self.log.push(format!("nexthop {id} slot {slot}"));
        self.nexthops.insert(slot, *nexthop);
        self.nh_ptr.insert(id, slot);
        Ok(())
    }
    fn write_nexthop_info(&mut self, id: u32, info: &NexthopInfo) -> Result<(), String> {
        self.info.insert(id, *info);
        Ok(())
    }
    fn write_group(&mut self, id: u32, slot: u32, group: &EcmpGroup) -> Result<(), String> {
        self.log.push(format!("group {id} slot {slot}"));
        self.groups.insert(slot, *group);
        self.grp_ptr.insert(id, slot);
        Ok(())
    }
    fn insert_v4(&mut self, prefix: Ipv4Net, action: RouteAction) -> Result<(), Dir24Error> {
        self.log.push(format!("route {prefix}"));
        match self.v4.insert(prefix, action) {
            Err(_) if self.queue_v4 => {
                self.deferred_blocks.push(u32::from(prefix.network()) >> 8);
                Ok(())
            }
            result => result,
        }
    }
    fn remove_v4(&mut self, prefix: Ipv4Net, covering: Covering, last_in_block: bool) {
        self.log.push(format!("unroute {prefix}"));
        self.v4.remove(prefix, covering, last_in_block)
    }
    fn rebuild_v4_block(
        &mut self,
        block: u32,
        covering: Covering,
        longer: &[(Ipv4Net, RouteAction)],
    ) -> Result<(), Dir24Error> {
        self.log.push(format!("rebuild block {block}"));
        self.v4.rebuild_deferred(block, covering, longer)
    }
    fn insert_v6(&mut self, prefix: Ipv6Net, action: RouteAction) -> Result<(), V6TrieError> {
        self.log.push(format!("route {prefix}"));
        match self.v6.insert(prefix, action) {
            Err(V6TrieError::OutOfSpace { slot, .. }) if self.queue_v6 => {
                self.deferred_slots.push(slot);
                Ok(())
            }
            other => other,
        }
    }
    fn remove_v6(&mut self, prefix: Ipv6Net) {
        self.log.push(format!("unroute {prefix}"));
        self.v6.remove(prefix);
    }
    fn retry_v6_slots(&mut self) -> Vec<u32> {
        self.v6.retry_deferred()
    }
    fn write_vlan_port(&mut self, ifindex: u32, port: Option<&Port>) -> Result<(), String> {
        match port {
            Some(port) => {
                self.log.push(format!(
                    "port {ifindex}: vlan {} on {}",
                    port.vlan_id, port.tx_ifindex
                ));
                self.ports.insert(ifindex, *port);
            }
            None => {
                self.log.push(format!("unport {ifindex}"));
                self.ports.remove(&ifindex);
            }
        }
        Ok(())
    }
    fn write_ingress(&mut self, ifindex: u32, flags: u32) -> Result<(), String> {
        self.log.push(format!("ingress {ifindex}: {flags:#x}"));
        if flags == 0 {
            self.ingress.remove(&ifindex);
        } else {
            self.ingress.insert(ifindex, flags);
        }
        Ok(())
    }
    fn reclaim(&mut self) {
        self.v4.reclaim();
        self.v6.reclaim();
    }
    fn end_batch(&mut self) -> Refusals {
        self.flush()
    }
    fn flush(&mut self) -> Refusals {
        Refusals {
            v4_blocks: std::mem::take(&mut self.deferred_blocks),
            v6_slots: std::mem::take(&mut self.deferred_slots),
        }
    }
}
