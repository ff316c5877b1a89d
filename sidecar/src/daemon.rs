//! `pf-sidecar run`: the daemon, as I/O around pf-control's `Controller`.
//!
//! Start-up builds a new generation of maps beside the live one (if any)
//! and starts the sources. From then on every input (a kernel batch, an
//! FPM frame, a tick of the clock) goes to [`Controller::step`], and the
//! daemon carries out the actions it returns: publish, reply to zebra,
//! move the links to the new generation, beat the heartbeat. A heartbeat
//! in `CONFIG` tells the datapath the daemon is alive and reconciled; if it
//! stops, the datapath falls back to `bpf_fib_lookup`.

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use anyhow::Context;
use pf_common::{config::CFG_F_DRY_RUN, Config as DatapathConfig};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot},
};

use pf_control::{
    controller::{Action, Controller, Input, Settings},
    programmer::Limits,
    rib::Source,
};

use crate::{
    attach::AttachMode,
    config::Config,
    datapath::{pins, route_writer::RouteWriter, sys, Datapath, Programs},
    events::Publisher,
    metrics::{self, TableUse},
    ports::{Ports, StartGuard},
    query::{self, RouteView},
    source::{
        fpm::{serve_sessions, ListenerStats, ReadLimits, SessionFeed},
        fpm_peer::Admission,
        kernel::{self, KernelConfig},
    },
    state::{state_path, write_state, DaemonState},
};

/// How often freed ids, slots and groups move one step towards reuse.
const GRACE_PERIOD: Duration = Duration::from_millis(50);
/// Most kernel messages applied as one batch.
const KERNEL_BATCH: usize = 4096;

fn datapath_config(config: &Config, heartbeat_ns: u64) -> DatapathConfig {
    DatapathConfig {
        mode: config.datapath_mode().expect("validated") as u32,
        flags: if config.datapath.dry_run {
            CFG_F_DRY_RUN
        } else {
            0
        },
        hash_seed: config.datapath.hash_seed,
        reserved: 0,
        heartbeat_ns,
        stale_after_ns: config.datapath.fail_safe_after_ms * 1_000_000,
    }
}

pub fn run(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(config, config_path))
}

/// The daemon's parts that live outside the controller.
struct Daemon<'m> {
    config: Config,
    controller: Controller<RouteWriter<'m>>,
    programs: Programs,
    ports: Ports,
    guard: StartGuard,
    publisher: Publisher,
    listener: Arc<ListenerStats>,
    replies: Option<mpsc::Sender<Vec<u8>>>,
    state: DaemonState,
}

async fn run_async(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let pin_dir = config.general.pin_dir.clone();
    // One daemon per pin directory, for its whole life; when it stops, its
    // generation goes unless a link runs it (see `ports::StartGuard`).
    let mut guard = StartGuard::lock(&pin_dir)?;
    if let Some(warning) = config.memory_warning() {
        tracing::warn!("{warning}");
    }
    // A link that runs on a device forwards now: the new generation then
    // waits until it is reconciled. A generation no link runs (a failed or
    // killed start's) is not live and is not waited for.
    let live_before = pins::live_generation(&pin_dir)
        .ok()
        .filter(|live| live.links.iter().any(|l| l.attached()));
    let (mut datapath, generation) = Datapath::load_next_generation(&config.capacity, &pin_dir)
        .with_context(|| format!("loading a new generation under {}", pin_dir.display()))?;
    guard.pinned(&generation, &datapath.programs);
    tracing::info!(generation = %generation.display(), "loaded a new datapath generation");
    let ports = Ports::new(
        &config.general.interfaces,
        AttachMode::from_config(&config.general.xdp_mode),
        &pin_dir,
        &generation,
        &datapath.programs,
        &mut datapath.maps,
        config.capacity.ports,
    )?;
    // Until reconciled the heartbeat stays zero, so a fresh generation that
    // goes live early (first start) forwards with bpf_fib_lookup only.
    datapath.maps.set_config(&datapath_config(&config, 0))?;
    let Datapath {
        programs,
        maps: mut datapath_maps,
    } = datapath;
    let publisher = if config.events.endpoint.is_empty() {
        Publisher::off()
    } else {
        let publisher = Publisher::bind(&config.events.endpoint).await?;
        tracing::info!(endpoint = %config.events.endpoint, "publishing events");
        publisher
    };
    let settings = Settings {
        route_source: config.route_source(),
        tables: config.routes.tables.clone(),
        offload_replies: config.fpm.offload_replies,
        replay_quiet: Duration::from_millis(config.fpm.replay_quiet_ms),
        replay_max: Duration::from_millis(config.fpm.replay_max_ms),
        stale_after: Duration::from_millis(config.routes.stale_after_ms),
        record_events: publisher.is_on(),
        wait_for_reconcile: live_before.is_some(),
        // Whether the datapath we take over had fallen back to bpf_fib_lookup.
        fail_safe_at_start: crate::cli::status::read(&pin_dir, Duration::ZERO)
            .is_ok_and(|s| s.fail_safe_active),
        limits: Limits {
            nexthops: config.capacity.nexthops,
            ecmp_groups: config.capacity.ecmp_groups,
            v6_routes: config.capacity.v6_routes,
        },
    };
    // IPv6 route writes go through a writer thread (see `datapath::route_writer`).
    let writer = RouteWriter::new(&mut datapath_maps)?;
    let mut daemon = Daemon {
        state: DaemonState {
            pid: std::process::id(),
            generation: generation.display().to_string(),
            ..Default::default()
        },
        controller: Controller::new(settings, writer, Instant::now()),
        programs,
        ports,
        guard,
        publisher,
        listener: Arc::new(ListenerStats::default()),
        replies: None,
        config,
    };
    match &live_before {
        // Nothing forwards yet, so there is nothing to keep: go live now.
        None => daemon.go_live()?,
        Some(live) => tracing::info!(
            links = live.links.len(),
            live = %live.dir.display(),
            "the links stay on the live generation until this one is reconciled (kernel synced and, with FPM, zebra's replay complete or fpm.replay_max_ms)"
        ),
    }
    daemon.serve(config_path).await
}

impl Daemon<'_> {
    async fn serve(&mut self, config_path: Option<PathBuf>) -> anyhow::Result<()> {
        let pin_dir = self.config.general.pin_dir.clone();
        let (kernel_tx, mut kernel_rx) = mpsc::channel(KERNEL_BATCH);
        let _kernel_thread = kernel::spawn(
            KernelConfig {
                receive_buffer: self.config.kernel.receive_buffer,
            },
            kernel_tx,
        );
        let (fpm_tx, mut fpm_rx) = mpsc::channel::<SessionFeed>(64);
        if self.config.route_source() == Source::Fpm {
            self.start_fpm(fpm_tx).await?;
        }
        let state_file = state_path(&pin_dir);
        let _ = std::fs::create_dir_all(state_file.parent().expect("has a parent"));
        let (query_tx, mut query_rx) = mpsc::channel::<oneshot::Sender<RouteView>>(4);
        let query_socket = query::socket_path(&pin_dir);
        tokio::spawn(async move {
            if let Err(err) = query::serve(query_socket, query_tx).await {
                tracing::error!(%err, "the query socket failed; `diff --against fpm` is unavailable");
            }
        });
        let (pages_tx, mut pages_rx) = mpsc::channel::<oneshot::Sender<String>>(4);
        if !self.config.metrics.listen.is_empty() {
            let listen: std::net::SocketAddr = self.config.metrics.listen.parse()?;
            let listener = metrics::bind(listen)
                .await
                .with_context(|| format!("binding the metrics listener on {listen}"))?;
            tracing::info!(%listen, "serving Prometheus metrics on /metrics");
            tokio::spawn(metrics::serve(listener, pages_tx));
        }
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let mut grace = tokio::time::interval(GRACE_PERIOD);
        let mut heartbeat = self.heartbeat_interval();
        // Started: from now on what it attached stays when it stops.
        self.guard.started();
        loop {
            tokio::select! {
                Some(first) = kernel_rx.recv() => {
                    let mut items = vec![first];
                    while items.len() < KERNEL_BATCH {
                        let Ok(item) = kernel_rx.try_recv() else { break };
                        items.push(item);
                    }
                    self.step(Input::Kernel(items))?;
                }
                Some(feed) = fpm_rx.recv() => match feed {
                    SessionFeed::Connected(peer, replies) => {
                        self.replies = self.config.fpm.offload_replies.then_some(replies);
                        self.step(Input::FpmConnected { peer: peer.to_string() })?;
                    }
                    SessionFeed::Input(input) => self.step(input)?,
                },
                _ = grace.tick() => self.step(Input::Tick)?,
                _ = heartbeat.tick() => {
                    self.step(Input::Heartbeat)?;
                    self.ports.poll(&mut self.programs, self.controller.writer_mut());
                    crate::log_limit::report_suppressed();
                    write_state(&state_file, self.refresh_state());
                }
                Some(reply) = pages_rx.recv() => {
                    let _ = reply.send(self.metrics_page());
                }
                Some(reply) = query_rx.recv() => {
                    let _ = reply.send(self.controller.route_view(Instant::now()));
                }
                _ = hangup.recv() => {
                    self.reload(config_path.as_deref());
                    heartbeat = self.heartbeat_interval();
                }
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        tracing::info!("stopping; the datapath stays pinned and forwarding");
        let _ = std::fs::remove_file(&state_file);
        let _ = std::fs::remove_file(query::socket_path(&pin_dir));
        Ok(())
    }

    /// One input through the controller, and its actions carried out.
    fn step(&mut self, input: Input) -> anyhow::Result<()> {
        if matches!(input, Input::FpmClosed) {
            self.replies = None;
        }
        for action in self.controller.step(Instant::now(), input) {
            match action {
                Action::Publish(event) => self.publisher.publish(event),
                Action::Reply { bytes, counts } => {
                    let sent = self
                        .replies
                        .as_ref()
                        .is_some_and(|r| r.try_send(bytes).is_ok());
                    if !sent {
                        self.controller
                            .step(Instant::now(), Input::RepliesDropped(counts));
                    }
                }
                Action::GoLive => self.go_live()?,
                Action::Heartbeat => {
                    let beat = datapath_config(&self.config, sys::monotonic_ns());
                    if let Err(err) = self.controller.writer_mut().set_config(&beat) {
                        tracing::error!(%err, "writing the heartbeat failed");
                    }
                }
                Action::FollowLinks => {
                    self.ports
                        .poll(&mut self.programs, self.controller.writer_mut());
                }
            }
        }
        Ok(())
    }

    fn go_live(&mut self) -> anyhow::Result<()> {
        self.guard.created(self.ports.go_live(&mut self.programs)?);
        Ok(())
    }

    async fn start_fpm(&mut self, feed: mpsc::Sender<SessionFeed>) -> anyhow::Result<()> {
        let fpm = &self.config.fpm;
        let listen = self.config.fpm_listen()?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the FPM listener on {listen}"))?;
        tracing::info!(%listen, "waiting for zebra's FPM connection");
        let users = self.config.fpm_allowed_users()?;
        if !users.missing.is_empty() {
            tracing::info!(
                missing = users.missing.join(", "),
                "fpm.allowed_users names users this system does not have; they are left out"
            );
        }
        tracing::info!(uids = ?users.uids, "loopback FPM connections are accepted from sockets owned by these uids only");
        self.state.fpm_allowed_uids = users.uids.clone();
        let admission = Admission {
            listen,
            allow: self.config.fpm_allow()?,
            users,
        };
        let limits = ReadLimits {
            idle: Duration::from_millis(fpm.idle_timeout_ms),
            frame: Duration::from_millis(fpm.frame_timeout_ms),
        };
        let serving = serve_sessions(
            listener,
            admission,
            self.listener.clone(),
            limits,
            fpm.offload_replies,
            feed,
        );
        tokio::spawn(async move {
            if let Err(err) = serving.await {
                tracing::error!(%err, "the FPM listener stopped");
            }
        });
        Ok(())
    }

    fn heartbeat_interval(&self) -> tokio::time::Interval {
        tokio::time::interval(Duration::from_millis(
            self.config.datapath.heartbeat_interval_ms,
        ))
    }

    /// SIGHUP: the settings that apply without a restart.
    fn reload(&mut self, config_path: Option<&std::path::Path>) {
        match Config::load(config_path, &Default::default()) {
            Ok(new) => {
                tracing::info!("configuration reloaded (mode, dry-run, hash seed, fail-safe, heartbeat, interfaces)");
                // Attaches what was added (or detached from outside),
                // detaches what was removed.
                self.ports.apply(
                    &new.general.interfaces,
                    &mut self.programs,
                    self.controller.writer_mut(),
                );
                let kept = self.config.needs_restart(&new);
                if !kept.is_empty() {
                    tracing::warn!(
                        keys = kept.join(", "),
                        "these changes are not applied until a restart"
                    );
                }
                self.config.datapath = new.datapath;
                self.config.general.interfaces = new.general.interfaces;
            }
            Err(err) => tracing::error!(%err, "reload refused; keeping the running configuration"),
        }
    }

    fn refresh_state(&mut self) -> &DaemonState {
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
        state.interfaces = self.ports.states();
        state.live = state.control.taken_over && self.ports.live();
        state.redirect_failures = self.ports.redirect_failures();
        &self.state
    }

    fn metrics_page(&mut self) -> String {
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
            TableUse::new("nexthops", programmer.nexthops_in_use(), capacity.nexthops),
            TableUse::new(
                "ecmp_groups",
                programmer.groups_in_use(),
                capacity.ecmp_groups,
            ),
        ];
        metrics::render(&metrics::Snapshot {
            state: &self.state,
            counters: &self.controller.writer().counters().unwrap_or_default(),
            tables: &tables,
            fail_safe_active,
            events_dropped: self.publisher.dropped.load(Ordering::Relaxed),
        })
    }
}
