//! `status`: what the pinned datapath is doing, read from the pins.

use std::path::Path;

use anyhow::Context;
use pf_common::{config::CFG_F_DRY_RUN, maps as names, Counter, Mode};

use crate::datapath::{pins, sys::monotonic_ns};
use crate::pinned_maps::PinnedMaps;
use crate::state::DaemonState;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Status {
    /// The generation read: the one the pinned links run.
    pub pin_dir: String,
    /// `links`, or `newest` when no link is pinned (then nothing runs it).
    pub generation_source: pins::LiveSource,
    /// What an operator should know about the generations (a fallback,
    /// leftovers nothing runs, links split between generations).
    pub generation_notes: Vec<String>,
    /// Why zebra's routes will sit queued (`--asic-offload=notify_on_offload`
    /// with FRR 8.4 or 10.3.x, replies off, no sidecar connected).
    #[serde(default)]
    pub frr_warnings: Vec<String>,
    pub mode: &'static str,
    pub dry_run: bool,
    /// Interfaces whose pinned link runs on a device now (from the kernel).
    pub attached: Vec<String>,
    /// Every pinned link as the kernel describes it.
    pub links: Vec<LinkStatus>,
    /// Seconds since the daemon's last heartbeat, if it ever beat.
    pub heartbeat_age_s: Option<f64>,
    /// The fail-safe bound in seconds (0: off).
    pub fail_safe_after_s: f64,
    /// The datapath ignores the route cache because the heartbeat is stale.
    pub fail_safe_active: bool,
    pub program_ids: Vec<(String, u32)>,
    pub daemon: Option<crate::state::DaemonState>,
    /// Table use against capacity (use is known while the daemon runs).
    pub occupancy: Vec<Occupancy>,
    /// Over how long the rates were measured.
    pub rate_interval_s: f64,
    pub counters: Vec<CounterValue>,
}

#[derive(Debug, Serialize)]
pub struct LinkStatus {
    pub interface: String,
    /// The link runs on a device (false: the interface is gone and the
    /// link is attached to nothing).
    pub attached: bool,
    pub ifindex: u32,
    pub prog_id: u32,
    pub link_id: u32,
    /// Whether it runs the generation read (`pin_dir`).
    pub runs_live_generation: bool,
}

#[derive(Debug, Serialize)]
pub struct Occupancy {
    pub table: &'static str,
    pub used: Option<u64>,
    pub capacity: u64,
}

#[derive(Debug, Serialize)]
pub struct CounterValue {
    pub name: &'static str,
    pub value: u64,
    /// Per second over `rate_interval_s` (none when not measured).
    pub rate_per_s: Option<f64>,
}

/// Reads the status; with a non-zero `rate_interval` the counters are read
/// twice that far apart and each gets a rate.
pub fn read(pin_dir: &Path, rate_interval: std::time::Duration) -> anyhow::Result<Status> {
    let maps = PinnedMaps::open(pin_dir).context("is the datapath attached?")?;
    let generation = maps.generation.clone();
    let links = link_statuses(&maps);
    let attached = links
        .iter()
        .filter(|l| l.attached)
        .map(|l| l.interface.clone())
        .collect();
    let config = maps.config()?;
    let values = counter_values(&maps, rate_interval)?;
    let daemon = crate::state::read_state(pin_dir);
    let occupancy = occupancy(&maps, daemon.as_ref());
    let now = monotonic_ns();
    let heartbeat_age_s =
        (config.heartbeat_ns != 0).then(|| now.saturating_sub(config.heartbeat_ns) as f64 / 1e9);
    let fail_safe_active = config.stale_after_ns != 0
        && now.saturating_sub(config.heartbeat_ns) > config.stale_after_ns;
    let program_ids = maps.program_ids();
    let PinnedMaps { source, notes, .. } = maps;
    Ok(Status {
        pin_dir: generation.display().to_string(),
        generation_source: source,
        generation_notes: notes,
        frr_warnings: frr_warnings(daemon.as_ref()),
        links,
        heartbeat_age_s,
        fail_safe_after_s: config.stale_after_ns as f64 / 1e9,
        fail_safe_active,
        program_ids,
        daemon,
        occupancy,
        rate_interval_s: rate_interval.as_secs_f64(),
        mode: Mode::from_u32(config.mode)
            .map(Mode::name)
            .unwrap_or("unknown"),
        dry_run: config.flags & CFG_F_DRY_RUN != 0,
        attached,
        counters: values,
    })
}

/// Every pinned link, and whether it runs the generation read.
fn link_statuses(maps: &PinnedMaps) -> Vec<LinkStatus> {
    maps.links
        .iter()
        .map(|l| LinkStatus {
            interface: l.ifname.clone(),
            attached: l.attached(),
            ifindex: l.ifindex,
            prog_id: l.prog_id,
            link_id: l.link_id,
            runs_live_generation: maps.fast_path_id == Some(l.prog_id),
        })
        .collect()
}

/// The counters, each with its rate over `rate_interval` unless that is zero
/// (then the counters are read once).
fn counter_values(
    maps: &PinnedMaps,
    rate_interval: std::time::Duration,
) -> anyhow::Result<Vec<CounterValue>> {
    let first = maps.counters()?;
    let (last, rates) = if rate_interval.is_zero() {
        (first.clone(), None)
    } else {
        let started = std::time::Instant::now();
        std::thread::sleep(rate_interval);
        let last = maps.counters()?;
        let seconds = started.elapsed().as_secs_f64();
        let rates: Vec<f64> = first
            .iter()
            .zip(&last)
            .map(|(a, b)| b.saturating_sub(*a) as f64 / seconds)
            .collect();
        (last, Some(rates))
    };
    Ok(Counter::ALL
        .iter()
        .enumerate()
        .map(|(i, c)| CounterValue {
            name: c.name(),
            value: last[i],
            rate_per_s: rates.as_ref().map(|r| r[i]),
        })
        .collect())
}

/// Table capacities from the pinned maps; their use only the daemon knows.
fn occupancy(maps: &PinnedMaps, daemon: Option<&DaemonState>) -> Vec<Occupancy> {
    let used = |f: fn(&DaemonState) -> u64| daemon.map(f);
    vec![
        Occupancy {
            table: "IPv4 second-level groups (V4_TBL8)",
            used: used(|d| d.v4_tbl8_groups as u64),
            capacity: maps.capacity(names::V4_TBL8),
        },
        Occupancy {
            table: "IPv6 trie nodes (V6_NODES)",
            used: used(|d| d.v6_trie_nodes as u64),
            capacity: maps.capacity(names::V6_NODES),
        },
        Occupancy {
            table: "nexthops (NH_PTR)",
            used: used(|d| d.control.nexthops as u64),
            capacity: maps.capacity(names::NH_PTR),
        },
        Occupancy {
            table: "ECMP groups (GRP_PTR)",
            used: used(|d| d.control.ecmp_groups as u64),
            capacity: maps.capacity(names::GRP_PTR),
        },
    ]
}

/// [`crate::frr_offload::warnings`] for each zebra of this namespace,
/// with what the daemon says (no daemon: nobody answers).
fn frr_warnings(daemon: Option<&crate::state::DaemonState>) -> Vec<String> {
    let sidecar = crate::frr_offload::Sidecar {
        offload_replies: daemon.is_none_or(|d| d.control.offload_replies),
        connected: Some(daemon.is_some_and(|d| d.control.fpm_connected)),
    };
    crate::frr_offload::find()
        .iter()
        .flat_map(|zebra| crate::frr_offload::warnings(zebra, sidecar))
        .collect()
}

pub fn render(status: &Status) -> String {
    let mut out = String::new();
    render_generation(&mut out, status);
    render_datapath(&mut out, status);
    match &status.daemon {
        Some(d) => render_daemon(&mut out, d),
        None => out
            .push_str("daemon         not running (the datapath keeps forwarding from its pins)\n"),
    }
    render_tables(&mut out, &status.occupancy);
    render_counters(&mut out, status);
    out
}

/// Which generation was read and why, what to know about it, and its mode.
fn render_generation(out: &mut String, status: &Status) {
    out.push_str(&format!(
        "pin directory  {} ({})\n",
        status.pin_dir,
        match status.generation_source {
            pins::LiveSource::Links => "the generation the links run",
            pins::LiveSource::Newest => "no link is pinned: the newest generation",
        }
    ));
    for warning in &status.frr_warnings {
        out.push_str(&format!("WARN           {warning}\n"));
    }
    for note in &status.generation_notes {
        out.push_str(&format!("note           {note}\n"));
    }
    out.push_str(&format!(
        "mode           {}{}\n",
        status.mode,
        if status.dry_run { " (dry-run)" } else { "" }
    ));
}

/// Where fast_path runs, which programs, and whether the fail-safe holds.
fn render_datapath(out: &mut String, status: &Status) {
    let links: Vec<String> = status
        .links
        .iter()
        .map(|l| {
            if !l.attached {
                format!(
                    "{} (GONE: the interface was removed; its link runs on nothing)",
                    l.interface
                )
            } else if !l.runs_live_generation {
                format!(
                    "{} (ifindex {}, program id {}: another generation)",
                    l.interface, l.ifindex, l.prog_id
                )
            } else {
                format!("{} (ifindex {})", l.interface, l.ifindex)
            }
        })
        .collect();
    out.push_str(&format!(
        "attached       {}\n",
        if links.is_empty() {
            "nothing (no link is pinned)".to_string()
        } else {
            links.join(", ")
        }
    ));
    let ids: Vec<String> = status
        .program_ids
        .iter()
        .map(|(n, id)| format!("{n} id {id}"))
        .collect();
    out.push_str(&format!("programs       {}\n", ids.join(", ")));
    out.push_str(&format!(
        "fail-safe      {} (heartbeat {}, bound {:.1} s)\n",
        if status.fail_safe_active {
            "ACTIVE: forwarding with bpf_fib_lookup only"
        } else {
            "inactive"
        },
        status
            .heartbeat_age_s
            .map_or("never".to_string(), |a| format!("{a:.1} s ago")),
        status.fail_safe_after_s,
    ));
}

/// What the daemon reports about itself, its route source and the maps.
fn render_daemon(out: &mut String, d: &DaemonState) {
    render_daemon_liveness(out, d);
    render_redirect_failures(out, d);
    render_left_to_kernel(out, d);
    render_fpm(out, d);
    render_route_trust(out, d);
    out.push_str(&format!(
        "kernel         {}, {} resyncs (last: {}), {} undecodable messages\n",
        if d.control.kernel_synced {
            "synced"
        } else {
            "syncing"
        },
        d.control.kernel_resyncs,
        d.control.last_resync_reason.as_deref().unwrap_or("-"),
        d.control.decode_errors,
    ));
    if d.control.route_source == "fpm" {
        out.push_str(&format!(
            "offload        replies sent {} (kernel forwards {}, failed {}), dropped {}\n",
            d.control.offload_replies_sent,
            d.control.offload_replies_kernel,
            d.control.offload_replies_failed,
            d.control.offload_replies_dropped,
        ));
    }
    let p = &d.control.programmer;
    out.push_str(&format!(
        "programmer     deferred v4 {} v6 {}, overflow nexthops {} groups {} v4-groups {} v6 {}, write errors {}\n",
        p.deferred_v4, p.deferred_v6, p.overflow_nexthops, p.overflow_groups, p.overflow_v4_groups, p.overflow_v6_routes, p.write_errors
    ));
}

/// The daemon's process, whether its generation is live, and its interfaces.
fn render_daemon_liveness(out: &mut String, d: &DaemonState) {
    out.push_str(&format!(
        "daemon         pid {}, routes from {}, {} routes, {} nexthops, {} ECMP groups\n",
        d.pid, d.control.route_source, d.control.routes, d.control.nexthops, d.control.ecmp_groups
    ));
    out.push_str(&format!(
        "daemon state   {}\n",
        if d.live {
            format!("live: the links run its generation ({})", d.generation)
        } else if !d.control.taken_over {
            format!(
                "NOT live yet: its generation {} goes live once reconciled",
                d.generation
            )
        } else {
            format!(
                "NOT live: no link runs its generation {} on a device (detached or removed from outside?)",
                d.generation
            )
        }
    ));
    if !d.interfaces.is_empty() {
        let ports: Vec<String> = d
            .interfaces
            .iter()
            .map(|p| format!("{} {}", p.interface, p.condition))
            .collect();
        out.push_str(&format!("interfaces     {}\n", ports.join("; ")));
    }
}

fn render_redirect_failures(out: &mut String, d: &DaemonState) {
    let r = &d.redirect_failures;
    if r.counting {
        let per: Vec<String> = r
            .per_interface
            .iter()
            .map(|(i, n)| format!("{i} {n}"))
            .collect();
        out.push_str(&format!(
            "redirect fails {} (frames dropped after XDP_REDIRECT since the daemon started{})\n",
            r.total(),
            if per.is_empty() {
                String::new()
            } else {
                format!(": {}", per.join(", "))
            }
        ));
    } else {
        out.push_str(&format!(
            "redirect fails not counted: {}\n",
            r.unavailable.as_deref().unwrap_or("unknown")
        ));
    }
}

/// Routes left to bpf_fib_lookup for a reason the operator can act on.
fn render_left_to_kernel(out: &mut String, d: &DaemonState) {
    let left: Vec<String> = pf_control::left_to_kernel::counts(&d.control.programmer)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    out.push_str(&format!(
        "left to kernel {}\n",
        if left.is_empty() {
            "none for a reason to act on".to_string()
        } else {
            left.join(", ")
        }
    ));
}

/// Zebra's FPM session, and the listener's guards when FPM is the source.
fn render_fpm(out: &mut String, d: &DaemonState) {
    out.push_str(&format!(
        "fpm            {}{}, replay {}, last message {}, {} frame errors, {} refused\n",
        if d.control.fpm_connected {
            "connected"
        } else {
            "not connected"
        },
        d.control
            .fpm_peer
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default(),
        if d.control.fpm_replay_complete {
            "complete"
        } else {
            "pending"
        },
        d.control
            .fpm_last_message_age_ms
            .map_or("never".to_string(), |ms| format!(
                "{:.1} s ago",
                ms as f64 / 1000.0
            )),
        d.control.fpm_frame_errors,
        d.fpm_refused,
    ));
    if d.control.route_source == "fpm" {
        out.push_str(&format!(
            "fpm guard      loopback peers of uids {:?}; refused: address {}, user {}, busy {}; dropped: idle {}, partial frame {}\n",
            d.fpm_allowed_uids,
            d.fpm_refused_address,
            d.fpm_refused_user,
            d.fpm_refused_busy,
            d.control.fpm_dropped_idle,
            d.control.fpm_dropped_partial_frame,
        ));
    }
}

/// Whether the cached routes are still trusted while the source is away.
fn render_route_trust(out: &mut String, d: &DaemonState) {
    let gone = d.control.route_source_down_ms.map(|ms| {
        format!(
            "{} gone for {:.1} s",
            d.control.route_source,
            ms as f64 / 1000.0
        )
    });
    out.push_str(&match (d.control.routes_stale, gone) {
        (true, gone) => format!(
            "routes         STALE ({}): {} prefixes left to bpf_fib_lookup until it resyncs\n",
            gone.unwrap_or_default(),
            d.control.stale_prefixes
        ),
        (false, Some(gone)) => format!("routes         {gone}, still forwarded from the cache\n"),
        (false, None) => "routes         trusted (the source is resynced)\n".to_string(),
    });
}

fn render_tables(out: &mut String, occupancy: &[Occupancy]) {
    out.push_str("tables\n");
    for o in occupancy {
        let used = o.used.map_or("?".to_string(), |u| u.to_string());
        let percent = o
            .used
            .filter(|_| o.capacity > 0)
            .map_or(String::new(), |u| {
                format!(" ({:.1}%)", u as f64 * 100.0 / o.capacity as f64)
            });
        out.push_str(&format!(
            "  {:<38} {used:>9} of {}{percent}\n",
            o.table, o.capacity
        ));
    }
}

fn render_counters(out: &mut String, status: &Status) {
    out.push_str(&format!(
        "counters (non-zero)                 total      per s (over {:.1} s)\n",
        status.rate_interval_s
    ));
    for c in status.counters.iter().filter(|c| c.value != 0) {
        let rate = c.rate_per_s.map_or("-".to_string(), |r| format!("{r:.1}"));
        out.push_str(&format!("  {:<26} {:>12} {:>12}\n", c.name, c.value, rate));
    }
}
