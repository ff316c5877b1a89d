//! Next hops: the gateway keys routes share, their resolution into
//! `NEXTHOPS` entries from links and neighbours, and the nexthop and ECMP
//! group slots the programmer acquires and releases.

use super::*;

/// One path of a route: out of `ifindex`, via `gateway` (none: the
/// destination is on the link).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Leg {
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
    pub weight: u32,
}

/// What the programmer needs to know about an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    pub mac: [u8; 6],
    pub mtu: u32,
    pub up: bool,
    /// For a VLAN device: (VLAN id, TPID, parent ifindex).
    pub vlan: Option<(u16, u16, u32)>,
    /// The device it is enslaved to (a VRF, a bridge, a bond), 0 for none.
    pub master: u32,
    /// For a VRF device: the routing table it stands for.
    pub vrf_table: Option<u32>,
}

/// A gateway on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NexthopKey {
    pub ifindex: u32,
    pub gateway: IpAddr,
}

pub(super) type GroupKey = Vec<(NexthopKey, u32)>;

/// The `NH_INFO` record of a nexthop key.
pub fn nexthop_info(key: &NexthopKey) -> NexthopInfo {
    let mut info = NexthopInfo {
        ifindex: key.ifindex,
        ..Default::default()
    };
    match key.gateway {
        IpAddr::V4(a) => {
            info.family = 4;
            info.gateway[..4].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            info.family = 6;
            info.gateway = a.octets();
        }
    }
    info
}

/// The nexthop key an `NH_INFO` record stands for.
pub fn nexthop_key(info: &NexthopInfo) -> Option<NexthopKey> {
    let gateway = match info.family {
        4 => IpAddr::from(<[u8; 4]>::try_from(&info.gateway[..4]).ok()?),
        6 => IpAddr::from(info.gateway),
        _ => return None,
    };
    Some(NexthopKey {
        ifindex: info.ifindex,
        gateway,
    })
}

/// The `NEXTHOPS` entry for a gateway, given its interface and neighbour.
pub fn resolve_nexthop(
    key: &NexthopKey,
    link: Option<&LinkInfo>,
    neighbour: Option<&[u8; 6]>,
) -> Nexthop {
    let mut nexthop = Nexthop {
        tx_ifindex: key.ifindex,
        ..Default::default()
    };
    if key.gateway.is_ipv6() {
        nexthop.flags |= NH_F_GATEWAY_V6;
    }
    let Some(link) = link else {
        return nexthop;
    };
    nexthop.smac = link.mac;
    nexthop.mtu = link.mtu.min(u16::MAX as u32) as u16;
    if let Some((vlan_id, tpid, parent)) = link.vlan {
        nexthop.tx_ifindex = parent;
        nexthop.vlan_id = vlan_id;
        nexthop.vlan_proto = tpid;
    }
    if let (true, Some(mac)) = (link.up, neighbour) {
        nexthop.dmac = *mac;
        nexthop.flags |= NH_F_RESOLVED;
    }
    nexthop
}

/// Whether the datapath can forward `legs` itself: every leg has a gateway
/// (on-link destinations each need their own neighbour, which the kernel's
/// lookup resolves) and a group holds them all.
pub fn offloadable(legs: &[Leg]) -> bool {
    !legs.is_empty() && legs.len() <= ECMP_MAX_LEGS && legs.iter().all(|l| l.gateway.is_some())
}

impl<W: MapWriter, E: ProgrammedEntry> Programmer<W, E> {
    pub fn set_link(&mut self, ifindex: u32, link: Option<LinkInfo>) {
        let before = match link {
            Some(link) => {
                let before = self.links.insert(ifindex, link);
                if before == Some(link) {
                    return;
                }
                before
            }
            None => match self.links.remove(&ifindex) {
                Some(before) => Some(before),
                None => return,
            },
        };
        self.follow_vlan_port(
            ifindex,
            before.and_then(|l| l.vlan),
            link.and_then(|l| l.vlan),
        );
        let membership = |l: Option<LinkInfo>| l.map(|l| (l.master, l.vrf_table, l.vlan));
        if membership(before) != membership(link) {
            self.follow_ingress();
        }
        let affected: Vec<u32> = self
            .nexthop_ids
            .iter()
            .filter(|(k, _)| k.ifindex == ifindex)
            .map(|(_, id)| id)
            .collect();
        for id in affected {
            self.refresh_nexthop(id);
        }
    }

    /// Keeps `PORTS` in step with VLAN device `ifindex`: what
    /// `bpf_fib_lookup` answers is the VLAN device, and the datapath sends
    /// on its parent with its tag. A VLAN on a VLAN (802.1ad + 802.1Q)
    /// needs two tags, more than a port entry carries: it stays out, and
    /// its frames go to the kernel.
    fn follow_vlan_port(
        &mut self,
        ifindex: u32,
        before: Option<(u16, u16, u32)>,
        now: Option<(u16, u16, u32)>,
    ) {
        let stacked = |parent: u32| self.links.get(&parent).is_some_and(|p| p.vlan.is_some());
        let port = now
            .filter(|&(_, _, parent)| !stacked(parent))
            .map(|(vlan_id, tpid, parent)| Port {
                tx_ifindex: parent,
                vlan_id,
                vlan_proto: tpid,
                flags: PORT_F_VLAN,
            });
        if port.is_none() && before.is_none() {
            return;
        }
        if let Err(err) = self.writer.write_vlan_port(ifindex, port.as_ref()) {
            self.stats.write_errors += 1;
            tracing::error!(ifindex, %err, "writing a VLAN port failed; bpf_fib_lookup answers through it go to the kernel");
        }
    }

    /// A neighbour's MAC, or `None` when it is unusable (failed, incomplete, gone).
    pub fn set_neighbour(&mut self, ifindex: u32, ip: IpAddr, mac: Option<[u8; 6]>) {
        let key = NexthopKey {
            ifindex,
            gateway: ip,
        };
        let changed = match mac {
            Some(mac) => self.neighbours.insert(key, mac) != Some(mac),
            None => self.neighbours.remove(&key).is_some(),
        };
        if changed {
            self.record(|| Event::Neighbour {
                ifindex,
                ip,
                mac: mac.as_ref().map(mac_text),
            });
            if let Some(id) = self.nexthop_ids.get(&key) {
                self.refresh_nexthop(id);
            }
        }
    }

    pub(super) fn resolve(&self, key: &NexthopKey) -> Nexthop {
        resolve_nexthop(key, self.links.get(&key.ifindex), self.neighbours.get(key))
    }

    /// Rewrites nexthop `id` into a fresh slot if its value changed.
    pub(super) fn refresh_nexthop(&mut self, id: u32) {
        let Some(key) = self.nexthop_ids.key_of(id).copied() else {
            return;
        };
        let value = self.resolve(&key);
        let Some(state) = self.nexthops.get(&id) else {
            return;
        };
        if state.value == value {
            return;
        }
        let old_slot = state.slot;
        let Some(slot) = self.nexthop_slots.take() else {
            // Every free slot is still in quarantine (changes came faster
            // than grace periods). Rewriting the live slot in place could
            // be read half-written, a torn MAC; instead the id points at
            // the parked entry (unresolved: the kernel forwards) until the
            // next reclaim frees a slot.
            if old_slot != PARKED_SLOT
                && self.write_nexthop_slot(id, PARKED_SLOT, Nexthop::default())
            {
                self.nexthop_slots.release(old_slot);
                self.stats.nexthops_parked += 1;
            }
            self.parked.push(id);
            return;
        };
        if self.write_nexthop_slot(id, slot, value) {
            if old_slot != PARKED_SLOT {
                self.nexthop_slots.release(old_slot);
            }
        } else {
            self.nexthop_slots.release(slot);
        }
    }

    /// Gives parked ids a fresh slot again (after a reclaim freed some).
    pub(super) fn unpark_nexthops(&mut self) {
        let mut parked = std::mem::take(&mut self.parked);
        parked.sort_unstable();
        parked.dedup();
        for id in parked {
            self.refresh_nexthop(id);
        }
    }

    pub(super) fn write_nexthop_slot(&mut self, id: u32, slot: u32, value: Nexthop) -> bool {
        self.stats.nexthop_writes += 1;
        match self.writer.write_nexthop(id, slot, &value) {
            Ok(()) => {
                self.nexthops.insert(id, NexthopState { slot, value });
                if let Some(key) = self.nexthop_ids.key_of(id).copied() {
                    self.record(|| Event::Nexthop {
                        id,
                        ifindex: key.ifindex,
                        gateway: key.gateway,
                        resolved: value.is_resolved(),
                        dmac: mac_text(&value.dmac),
                    });
                }
                true
            }
            Err(err) => {
                self.stats.write_errors += 1;
                tracing::error!(id, slot, %err, "writing a nexthop failed");
                false
            }
        }
    }

    pub(super) fn acquire_nexthop(&mut self, key: &NexthopKey) -> Option<u32> {
        match self.nexthop_ids.acquire(key) {
            Some(Acquired::Existing(id)) => Some(id),
            Some(Acquired::New(id)) => {
                if let Err(err) = self.writer.write_nexthop_info(id, &nexthop_info(key)) {
                    self.stats.write_errors += 1;
                    tracing::error!(id, %err, "recording a nexthop's gateway failed");
                }
                let value = self.resolve(key);
                let written = match self.nexthop_slots.take() {
                    Some(slot) => {
                        let ok = self.write_nexthop_slot(id, slot, value);
                        if !ok {
                            self.nexthop_slots.release(slot);
                        }
                        ok
                    }
                    None => false,
                };
                if !written {
                    self.nexthop_ids.release(key);
                    self.stats.overflow_nexthops += 1;
                    return None;
                }
                Some(id)
            }
            None => {
                self.stats.overflow_nexthops += 1;
                None
            }
        }
    }

    pub(super) fn release_nexthop(&mut self, key: &NexthopKey) {
        if let Some(id) = self.nexthop_ids.release(key) {
            if let Some(state) = self.nexthops.remove(&id) {
                if state.slot != PARKED_SLOT {
                    self.nexthop_slots.release(state.slot);
                }
            }
        }
    }

    pub(super) fn acquire_group(&mut self, key: &GroupKey) -> Option<u32> {
        // An existing group already holds its legs.
        if let Some(id) = self.group_ids.acquire_existing(key) {
            return Some(id);
        }
        // Legs first, so the group never names a nexthop id that is not written.
        let mut legs = Vec::with_capacity(key.len());
        for (i, (leg, weight)) in key.iter().enumerate() {
            match self.acquire_nexthop(leg) {
                Some(id) => legs.push(EcmpLeg {
                    nexthop_id: id,
                    weight: *weight,
                }),
                None => {
                    for (leg, _) in &key[..i] {
                        self.release_nexthop(leg);
                    }
                    return None;
                }
            }
        }
        let release_legs = |this: &mut Self| {
            for (leg, _) in key {
                this.release_nexthop(leg);
            }
        };
        match self.group_ids.acquire(key) {
            Some(Acquired::Existing(id)) => {
                // The group already holds references to its legs.
                release_legs(self);
                Some(id)
            }
            Some(Acquired::New(id)) => {
                let written = build_group(&legs).ok().and_then(|group| {
                    let slot = self.group_slot_pool.take()?;
                    self.stats.group_writes += 1;
                    match self.writer.write_group(id, slot, &group) {
                        Ok(()) => Some(slot),
                        Err(err) => {
                            self.stats.write_errors += 1;
                            tracing::error!(id, slot, %err, "writing an ECMP group failed");
                            self.group_slot_pool.release(slot);
                            None
                        }
                    }
                });
                match written {
                    Some(slot) => {
                        self.group_slots.insert(id, slot);
                        Some(id)
                    }
                    None => {
                        self.group_ids.release(key);
                        release_legs(self);
                        self.stats.overflow_groups += 1;
                        None
                    }
                }
            }
            None => {
                release_legs(self);
                self.stats.overflow_groups += 1;
                None
            }
        }
    }

    pub(super) fn release_group(&mut self, key: &GroupKey) {
        if let Some(id) = self.group_ids.release(key) {
            if let Some(slot) = self.group_slots.remove(&id) {
                self.group_slot_pool.release(slot);
            }
            for (leg, _) in key {
                self.release_nexthop(leg);
            }
        }
    }
}
