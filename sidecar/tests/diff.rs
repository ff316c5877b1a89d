//! `pf-sidecar diff` driven as a binary against a running daemon: clean
//! after sync, then each kind of drift made by writing the pinned maps
//! behind the daemon's back, with the JSON schema and exit codes checked.

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use integration_tests::{lab::Lab, require_root};
use pf_common::{
    layout::{Tbl24Element, V6LeafPair, V6Next, V6Node, V6TopEntry},
    maps as names, RouteAction, RouteKind,
};
use serde_json::Value;
use support::{Daemon, SIDECAR};

const KERNEL_SOURCE: &str = "[routes]\nfrom = \"kernel\"\n";

/// Runs `pf-sidecar diff --json` in the router; the exit code and the JSON
/// (none when it could not compare).
fn try_diff(lab: &Lab, daemon: &Daemon) -> (i32, Option<Value>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &lab.router.name, "--pin-dir"])
        .arg(&daemon.pin_dir)
        .args(["diff", "--json"])
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_slice(&output.stdout).ok(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn diff(lab: &Lab, daemon: &Daemon) -> (i32, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &lab.router.name, "--pin-dir"])
        .arg(&daemon.pin_dir)
        .args(["diff", "--json"])
        .output()
        .unwrap();
    let code = output.status.code().unwrap_or(-1);
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "diff printed no JSON ({e}), exit {code}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (code, json)
}

fn wait_in_sync(lab: &Lab, daemon: &Daemon, step: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, json, stderr) = try_diff(lab, daemon);
        if let (0, Some(json)) = (code, &json) {
            return json.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{step}: diff never became clean (exit {code}): {json:#?} {stderr}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn drift_of(json: &Value) -> Vec<(String, String)> {
    json["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["prefix"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn generation(daemon: &Daemon) -> std::path::PathBuf {
    pf_sidecar::datapath::pins::current_generation(&daemon.pin_dir).expect("a live generation")
}

fn set_block(daemon: &Daemon, prefix24: [u8; 3], action: RouteAction) {
    let data = MapData::from_pin(generation(daemon).join(names::V4_TBL24)).unwrap();
    let mut tbl24: Array<MapData, Tbl24Element> = Map::Array(data).try_into().unwrap();
    let block = u32::from_be_bytes([0, prefix24[0], prefix24[1], prefix24[2]]);
    let mut element = tbl24.get(&(block >> 1), 0).unwrap();
    element[(block & 1) as usize] = action.0;
    tbl24.set(block >> 1, element, 0).unwrap();
}

fn block_action(daemon: &Daemon, prefix24: [u8; 3]) -> RouteAction {
    let data = MapData::from_pin(generation(daemon).join(names::V4_TBL24)).unwrap();
    let tbl24: Array<MapData, Tbl24Element> = Map::Array(data).try_into().unwrap();
    let block = u32::from_be_bytes([0, prefix24[0], prefix24[1], prefix24[2]]);
    RouteAction(tbl24.get(&(block >> 1), 0).unwrap()[(block & 1) as usize])
}

fn pinned_array<T: aya::Pod>(daemon: &Daemon, name: &str) -> Array<MapData, T> {
    let data = MapData::from_pin(generation(daemon).join(name)).unwrap();
    Map::Array(data).try_into().unwrap()
}

/// Sets the head and cover of the IPv6 trie's /22 slot `slot`.
fn set_v6_top(daemon: &Daemon, slot: u32, entry: V6TopEntry) {
    pinned_array::<V6TopEntry>(daemon, names::V6_TOP)
        .set(slot, entry, 0)
        .unwrap();
}

/// Overwrites the action the IPv6 trie answers `addr` with (in its leaf,
/// or in the node that holds it), found by walking the pinned arrays as
/// the datapath does.
fn set_v6_leaf(daemon: &Daemon, addr: std::net::Ipv6Addr, action: RouteAction) {
    let addr = u128::from(addr);
    let top = pinned_array::<V6TopEntry>(daemon, names::V6_TOP);
    let mut nodes = pinned_array::<V6Node>(daemon, names::V6_NODES);
    let head = RouteAction(top.get(&pf_control::v6trie::slot_of(addr), 0).unwrap()[0]);
    assert_eq!(head.kind(), Some(RouteKind::Tbl8), "the slot has a trie");
    let mut index = head.index();
    let mut offset = names::V6_TOP_BITS;
    loop {
        let mut node = nodes.get(&index, 0).unwrap();
        // A compressed node's left-out steps match: `addr` is in the table.
        offset += node.skip_strides() * names::V6_STRIDE;
        let v = ((addr << offset) >> 122) as u32;
        match node.next(v) {
            V6Next::Child(child) => index = child,
            V6Next::Leaf(leaf) => {
                let mut leaves = pinned_array::<V6LeafPair>(daemon, names::V6_LEAVES);
                let mut pair = leaves.get(&(leaf / 2), 0).unwrap();
                pair[(leaf % 2) as usize] = action.0;
                leaves.set(leaf / 2, pair, 0).unwrap();
                return;
            }
            V6Next::Action(_) => {
                if node.runs >> v & 1 != 0 {
                    node.first_child = action.0;
                } else {
                    node.first_leaf = action.0;
                }
                nodes.set(index, node, 0).unwrap();
                return;
            }
        }
        offset += names::V6_STRIDE;
    }
}

#[test]
fn diff_is_clean_after_sync_and_names_every_kind_of_drift_in_the_pinned_maps() {
    require_root!();
    let lab = Lab::new("diff");
    let daemon = Daemon::start_with(SIDECAR, &lab, KERNEL_SOURCE, "diff");
    let r = &lab.router;
    r.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2"]);
    r.ip(&[
        "route",
        "add",
        "198.51.100.128/25",
        "nexthop",
        "via",
        "198.51.100.2",
        "nexthop",
        "via",
        "198.51.100.66",
        "weight",
        "3",
    ]);
    r.ip(&["route", "add", "blackhole", "192.0.2.128/25"]);
    r.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:ff::/48",
        "via",
        "2001:db8:2::2",
    ]);
    r.ip(&[
        "neigh",
        "replace",
        "198.51.100.2",
        "lladdr",
        "02:00:00:00:01:02",
        "dev",
        "r1",
    ]);

    let clean = wait_in_sync(&lab, &daemon, "after the daemon synced");
    let summary = &clean["summary"];
    for key in [
        "against",
        "generation",
        "in_sync",
        "compared_prefixes",
        "compared_nexthops",
        "missing",
        "extra",
        "different",
        "nexthops_different",
    ] {
        assert!(!summary[key].is_null(), "summary lacks {key}: {clean:#}");
    }
    assert_eq!(summary["in_sync"], true);
    assert_eq!(summary["against"], "kernel");
    assert!(summary["compared_prefixes"].as_u64().unwrap() >= 5);
    assert_eq!(summary["compared_nexthops"], 3, "{clean:#}");
    assert!(clean["drift"].as_array().unwrap().is_empty());
    assert!(clean["nexthops"].as_array().unwrap().is_empty());

    // An extra entry: a blackhole for a /24 no route covers, and an IPv6
    // prefix no route names.
    set_block(
        &daemon,
        [100, 64, 1],
        RouteAction::simple(RouteKind::Blackhole),
    );
    // 3fff::/20 (documentation) lies in a /22 slot nothing routes.
    let extra6 = pf_control::v6trie::slot_of(0x3fff_u128 << 112);
    set_v6_top(
        &daemon,
        extra6,
        [RouteAction::simple(RouteKind::Blackhole).0, 0],
    );
    let (code, json) = diff(&lab, &daemon);
    assert_eq!(code, 1, "drift exits 1: {json:#}");
    assert_eq!(json["summary"]["in_sync"], false);
    assert_eq!(
        drift_of(&json),
        vec![
            ("extra".to_owned(), "100.64.1.0/24".to_owned()),
            ("extra".to_owned(), "3fff::/22".to_owned()),
        ]
    );
    let entry = &json["drift"][0];
    assert_eq!(entry["expected"]["kind"], "kernel");
    assert_eq!(entry["actual"]["kind"], "blackhole");
    set_block(&daemon, [100, 64, 1], RouteAction::MISS);
    set_v6_top(&daemon, extra6, [0, 0]);
    wait_in_sync(&lab, &daemon, "after the extra entries were taken out");

    // A missing route and a wrong nexthop: the IPv6 route's entry is deleted,
    // and 203.0.113.0/24 is pointed at the ECMP group of another route.
    set_v6_leaf(&daemon, "2001:db8:ff::".parse().unwrap(), RouteAction::MISS);
    let group = block_action(&daemon, [198, 51, 100]);
    let group = if group.kind() == Some(RouteKind::Tbl8) {
        let data = MapData::from_pin(generation(&daemon).join(names::V4_TBL8)).unwrap();
        let tbl8: Array<MapData, pf_common::layout::Tbl8Group> =
            Map::Array(data).try_into().unwrap();
        RouteAction(tbl8.get(&group.index(), 0).unwrap()[200])
    } else {
        group
    };
    assert_eq!(group.kind(), Some(RouteKind::Group));
    set_block(&daemon, [203, 0, 113], group);
    let (code, json) = diff(&lab, &daemon);
    assert_eq!(code, 1);
    assert_eq!(
        drift_of(&json),
        vec![
            ("missing".to_owned(), "2001:db8:ff::/48".to_owned()),
            ("different".to_owned(), "203.0.113.0/24".to_owned()),
        ]
    );
    let different = &json["drift"][1];
    assert_eq!(different["expected"]["kind"], "forward");
    assert_eq!(
        different["expected"]["paths"][0]["gateway"], "198.51.100.2",
        "{different:#}"
    );
    assert_eq!(different["actual"]["paths"].as_array().unwrap().len(), 2);
    assert_eq!(json["summary"]["missing"], 1);
    assert_eq!(json["summary"]["different"], 1);

    // Could not compare: no datapath pinned where it is asked for.
    let output = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args([
            "--netns",
            &lab.router.name,
            "--pin-dir",
            "/sys/fs/bpf/pf-test-nothing-here",
        ])
        .args(["diff", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no datapath is pinned"), "{stderr}");
}
