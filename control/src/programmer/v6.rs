//! IPv6 routes: written to the IPv6 trie through the writer. When the
//! trie's arrays are full it leaves the prefix's whole /22 slot to the
//! kernel (the slot answers `Fib`, never a covering prefix); the slot's
//! prefixes count as deferred until a reclaim gives it room again.

use super::*;
use crate::v6trie::slot_of;

impl<W: MapWriter, E: ProgrammedEntry> Programmer<W, E> {
    /// Writes `prefix` into the trie (the route table already holds its
    /// new action); returns whether its slot is deferred.
    pub(super) fn write_v6(
        &mut self,
        prefix: Ipv6Net,
        action: RouteAction,
        was_deferred: bool,
    ) -> bool {
        match self.writer.insert_v6(prefix, action) {
            Ok(()) => {
                if was_deferred {
                    self.stats.deferred_v6 -= 1;
                }
                false
            }
            Err(err) => {
                let slot = slot_of(prefix.network().into());
                if self.v6_deferred_slots.contains(&slot) {
                    if !was_deferred {
                        self.stats.overflow_v6_routes += 1;
                        self.stats.deferred_v6 += 1;
                    }
                } else {
                    // The slot's other prefixes go to the kernel with it.
                    tracing::warn!(%err, "IPv6 prefix deferred to the kernel");
                    if was_deferred {
                        self.stats.deferred_v6 -= 1;
                    }
                    self.v6_slot_deferred(slot);
                }
                true
            }
        }
    }

    pub(super) fn remove_v6(&mut self, prefix: Ipv6Net, deferred: bool) {
        if deferred {
            self.stats.deferred_v6 -= 1;
        }
        self.writer.remove_v6(prefix);
    }

    /// The prefixes longer than /22 programmed under `slot`.
    fn v6_prefixes_in(&self, slot: u32) -> Vec<Ipv6Net> {
        self.routes
            .v6()
            .keys()
            .filter(|p| {
                u32::from(p.prefix_len()) > pf_common::maps::V6_TOP_BITS
                    && slot_of(p.network().into()) == slot
            })
            .copied()
            .collect()
    }

    /// The trie left `slot` to the kernel after its writes were accepted
    /// (by a writer thread): its prefixes are deferred, as an inline
    /// refusal defers them.
    pub(super) fn v6_slot_deferred(&mut self, slot: u32) {
        let mut deferred = 0;
        for prefix in self.v6_prefixes_in(slot) {
            if let Some(route) = self.programmed_mut(IpNet::V6(prefix)) {
                if !route.deferred {
                    route.deferred = true;
                    deferred += 1;
                }
            }
        }
        self.v6_deferred_slots.insert(slot);
        if deferred == 0 {
            return;
        }
        tracing::warn!(
            slot = %std::net::Ipv6Addr::from((slot as u128) << (128 - pf_common::maps::V6_TOP_BITS)),
            prefixes = deferred,
            "the IPv6 trie is full; the /22's prefixes are left to bpf_fib_lookup"
        );
        self.stats.overflow_v6_routes += deferred;
        self.stats.deferred_v6 += deferred;
    }

    /// Rebuilds deferred slots while the trie has room.
    pub(super) fn retry_deferred_v6(&mut self) {
        if self.v6_deferred_slots.is_empty() {
            return;
        }
        for slot in self.writer.retry_v6_slots() {
            self.v6_deferred_slots.remove(&slot);
            let prefixes = self.v6_prefixes_in(slot);
            for prefix in &prefixes {
                if let Some(route) = self.programmed_mut(IpNet::V6(*prefix)) {
                    if std::mem::take(&mut route.deferred) {
                        self.stats.deferred_v6 -= 1;
                    }
                }
            }
            tracing::info!(
                slot = %std::net::Ipv6Addr::from((slot as u128) << (128 - pf_common::maps::V6_TOP_BITS)),
                prefixes = prefixes.len(),
                "the IPv6 trie has room again: the /22's prefixes are installed"
            );
        }
    }
}
