//! Which ingress ports are in a VRF. The route cache holds the main table
//! (`routes.tables`), so a frame that arrived in a VRF must never meet it:
//! `INGRESS` tells the datapath, per ifindex, before any cache lookup.

use pf_common::{
    layout::{ING_F_VLAN_VRF, ING_F_VRF},
    maps::INGRESS_IFINDEXES,
};

use super::*;

/// Deepest VLAN stack followed to its physical parent (802.1ad + 802.1Q is
/// two); a longer chain is a loop in bad input.
const MAX_VLAN_DEPTH: usize = 8;

/// The `ING_F_*` bits of every link that has any: a link enslaved to a VRF
/// device is [`ING_F_VRF`]; the physical parent of a VLAN device enslaved
/// to one is [`ING_F_VLAN_VRF`].
pub fn ingress_flags(links: &FastMap<u32, LinkInfo>) -> FastMap<u32, u32> {
    flags_under(links, |master| {
        links.get(&master).is_some_and(|m| m.vrf_table.is_some())
    })
}

/// The ports whose frames can arrive in VRF device `vrf`, with the bits it
/// alone calls for.
pub fn vrf_ports(links: &FastMap<u32, LinkInfo>, vrf: u32) -> FastMap<u32, u32> {
    flags_under(links, |master| master == vrf)
}

fn flags_under(links: &FastMap<u32, LinkInfo>, is_vrf: impl Fn(u32) -> bool) -> FastMap<u32, u32> {
    let mut flags: FastMap<u32, u32> = FastMap::new();
    for (&ifindex, link) in links {
        if link.master == 0 || !is_vrf(link.master) {
            continue;
        }
        match link.vlan {
            None => *flags.entry(ifindex).or_default() |= ING_F_VRF,
            Some((_, _, mut root)) => {
                for _ in 0..MAX_VLAN_DEPTH {
                    match links.get(&root).and_then(|l| l.vlan) {
                        Some((_, _, parent)) => root = parent,
                        None => break,
                    }
                }
                *flags.entry(root).or_default() |= ING_F_VLAN_VRF;
            }
        }
    }
    flags
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
                vlan_in_vrf = flags & ING_F_VLAN_VRF != 0,
                "ingress VRF membership: untagged frames of a port in a VRF go to bpf_fib_lookup in its table, tagged frames of a port with a VLAN in a VRF to the kernel"
            );
        }
        self.ingress = now;
    }
}
