//! Faults: zebra killed again and again during churn, an FPM session cut in
//! the middle of a frame, and tables too small for the routes.

mod support;

use std::{
    io::Write,
    net::TcpStream,
    time::{Duration, Instant},
};

use integration_tests::{
    fpm_messages::{nexthop_message, route_message},
    frr::{Frr, FrrConfig},
    lab::Lab,
    require_root,
};
use ipnet::IpNet;
use pf_sidecar::{control::fpm::frame, daemon::read_state, inspect::PinnedMaps};
use support::Daemon;

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn zebra_killed_ten_times_during_churn_leaves_the_maps_equal_to_frr_after_each_replay() {
    require_root!();
    let lab = Lab::new("fzeb");
    let port = 25000 + (std::process::id() % 1000) as u16;
    let daemon = Daemon::start(&lab, port, "fzeb");
    let mut frr = Frr::start(
        &lab.router,
        &FrrConfig {
            fpm_port: Some(port),
            zebra: &[],
            staticd: Some(&["ip route 203.0.113.0/24 198.51.100.2"]),
            bgpd: None,
        },
    );
    for against in ["frr", "fpm", "kernel"] {
        daemon.assert_diff_clean(against, Some(&frr.name), "the first replay");
    }
    let mut rng = XorShift(0xfa17_0001_dead_beef);
    let mut present: Vec<String> = Vec::new();
    for round in 1..=10 {
        // Churn: a handful of adds and deletes, then zebra dies while it is
        // still installing and streaming them.
        let mut lines = Vec::new();
        for _ in 0..6 {
            let slot = rng.next() % 64;
            let prefix = format!("203.0.113.{}/30", slot * 4);
            let via = if rng.next().is_multiple_of(2) {
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
            let gone = present.remove((rng.next() % present.len() as u64) as usize);
            lines.push(format!("no {gone}"));
        }
        let commands: Vec<&str> = lines.iter().map(String::as_str).collect();
        frr.configure(&commands);
        frr.kill("zebra");
        frr.restart("zebra", &["-M", "dplane_fpm_nl"]);
        let step = format!("zebra's restart {round} of 10");
        for against in ["frr", "fpm", "kernel"] {
            daemon.assert_diff_clean(against, Some(&frr.name), &step);
        }
    }
    let state = read_state(&daemon.pin_dir).expect("the daemon's state");
    assert!(
        state.fpm_sessions >= 11,
        "one session per zebra: {}",
        state.fpm_sessions
    );
    assert!(state.rib.resyncs >= 11);
}

fn connect(lab: &Lab, port: u16, daemon: &Daemon) -> TcpStream {
    lab.router.enter(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => return s,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "the FPM listener never opened: {e}\n{}",
                    daemon.log()
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
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
    let daemon = Daemon::start(&lab, port, "fcut");
    let r1 = lab.router.ifindex("r1");
    let gateway = nexthop_message(1, r1, Some("198.51.100.2".parse().unwrap()), &[]);
    let first: IpNet = "203.0.113.0/25".parse().unwrap();
    let cut: IpNet = "203.0.113.128/25".parse().unwrap();
    let replayed: IpNet = "198.51.100.128/26".parse().unwrap();

    let mut session = connect(&lab, port, &daemon);
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
        read_state(&daemon.pin_dir).is_some_and(|s| s.fpm_frame_errors == 1 && !s.fpm_connected)
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
    let mut session = connect(&lab, port, &daemon);
    session
        .write_all(&frame(&[&gateway, &route_message(replayed, 1)]))
        .unwrap();
    wait_for("the replay was swept", &daemon, || {
        read_state(&daemon.pin_dir).is_some_and(|s| s.fpm_replay_complete && s.fpm_sessions == 2)
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
        &lab,
        "[routes]\nfrom = \"kernel\"\n[capacity]\nnexthops = 3\n",
        "ffull",
    );
    let r = &lab.router;
    r.ip(&["route", "add", "203.0.113.0/26", "via", "198.51.100.2"]);
    r.ip(&["route", "add", "203.0.113.64/26", "via", "198.51.100.66"]);
    r.ip(&["route", "add", "203.0.113.128/26", "via", "198.51.100.3"]);
    wait_for("the routes were programmed", &daemon, || {
        read_state(&daemon.pin_dir).is_some_and(|s| s.programmer.overflow_nexthops >= 1)
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
