//! What the daemon reports: its state file and the metrics page, from
//! the controller's status and what only the daemon knows.

use std::{sync::atomic::Ordering, time::Instant};

use super::Daemon;
use crate::{
    metrics::{self, TableUse},
    state::DaemonState,
};

impl Daemon<'_> {
    pub(super) fn refresh_state(&mut self) -> &DaemonState {
        let state = &mut self.state;
        let listener = &self.listener;
        state.control = self.controller.status(Instant::now()).clone();
        state.fpm_sessions = listener.sessions.load(Ordering::Relaxed);
        state.fpm_refused_address = listener.refused_peer.load(Ordering::Relaxed);
        state.fpm_refused_user = listener.refused_user.load(Ordering::Relaxed);
        state.fpm_refused_busy = listener.refused_busy.load(Ordering::Relaxed);
        state.fpm_refused =
            state.fpm_refused_address + state.fpm_refused_user + state.fpm_refused_busy;
        state.v4_tbl8_groups = self.controller.writer().v4.lock().groups_in_use();
        state.v6_trie_nodes = self.controller.writer().v6.lock().nodes_in_use() as usize;
        state.interfaces = self.ports.states();
        state.live = state.control.taken_over && self.ports.live();
        state.redirect_failures = self.ports.redirect_failures();
        &self.state
    }

    pub(super) fn metrics_page(&mut self) -> String {
        let fail_safe_active =
            !self.controller.taken_over() && self.controller.settings().fail_safe_at_start;
        self.refresh_state();
        let capacity = &self.config.capacity;
        let programmer = self.controller.programmer();
        let tables = [
            TableUse::new(
                "v4_tbl8_groups",
                self.state.v4_tbl8_groups,
                capacity.tbl8_groups,
            ),
            TableUse::new(
                "v6_routes",
                programmer.v6_entries() as usize,
                capacity.v6_routes,
            ),
            TableUse::new(
                "v6_trie_nodes",
                self.state.v6_trie_nodes,
                capacity.v6_nodes(),
            ),
            TableUse::new("nexthops", programmer.nexthops_in_use(), capacity.nexthops),
            TableUse::new(
                "ecmp_groups",
                programmer.groups_in_use(),
                capacity.ecmp_groups,
            ),
            TableUse::new(
                "ports",
                self.state.interfaces.iter().filter(|p| p.attached).count(),
                capacity.ports,
            ),
        ];
        metrics::render(&metrics::Snapshot {
            state: &self.state,
            counters: &self.controller.writer().counters().unwrap_or_default(),
            tables: &tables,
            fail_safe_active,
            events_dropped: self.publisher.dropped.load(Ordering::Relaxed),
            heartbeat_age_s: self.last_heartbeat.map(|t| t.elapsed().as_secs_f64()),
            build: &self.build,
        })
    }
}
