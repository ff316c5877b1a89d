//! IPv6 routes: written to the kernel's LPM trie through the writer; a
//! prefix the trie refuses is left to the kernel, and so is every shorter
//! prefix that covers it (shadowed), until it is written again.

use super::*;

impl<W: MapWriter, E: ProgrammedEntry> Programmer<W, E> {
    /// What the trie holds for an installed IPv6 prefix (before shadowing).
    pub(super) fn v6_installed(&self, prefix: Ipv6Net) -> Option<RouteAction> {
        let programmed = self.programmed_v6(prefix)?;
        (!programmed.deferred).then_some(programmed.action)
    }

    /// The longest installed IPv6 prefix strictly above `prefix`. At most
    /// 128 probes, and only deferred prefixes (a full table) ask.
    pub(super) fn v6_cover(&self, prefix: Ipv6Net) -> Option<Ipv6Net> {
        (0..prefix.prefix_len()).rev().find_map(|len| {
            let above = Ipv6Net::new(prefix.network(), len).ok()?.trunc();
            self.v6_installed(above).map(|_| above)
        })
    }

    /// Writes `prefix` into the trie (the route table already holds its
    /// new action); returns whether it ended up deferred instead.
    pub(super) fn write_v6(
        &mut self,
        prefix: Ipv6Net,
        action: RouteAction,
        was_installed: bool,
    ) -> bool {
        if !was_installed && self.v6_count >= self.limits.v6_routes {
            self.stats.overflow_v6_routes += 1;
            self.leave_v6_to_kernel(prefix, false);
            return true;
        }
        let shown = if self.v6_shadowed.get(&prefix).copied().unwrap_or(0) > 0 {
            RouteAction::simple(RouteKind::Fib)
        } else {
            action
        };
        if let Err(err) = self.writer.insert_v6(prefix, shown) {
            self.stats.write_errors += 1;
            tracing::error!(%prefix, %err, "writing an IPv6 route failed; left to the kernel");
            self.leave_v6_to_kernel(prefix, was_installed);
            return true;
        }
        if !was_installed {
            self.v6_count += 1;
        }
        if let Some(cover) = self.v6_deferred.remove(&prefix) {
            self.stats.deferred_v6 -= 1;
            if let Some(cover) = cover {
                self.unshadow_v6(cover);
            }
        }
        self.reshadow_v6_under(prefix);
        false
    }

    /// Takes `prefix` out of the trie (when `installed`, whatever it holds
    /// there is stale) and defers it: the kernel answers for it, and so does
    /// its covering prefix while it is deferred.
    pub(super) fn leave_v6_to_kernel(&mut self, prefix: Ipv6Net, installed: bool) {
        if installed {
            if let Err(err) = self.writer.remove_v6(prefix) {
                tracing::error!(%prefix, %err, "removing a refused IPv6 route failed");
            }
            self.v6_count -= 1;
        }
        if let Some(route) = self.programmed_mut(IpNet::V6(prefix)) {
            route.deferred = true;
        }
        if !self.v6_deferred.contains_key(&prefix) {
            self.stats.deferred_v6 += 1;
            self.v6_deferred.insert(prefix, None);
        }
        self.reshadow_v6_under(prefix);
    }

    pub(super) fn remove_v6(&mut self, prefix: Ipv6Net, deferred: bool) {
        if deferred {
            if let Some(cover) = self.v6_deferred.remove(&prefix) {
                self.stats.deferred_v6 -= 1;
                if let Some(cover) = cover {
                    self.unshadow_v6(cover);
                }
            }
            return;
        }
        self.v6_shadowed.remove(&prefix);
        self.v6_count -= 1;
        if let Err(err) = self.writer.remove_v6(prefix) {
            self.stats.write_errors += 1;
            tracing::error!(%prefix, %err, "removing an IPv6 route failed");
        }
        self.reshadow_v6_under(prefix);
        self.retry_deferred_v6();
    }

    /// Installs deferred IPv6 prefixes while there is room.
    pub(super) fn retry_deferred_v6(&mut self) {
        while self.v6_count < self.limits.v6_routes {
            let Some(prefix) = self.v6_deferred.keys().next() else {
                return;
            };
            let Some(action) = self.programmed_v6(prefix).map(|r| r.action) else {
                self.v6_deferred.remove(&prefix);
                continue;
            };
            // Installed from here on, so the prefix covers its own deferred
            // prefixes; `write_v6` defers it again if it must.
            if let Some(route) = self.programmed_mut(IpNet::V6(prefix)) {
                route.deferred = false;
            }
            if self.write_v6(prefix, action, false) {
                return;
            }
        }
    }

    /// Re-points every deferred IPv6 prefix under `root` at its current
    /// covering installed prefix, which must answer `Fib` while it covers one.
    pub(super) fn reshadow_v6_under(&mut self, root: Ipv6Net) {
        let deferred: Vec<(Ipv6Net, Option<Ipv6Net>)> = self
            .v6_deferred
            .children(&root)
            .map(|(p, c)| (p, *c))
            .collect();
        for (prefix, old_cover) in deferred {
            let new_cover = self.v6_cover(prefix);
            if new_cover == old_cover {
                continue;
            }
            if let Some(cover) = new_cover {
                let count = self.v6_shadowed.entry(cover).or_insert(0);
                *count += 1;
                if *count == 1 {
                    self.write_v6_raw(cover, RouteAction::simple(RouteKind::Fib));
                }
            }
            if let Some(cover) = old_cover {
                self.unshadow_v6(cover);
            }
            if let Some(slot) = self.v6_deferred.get_mut(&prefix) {
                *slot = new_cover;
            }
        }
    }

    pub(super) fn unshadow_v6(&mut self, cover: Ipv6Net) {
        let Some(count) = self.v6_shadowed.get_mut(&cover) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.v6_shadowed.remove(&cover);
            if let Some(action) = self.v6_installed(cover) {
                self.write_v6_raw(cover, action);
            }
        }
    }

    pub(super) fn write_v6_raw(&mut self, prefix: Ipv6Net, action: RouteAction) {
        if let Err(err) = self.writer.insert_v6(prefix, action) {
            self.stats.write_errors += 1;
            tracing::error!(%prefix, %err, "rewriting an IPv6 route failed");
        }
    }

    /// Prefixes whose entry currently answers `Fib` because of a deferred
    /// longer prefix (for status and tests).
    pub fn shadowed_v6(&self) -> std::collections::BTreeSet<Ipv6Net> {
        self.v6_shadowed.keys().copied().collect()
    }
}
