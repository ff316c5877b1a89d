//! The daemon's start: a new generation of maps beside the live one, the
//! ports, the event publisher and the controller over the new maps.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use pf_common::{config::CFG_F_DRY_RUN, Config as DatapathConfig};
use pf_control::controller::{Controller, Settings};

use super::Daemon;
use crate::{
    attach::AttachMode,
    config::Config,
    datapath::{
        maps::DatapathMaps,
        pins::{self, Live},
        route_writer::RouteWriter,
        Datapath, Programs,
    },
    events::Publisher,
    ports::{Ports, StartGuard},
    source::fpm::ListenerStats,
    state::DaemonState,
};

/// The datapath's configuration, with the heartbeat at `heartbeat_ns`
/// (zero until reconciled: `bpf_fib_lookup` only).
pub(super) fn datapath_config(config: &Config, heartbeat_ns: u64) -> DatapathConfig {
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

/// What start-up loaded, before the controller borrows the new maps.
pub(super) struct Start {
    config: Config,
    programs: Programs,
    ports: Ports,
    guard: StartGuard,
    publisher: Publisher,
    settings: Settings,
    generation: PathBuf,
    /// The generation the links ran when this one was loaded, if any.
    live_before: Option<Live>,
}

impl Start {
    /// Loads a new generation beside the live one and attaches what the
    /// configuration names; returns its maps apart, for the controller's
    /// writer to borrow.
    pub(super) async fn load(config: Config) -> anyhow::Result<(DatapathMaps, Start)> {
        let pin_dir = config.general.pin_dir.clone();
        // One daemon per pin directory, for its whole life; when it stops,
        // its generation goes unless a link runs it (`ports::StartGuard`).
        let mut guard = StartGuard::lock(&pin_dir)?;
        if let Some(warning) = config.memory_warning() {
            tracing::warn!("{warning}");
        }
        // A link that runs on a device forwards now: the new generation
        // then waits until it is reconciled. A generation no link runs (a
        // failed or killed start's) is not live and is not waited for.
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
        // Until reconciled the heartbeat stays zero, so a fresh generation
        // that goes live early (first start) forwards with bpf_fib_lookup
        // only.
        datapath.maps.set_config(&datapath_config(&config, 0))?;
        let publisher = if config.events.endpoint.is_empty() {
            Publisher::off()
        } else {
            let publisher = Publisher::bind(&config.events.endpoint).await?;
            tracing::info!(endpoint = %config.events.endpoint, "publishing events");
            publisher
        };
        // Whether the datapath we take over had fallen back to bpf_fib_lookup.
        let fail_safe_at_start =
            crate::cli::status::read(&pin_dir, Duration::ZERO).is_ok_and(|s| s.fail_safe_active);
        let settings =
            config.control_settings(live_before.is_some(), fail_safe_at_start, publisher.is_on());
        let start = Start {
            config,
            programs: datapath.programs,
            ports,
            guard,
            publisher,
            settings,
            generation,
            live_before,
        };
        Ok((datapath.maps, start))
    }

    /// The daemon over `maps`, the controller's writer borrowing them. It
    /// goes live at once when nothing forwards yet; otherwise the links
    /// stay on the live generation until this one is reconciled.
    pub(super) fn daemon(self, maps: &mut DatapathMaps) -> anyhow::Result<Daemon<'_>> {
        // IPv6 route writes go through a writer thread (`datapath::route_writer`).
        let writer = RouteWriter::new(maps)?;
        let mut daemon = Daemon {
            state: DaemonState {
                pid: std::process::id(),
                generation: self.generation.display().to_string(),
                ..Default::default()
            },
            controller: Controller::new(self.settings, writer, Instant::now()),
            programs: self.programs,
            ports: self.ports,
            guard: self.guard,
            publisher: self.publisher,
            listener: Arc::new(ListenerStats::default()),
            replies: None,
            last_heartbeat: None,
            build: crate::metrics::BuildInfo::current(),
            config: self.config,
        };
        match &self.live_before {
            // Nothing forwards yet, so there is nothing to keep: go live now.
            None => daemon.go_live()?,
            Some(live) => tracing::info!(
                links = live.links.len(),
                live = %live.dir.display(),
                "the links stay on the live generation until this one is reconciled (kernel synced and, with FPM, zebra's replay complete or fpm.replay_max_ms)"
            ),
        }
        Ok(daemon)
    }
}
