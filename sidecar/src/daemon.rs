//! `pf-sidecar run`: the daemon.
//!
//! Start-up builds a new generation of maps beside the live one (if any),
//! fills it from the sources, and only then moves the interfaces' links to
//! it. From then on every source batch goes decode → RIB → programmer →
//! maps. A heartbeat in `CONFIG` tells the datapath the daemon is alive and
//! reconciled; if it stops, the datapath falls back to `bpf_fib_lookup`.

use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use anyhow::Context;
use pf_common::{config::CFG_F_DRY_RUN, Config as DatapathConfig};
use tokio::{
    io::AsyncWriteExt,
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot},
};

use pf_control::{
    decode::{decode, Decoded, Event},
    fpm::{Frame, FrameError},
    offload,
    programmer::{Limits, Programmer},
    replay::{ReplayTracker, StaleClock},
    rib::{Rib, RibEntry, Source},
};

use crate::{
    attach::AttachMode,
    config::Config,
    datapath::{pins, route_writer::RouteWriter, Datapath},
    events::{Event as Published, Publisher},
    metrics::{self, TableUse},
    ports::{Ports, StartGuard},
    query::{self, RouteView},
    source::{
        fpm::{serve, Expiry, FrameReader, ListenerStats, ReadLimits, SessionEnd},
        fpm_peer::Admission,
        kernel::{self, KernelConfig, KernelFeed},
    },
    state::{state_path, write_state, DaemonState},
};

/// The map programmer of the daemon: over the datapath's maps, with the
/// RIB's routes kept in its per-prefix table.
type MapProgrammer<'a> = Programmer<RouteWriter<'a>, RibEntry>;

/// How often freed ids, slots and groups move one step towards reuse.
const GRACE_PERIOD: Duration = Duration::from_millis(50);
/// Reply frames queued for zebra before more are dropped.
const OFFLOAD_QUEUE: usize = 256;
/// Most kernel messages applied as one batch.
const KERNEL_BATCH: usize = 4096;

enum FpmFeed {
    /// A session opened; replies to zebra go through the sender.
    Connected(std::net::SocketAddr, mpsc::Sender<Vec<u8>>),
    /// One frame's messages, decoded on the session's task so decoding runs
    /// beside the RIB and programmer instead of before them.
    Frame(DecodedFrame),
    Failed(FrameError),
    /// Dropped for a bound of `ReadLimits`.
    TimedOut(Expiry),
    Closed,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

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

async fn run_async(mut config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let pin_dir = config.general.pin_dir.clone();
    // One daemon per pin directory, for its whole life; when it stops, its
    // generation goes unless a link runs it (see `ports::StartGuard`).
    let mut guard = StartGuard::lock(&pin_dir)?;
    if let Some(warning) = config.memory_warning() {
        tracing::warn!("{warning}");
    }
    // Whether the datapath we take over had fallen back to bpf_fib_lookup.
    let fail_safe_at_start = crate::cli::status::read(&pin_dir, Duration::ZERO)
        .map(|s| s.fail_safe_active)
        .unwrap_or(false);
    // A link that runs on a device forwards now: the new generation then
    // waits until it is reconciled. A generation no link runs (a failed or
    // killed start's) is not live and is not waited for.
    let live_before = pins::live_generation(&pin_dir)
        .ok()
        .filter(|live| live.links.iter().any(|l| l.attached()));
    let had_live_generation = live_before.is_some();
    let (mut datapath, generation) = Datapath::load_next_generation(&config.capacity, &pin_dir)
        .with_context(|| format!("loading a new generation under {}", pin_dir.display()))?;
    guard.pinned(&generation, &datapath.programs);
    tracing::info!(generation = %generation.display(), "loaded a new datapath generation");

    let mut ports = Ports::new(
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
        mut programs,
        maps: mut datapath_maps,
    } = datapath;
    // IPv6 route writes go through a writer thread (see `datapath::route_writer`).
    let maps = RouteWriter::new(&mut datapath_maps)?;
    let limits = Limits {
        nexthops: config.capacity.nexthops,
        ecmp_groups: config.capacity.ecmp_groups,
        v6_routes: config.capacity.v6_routes,
    };
    let mut programmer: MapProgrammer = Programmer::sharing_table(maps, limits);
    let publisher = if config.events.endpoint.is_empty() {
        Publisher::off()
    } else {
        let publisher = Publisher::bind(&config.events.endpoint).await?;
        tracing::info!(endpoint = %config.events.endpoint, "publishing events");
        publisher
    };
    programmer.record_events(publisher.is_on());
    let route_source = if config.routes.from == "kernel" {
        Source::Kernel
    } else {
        Source::Fpm
    };
    let mut rib = Rib::new(route_source, config.routes.tables.clone());
    rib.track_published(config.fpm.offload_replies);

    match &live_before {
        // Nothing forwards yet, so there is nothing to keep: go live now.
        None => guard.created(ports.go_live(&mut programs)?),
        Some(live) => tracing::info!(
            links = live.links.len(),
            live = %live.dir.display(),
            "the links stay on the live generation until this one is reconciled (kernel synced and, with FPM, zebra's replay complete or fpm.replay_max_ms)"
        ),
    }

    let (kernel_tx, mut kernel_rx) = mpsc::channel(KERNEL_BATCH);
    let _kernel_thread = kernel::spawn(
        KernelConfig {
            receive_buffer: config.kernel.receive_buffer,
        },
        kernel_tx,
    );

    let listener_stats = Arc::new(ListenerStats::default());
    let mut listener_uids = Vec::new();
    let (fpm_tx, mut fpm_rx) = mpsc::channel::<FpmFeed>(64);
    if route_source == Source::Fpm {
        let listen = config.fpm_listen()?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the FPM listener on {listen}"))?;
        tracing::info!(%listen, "waiting for zebra's FPM connection");
        let users = config.fpm_allowed_users()?;
        if !users.missing.is_empty() {
            tracing::info!(
                missing = users.missing.join(", "),
                "fpm.allowed_users names users this system does not have; they are left out"
            );
        }
        tracing::info!(uids = ?users.uids, "loopback FPM connections are accepted from sockets owned by these uids only");
        listener_uids = users.uids.clone();
        let admission = Admission {
            listen,
            allow: config.fpm_allow()?,
            users,
        };
        let limits = ReadLimits {
            idle: Duration::from_millis(config.fpm.idle_timeout_ms),
            frame: Duration::from_millis(config.fpm.frame_timeout_ms),
        };
        let stats = listener_stats.clone();
        let config_offload_replies = config.fpm.offload_replies;
        tokio::spawn(async move {
            let offload_replies = config_offload_replies;
            let result = serve(listener, admission, stats, move |stream, peer| {
                let tx = fpm_tx.clone();
                async move {
                    // Dropping the write half would half-close the session,
                    // and zebra treats that as a disconnect: it lives as
                    // long as the session, in the writer when replies are on.
                    let (read, mut write) = stream.into_split();
                    let (replies_tx, mut replies_rx) = mpsc::channel::<Vec<u8>>(OFFLOAD_QUEUE);
                    let _idle_write = if offload_replies {
                        tokio::spawn(async move {
                            while let Some(bytes) = replies_rx.recv().await {
                                if write.write_all(&bytes).await.is_err() {
                                    break;
                                }
                            }
                        });
                        None
                    } else {
                        Some(write)
                    };
                    let _ = tx.send(FpmFeed::Connected(peer, replies_tx)).await;
                    let mut frames = FrameReader::new(read, limits);
                    let end = loop {
                        match frames.next().await {
                            Ok(frame) => {
                                if tx
                                    .send(FpmFeed::Frame(DecodedFrame::of(&frame)))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            Err(end) => break end,
                        }
                    };
                    match end {
                        SessionEnd::Closed => {}
                        SessionEnd::Failed(error) => {
                            let _ = tx.send(FpmFeed::Failed(error)).await;
                        }
                        SessionEnd::TimedOut(expiry) => {
                            let _ = tx.send(FpmFeed::TimedOut(expiry)).await;
                        }
                    }
                    let _ = tx.send(FpmFeed::Closed).await;
                }
            })
            .await;
            if let Err(err) = result {
                tracing::error!(%err, "the FPM listener stopped");
            }
        });
    }

    let mut state = DaemonState {
        pid: std::process::id(),
        generation: generation.display().to_string(),
        route_source: config.routes.from.clone(),
        taken_over: !had_live_generation,
        offload_replies: config.fpm.offload_replies,
        fpm_allowed_uids: listener_uids,
        ..Default::default()
    };
    let started = Instant::now();
    // The route source is trusted from its first completed resync until it
    // goes away; `routes.stale_after_ms` later its routes go to the kernel.
    let mut stale = StaleClock::new(Duration::from_millis(config.routes.stale_after_ms));
    stale.lost(started);
    let mut replay = ReplayTracker::new(
        Duration::from_millis(config.fpm.replay_quiet_ms),
        Duration::from_millis(config.fpm.replay_max_ms),
    );
    let mut last_fpm_message: Option<Instant> = None;
    let mut fpm_replies: Option<mpsc::Sender<Vec<u8>>> = None;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut grace = tokio::time::interval(GRACE_PERIOD);
    let mut heartbeat =
        tokio::time::interval(Duration::from_millis(config.datapath.heartbeat_interval_ms));
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
    if !config.metrics.listen.is_empty() {
        let listen: std::net::SocketAddr = config.metrics.listen.parse()?;
        let listener = metrics::bind(listen)
            .await
            .with_context(|| format!("binding the metrics listener on {listen}"))?;
        tracing::info!(%listen, "serving Prometheus metrics on /metrics");
        tokio::spawn(metrics::serve(listener, pages_tx));
    }
    // Started: from now on what it attached stays when it stops.
    guard.started();
    let mut left_to_kernel = pf_control::left_to_kernel::Once::default();
    let publish = |programmer: &mut MapProgrammer<'_>| {
        for event in programmer.take_events() {
            publisher.publish(event);
        }
    };
    let swept_before = |rib: &Rib| rib.stats.swept;
    let finish = |rib: &mut Rib, programmer: &mut MapProgrammer<'_>, source: Source| {
        let before = swept_before(rib);
        rib.finish_resync(source, programmer);
        let swept = rib.stats.swept - before;
        publisher.publish(Published::ResyncDone {
            source: source_name(source).into(),
            swept,
        });
        if swept > 0 {
            publisher.publish(Published::Drift {
                detail: format!(
                    "the {} resync found entries the source no longer has; they were removed",
                    source_name(source)
                ),
                entries: swept,
            });
        }
    };

    loop {
        tokio::select! {
            Some(reply) = pages_rx.recv() => {
                refresh_state(&mut state, &programmer, &rib, &listener_stats, last_fpm_message);
                refresh_stale(&mut state, &stale);
                refresh_ports(&mut state, &ports);
                let counters = programmer.writer().counters().unwrap_or_default();
                let tables = [
                    TableUse { table: "v4_tbl8_groups", used: programmer.writer().v4.lock().groups_in_use() as u64, capacity: config.capacity.tbl8_groups as u64 },
                    TableUse { table: "v6_routes", used: programmer.v6_entries() as u64, capacity: config.capacity.v6_routes as u64 },
                    TableUse { table: "nexthops", used: programmer.nexthops_in_use() as u64, capacity: config.capacity.nexthops as u64 },
                    TableUse { table: "ecmp_groups", used: programmer.groups_in_use() as u64, capacity: config.capacity.ecmp_groups as u64 },
                ];
                let page = metrics::render(&metrics::Snapshot {
                    state: &state,
                    counters: &counters,
                    tables: &tables,
                    fail_safe_active: !state.taken_over && fail_safe_at_start,
                    events_dropped: publisher.dropped.load(Ordering::Relaxed),
                });
                let _ = reply.send(page);
            }
            Some(feed) = kernel_rx.recv() => {
                let mut batch = Vec::new();
                let mut next = Some(feed);
                let mut links_changed = false;
                while let Some(feed) = next.take() {
                    match feed {
                        KernelFeed::Message(bytes) => {
                            links_changed |= is_link_message(&bytes);
                            push_decoded(&bytes, &mut batch, &mut state);
                        }
                        KernelFeed::ResyncStart { reason } => {
                            rib.apply_batch(Source::Kernel, std::mem::take(&mut batch), &mut programmer);
                            tracing::info!(%reason, "kernel resync");
                            state.kernel_resyncs += 1;
                            publisher.publish(Published::Resync { source: "kernel".into(), reason: reason.clone() });
                            state.last_resync_reason = Some(reason);
                            rib.begin_resync(Source::Kernel, &mut programmer);
                        }
                        KernelFeed::ResyncDone => {
                            rib.apply_batch(Source::Kernel, std::mem::take(&mut batch), &mut programmer);
                            finish(&mut rib, &mut programmer, Source::Kernel);
                            state.kernel_synced = true;
                            if route_source == Source::Kernel {
                                source_restored(&mut stale, &publisher, route_source);
                            }
                        }
                        KernelFeed::Failed { error } => {
                            tracing::error!(%error, "kernel source failed; retrying");
                            // A dump cut short sweeps nothing.
                            rib.abandon_resync(Source::Kernel);
                            if route_source == Source::Kernel {
                                stale.lost(Instant::now());
                            }
                        }
                    }
                    if batch.len() < KERNEL_BATCH {
                        next = kernel_rx.try_recv().ok();
                    }
                }
                rib.apply_batch(Source::Kernel, batch, &mut programmer);
                publish(&mut programmer);
                if links_changed {
                    // An interface removed, back or replaced: follow it now.
                    ports.poll(&mut programs, programmer.writer_mut());
                }
            }
            Some(feed) = fpm_rx.recv() => match feed {
                FpmFeed::Connected(peer, replies) => {
                    fpm_replies = config.fpm.offload_replies.then_some(replies);
                    state.fpm_connected = true;
                    state.fpm_peer = Some(peer.to_string());
                    state.fpm_replay_complete = false;
                    // Nothing is marked yet: a session that never sends a
                    // whole message never replaces anything.
                    replay.connected();
                }
                FpmFeed::Frame(frame) => {
                    let now = Instant::now();
                    if replay.message(now) {
                        // The session's first complete message: its replay
                        // starts here, and only its end sweeps.
                        let peer = state.fpm_peer.clone().unwrap_or_default();
                        publisher.publish(Published::Resync { source: "fpm".into(), reason: format!("zebra's replay from {peer} began") });
                        rib.begin_resync(Source::Fpm, &mut programmer);
                    }
                    last_fpm_message = Some(now);
                    state.decode_errors += frame.decode_errors;
                    rib.apply_batch(Source::Fpm, frame.events, &mut programmer);
                    publish(&mut programmer);
                    if let Some(replies) = &fpm_replies {
                        // A reply says the route is in the maps: make it so.
                        programmer.flush();
                        send_offload_replies(&rib, &programmer, replies, &mut state);
                    }
                }
                FpmFeed::Failed(error) => {
                    state.fpm_frame_errors += 1;
                    tracing::error!(%error, kind = error.name(), "bad FPM frame; closing the session (zebra reconnects and replays)");
                }
                FpmFeed::TimedOut(expiry) => {
                    let (count, why) = match expiry {
                        Expiry::Idle => (&mut state.fpm_dropped_idle, "no complete frame within fpm.idle_timeout_ms of the connect (zebra replays at once)"),
                        Expiry::PartialFrame => (&mut state.fpm_dropped_partial_frame, "a frame begun was not completed within fpm.frame_timeout_ms"),
                    };
                    *count += 1;
                    tracing::warn!(peer = state.fpm_peer.as_deref().unwrap_or("-"), reason = expiry.label(), "FPM session dropped: {why}; nothing of an incomplete frame is applied, and a replay not completed sweeps nothing");
                }
                FpmFeed::Closed => {
                    state.fpm_connected = false;
                    fpm_replies = None;
                    // An unfinished replay sweeps nothing: the next one will.
                    if replay.disconnected() {
                        rib.abandon_resync(Source::Fpm);
                    }
                    stale.lost(Instant::now());
                }
            },
            _ = grace.tick() => {
                programmer.reclaim();
                let now = Instant::now();
                if replay.poll(now) {
                    finish(&mut rib, &mut programmer, Source::Fpm);
                    publish(&mut programmer);
                    state.fpm_replay_complete = true;
                    tracing::info!(routes = rib.route_count(), "FPM replay complete");
                    source_restored(&mut stale, &publisher, route_source);
                }
                if stale.poll(now) {
                    let prefixes = rib.go_stale(&mut programmer) as u64;
                    publish(&mut programmer);
                    state.stale_prefixes = prefixes;
                    let detail = format!(
                        "the {} route source has been gone for {} ms (routes.stale_after_ms): its routes are left to bpf_fib_lookup until it resyncs",
                        source_name(route_source),
                        config.routes.stale_after_ms
                    );
                    tracing::warn!(prefixes, "{detail}");
                    publisher.publish(Published::Stale { source: source_name(route_source).into(), active: true, prefixes, detail });
                }
                let routes_ready = route_source == Source::Kernel
                    || state.fpm_replay_complete
                    || started.elapsed() >= Duration::from_millis(config.fpm.replay_max_ms);
                if !state.taken_over && state.kernel_synced && routes_ready {
                    // The new generation forwards from the maps: everything
                    // decided so far must be in them.
                    programmer.flush();
                    guard.created(ports.go_live(&mut programs)?);
                    state.taken_over = true;
                    if fail_safe_at_start {
                        publisher.publish(Published::FailSafe {
                            active: false,
                            detail: "the daemon is back and reconciled; the route cache is trusted again".into(),
                        });
                    }
                }
            }
            _ = heartbeat.tick() => {
                if state.taken_over && state.kernel_synced {
                    let beat = datapath_config(&config, monotonic_ns());
                    if let Err(err) = programmer.writer_mut().set_config(&beat) {
                        tracing::error!(%err, "writing the heartbeat failed");
                    }
                }
                ports.poll(&mut programs, programmer.writer_mut());
                left_to_kernel.observe(&programmer.stats);
                crate::log_limit::report_suppressed();
                refresh_state(&mut state, &programmer, &rib, &listener_stats, last_fpm_message);
                refresh_stale(&mut state, &stale);
                refresh_ports(&mut state, &ports);
                write_state(&state_file, &state);
            }
            Some(reply) = query_rx.recv() => {
                let _ = reply.send(RouteView {
                    route_source,
                    replay_complete: state.fpm_replay_complete,
                    fpm_connected: state.fpm_connected,
                    fpm_last_message_age_ms: last_fpm_message.map(|t| t.elapsed().as_millis() as u64),
                    routes: rib.desired(&programmer),
                });
            }
            _ = hangup.recv() => {
                match Config::load(config_path.as_deref(), &Default::default()) {
                    Ok(new) => {
                        tracing::info!("configuration reloaded (mode, dry-run, hash seed, fail-safe, heartbeat, interfaces)");
                        // Attaches what was added (or detached from
                        // outside), detaches what was removed.
                        ports.apply(&new.general.interfaces, &mut programs, programmer.writer_mut());
                        let kept = config.needs_restart(&new);
                        if !kept.is_empty() {
                            tracing::warn!(keys = kept.join(", "), "these changes are not applied until a restart");
                        }
                        config.datapath = new.datapath;
                        config.general.interfaces = new.general.interfaces;
                        heartbeat = tokio::time::interval(Duration::from_millis(config.datapath.heartbeat_interval_ms));
                    }
                    Err(err) => tracing::error!(%err, "reload refused; keeping the running configuration"),
                }
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

/// Tells zebra, route by route, whether the router forwards what the last
/// FPM batch changed (see `control::offload`): one reply per FPM frame.
fn send_offload_replies(
    rib: &Rib,
    programmer: &MapProgrammer<'_>,
    replies: &mpsc::Sender<Vec<u8>>,
    state: &mut DaemonState,
) {
    let mut messages = Vec::new();
    let (mut kernel, mut failed) = (Vec::new(), Vec::new());
    for prefix in rib.last_published() {
        let Some(route) = rib.winning_route(prefix, programmer) else {
            continue;
        };
        let forwarder = offload::Forwarder::of(programmer.programmed(prefix));
        kernel.push(forwarder == offload::Forwarder::Kernel);
        failed.push(forwarder == offload::Forwarder::Nobody);
        messages.push(offload::reply(
            *prefix,
            route.table,
            route.protocol,
            forwarder,
        ));
    }
    let mut first = 0;
    for (bytes, count) in offload::writes(&messages) {
        let range = first..first + count;
        first += count;
        match replies.try_send(bytes) {
            Ok(()) => {
                state.offload_replies_sent += count as u64;
                state.offload_replies_kernel +=
                    kernel[range.clone()].iter().filter(|k| **k).count() as u64;
                state.offload_replies_failed += failed[range].iter().filter(|f| **f).count() as u64;
            }
            Err(_) => state.offload_replies_dropped += count as u64,
        }
    }
}

/// The route source completed a resync: if its routes were stale, say
/// they are trusted again (the resync re-published what it repeated).
fn source_restored(stale: &mut StaleClock, publisher: &Publisher, source: Source) {
    if stale.restored() {
        let detail = format!(
            "the {} route source is back and resynced; its routes forward from the cache again",
            source_name(source)
        );
        tracing::info!("{detail}");
        publisher.publish(Published::Stale {
            source: source_name(source).into(),
            active: false,
            prefixes: 0,
            detail,
        });
    }
}

fn source_name(source: Source) -> &'static str {
    match source {
        Source::Kernel => "kernel",
        Source::Fpm => "fpm",
    }
}

fn refresh_stale(state: &mut DaemonState, stale: &StaleClock) {
    state.routes_stale = stale.is_stale();
    state.route_source_down_ms = stale.down_for(Instant::now()).map(|d| d.as_millis() as u64);
}

fn refresh_state(
    state: &mut DaemonState,
    programmer: &MapProgrammer<'_>,
    rib: &Rib,
    listener_stats: &ListenerStats,
    last_fpm_message: Option<Instant>,
) {
    state.fpm_last_message_age_ms = last_fpm_message.map(|t| t.elapsed().as_millis() as u64);
    state.fpm_sessions = listener_stats.sessions.load(Ordering::Relaxed);
    state.fpm_refused_address = listener_stats.refused_peer.load(Ordering::Relaxed);
    state.fpm_refused_user = listener_stats.refused_user.load(Ordering::Relaxed);
    state.fpm_refused_busy = listener_stats.refused_busy.load(Ordering::Relaxed);
    state.fpm_refused = state.fpm_refused_address + state.fpm_refused_user + state.fpm_refused_busy;
    state.routes = programmer.route_count();
    state.nexthops = programmer.nexthops_in_use();
    state.ecmp_groups = programmer.groups_in_use();
    state.v6_entries = programmer.v6_entries();
    state.v4_tbl8_groups = programmer.writer().v4.lock().groups_in_use();
    state.programmer = programmer.stats.clone();
    state.rib = rib.stats.clone();
}

fn push_decoded(message: &[u8], batch: &mut Vec<Event>, state: &mut DaemonState) {
    if !decode_into(message, batch) {
        state.decode_errors += 1;
    }
}

/// Decodes `message` onto `batch`; false when it could not be decoded.
fn decode_into(message: &[u8], batch: &mut Vec<Event>) -> bool {
    match decode(message) {
        Ok(Decoded::Event(event)) => batch.push(event),
        Ok(Decoded::Skipped(_)) => {}
        Err(error) => {
            tracing::warn!(%error, "undecodable message skipped");
            return false;
        }
    }
    true
}

struct DecodedFrame {
    events: Vec<Event>,
    decode_errors: u64,
}

impl DecodedFrame {
    fn of(frame: &Frame) -> Self {
        let mut decoded = DecodedFrame {
            events: Vec::new(),
            decode_errors: 0,
        };
        for message in frame.messages() {
            if !decode_into(message, &mut decoded.events) {
                decoded.decode_errors += 1;
            }
        }
        decoded
    }
}

/// Whether a netlink message is a link's (RTM_NEWLINK, RTM_DELLINK).
fn is_link_message(message: &[u8]) -> bool {
    message.len() >= 6 && matches!(u16::from_ne_bytes([message[4], message[5]]), 16 | 17)
}

fn refresh_ports(state: &mut DaemonState, ports: &Ports) {
    state.interfaces = ports.states();
    state.live = state.taken_over && ports.live();
    state.redirect_failures = ports.redirect_failures();
}
