//! Which ingress ports are in a VRF. The route cache holds the main table
//! (`routes.tables`), so a frame that arrived in a VRF must never meet it:
//! `INGRESS` tells the datapath, per ifindex, before any cache lookup.

use pf_common::{
    layout::{ING_F_VRF, ING_F_VRF_KERNEL},
    maps::INGRESS_IFINDEXES,
};

use super::*;

/// Deepest VLAN stack followed to its physical parent (802.1ad + 802.1Q is
/// two); a longer chain is a loop in bad input.
const MAX_VLAN_DEPTH: usize = 8;

/// The VRF device `link` is enslaved to, 0 for none (the main table).
fn vrf_of(links: &FastMap<u32, LinkInfo>, link: &LinkInfo) -> u32 {
    let is_vrf = links
        .get(&link.master)
        .is_some_and(|master| master.vrf_table.is_some());
    if link.master != 0 && is_vrf {
        link.master
    } else {
        0
    }
}

/// The physical port under VLAN device `link`'s stack.
fn physical_parent(links: &FastMap<u32, LinkInfo>, (_, _, mut root): (u16, u16, u32)) -> u32 {
    for _ in 0..MAX_VLAN_DEPTH {
        match links.get(&root).and_then(|l| l.vlan) {
            Some((_, _, parent)) => root = parent,
            None => break,
        }
    }
    root
}

/// The `ING_F_*` bits of every link that has any: a port enslaved to a VRF
/// is [`ING_F_VRF`]; a port with a VLAN (at any depth) in another VRF than
/// its own, and a member of a bond or bridge that carries a VRF (enslaved
/// to one, or marked itself), are [`ING_F_VRF_KERNEL`].
pub fn ingress_flags(links: &FastMap<u32, LinkInfo>) -> FastMap<u32, u32> {
    let mut flags: FastMap<u32, u32> = FastMap::new();
    for (&ifindex, link) in links {
        match link.vlan {
            None if vrf_of(links, link) != 0 => *flags.entry(ifindex).or_default() |= ING_F_VRF,
            None => {}
            Some(vlan) => {
                let port = physical_parent(links, vlan);
                let port_vrf = links.get(&port).map_or(0, |p| vrf_of(links, p));
                if vrf_of(links, link) != port_vrf {
                    *flags.entry(port).or_default() |= ING_F_VRF_KERNEL;
                }
            }
        }
    }
    // Members of a bond or bridge: the program runs on the member (a
    // native program on a bond runs in each member's driver), so the
    // master's VRF must reach the member's ifindex.
    let mut members = Vec::new();
    for (&ifindex, link) in links {
        let master = link.master;
        if master == 0 || vrf_of(links, link) != 0 {
            continue;
        }
        let carries_vrf = flags.get(&master).is_some_and(|&f| f != 0)
            || links.get(&master).is_some_and(|m| vrf_of(links, m) != 0);
        if carries_vrf {
            members.push(ifindex);
        }
    }
    for member in members {
        *flags.entry(member).or_default() |= ING_F_VRF_KERNEL;
    }
    flags
}

/// The ports whose frames can arrive in VRF device `vrf` (enslaved to it,
/// under a VLAN enslaved to it, or members of a bond or bridge that is),
/// with the bits [`ingress_flags`] gives them.
pub fn vrf_ports(links: &FastMap<u32, LinkInfo>, vrf: u32) -> FastMap<u32, u32> {
    let all = ingress_flags(links);
    let mut ports: FastMap<u32, u32> = FastMap::new();
    for (&ifindex, link) in links {
        if vrf == 0 || vrf_of(links, link) != vrf {
            continue;
        }
        let port = link
            .vlan
            .map_or(ifindex, |vlan| physical_parent(links, vlan));
        ports.insert(port, all.get(&port).copied().unwrap_or(0));
    }
    // The members of a bond or bridge among them, where the program runs.
    let members: Vec<u32> = links
        .iter()
        .filter(|(_, l)| l.master != 0 && ports.contains_key(&l.master))
        .map(|(&i, _)| i)
        .collect();
    for member in members {
        ports.insert(member, all.get(&member).copied().unwrap_or(0));
    }
    ports
}

impl<W: MapWriter, E: ProgrammedEntry> Programmer<W, E> {
    /// Rewrites the `INGRESS` entries whose bits changed after a link
    /// change that can move a port into or out of a VRF.
    pub(super) fn follow_ingress(&mut self) {
        let vrf_known = self.links.values().any(|l| l.vrf_table.is_some());
        if !vrf_known && self.ingress.is_empty() {
            return;
        }
        let now = ingress_flags(&self.links);
        let mut changed: Vec<(u32, u32)> = now
            .iter()
            .filter(|(ifindex, flags)| self.ingress.get(*ifindex) != Some(*flags))
            .map(|(&ifindex, &flags)| (ifindex, flags))
            .collect();
        changed.extend(
            self.ingress
                .keys()
                .filter(|ifindex| !now.contains_key(*ifindex))
                .map(|&ifindex| (ifindex, 0)),
        );
        changed.sort_unstable();
        for (ifindex, flags) in changed {
            // The datapath sends frames from a higher ifindex to the kernel.
            if ifindex >= INGRESS_IFINDEXES {
                continue;
            }
            if let Err(err) = self.writer.write_ingress(ifindex, flags) {
                self.stats.write_errors += 1;
                tracing::error!(ifindex, flags, %err, "writing a port's VRF membership failed");
                continue;
            }
            tracing::info!(
                ifindex,
                in_vrf = flags & ING_F_VRF != 0,
                vlan_in_vrf = flags & ING_F_VRF_KERNEL != 0,
                "ingress VRF membership: untagged frames of a port in a VRF go to bpf_fib_lookup in its table, tagged frames of a port with a VLAN in a VRF to the kernel"
            );
        }
        self.ingress = now;
    }
}
