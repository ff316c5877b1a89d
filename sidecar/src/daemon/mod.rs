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
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use pf_control::{
    controller::{Action, Controller, Input},
    rib::Source,
};

use crate::{
    config::Config,
    datapath::{route_writer::RouteWriter, sys, Programs},
    events::Publisher,
    ports::{Ports, StartGuard},
    query::{self, Query},
    source::{
        fpm::{ListenerStats, SessionFeed},
        kernel::{self, KernelConfig},
    },
    state::{state_path, write_state, DaemonState},
};

mod report;
mod services;
mod startup;

use services::start_query;
use startup::{datapath_config, Start};

/// How often freed ids, slots and groups move one step towards reuse.
const GRACE_PERIOD: Duration = Duration::from_millis(50);
/// Most kernel messages applied as one batch.
const KERNEL_BATCH: usize = 4096;

pub fn run(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (mut maps, start) = Start::load(config).await?;
        let mut daemon = start.daemon(&mut maps)?;
        daemon.serve(config_path).await
    })
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
    /// When the heartbeat was last written.
    last_heartbeat: Option<Instant>,
    build: crate::metrics::BuildInfo,
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
        let mut query_rx = start_query(&pin_dir);
        let mut pages_rx = self.start_metrics().await?;
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
                Some(query) = query_rx.recv() => match query {
                    Query::RouteView(reply) => {
                        let _ = reply.send(self.controller.route_view(Instant::now()));
                    }
                    Query::RouteFor(address, reply) => {
                        let _ = reply.send(self.controller.route_for(address));
                    }
                },
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
                Action::Reply(replies) => {
                    for (bytes, counts) in pf_wire::offload::writes(&replies) {
                        let sent = self
                            .replies
                            .as_ref()
                            .is_some_and(|r| r.try_send(bytes).is_ok());
                        if !sent {
                            self.controller
                                .step(Instant::now(), Input::RepliesDropped(counts));
                        }
                    }
                }
                Action::GoLive => self.go_live()?,
                Action::Heartbeat => {
                    let beat = datapath_config(&self.config, sys::monotonic_ns());
                    match self.controller.writer_mut().set_config(&beat) {
                        Ok(()) => self.last_heartbeat = Some(Instant::now()),
                        Err(err) => tracing::error!(%err, "writing the heartbeat failed"),
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

    fn heartbeat_interval(&self) -> tokio::time::Interval {
        tokio::time::interval(Duration::from_millis(
            self.config.datapath.heartbeat_interval_ms,
        ))
    }
}
