//! `pf-sidecar diff`: the pinned maps against the kernel FIB or FRR's RIB.
//!
//! The maps are read from their pins (never from the daemon's memory). The
//! expected state is rebuilt the way the daemon builds it: the kernel's dump
//! (or FRR's installed routes) goes through the same decoder and RIB, and
//! the kernel's addresses always supply the local entries.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
};

use anyhow::{bail, Context};
use ipnet::IpNet;
use serde::Serialize;

use pf_control::{
    drift::{compare, DriftKind, Report},
    fast_maps::{FastMap, PrefixHashMap},
    programmer::{ingress_flags, resolve_nexthop, Leg, LinkInfo, NexthopKey, Target},
    rib::{FibSink, Rib, RibEntry, Source},
};

use pf_common::{
    layout::{ING_F_VRF, ING_F_VRF_KERNEL},
    maps::INGRESS_IFINDEXES,
};

use crate::{datapath::pins, pinned_maps::PinnedMaps, query, source::kernel};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Against {
    /// The kernel FIB (a netlink dump of the configured tables).
    Kernel,
    /// FRR's RIB: the routes `vtysh` shows as installed in the FIB.
    Frr,
    /// The routes the running daemon took from zebra's FPM stream.
    Fpm,
}

pub struct DiffOptions<'a> {
    pub pin_dir: &'a Path,
    pub against: Against,
    pub tables: Vec<u32>,
    /// `vtysh -N`: the pathspace of the FRR instance to ask.
    pub frr_pathspace: Option<&'a str>,
    pub progress: bool,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub against: Against,
    /// The generation compared: the one the pinned links run.
    pub generation: PathBuf,
    /// `links`, or `newest` when no link is pinned (nothing runs it).
    pub generation_source: pins::LiveSource,
    pub generation_notes: Vec<String>,
    pub in_sync: bool,
    pub compared_prefixes: usize,
    pub compared_nexthops: usize,
    pub missing: usize,
    pub extra: usize,
    pub different: usize,
    pub nexthops_different: usize,
    /// Ports the kernel has in a VRF (or with a VLAN in one), each checked
    /// against `INGRESS`.
    pub vrf_ports: usize,
    /// Ports whose `INGRESS` bits differ from the kernel's VRF membership.
    pub ingress_different: usize,
    /// With `--against fpm`: the FPM session as the daemon has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fpm_session: Option<FpmSession>,
}

/// The FPM session behind `--against fpm`.
#[derive(Debug, Serialize)]
pub struct FpmSession {
    pub connected: bool,
    /// Seconds since zebra's last message: how old the view can be.
    pub last_message_age_s: Option<f64>,
    /// The session is down, so the view is what zebra last said: routes
    /// changed since are in neither the view nor the comparison (`diff`
    /// then exits 2).
    pub view_stale: bool,
}

impl Summary {
    /// The comparison was made against a view that can be out of date.
    pub fn stale(&self) -> bool {
        self.fpm_session.as_ref().is_some_and(|s| s.view_stale)
    }
}

#[derive(Debug, Serialize)]
pub struct DiffOutcome {
    pub summary: Summary,
    #[serde(flatten)]
    pub report: Report,
    /// Ports whose VRF membership the maps state otherwise than the kernel.
    pub ingress: Vec<IngressDrift>,
}

/// A port the datapath would route in the wrong table: the kernel's VRF
/// membership (its links) against the `INGRESS` bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngressDrift {
    pub ifindex: u32,
    pub interface: Option<String>,
    pub expected: String,
    pub actual: String,
}

/// What `INGRESS` bits make the datapath do, in words.
pub fn ingress_text(flags: u32) -> String {
    if flags & ING_F_VRF_KERNEL != 0 {
        "frames to the kernel: a VLAN in another VRF than the port's, or a member of a bond or bridge in a VRF"
    } else if flags & ING_F_VRF != 0 {
        "in a VRF: bpf_fib_lookup in its table"
    } else {
        "in no VRF: the route cache"
    }
    .to_owned()
}

/// Every link of the kernel's below `INGRESS_IFINDEXES` (the datapath
/// passes frames from the others) against its `INGRESS` bits. Returns the
/// ports in VRFs and the drift.
fn compare_ingress(
    view: &PinnedMaps,
    links: &FastMap<u32, LinkInfo>,
) -> anyhow::Result<(usize, Vec<IngressDrift>)> {
    let expected = ingress_flags(links);
    let mut ifindexes: Vec<u32> = links
        .keys()
        .copied()
        .filter(|&i| i < INGRESS_IFINDEXES)
        .collect();
    ifindexes.sort_unstable();
    let mut drift = Vec::new();
    for ifindex in ifindexes {
        let want = expected.get(&ifindex).copied().unwrap_or(0);
        let have = view.ingress(ifindex)?;
        if have == Some(want) || (have.is_none() && want == 0) {
            continue;
        }
        drift.push(IngressDrift {
            ifindex,
            interface: crate::pinned_maps::interface_name(ifindex),
            expected: ingress_text(want),
            actual: match have {
                Some(flags) => ingress_text(flags),
                None => "unknown: this generation has no INGRESS map".to_owned(),
            },
        });
    }
    Ok((expected.len(), drift))
}

/// Links and neighbours as the kernel dump states them; routes are read
/// from the RIB afterwards.
#[derive(Default)]
struct Neighbourhood {
    links: FastMap<u32, LinkInfo>,
    neighbours: FastMap<NexthopKey, [u8; 6]>,
    /// Where the RIB keeps the dumped routes.
    entries: PrefixHashMap<RibEntry>,
}

impl FibSink for Neighbourhood {
    fn entries(&self) -> &PrefixHashMap<RibEntry> {
        &self.entries
    }
    fn entries_mut(&mut self) -> &mut PrefixHashMap<RibEntry> {
        &mut self.entries
    }
    fn upsert(&mut self, _: IpNet, _: &Target) {}
    fn remove(&mut self, _: IpNet) {}
    fn set_link(&mut self, ifindex: u32, link: Option<LinkInfo>) {
        match link {
            Some(link) => self.links.insert(ifindex, link),
            None => self.links.remove(&ifindex),
        };
    }
    fn set_neighbour(&mut self, ifindex: u32, gateway: IpAddr, mac: Option<[u8; 6]>) {
        let key = NexthopKey { ifindex, gateway };
        match mac {
            Some(mac) => self.neighbours.insert(key, mac),
            None => self.neighbours.remove(&key),
        };
    }
}

/// The kernel's state through the daemon's decoder and RIB. With
/// `routes` false, only links, neighbours and addresses are followed.
fn kernel_rib(tables: Vec<u32>, routes: bool) -> anyhow::Result<(Rib, Neighbourhood)> {
    let route_source = if routes { Source::Kernel } else { Source::Fpm };
    let mut rib = Rib::new(route_source, tables);
    let mut events = Vec::new();
    kernel::dump_all(&mut |message| {
        if let Ok(pf_wire::Decoded::Change(event)) = pf_wire::decode(message) {
            events.push(event);
        }
    })
    .context("dumping the kernel's state over netlink")?;
    let mut neighbourhood = Neighbourhood::default();
    rib.apply_batch(Source::Kernel, events, &mut neighbourhood);
    Ok((rib, neighbourhood))
}

/// Runs `vtysh` with a fixed argument vector (never through a shell): the
/// vtysh of the zebra of this network namespace and pathspace, from that
/// zebra's root (FRR in a chroot or container), else the one on PATH.
fn vtysh(pathspace: Option<&str>, command: &str) -> anyhow::Result<String> {
    let zebra = crate::frr_offload::find()
        .into_iter()
        .find(|z| z.pathspace.as_deref() == pathspace);
    let mut cmd = match &zebra {
        Some(zebra) => zebra.command("/usr/bin/vtysh"),
        None => Command::new("vtysh"),
    };
    if let Some(n) = pathspace {
        cmd.args(["-N", n]);
    }
    let output = cmd
        .args(["-c", command])
        .output()
        .context("running vtysh (is FRR installed?)")?;
    if !output.status.success() {
        bail!(
            "vtysh -c '{command}' failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Routes FRR shows as installed in the FIB, from `show ip route json` or
/// `show ipv6 route json`, as forwarding targets.
pub fn frr_installed_routes(json: &str) -> anyhow::Result<Vec<(IpNet, Target)>> {
    let parsed: serde_json::Value =
        serde_json::from_str(json).context("vtysh printed something that is not JSON")?;
    let Some(prefixes) = parsed.as_object() else {
        bail!("vtysh JSON is not an object of prefixes");
    };
    let mut routes = Vec::new();
    for (prefix, entries) in prefixes {
        let prefix = IpNet::from_str(prefix)
            .with_context(|| format!("vtysh JSON names {prefix:?}, not a prefix"))?
            .trunc();
        for entry in entries.as_array().into_iter().flatten() {
            if entry["installed"] != true {
                continue;
            }
            let mut legs = Vec::new();
            let mut target = None;
            for nexthop in entry["nexthops"].as_array().into_iter().flatten() {
                if nexthop["fib"] != true {
                    continue;
                }
                if nexthop["unreachable"] == true || nexthop["blackhole"] == true {
                    target = Some(if nexthop["reject"] == true {
                        Target::Unreachable
                    } else if nexthop["admin-prohibited"] == true {
                        Target::Prohibit
                    } else {
                        Target::Blackhole
                    });
                    continue;
                }
                let ifindex = nexthop["interfaceIndex"].as_u64().unwrap_or(0) as u32;
                let gateway = nexthop["ip"].as_str().and_then(|s| s.parse().ok());
                let weight = nexthop["weight"].as_u64().unwrap_or(1).max(1) as u32;
                legs.push(Leg {
                    ifindex,
                    gateway,
                    weight,
                });
            }
            let target = target.unwrap_or(if legs.is_empty() {
                Target::Kernel
            } else {
                Target::Forward(legs)
            });
            routes.push((prefix, target));
        }
    }
    Ok(routes)
}

fn frr_rib(
    tables: &[u32],
    pathspace: Option<&str>,
    locals: Vec<(IpNet, Target)>,
) -> anyhow::Result<Vec<(IpNet, Target)>> {
    let mut by_prefix: std::collections::BTreeMap<IpNet, Target> = Default::default();
    // The first configured table wins, as in the daemon.
    for table in tables.iter().rev() {
        for family in ["ip", "ipv6"] {
            let command = if *table == 254 {
                format!("show {family} route json")
            } else {
                format!("show {family} route table {table} json")
            };
            for (prefix, target) in frr_installed_routes(&vtysh(pathspace, &command)?)? {
                by_prefix.insert(prefix, target);
            }
        }
    }
    // Local entries come from the kernel's addresses whatever the source.
    by_prefix.extend(locals);
    Ok(by_prefix.into_iter().collect())
}

pub fn run(options: &DiffOptions<'_>) -> anyhow::Result<DiffOutcome> {
    let view = PinnedMaps::open(options.pin_dir)?;
    let mut fpm_session = None;
    let (expected, neighbourhood) = match options.against {
        Against::Kernel => {
            let (rib, neighbourhood) = kernel_rib(options.tables.clone(), true)?;
            (rib.desired(&neighbourhood), neighbourhood)
        }
        Against::Frr => {
            let (rib, neighbourhood) = kernel_rib(options.tables.clone(), false)?;
            let expected = frr_rib(
                &options.tables,
                options.frr_pathspace,
                rib.desired(&neighbourhood),
            )?;
            (expected, neighbourhood)
        }
        Against::Fpm => {
            let view = query::route_view(options.pin_dir)?;
            if view.route_source != Source::Fpm {
                bail!("the daemon takes its routes from the kernel, not FPM; use --against kernel");
            }
            if !view.replay_complete {
                bail!("zebra's FPM replay is not complete yet; try again once it is");
            }
            fpm_session = Some(FpmSession {
                connected: view.fpm_connected,
                last_message_age_s: view.fpm_last_message_age_ms.map(|ms| ms as f64 / 1000.0),
                view_stale: !view.fpm_connected,
            });
            let (_, neighbourhood) = kernel_rib(options.tables.clone(), false)?;
            (view.routes, neighbourhood)
        }
    };
    let resolve = |key: &NexthopKey| {
        resolve_nexthop(
            key,
            neighbourhood.links.get(&key.ifindex),
            neighbourhood.neighbours.get(key),
        )
    };
    let bar = options.progress.then(|| {
        let bar = indicatif::ProgressBar::new(1);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "comparing IPv4 blocks {wide_bar} {percent:>3}% {elapsed}",
            )
            .expect("a valid template"),
        );
        bar
    });
    let mut progress = |done: u64, all: u64| {
        if let Some(bar) = &bar {
            bar.set_length(all);
            bar.set_position(done);
        }
    };
    let report = compare(&view, &expected, &resolve, &mut progress)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (vrf_ports, ingress) = compare_ingress(&view, &neighbourhood.links)?;
    Ok(DiffOutcome {
        summary: Summary {
            against: options.against,
            generation: view.generation.clone(),
            generation_source: view.source,
            generation_notes: view.notes.clone(),
            in_sync: report.in_sync() && ingress.is_empty(),
            compared_prefixes: report.compared_prefixes,
            compared_nexthops: report.compared_nexthops,
            missing: report.count(DriftKind::Missing),
            extra: report.count(DriftKind::Extra),
            different: report.count(DriftKind::Different),
            nexthops_different: report.nexthops.len(),
            vrf_ports,
            ingress_different: ingress.len(),
            fpm_session,
        },
        report,
        ingress,
    })
}

pub fn render(outcome: &DiffOutcome) -> String {
    let mut out = String::new();
    if let Some(session) = outcome
        .summary
        .fpm_session
        .as_ref()
        .filter(|s| s.view_stale)
    {
        out += &format!(
            "WARNING: zebra's FPM session is DOWN (last message {}): the daemon's FPM view is that old, routes zebra changed since are missing from it, and the comparison below cannot see them; compare with --against frr or --against kernel (exit 2)\n",
            session
                .last_message_age_s
                .map_or("never".to_string(), |s| format!("{s:.1} s ago"))
        );
    }
    for d in &outcome.report.drift {
        let kind = match d.kind {
            DriftKind::Missing => "missing",
            DriftKind::Extra => "extra",
            DriftKind::Different => "different",
        };
        out += &format!(
            "{kind:<10} {:<24} expected: {}  actual: {}\n",
            d.prefix.to_string(),
            d.expected,
            d.actual
        );
    }
    for n in &outcome.report.nexthops {
        out += &format!(
            "nexthop    {} ifindex {} (id {})  expected: {}  actual: {}\n",
            n.gateway, n.ifindex, n.id, n.expected, n.actual
        );
    }
    for i in &outcome.ingress {
        out += &format!(
            "ingress    {} (ifindex {})  expected: {}  actual: {}\n",
            i.interface.as_deref().unwrap_or("?"),
            i.ifindex,
            i.expected,
            i.actual
        );
    }
    let s = &outcome.summary;
    let against = match s.against {
        Against::Kernel => "the kernel FIB",
        Against::Frr => "FRR's RIB",
        Against::Fpm => "the daemon's FPM view",
    };
    out += &format!(
        "generation {} ({})\n",
        s.generation.display(),
        match s.generation_source {
            pins::LiveSource::Links => "the one the links run",
            pins::LiveSource::Newest => "the newest: no link is pinned, nothing runs it",
        }
    );
    for note in &s.generation_notes {
        out += &format!("note: {note}\n");
    }
    if s.vrf_ports > 0 || s.ingress_different > 0 {
        out += &format!(
            "{} ports in VRFs (or with a VLAN in one) checked against INGRESS: {} different\n",
            s.vrf_ports, s.ingress_different
        );
    }
    out += &format!(
        "{} prefixes and {} nexthops compared with {against}: {} missing, {} extra, {} different, {} nexthops different: {}\n",
        s.compared_prefixes,
        s.compared_nexthops,
        s.missing,
        s.extra,
        s.different,
        s.nexthops_different,
        if s.stale() {
            "view STALE (session down)"
        } else if s.in_sync {
            "in sync"
        } else {
            "DRIFT"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frr_json_gives_installed_routes_with_their_fib_nexthops_only() {
        let json = r#"{
          "198.51.100.0/24": [{"prefix": "198.51.100.0/24", "protocol": "static", "installed": true,
            "nexthops": [
              {"fib": true, "ip": "192.0.2.1", "afi": "ipv4", "interfaceIndex": 3, "active": true, "weight": 1},
              {"fib": true, "ip": "192.0.2.2", "afi": "ipv4", "interfaceIndex": 4, "active": true},
              {"ip": "192.0.2.9", "afi": "ipv4", "interfaceIndex": 4}
            ]}],
          "203.0.113.0/24": [
            {"protocol": "bgp", "selected": false, "nexthops": [{"ip": "192.0.2.7", "interfaceIndex": 3}]},
            {"protocol": "static", "installed": true, "nexthops": [{"fib": true, "unreachable": true, "blackhole": true}]}
          ],
          "203.0.113.0/25": [{"installed": true, "nexthops": [{"fib": true, "unreachable": true, "reject": true}]}],
          "192.0.2.0/24": [{"protocol": "connected", "installed": true,
            "nexthops": [{"fib": true, "directlyConnected": true, "interfaceIndex": 3}]}]
        }"#;
        let mut routes = frr_installed_routes(json).unwrap();
        routes.sort_by_key(|(p, _)| *p);
        let leg = |ifindex, gw: &str| Leg {
            ifindex,
            gateway: Some(gw.parse().unwrap()),
            weight: 1,
        };
        assert_eq!(
            routes,
            vec![
                (
                    "192.0.2.0/24".parse().unwrap(),
                    Target::Forward(vec![Leg {
                        ifindex: 3,
                        gateway: None,
                        weight: 1
                    }])
                ),
                (
                    "198.51.100.0/24".parse().unwrap(),
                    Target::Forward(vec![leg(3, "192.0.2.1"), leg(4, "192.0.2.2")])
                ),
                ("203.0.113.0/24".parse().unwrap(), Target::Blackhole),
                ("203.0.113.0/25".parse().unwrap(), Target::Unreachable),
            ]
        );
    }

    #[test]
    fn json_that_is_not_a_route_table_is_refused_with_a_reason() {
        assert!(frr_installed_routes("[]").is_err());
        let err = frr_installed_routes(r#"{"not a prefix": []}"#).unwrap_err();
        assert!(err.to_string().contains("not a prefix"), "{err}");
    }
}
