//! Mark and sweep against a source's full dump or replay: what the source
//! did not repeat is removed at the end; a resync cut short sweeps nothing.
//! And staleness: a source gone too long has its routes left to the kernel.

use super::*;

impl Rib {
    /// A resync of `source` ended without completing (the session closed
    /// in the middle of a replay, the kernel dump failed): it sweeps
    /// nothing, and its marks mean nothing until the next one.
    pub fn abandon_resync(&mut self, source: Source) {
        if source == self.route_source {
            self.resync_open = false;
        }
    }

    /// The route source has been gone too long: every route it has not
    /// repeated in a resync now in progress is left to the kernel
    /// (`Target::Kernel`, forwarded with `bpf_fib_lookup`) and stays in the
    /// RIB, so a returning source's replay restores what it repeats and
    /// the sweep at its end removes the rest. Returns how many prefixes
    /// were handed to the kernel.
    pub fn go_stale(&mut self, sink: &mut impl FibSink) -> usize {
        if !self.resync_open {
            // No resync in progress: nothing of the source is vouched for.
            mark_routes(sink);
        }
        self.stale = true;
        let deferred: Vec<IpNet> = sink
            .entries()
            .iter()
            .filter(|(prefix, entry)| {
                !self.locals.contains_key(prefix)
                    && entry.routes.winner().is_some_and(|route| route.marked)
            })
            .map(|(prefix, _)| prefix)
            .collect();
        let handed = deferred.len();
        self.publish_all(
            Touched {
                deferred,
                ..Default::default()
            },
            sink,
        );
        handed
    }

    /// Whether the route source's routes are left to the kernel
    /// ([`Rib::go_stale`]) until a resync completes.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Marks everything `source` contributed; the dump or replay that follows
    /// unmarks what it repeats.
    pub fn begin_resync(&mut self, source: Source, sink: &mut impl FibSink) {
        self.stats.resyncs += 1;
        if source == self.route_source {
            mark_routes(sink);
            self.objects.values_mut().for_each(|e| e.marked = true);
            self.resync_open = true;
        }
        if source == Source::Kernel {
            self.links.values_mut().for_each(|e| e.marked = true);
            self.neighbours.values_mut().for_each(|e| e.marked = true);
            self.addresses.values_mut().for_each(|e| e.marked = true);
        }
    }

    /// Removes what `source` did not repeat since [`Rib::begin_resync`].
    pub fn finish_resync(&mut self, source: Source, sink: &mut impl FibSink) {
        let mut touched = Touched::default();
        if source == self.route_source {
            let stale: Vec<(IpNet, u8, u32)> = sink
                .entries()
                .iter()
                .flat_map(|(prefix, entry)| {
                    entry
                        .routes
                        .as_slice()
                        .iter()
                        .filter(|r| r.marked)
                        .map(move |r| (prefix, r.table_rank, r.metric))
                })
                .collect();
            for (prefix, table_rank, metric) in stale {
                touched.deferred.push(prefix);
                let key = RouteKey {
                    table: self.tables[table_rank as usize],
                    prefix,
                    metric,
                };
                self.remove_route(table_rank, &key, sink);
                self.stats.swept += 1;
            }
            let stale: Vec<u32> = self
                .objects
                .iter()
                .filter(|(_, e)| e.marked)
                .map(|(k, _)| *k)
                .collect();
            if !stale.is_empty() {
                self.object_targets.clear();
            }
            for id in stale {
                self.objects.remove(&id);
                touched
                    .deferred
                    .extend(self.prefixes_using_object(id, sink));
                self.stats.swept += 1;
            }
            // What is left was repeated, and published as it was: the
            // source is trusted again.
            self.resync_open = false;
            self.stale = false;
        }
        if source == Source::Kernel {
            let stale: Vec<u32> = self
                .links
                .iter()
                .filter(|(_, e)| e.marked)
                .map(|(k, _)| *k)
                .collect();
            for ifindex in stale {
                self.links.remove(&ifindex);
                sink.set_link(ifindex, None);
                self.stats.swept += 1;
            }
            let stale: Vec<(u32, IpAddr)> = self
                .neighbours
                .iter()
                .filter(|(_, e)| e.marked)
                .map(|(k, _)| *k)
                .collect();
            for (ifindex, ip) in stale {
                self.neighbours.remove(&(ifindex, ip));
                sink.set_neighbour(ifindex, ip, None);
                self.stats.swept += 1;
            }
            let stale: Vec<(u32, IpAddr)> = self
                .addresses
                .iter()
                .filter(|(_, e)| e.marked)
                .map(|(k, _)| *k)
                .collect();
            for (ifindex, ip) in stale {
                self.remove_address(ifindex, ip);
                touched.deferred.push(host_prefix(ip));
                self.stats.swept += 1;
            }
        }
        self.publish_all(touched, sink);
    }
}

/// Marks every route in the table (the RIB holds only the route source's).
fn mark_routes(sink: &mut impl FibSink) {
    for entry in sink.entries_mut().values_mut() {
        entry
            .routes
            .as_mut_slice()
            .iter_mut()
            .for_each(|r| r.marked = true);
    }
}
