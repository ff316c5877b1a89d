//! Faults: zebra killed again and again during churn, an FPM session cut in
//! the middle of a frame, and tables too small for the routes.

mod support;

use std::{
    io::Write,
    net::TcpStream,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use integration_tests::{
    fpm_messages::{nexthop_message, route_message},
    frr::{Frr, FrrConfig},
    lab::Lab,
    require_root,
    synthetic::Rng,
};
use ipnet::IpNet;
use pf_control::fpm::frame;
use pf_sidecar::{pinned_maps::PinnedMaps, state::read_state};
use support::{Daemon, SIDECAR};

#[test]
fn zebra_killed_ten_times_during_churn_leaves_the_maps_equal_to_frr_after_each_replay() {
    require_root!();
    let lab = Lab::new("fzeb");
    let port = 25000 + (std::process::id() % 1000) as u16;
    let daemon = Daemon::start(SIDECAR, &lab, port, "fzeb");
    let mut frr = Frr::start(
        &lab.router,
        &FrrConfig {
            fpm_port: Some(port),
            zebra: &[],
            staticd: Some(&["ip route 203.0.113.0/24 198.51.100.2"]),
            bgpd: None,
        },
    );
    daemon.assert_diff_clean_everywhere(&frr.name, "the first replay");
    let mut rng = Rng(0xfa17_0001_dead_beef);
    let mut present: Vec<String> = Vec::new();
    for round in 1..=10 {
        // Churn: a handful of adds and deletes, then zebra dies while it is
        // still installing and streaming them.
        let mut lines = Vec::new();
        for _ in 0..6 {
            let slot = rng.next_u64() % 64;
            let prefix = format!("203.0.113.{}/30", slot * 4);
            let via = if rng.next_u64().is_multiple_of(2) {
                "198.51.100.2"
            } else {
                "198.51.100.66"
            };
            lines.push(format!("ip route {prefix} {via}"));
            present.push(lines.last().unwrap().clone());
        }
        for _ in 0..3 {
            if present.is_empty() {
                break;
            }
            let gone = present.remove((rng.next_u64() % present.len() as u64) as usize);
            lines.push(format!("no {gone}"));
        }
        let commands: Vec<&str> = lines.iter().map(String::as_str).collect();
        frr.configure(&commands);
        frr.kill("zebra");
        frr.restart("zebra", &["-M", "dplane_fpm_nl"]);
        let step = format!("zebra's restart {round} of 10");
        // The new zebra connects (it retries every 3 s) and replays.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !read_state(&daemon.pin_dir).is_some_and(|s| {
            s.fpm_sessions > round && s.control.fpm_connected && s.control.fpm_replay_complete
        }) {
            assert!(
                Instant::now() < deadline,
                "{step}: zebra never replayed\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon.assert_diff_clean_everywhere(&frr.name, &step);
    }
    let state = read_state(&daemon.pin_dir).expect("the daemon's state");
    assert!(
        state.fpm_sessions >= 11,
        "one session per zebra: {}",
        state.fpm_sessions
    );
    assert!(state.control.rib.resyncs >= 11);
}

fn kind_at(daemon: &Daemon, address: &str) -> String {
    PinnedMaps::open(&daemon.pin_dir)
        .and_then(|m| m.answer(address.parse().unwrap()))
        .map(|a| a.kind)
        .unwrap_or_default()
}

fn wait_for(what: &str, daemon: &Daemon, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_fpm_session_cut_mid_frame_applies_nothing_of_that_frame_and_the_next_replay_reconciles() {
    require_root!();
    let lab = Lab::new("fcut");
    let port = 24000 + (std::process::id() % 1000) as u16;
    let daemon = Daemon::start(SIDECAR, &lab, port, "fcut");
    let r1 = lab.router.ifindex("r1");
    let gateway = nexthop_message(1, r1, Some("198.51.100.2".parse().unwrap()), &[]);
    let first: IpNet = "203.0.113.0/25".parse().unwrap();
    let cut: IpNet = "203.0.113.128/25".parse().unwrap();
    let replayed: IpNet = "198.51.100.128/26".parse().unwrap();

    let mut session = daemon.connect_fpm(&lab.router, port);
    session
        .write_all(&frame(&[&gateway, &route_message(first, 1)]))
        .unwrap();
    let whole = frame(&[&route_message(cut, 1)]);
    session.write_all(&whole[..whole.len() - 7]).unwrap();
    wait_for("the first frame was applied", &daemon, || {
        kind_at(&daemon, "203.0.113.1") == "Nexthop"
    });
    drop(session);
    wait_for("the cut was counted", &daemon, || {
        read_state(&daemon.pin_dir)
            .is_some_and(|s| s.control.fpm_frame_errors == 1 && !s.control.fpm_connected)
    });
    assert_eq!(
        kind_at(&daemon, "203.0.113.200"),
        "Miss",
        "nothing of the cut frame was applied"
    );
    assert!(
        daemon.log().contains("bad FPM frame"),
        "the cut is logged:\n{}",
        daemon.log()
    );

    // zebra reconnects and replays what it has now: the first route is gone.
    let mut session = daemon.connect_fpm(&lab.router, port);
    session
        .write_all(&frame(&[&gateway, &route_message(replayed, 1)]))
        .unwrap();
    wait_for("the replay was swept", &daemon, || {
        read_state(&daemon.pin_dir)
            .is_some_and(|s| s.control.fpm_replay_complete && s.fpm_sessions == 2)
    });
    assert_eq!(kind_at(&daemon, "198.51.100.130"), "Nexthop");
    assert_eq!(
        kind_at(&daemon, "203.0.113.1"),
        "Miss",
        "the route missing from the replay was swept"
    );
}

#[test]
fn full_tables_leave_the_overflow_to_the_kernel_count_it_and_never_use_a_wrong_nexthop() {
    require_root!();
    let lab = Lab::new("ffull");
    // Two nexthop ids only: the third gateway cannot get one.
    let daemon = Daemon::start_with(
        SIDECAR,
        &lab,
        "[routes]\nfrom = \"kernel\"\n[capacity]\nnexthops = 3\n",
        "ffull",
    );
    let r = &lab.router;
    r.ip(&["route", "add", "203.0.113.0/26", "via", "198.51.100.2"]);
    r.ip(&["route", "add", "203.0.113.64/26", "via", "198.51.100.66"]);
    r.ip(&["route", "add", "203.0.113.128/26", "via", "198.51.100.3"]);
    wait_for("the routes were programmed", &daemon, || {
        read_state(&daemon.pin_dir).is_some_and(|s| s.control.programmer.overflow_nexthops >= 1)
    });
    assert_eq!(kind_at(&daemon, "203.0.113.10"), "Nexthop");
    assert_eq!(kind_at(&daemon, "203.0.113.70"), "Nexthop");
    assert_eq!(
        kind_at(&daemon, "203.0.113.130"),
        "Fib",
        "the route without a nexthop entry goes to bpf_fib_lookup, not to another route's nexthop"
    );
    let lookup = std::process::Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &lab.router.name, "--pin-dir"])
        .arg(&daemon.pin_dir)
        .args(["lookup", "203.0.113.130"])
        .output()
        .unwrap();
    assert_eq!(
        lookup.status.code(),
        Some(0),
        "maps and kernel agree: {}",
        String::from_utf8_lossy(&lookup.stdout)
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &lab.router.name, "--pin-dir"])
        .arg(&daemon.pin_dir)
        .args(["status", "--json", "--rate-interval-ms", "0"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        status["daemon"]["programmer"]["overflow_nexthops"]
            .as_u64()
            .unwrap()
            >= 1,
        "{status}"
    );
    // diff names the prefix the maps leave to the kernel.
    let (code, json, _) = daemon.diff("kernel", None);
    assert_eq!(code, 1);
    let drift = json.unwrap()["drift"].clone();
    assert_eq!(drift.as_array().unwrap().len(), 1, "{drift}");
    assert_eq!(drift[0]["prefix"], "203.0.113.128/26");
    assert_eq!(drift[0]["actual"]["kind"], "kernel");

    // Freeing a nexthop lets the next change of that route take it.
    r.ip(&["route", "del", "203.0.113.64/26"]);
    wait_for("the freed id was reclaimed", &daemon, || {
        kind_at(&daemon, "203.0.113.70") == "Miss"
    });
    std::thread::sleep(Duration::from_millis(200));
    r.ip(&["route", "del", "203.0.113.128/26"]);
    r.ip(&["route", "add", "203.0.113.128/26", "via", "198.51.100.3"]);
    wait_for("the overflowed route got a nexthop", &daemon, || {
        kind_at(&daemon, "203.0.113.130") == "Nexthop"
    });
    daemon.assert_diff_clean("kernel", None, "after room was made");
}

#[test]
fn a_deferred_ipv4_block_is_installed_once_a_second_level_group_frees_up() {
    require_root!();
    let lab = Lab::new("fgrp");
    // Three second-level groups: the router's own /32s in 127.0.0.0/24,
    // 192.0.2.0/24 and 198.51.100.0/24 take all of them.
    let daemon = Daemon::start_with(
        SIDECAR,
        &lab,
        "[routes]\nfrom = \"kernel\"\n[capacity]\ntbl8_groups = 3\n",
        "fgrp",
    );
    let r = &lab.router;
    wait_for("the kernel dump was applied", &daemon, || {
        read_state(&daemon.pin_dir)
            .is_some_and(|s| s.control.kernel_synced && s.v4_tbl8_groups == 3)
    });
    assert_eq!(
        read_state(&daemon.pin_dir).map(|s| s.control.programmer.deferred_v4),
        Some(0),
        "the router's own addresses fit"
    );
    r.ip(&["route", "add", "203.0.113.0/26", "via", "198.51.100.2"]);
    wait_for("the /26 was deferred", &daemon, || {
        read_state(&daemon.pin_dir).is_some_and(|s| s.control.programmer.deferred_v4 == 1)
    });
    assert_eq!(
        kind_at(&daemon, "203.0.113.10"),
        "Fib",
        "a prefix without a group goes to bpf_fib_lookup"
    );
    // The client-side address goes: its block no longer needs a group.
    r.ip(&["addr", "del", "192.0.2.1/24", "dev", "r0"]);
    wait_for("the deferred block got the freed group", &daemon, || {
        kind_at(&daemon, "203.0.113.10") == "Nexthop"
    });
    // The state file follows at the next heartbeat.
    wait_for("status counts no deferred prefix", &daemon, || {
        read_state(&daemon.pin_dir).is_some_and(|s| s.control.programmer.deferred_v4 == 0)
    });
    daemon.assert_diff_clean("kernel", None, "after the block was installed");
}

/// `count` distinct IPv4 /24s from 1.0.0.0 up: a table is larger than the
/// documentation prefixes, and these are only map entries, never traffic.
fn table(count: u32) -> Vec<IpNet> {
    (0..count)
        .map(|i| {
            let block = 0x0100_0000 + i * 256;
            IpNet::new(std::net::Ipv4Addr::from(block).into(), 24).unwrap()
        })
        .collect()
}

/// zebra's replay: the gateway object, the server's route, then the table.
/// Returns how many of the table's routes were written before the session
/// broke; `progress` follows the count as it goes.
fn replay(stream: &mut TcpStream, r1: u32, messages: &[Vec<u8>], progress: &AtomicUsize) -> usize {
    let gateway = nexthop_message(1, r1, Some("198.51.100.2".parse().unwrap()), &[]);
    let server = route_message("203.0.113.0/24".parse().unwrap(), 1);
    stream.write_all(&frame(&[&gateway, &server])).unwrap();
    let mut written = 0;
    for chunk in messages.chunks(500) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        if stream.write_all(&frame(&refs)).is_err() {
            break;
        }
        written += chunk.len();
        progress.store(written, Ordering::Relaxed);
    }
    written
}

#[test]
fn the_sidecar_killed_during_a_full_table_load_loses_no_traffic_and_reconciles_on_restart() {
    require_root!();
    let lab = Lab::new("fload");
    let port = 23000 + (std::process::id() % 1000) as u16;
    let mut daemon = Daemon::start(SIDECAR, &lab, port, "fload");
    let r1 = lab.router.ifindex("r1");
    // The kernel's own route to the server (the lab's upstreams answer for
    // 203.0.113.10), for whatever the maps leave to bpf_fib_lookup.
    lab.router
        .ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2"]);
    let routes: Vec<Vec<u8>> = table(300_000)
        .iter()
        .map(|p| route_message(*p, 1))
        .collect();

    let mut zebra = daemon.connect_fpm(&lab.router, port);
    replay(&mut zebra, r1, &routes, &AtomicUsize::new(0));
    wait_for("the first load", &daemon, || {
        read_state(&daemon.pin_dir).is_some_and(|s| {
            s.control.fpm_replay_complete && s.control.programmer.routes_v4 >= 300_000
        })
    });
    assert_eq!(kind_at(&daemon, "203.0.113.10"), "Nexthop");

    // A steady flow: 1500 pings 5 ms apart.
    let ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client.name,
            "ping",
            "-q",
            "-c",
            "1500",
            "-i",
            "0.005",
            "-W",
            "1",
            "203.0.113.10",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // zebra reconnects and replays the full table; the sidecar dies in the middle.
    drop(zebra);
    // One session at a time: the next is accepted once this one is gone.
    wait_for("the first session closed", &daemon, || {
        read_state(&daemon.pin_dir).is_some_and(|s| !s.control.fpm_connected)
    });
    let mut zebra = daemon.connect_fpm(&lab.router, port);
    let progress = Arc::new(AtomicUsize::new(0));
    let streamer = {
        let routes = routes.clone();
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || replay(&mut zebra, r1, &routes, &progress))
    };
    // Killed a third of the way in, whatever the machine's speed (a fixed
    // delay let a fast machine finish the table first).
    let started = Instant::now();
    while progress.load(Ordering::Relaxed) < routes.len() / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "zebra's replay did not get a third of the way in 30 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill_and_restart();
    let written = streamer.join().unwrap();
    assert!(
        written < routes.len(),
        "the daemon died only after zebra had sent the table"
    );

    // The new daemon adopts the pins; zebra reconnects and replays again.
    let mut zebra = daemon.connect_fpm(&lab.router, port);
    replay(&mut zebra, r1, &routes[..250_000], &AtomicUsize::new(0));
    wait_for("the restarted daemon's replay", &daemon, || {
        read_state(&daemon.pin_dir)
            .is_some_and(|s| s.control.fpm_replay_complete && s.control.taken_over)
    });
    daemon.assert_diff_clean("fpm", None, "after the restart's replay");
    // Route 250,000 (4.208.144.0/24) and later were left out of the last replay.
    assert_eq!(
        kind_at(&daemon, "4.208.144.1"),
        "Miss",
        "a route the last replay left out was swept"
    );
    assert_eq!(kind_at(&daemon, "1.0.0.1"), "Nexthop");

    let output = ping.wait_with_output().unwrap();
    let (summary, sent, received) = integration_tests::ping_summary(&output.stdout);
    println!(
        "the daemon died after zebra had written {written} of {} routes; the flow: {summary}",
        routes.len()
    );
    assert_eq!(sent, 1500, "the ping ran to the end: {summary}");
    assert!((sent - received) * 100 <= sent, "{summary}");
}
