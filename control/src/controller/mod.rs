//! The daemon's control loop as one pure step: inputs from the sources and
//! the clock go in, effects come out.
//!
//! The [`Controller`] owns the RIB, the programmer (and through it the
//! `MapWriter`), zebra's replay, the staleness clock and the status. It
//! reads no clock and touches no socket: every [`Input`] carries the time
//! it happened, and what must reach the outside world comes back as
//! [`Action`]s for the daemon to carry out (publish an event, send a reply
//! to zebra, move the links to the new generation, beat the heartbeat).
//! Map writes are the exception: they go through the writer, because the
//! RIB and the programmer decide them one prefix at a time.

mod status;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use self::status::ControlStatus;
use crate::{
    change::Change,
    events::Event,
    fpm::{Expiry, FrameError},
    left_to_kernel,
    offload::{Forwarder, OffloadReply},
    programmer::{Limits, MapWriter, Programmer, Target},
    replay::{ReplayTracker, StaleClock},
    rib::{Rib, RibEntry, Source},
};

/// What the controller is told at start-up (the daemon's configuration,
/// as far as the control loop is concerned).
#[derive(Debug, Clone)]
pub struct Settings {
    pub route_source: Source,
    /// Kernel routing tables routes are taken from.
    pub tables: Vec<u32>,
    /// Answer each FPM route with an offload reply (`fpm.offload_replies`).
    pub offload_replies: bool,
    /// `fpm.replay_quiet_ms` and `fpm.replay_max_ms`.
    pub replay_quiet: Duration,
    pub replay_max: Duration,
    /// `routes.stale_after_ms`.
    pub stale_after: Duration,
    /// Report each route, nexthop and neighbour write as an [`Event`].
    pub record_events: bool,
    /// Links already forward from an earlier generation: go live only once
    /// this one is reconciled. Without one, the daemon goes live at start.
    pub wait_for_reconcile: bool,
    /// The datapath being taken over had fallen back to `bpf_fib_lookup`.
    pub fail_safe_at_start: bool,
    pub limits: Limits,
}

/// One item from the kernel source thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelItem {
    /// A full dump follows; mark everything the kernel contributed.
    ResyncStart { reason: String },
    /// One netlink message (from a dump or a notification), decoded.
    Change(Change),
    /// One netlink message that could not be decoded (counted).
    Undecodable,
    /// The dump is complete; sweep what was not seen again.
    ResyncDone,
    /// The source hit an error it cannot get past; it will retry.
    Failed { error: String },
}

/// One FPM frame, decoded (by `pf-wire`, on the session's task beside the
/// control loop).
#[derive(Debug, Clone, Default)]
pub struct DecodedFrame {
    pub changes: Vec<Change>,
    pub decode_errors: u64,
}

/// What happened, with the time passed to [`Controller::step`].
#[derive(Debug, Clone)]
pub enum Input {
    /// Items the kernel source delivered, in order (one batch).
    Kernel(Vec<KernelItem>),
    /// zebra's FPM session opened.
    FpmConnected {
        peer: String,
    },
    FpmFrame(DecodedFrame),
    /// The session sent a malformed frame and is being closed.
    FpmFailed(FrameError),
    /// The session broke a read bound and is being dropped.
    FpmTimedOut(Expiry),
    FpmClosed,
    /// The grace period: reclaim freed slots, end a replay, go stale, go live.
    Tick,
    /// The heartbeat interval.
    Heartbeat,
    /// Replies of an [`Action::Reply`] that zebra's queue refused.
    RepliesDropped(ReplyCounts),
}

/// How many routes one write of offload replies answers, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyCounts {
    pub routes: u64,
    /// Flagged OFFLOAD for a route the kernel forwards after `XDP_PASS`.
    pub kernel: u64,
    /// Flagged OFFLOAD_FAILED: nothing forwards the route.
    pub failed: u64,
}

impl ReplyCounts {
    /// Counts one more reply for a route `forwarder` forwards.
    pub fn add(&mut self, forwarder: Forwarder) {
        self.routes += 1;
        match forwarder {
            Forwarder::FastPath => {}
            Forwarder::Kernel => self.kernel += 1,
            Forwarder::Nobody => self.failed += 1,
        }
    }
}

/// What the daemon must do for the controller.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish on the event stream.
    Publish(Event),
    /// Send these offload replies to zebra, in order (`pf-wire` frames
    /// them); the counts of any that cannot be sent come back as
    /// [`Input::RepliesDropped`].
    Reply(Vec<OffloadReply>),
    /// Move the links to this generation: its maps hold everything decided.
    GoLive,
    /// Write the heartbeat (the datapath config with the time now).
    Heartbeat,
    /// A link changed: follow the configured ports now.
    FollowLinks,
}

/// The routes the daemon wants programmed, as its RIB holds them (what
/// `diff --against fpm` compares the maps with).
#[derive(Debug, Serialize, Deserialize)]
pub struct RouteView {
    pub route_source: Source,
    /// For FPM: whether the last replay was declared complete.
    pub replay_complete: bool,
    /// For FPM: the session with zebra is open now. While it is down the
    /// routes are what zebra last said, and routes changed since are not
    /// in them.
    #[serde(default)]
    pub fpm_connected: bool,
    /// Milliseconds since the last FPM message (how old the view can be).
    #[serde(default)]
    pub fpm_last_message_age_ms: Option<u64>,
    pub routes: Vec<(ipnet::IpNet, Target)>,
}

/// The route the maps answer an address from, for `lookup`: the longest
/// programmed prefix that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMatch {
    pub address: std::net::IpAddr,
    pub route_source: Source,
    /// None when no programmed prefix holds the address (the datapath then
    /// asks `bpf_fib_lookup`).
    pub prefix: Option<ipnet::IpNet>,
    /// The prefix's programmed action, as events name it.
    pub action: Option<String>,
    /// Deferred: an IPv4 prefix that found no tbl8 group; its block is left
    /// to the kernel.
    pub deferred: bool,
}

/// The map programmer of the controller, with the RIB's routes kept in
/// its per-prefix table.
pub type ControlProgrammer<W> = Programmer<W, RibEntry>;

pub struct Controller<W: MapWriter> {
    settings: Settings,
    rib: Rib,
    programmer: ControlProgrammer<W>,
    replay: ReplayTracker,
    stale: StaleClock,
    started: Instant,
    last_fpm_message: Option<Instant>,
    left_to_kernel: left_to_kernel::Once,
    status: ControlStatus,
}

impl<W: MapWriter> Controller<W> {
    /// A controller over `writer`'s maps, started at `now`. The route
    /// source counts as gone until its first resync completes.
    pub fn new(settings: Settings, writer: W, now: Instant) -> Self {
        let mut programmer = Programmer::sharing_table(writer, settings.limits);
        programmer.record_events(settings.record_events);
        let mut rib = Rib::new(settings.route_source, settings.tables.clone());
        rib.track_published(settings.offload_replies);
        let mut stale = StaleClock::new(settings.stale_after);
        stale.lost(now);
        let status = ControlStatus {
            route_source: source_name(settings.route_source).into(),
            offload_replies: settings.offload_replies,
            taken_over: !settings.wait_for_reconcile,
            ..Default::default()
        };
        Self {
            replay: ReplayTracker::new(settings.replay_quiet, settings.replay_max),
            settings,
            rib,
            programmer,
            stale,
            started: now,
            last_fpm_message: None,
            left_to_kernel: Default::default(),
            status,
        }
    }

    /// Applies one input and returns what the daemon must do, in order.
    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Kernel(items) => self.kernel(now, items, &mut actions),
            Input::FpmConnected { peer } => {
                self.status.fpm_connected = true;
                self.status.fpm_peer = Some(peer);
                self.status.fpm_replay_complete = false;
                // Nothing is marked yet: a session that never sends a
                // whole message never replaces anything.
                self.replay.connected();
            }
            Input::FpmFrame(frame) => self.fpm_frame(now, frame, &mut actions),
            Input::FpmFailed(error) => {
                self.status.fpm_frame_errors += 1;
                tracing::error!(%error, kind = error.name(), "bad FPM frame; closing the session (zebra reconnects and replays)");
            }
            Input::FpmTimedOut(expiry) => {
                let (count, why) = match expiry {
                    Expiry::Idle => (&mut self.status.fpm_dropped_idle, "no complete frame within fpm.idle_timeout_ms of the connect (zebra replays at once)"),
                    Expiry::PartialFrame => (&mut self.status.fpm_dropped_partial_frame, "a frame begun was not completed within fpm.frame_timeout_ms"),
                };
                *count += 1;
                tracing::warn!(peer = self.status.fpm_peer.as_deref().unwrap_or("-"), reason = expiry.label(), "FPM session dropped: {why}; nothing of an incomplete frame is applied, and a replay not completed sweeps nothing");
            }
            Input::FpmClosed => {
                self.status.fpm_connected = false;
                // An unfinished replay sweeps nothing: the next one will.
                if self.replay.disconnected() {
                    self.rib.abandon_resync(Source::Fpm);
                }
                self.stale.lost(now);
            }
            Input::Tick => self.tick(now, &mut actions),
            Input::Heartbeat => {
                if self.status.taken_over && self.status.kernel_synced {
                    actions.push(Action::Heartbeat);
                }
                self.left_to_kernel.observe(&self.programmer.stats);
            }
            Input::RepliesDropped(counts) => {
                let status = &mut self.status;
                status.offload_replies_sent -= counts.routes;
                status.offload_replies_kernel -= counts.kernel;
                status.offload_replies_failed -= counts.failed;
                status.offload_replies_dropped += counts.routes;
            }
        }
        actions
    }

    fn kernel(&mut self, now: Instant, items: Vec<KernelItem>, actions: &mut Vec<Action>) {
        let mut batch = Vec::new();
        let mut links_changed = false;
        for item in items {
            match item {
                KernelItem::Change(change) => {
                    links_changed |= matches!(change, Change::Link(..));
                    batch.push(change);
                }
                KernelItem::Undecodable => self.status.decode_errors += 1,
                KernelItem::ResyncStart { reason } => {
                    self.apply(Source::Kernel, std::mem::take(&mut batch), actions);
                    tracing::info!(%reason, "kernel resync");
                    self.status.kernel_resyncs += 1;
                    actions.push(Action::Publish(Event::Resync {
                        source: "kernel".into(),
                        reason: reason.clone(),
                    }));
                    self.status.last_resync_reason = Some(reason);
                    self.rib.begin_resync(Source::Kernel, &mut self.programmer);
                }
                KernelItem::ResyncDone => {
                    self.apply(Source::Kernel, std::mem::take(&mut batch), actions);
                    self.finish_resync(Source::Kernel, actions);
                    self.status.kernel_synced = true;
                    if self.settings.route_source == Source::Kernel {
                        self.source_restored(actions);
                    }
                }
                KernelItem::Failed { error } => {
                    tracing::error!(%error, "kernel source failed; retrying");
                    // A dump cut short sweeps nothing.
                    self.rib.abandon_resync(Source::Kernel);
                    if self.settings.route_source == Source::Kernel {
                        self.stale.lost(now);
                    }
                }
            }
        }
        self.apply(Source::Kernel, batch, actions);
        if links_changed {
            // An interface removed, back or replaced: follow it now.
            actions.push(Action::FollowLinks);
        }
    }

    fn fpm_frame(&mut self, now: Instant, frame: DecodedFrame, actions: &mut Vec<Action>) {
        if self.replay.message(now) {
            // The session's first complete message: its replay starts
            // here, and only its end sweeps.
            let peer = self.status.fpm_peer.clone().unwrap_or_default();
            actions.push(Action::Publish(Event::Resync {
                source: "fpm".into(),
                reason: format!("zebra's replay from {peer} began"),
            }));
            self.rib.begin_resync(Source::Fpm, &mut self.programmer);
        }
        self.last_fpm_message = Some(now);
        self.status.decode_errors += frame.decode_errors;
        self.apply(Source::Fpm, frame.changes, actions);
        if self.settings.offload_replies && self.status.fpm_connected {
            // A reply says the route is in the maps: make it so.
            self.programmer.flush();
            self.offload_replies(actions);
        }
    }

    fn tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.programmer.reclaim();
        if self.replay.poll(now) {
            self.finish_resync(Source::Fpm, actions);
            self.status.fpm_replay_complete = true;
            tracing::info!(routes = self.rib.route_count(), "FPM replay complete");
            self.source_restored(actions);
        }
        if self.stale.poll(now) {
            let prefixes = self.rib.go_stale(&mut self.programmer) as u64;
            self.take_events(actions);
            self.status.stale_prefixes = prefixes;
            let source = source_name(self.settings.route_source);
            let detail = format!(
                "the {source} route source has been gone for {} ms (routes.stale_after_ms): its routes are left to bpf_fib_lookup until it resyncs",
                self.settings.stale_after.as_millis()
            );
            tracing::warn!(prefixes, "{detail}");
            actions.push(Action::Publish(Event::Stale {
                source: source.into(),
                active: true,
                prefixes,
                detail,
            }));
        }
        let routes_ready = self.settings.route_source == Source::Kernel
            || self.status.fpm_replay_complete
            || now.duration_since(self.started) >= self.settings.replay_max;
        if !self.status.taken_over && self.status.kernel_synced && routes_ready {
            // The new generation forwards from the maps: everything
            // decided so far must be in them.
            self.programmer.flush();
            actions.push(Action::GoLive);
            self.status.taken_over = true;
            if self.settings.fail_safe_at_start {
                actions.push(Action::Publish(Event::FailSafe {
                    active: false,
                    detail: "the daemon is back and reconciled; the route cache is trusted again"
                        .into(),
                }));
            }
        }
    }

    fn apply(&mut self, source: Source, changes: Vec<Change>, actions: &mut Vec<Action>) {
        if changes.is_empty() {
            return;
        }
        self.rib.apply_batch(source, changes, &mut self.programmer);
        self.take_events(actions);
    }

    fn take_events(&mut self, actions: &mut Vec<Action>) {
        actions.extend(
            self.programmer
                .take_events()
                .into_iter()
                .map(Action::Publish),
        );
    }

    fn finish_resync(&mut self, source: Source, actions: &mut Vec<Action>) {
        let before = self.rib.stats.swept;
        self.rib.finish_resync(source, &mut self.programmer);
        self.take_events(actions);
        let swept = self.rib.stats.swept - before;
        actions.push(Action::Publish(Event::ResyncDone {
            source: source_name(source).into(),
            swept,
        }));
        if swept > 0 {
            actions.push(Action::Publish(Event::Drift {
                detail: format!(
                    "the {} resync found entries the source no longer has; they were removed",
                    source_name(source)
                ),
                entries: swept,
            }));
        }
    }

    /// The route source completed a resync: if its routes were stale, say
    /// they are trusted again (the resync re-published what it repeated).
    fn source_restored(&mut self, actions: &mut Vec<Action>) {
        if self.stale.restored() {
            let source = source_name(self.settings.route_source);
            let detail = format!(
                "the {source} route source is back and resynced; its routes forward from the cache again"
            );
            tracing::info!("{detail}");
            actions.push(Action::Publish(Event::Stale {
                source: source.into(),
                active: false,
                prefixes: 0,
                detail,
            }));
        }
    }

    /// Tells zebra, route by route, whether the router forwards what the
    /// last FPM batch changed (see [`crate::offload`]): one reply per route,
    /// each in its own frame.
    fn offload_replies(&mut self, actions: &mut Vec<Action>) {
        let mut replies = Vec::new();
        let mut counts = ReplyCounts::default();
        for prefix in self.rib.last_published() {
            let Some(route) = self.rib.winning_route(prefix, &self.programmer) else {
                continue;
            };
            let forwarder = Forwarder::of(self.programmer.programmed(prefix));
            counts.add(forwarder);
            replies.push(OffloadReply {
                prefix: *prefix,
                table: route.table,
                protocol: route.protocol,
                forwarder,
            });
        }
        if replies.is_empty() {
            return;
        }
        self.status.offload_replies_sent += counts.routes;
        self.status.offload_replies_kernel += counts.kernel;
        self.status.offload_replies_failed += counts.failed;
        actions.push(Action::Reply(replies));
    }

    /// The status as of `now`.
    pub fn status(&mut self, now: Instant) -> &ControlStatus {
        let programmer = &self.programmer;
        let status = &mut self.status;
        status.fpm_last_message_age_ms = self
            .last_fpm_message
            .map(|t| now.duration_since(t).as_millis() as u64);
        status.routes_stale = self.stale.is_stale();
        status.route_source_down_ms = self.stale.down_for(now).map(|d| d.as_millis() as u64);
        status.routes = programmer.route_count();
        status.nexthops = programmer.nexthops_in_use();
        status.ecmp_groups = programmer.groups_in_use();
        status.v6_entries = programmer.v6_entries();
        status.programmer = programmer.stats.clone();
        status.rib = self.rib.stats.clone();
        &self.status
    }

    /// Whether the links run this generation (it went live).
    pub fn taken_over(&self) -> bool {
        self.status.taken_over
    }

    /// What the RIB wants programmed, for `diff --against fpm`.
    pub fn route_view(&self, now: Instant) -> RouteView {
        RouteView {
            route_source: self.settings.route_source,
            replay_complete: self.status.fpm_replay_complete,
            fpm_connected: self.status.fpm_connected,
            fpm_last_message_age_ms: self
                .last_fpm_message
                .map(|t| now.duration_since(t).as_millis() as u64),
            routes: self.rib.desired(&self.programmer),
        }
    }

    /// The route the maps answer `address` from.
    pub fn route_for(&self, address: std::net::IpAddr) -> RouteMatch {
        let found = self.programmer.longest_match(address);
        RouteMatch {
            address,
            route_source: self.settings.route_source,
            prefix: found.map(|(prefix, _, _)| prefix),
            action: found.map(|(_, action, _)| crate::programmer::describe_action(action)),
            deferred: found.is_some_and(|(_, _, deferred)| deferred),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn programmer(&self) -> &ControlProgrammer<W> {
        &self.programmer
    }

    pub fn writer(&self) -> &W {
        self.programmer.writer()
    }

    /// The maps, for writes the control loop does not decide (ports, the
    /// heartbeat).
    pub fn writer_mut(&mut self) -> &mut W {
        self.programmer.writer_mut()
    }
}

pub fn source_name(source: Source) -> &'static str {
    match source {
        Source::Kernel => "kernel",
        Source::Fpm => "fpm",
    }
}
