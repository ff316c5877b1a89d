//! Conformance tests of pf-control's `Controller`, from wire bytes to map
//! writes: each `*.script` under `wire/tests/conformance/` feeds recorded inputs (real FRR and kernel
//! captures) through [`Controller::step`] over maps in memory, and the
//! transcript (map writes, events, offload replies, go-live, heartbeats and
//! what the datapath would look up) must equal the `*.golden` beside it.
//! `PF_UPDATE_GOLDEN=1` rewrites the golden files; review their diff.
//!
//! Script lines (`#` starts a comment):
//! - `settings KEY=VALUE…`: once, first (see [`parse_settings`]);
//! - `at MS INPUT…`: an input at MS milliseconds after the start:
//!   - `kernel-dump FILE`: a resync (start, every message, done);
//!   - `kernel-failed TEXT`;
//!   - `fpm-connect PEER`, `fpm-frames FILE [first N]` (each FPM frame of
//!     the file, or its first N, in order, as zebra sent them), `fpm-close`;
//!   - `tick`, `heartbeat`;
//!   - `lookup ADDR…`: no input; prints what the maps answer for each, and
//!     the route the controller says they answer it from (`lookup`'s prefix).

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use ipnet::{Ipv4Net, Ipv6Net};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute},
    RouteNetlinkMessage,
};
use pf_common::{EcmpGroup, Nexthop, NexthopInfo, Port, RouteAction, RouteKind};

use pf_control::{
    controller::{Action, Controller, Input, KernelItem, Settings},
    dir24::{Covering, Dir24Error},
    fpm::FpmCodec,
    netlink::split_netlink_messages,
    programmer::{describe_action, fake::FakeMaps, Limits, MapWriter, Refusals},
    rib::Source,
};

/// Maps in memory that log every write, with its value, for the transcript.
struct Recorder {
    maps: FakeMaps,
    log: Vec<String>,
}

fn mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl MapWriter for Recorder {
    type Error = String;
    fn write_nexthop(&mut self, id: u32, slot: u32, nh: &Nexthop) -> Result<(), String> {
        self.log.push(format!(
            "nexthop {id} (slot {slot}): ifindex {} dmac {} smac {} mtu {} flags {:#x}",
            nh.tx_ifindex,
            mac(&nh.dmac),
            mac(&nh.smac),
            nh.mtu,
            nh.flags
        ));
        self.maps.write_nexthop(id, slot, nh)
    }
    fn write_nexthop_info(&mut self, id: u32, info: &NexthopInfo) -> Result<(), String> {
        self.maps.write_nexthop_info(id, info)
    }
    fn write_group(&mut self, id: u32, slot: u32, group: &EcmpGroup) -> Result<(), String> {
        let mut legs = group.buckets[..group.bucket_count as usize].to_vec();
        legs.sort_unstable();
        legs.dedup();
        self.log.push(format!(
            "group {id} (slot {slot}): {} legs, {} buckets over nexthops {legs:?}",
            group.leg_count, group.bucket_count
        ));
        self.maps.write_group(id, slot, group)
    }
    fn insert_v4(&mut self, prefix: Ipv4Net, action: RouteAction) -> Result<(), Dir24Error> {
        self.log
            .push(format!("route {prefix} → {}", describe_action(action)));
        self.maps.insert_v4(prefix, action)
    }
    fn remove_v4(&mut self, prefix: Ipv4Net, covering: Covering, last_in_block: bool) {
        self.log.push(format!("unroute {prefix}"));
        self.maps.remove_v4(prefix, covering, last_in_block)
    }
    fn rebuild_v4_block(
        &mut self,
        block: u32,
        covering: Covering,
        longer: &[(Ipv4Net, RouteAction)],
    ) -> Result<(), Dir24Error> {
        self.log.push(format!("rebuild block {block}"));
        self.maps.rebuild_v4_block(block, covering, longer)
    }
    fn insert_v6(
        &mut self,
        prefix: Ipv6Net,
        action: RouteAction,
    ) -> Result<(), pf_control::v6trie::V6TrieError> {
        self.log
            .push(format!("route {prefix} → {}", describe_action(action)));
        self.maps.insert_v6(prefix, action)
    }
    fn remove_v6(&mut self, prefix: Ipv6Net) {
        self.log.push(format!("unroute {prefix}"));
        self.maps.remove_v6(prefix)
    }
    fn retry_v6_slots(&mut self) -> Vec<u32> {
        self.maps.retry_v6_slots()
    }
    fn write_vlan_port(&mut self, ifindex: u32, port: Option<&Port>) -> Result<(), String> {
        self.log.push(match port {
            Some(p) => format!(
                "vlan port {ifindex}: tag {} (TPID {:#06x}) on {}",
                p.vlan_id, p.vlan_proto, p.tx_ifindex
            ),
            None => format!("vlan port {ifindex} forgotten"),
        });
        self.maps.write_vlan_port(ifindex, port)
    }
    fn write_ingress(&mut self, ifindex: u32, flags: u32) -> Result<(), String> {
        self.log
            .push(format!("ingress {ifindex}: flags {flags:#x}"));
        self.maps.write_ingress(ifindex, flags)
    }
    fn reclaim(&mut self) {
        self.maps.reclaim()
    }
    fn end_batch(&mut self) -> Refusals {
        self.maps.end_batch()
    }
    fn flush(&mut self) -> Refusals {
        self.maps.flush()
    }
}

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// `settings` keys: `source=fpm|kernel`, `offload_replies=on|off`,
/// `replay_quiet_ms`, `replay_max_ms`, `stale_after_ms`,
/// `wait_for_reconcile=on|off`, `fail_safe_at_start=on|off`, `events=on|off`.
fn parse_settings(words: &[&str]) -> Result<Settings, String> {
    let mut settings = Settings {
        route_source: Source::Fpm,
        tables: vec![254],
        offload_replies: false,
        replay_quiet: Duration::from_millis(500),
        replay_max: Duration::from_millis(30_000),
        stale_after: Duration::from_millis(60_000),
        record_events: false,
        wait_for_reconcile: false,
        fail_safe_at_start: false,
        limits: Limits {
            nexthops: 64,
            ecmp_groups: 16,
        },
    };
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("settings: {word:?} is not KEY=VALUE"))?;
        let on = || match value {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err(format!("settings: {key} is on or off, not {value:?}")),
        };
        let ms = || {
            value
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("settings: {key} is milliseconds, not {value:?}"))
        };
        match key {
            "source" => {
                settings.route_source = match value {
                    "fpm" => Source::Fpm,
                    "kernel" => Source::Kernel,
                    _ => return Err(format!("settings: source {value:?}")),
                }
            }
            "offload_replies" => settings.offload_replies = on()?,
            "replay_quiet_ms" => settings.replay_quiet = ms()?,
            "replay_max_ms" => settings.replay_max = ms()?,
            "stale_after_ms" => settings.stale_after = ms()?,
            "wait_for_reconcile" => settings.wait_for_reconcile = on()?,
            "fail_safe_at_start" => settings.fail_safe_at_start = on()?,
            "events" => settings.record_events = on()?,
            _ => return Err(format!("settings: unknown key {key:?}")),
        }
    }
    Ok(settings)
}

/// Each offload reply of a write to zebra, as one line.
fn describe_replies(bytes: &[u8]) -> Vec<String> {
    let mut buf = BytesMut::from(bytes);
    let mut lines = Vec::new();
    while let Ok(Some(frame)) = FpmCodec.decode(&mut buf) {
        for message in frame.messages() {
            let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(message) else {
                lines.push("an undecodable reply".into());
                continue;
            };
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) =
                message.payload
            else {
                lines.push(format!(
                    "a reply that is not a route: {:?}",
                    message.payload
                ));
                continue;
            };
            let destination = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
                RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
                _ => None,
            });
            let table = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            });
            lines.push(format!(
                "reply {}/{} table {} protocol {:?} flags {:?}",
                destination.map_or("-".into(), |d| d.to_string()),
                route.header.destination_prefix_length,
                table.unwrap_or(route.header.table.into()),
                route.header.protocol,
                route.header.flags
            ));
        }
    }
    lines
}

/// What the maps answer for `addr`, as the datapath would find it.
fn describe_lookup(maps: &FakeMaps, addr: IpAddr) -> String {
    let action = match addr {
        IpAddr::V4(a) => maps.lookup_v4(a).0,
        IpAddr::V6(a) => maps.lookup_v6(a),
    };
    let mut line = format!("lookup {addr} → {}", describe_action(action));
    match action.kind() {
        Some(RouteKind::Nexthop) => {
            if let Some(nh) = maps.nexthop_of(action) {
                let _ = write!(
                    line,
                    ": ifindex {} dmac {}{}",
                    nh.tx_ifindex,
                    mac(&nh.dmac),
                    if nh.is_resolved() {
                        ""
                    } else {
                        " (unresolved)"
                    }
                );
            }
        }
        Some(RouteKind::Group) => {
            let group = maps
                .grp_ptr
                .get(&action.index())
                .and_then(|slot| maps.groups.get(slot));
            if let Some(group) = group {
                let _ = write!(line, ": {} legs", group.leg_count);
            }
        }
        _ => {}
    }
    line
}

fn read_capture(script: &Path, name: &str) -> Result<Vec<u8>, String> {
    let path = script.parent().unwrap().join(name);
    std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs one script and returns its transcript.
fn run_script(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.split('#').next().unwrap().trim()))
        .filter(|(_, l)| !l.is_empty());
    let (_, first) = lines.next().ok_or("an empty script")?;
    let words: Vec<&str> = first.split_whitespace().collect();
    if words.first() != Some(&"settings") {
        return Err("the first line must be `settings …`".into());
    }
    let settings = parse_settings(&words[1..])?;
    let start = Instant::now();
    let recorder = Recorder {
        maps: FakeMaps::new(),
        log: Vec::new(),
    };
    let mut controller = Controller::new(settings, recorder, start);
    let mut out = String::new();
    for (number, line) in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let fail = |why: &str| format!("{}:{number}: {why}: {line}", path.display());
        let ["at", ms, command, args @ ..] = words.as_slice() else {
            return Err(fail("expected `at MS INPUT…`"));
        };
        let now = start + Duration::from_millis(ms.parse().map_err(|_| fail("bad time"))?);
        let _ = writeln!(
            out,
            "@{ms} {}",
            [*command]
                .iter()
                .chain(args)
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        );
        let inputs = match (*command, args) {
            ("kernel-dump", [file]) => {
                let bytes = read_capture(path, file)?;
                let mut items = vec![KernelItem::ResyncStart {
                    reason: "start".into(),
                }];
                items.extend(split_netlink_messages(&bytes).filter_map(pf_wire::kernel_item));
                items.push(KernelItem::ResyncDone);
                vec![Input::Kernel(items)]
            }
            ("kernel-failed", why) => vec![Input::Kernel(vec![KernelItem::Failed {
                error: why.join(" "),
            }])],
            ("fpm-connect", [peer]) => vec![Input::FpmConnected {
                peer: peer.to_string(),
            }],
            ("fpm-frames", [file, rest @ ..]) => {
                let mut buf = BytesMut::from(&read_capture(path, file)?[..]);
                let mut frames = Vec::new();
                while let Some(frame) = FpmCodec
                    .decode(&mut buf)
                    .map_err(|e| fail(&e.to_string()))?
                {
                    frames.push(Input::FpmFrame(pf_wire::decode_frame(&frame)));
                }
                if !buf.is_empty() {
                    return Err(fail("the capture ends inside a frame"));
                }
                match rest {
                    [] => {}
                    ["first", n] => frames.truncate(n.parse().map_err(|_| fail("bad count"))?),
                    _ => return Err(fail("expected `fpm-frames FILE [first N]`")),
                }
                frames
            }
            ("fpm-close", []) => vec![Input::FpmClosed],
            ("tick", []) => vec![Input::Tick],
            ("heartbeat", []) => vec![Input::Heartbeat],
            ("lookup", addrs) => {
                for addr in addrs.iter() {
                    let addr: IpAddr = addr.parse().map_err(|_| fail("bad address"))?;
                    let route = controller.route_for(addr);
                    let _ = writeln!(
                        out,
                        "  {} [route {}{}]",
                        describe_lookup(&controller.writer().maps, addr),
                        route.prefix.map_or("none".to_string(), |p| p.to_string()),
                        if route.deferred { ", deferred" } else { "" }
                    );
                }
                continue;
            }
            _ => return Err(fail("unknown input")),
        };
        for input in inputs {
            let actions = controller.step(now, input);
            for write in controller.writer_mut().log.drain(..) {
                let _ = writeln!(out, "  write {write}");
            }
            for action in actions {
                match action {
                    Action::Publish(event) => {
                        let json = serde_json::to_string(&event).unwrap();
                        let _ = writeln!(out, "  publish {json}");
                    }
                    Action::Reply(replies) => {
                        for (bytes, _) in pf_wire::offload::writes(&replies) {
                            for reply in describe_replies(&bytes) {
                                let _ = writeln!(out, "  {reply}");
                            }
                        }
                    }
                    Action::GoLive => out.push_str("  go-live\n"),
                    Action::Heartbeat => out.push_str("  heartbeat\n"),
                    Action::FollowLinks => out.push_str("  follow-links\n"),
                }
            }
        }
    }
    let status = controller.status(start);
    let _ = writeln!(
        out,
        "end: {} routes, {} nexthops, {} ECMP groups, {} decode errors, replay complete {}, offload replies {} ({} kernel, {} failed)",
        status.routes,
        status.nexthops,
        status.ecmp_groups,
        status.decode_errors,
        status.fpm_replay_complete,
        status.offload_replies_sent,
        status.offload_replies_kernel,
        status.offload_replies_failed
    );
    Ok(out)
}

#[test]
fn every_script_gives_its_golden_transcript() {
    let update = std::env::var_os("PF_UPDATE_GOLDEN").is_some();
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(conformance_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "script"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 5, "the conformance scripts are missing");
    let mut failures = Vec::new();
    for script in &scripts {
        let golden = script.with_extension("golden");
        let transcript = run_script(script).unwrap_or_else(|e| panic!("{e}"));
        if update {
            std::fs::write(&golden, &transcript).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if transcript != expected {
            let line = transcript
                .lines()
                .zip(expected.lines().chain(std::iter::repeat("<end of file>")))
                .enumerate()
                .find(|(_, (got, want))| got != want)
                .map(|(n, (got, want))| {
                    format!("line {}: got\n    {got}\n  expected\n    {want}", n + 1)
                })
                .unwrap_or_else(|| "the transcript is shorter than the golden file".into());
            failures.push(format!("{}: {line}", script.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "transcripts differ from their golden files (PF_UPDATE_GOLDEN=1 rewrites them):\n{}",
        failures.join("\n")
    );
}
