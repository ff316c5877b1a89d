//! Who may feed routes, what a session must show before it replaces any,
//! and how long routes outlive their source (issue 14, items 1 to 3):
//!
//! - a user other than zebra's (or root) connecting to the FPM port while
//!   zebra is away is refused before a byte is read: its route never
//!   reaches the maps, and the refusal is counted and logged once;
//! - a session that sends nothing, or a frame one byte at a time, sweeps
//!   nothing and is dropped after its bound;
//! - with FRR stopped (zebra removes its kernel routes), traffic to its
//!   prefix stops being forwarded from the cache once `routes.stale_after_ms`
//!   has passed, and zebra's return puts the route back.

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    fpm_messages::{nexthop_message, route_message},
    frr::{Frr, FrrConfig},
    lab::{Lab, SERVER_V4},
    require_root,
};
use ipnet::IpNet;
use pf_control::fpm::frame;
use pf_sidecar::{pinned_maps::PinnedMaps, state::read_state};
use support::{converge, lab_addresses, Daemon, SIDECAR};

fn kind_at(daemon: &Daemon, address: &str) -> String {
    PinnedMaps::open(&daemon.pin_dir)
        .and_then(|m| m.answer(address.parse().unwrap()))
        .map(|a| a.kind)
        .unwrap_or_default()
}

fn wait_for(what: &str, daemon: &Daemon, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn state(daemon: &Daemon) -> pf_sidecar::state::DaemonState {
    read_state(&daemon.pin_dir).expect("the daemon's state")
}

/// `pf-sidecar status --json` in the router.
fn status(lab: &Lab, daemon: &Daemon) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &lab.router.name, "--pin-dir"])
        .arg(&daemon.pin_dir)
        .args(["status", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn counter(status: &serde_json::Value, name: &str) -> u64 {
    status["counters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .and_then(|c| c["value"].as_u64())
        .unwrap_or(0)
}

/// The metrics page, from the router's loopback.
fn metrics(lab: &Lab) -> String {
    lab.router.enter(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = TcpStream::connect("127.0.0.1:9469") {
                stream
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: pf\r\n\r\n")
                    .unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).unwrap();
                return response;
            }
            assert!(Instant::now() < deadline, "no metrics endpoint");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// A child process killed when the test ends, however it ends.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port(base: u16) -> u16 {
    base + (std::process::id() % 1000) as u16
}

#[test]
fn a_user_other_than_zebras_cannot_install_a_route_while_zebra_is_away() {
    require_root!();
    let lab = Lab::new("gusr");
    let port = port(21000);
    let daemon = Daemon::start_with(
        SIDECAR,
        &lab,
        &format!("[fpm]\nlisten = \"127.0.0.1:{port}\"\nreplay_quiet_ms = 300\n"),
        "gusr",
    );
    wait_for(
        "the daemon synced",
        &daemon,
        Duration::from_secs(15),
        || read_state(&daemon.pin_dir).is_some_and(|s| s.control.kernel_synced),
    );
    // The route an attacker wants: the server's /24 through up1.
    let r1 = lab.router.ifindex("r1");
    let hijack = frame(&[
        &nexthop_message(1, r1, Some("198.51.100.2".parse().unwrap()), &[]),
        &route_message("203.0.113.0/24".parse().unwrap(), 1),
    ]);
    let file = std::env::temp_dir().join(format!("pf-test-hijack-{}.bin", std::process::id()));
    std::fs::write(&file, &hijack).unwrap();
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} || exit 3; cat {} >&3; sleep 0.5; exit 0",
        file.display()
    );
    // nobody (65534) connects five times, writes the frame, holds the socket.
    const ATTEMPTS: u64 = 5;
    for _ in 0..ATTEMPTS {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.router.name])
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "bash",
                "-c",
                &script,
            ])
            .output()
            .unwrap();
        assert_ne!(
            out.status.code(),
            Some(3),
            "nobody could not even connect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            kind_at(&daemon, SERVER_V4),
            "Miss",
            "nobody's route reached the maps"
        );
    }
    // Long enough for a replay to have been declared and applied.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(kind_at(&daemon, SERVER_V4), "Miss", "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&file);

    wait_for(
        "every refusal counted",
        &daemon,
        Duration::from_secs(5),
        || state(&daemon).fpm_refused_user == ATTEMPTS,
    );
    let s = state(&daemon);
    assert_eq!(
        (s.fpm_sessions, s.control.fpm_connected),
        (0, false),
        "no session was ever opened"
    );
    assert!(s.fpm_allowed_uids.contains(&0), "{:?}", s.fpm_allowed_uids);
    assert!(!s.fpm_allowed_uids.contains(&65534));
    let log = daemon.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("FPM connection refused"))
        .count();
    assert_eq!(lines, 1, "one line for five refusals within 15 s:\n{log}");
    assert!(
        log.contains("uid 65534 is not in fpm.allowed_users"),
        "{log}"
    );
    let status = status(&lab, &daemon);
    assert_eq!(status["daemon"]["fpm_refused_user"], ATTEMPTS, "{status}");
    let page = metrics(&lab);
    assert!(
        page.contains(&format!(
            "pf_sidecar_fpm_sessions_refused_total{{reason=\"user\"}} {ATTEMPTS}\n"
        )),
        "{page}"
    );

    // The same bytes from root (an allowed user) are a route: the refusal,
    // not the frame, kept it out.
    let mut root = daemon.connect_fpm(&lab.router, port);
    root.write_all(&hijack).unwrap();
    wait_for(
        "root's route is installed",
        &daemon,
        Duration::from_secs(10),
        || kind_at(&daemon, SERVER_V4) == "Nexthop",
    );
}

#[test]
fn a_silent_or_trickling_session_sweeps_nothing_and_is_dropped_after_its_bound() {
    require_root!();
    let lab = Lab::new("gsil");
    let port = port(22000);
    let daemon = Daemon::start_with(
        SIDECAR,
        &lab,
        &format!(
            "[fpm]\nlisten = \"127.0.0.1:{port}\"\nreplay_quiet_ms = 300\nreplay_max_ms = 1500\n\
             idle_timeout_ms = 2500\nframe_timeout_ms = 1500\n[routes]\nstale_after_ms = 120000\n"
        ),
        "gsil",
    );
    let r1 = lab.router.ifindex("r1");
    let gateway = nexthop_message(1, r1, Some("198.51.100.2".parse().unwrap()), &[]);
    let kept: IpNet = "203.0.113.0/24".parse().unwrap();

    // zebra's session: one route, replayed and swept, then zebra goes.
    let mut zebra = daemon.connect_fpm(&lab.router, port);
    zebra
        .write_all(&frame(&[&gateway, &route_message(kept, 1)]))
        .unwrap();
    wait_for("zebra's replay", &daemon, Duration::from_secs(10), || {
        read_state(&daemon.pin_dir).is_some_and(|s| s.control.fpm_replay_complete)
            && kind_at(&daemon, SERVER_V4) == "Nexthop"
    });
    drop(zebra);
    wait_for("zebra gone", &daemon, Duration::from_secs(5), || {
        !state(&daemon).control.fpm_connected
    });
    let swept_before = state(&daemon).control.rib.swept;

    // A session that sends nothing, past replay_quiet_ms and replay_max_ms.
    let connected = Instant::now();
    let silent = daemon.connect_fpm(&lab.router, port);
    wait_for(
        "the silent session",
        &daemon,
        Duration::from_secs(5),
        || state(&daemon).control.fpm_connected,
    );
    while connected.elapsed() < Duration::from_millis(2200) {
        assert_eq!(
            kind_at(&daemon, SERVER_V4),
            "Nexthop",
            "a silent session swept zebra's route\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = state(&daemon);
    assert!(!s.control.fpm_replay_complete, "silence is no replay");
    assert_eq!(s.control.rib.swept, swept_before, "nothing swept");
    wait_for(
        "the silent session dropped",
        &daemon,
        Duration::from_secs(5),
        || {
            let s = state(&daemon);
            s.control.fpm_dropped_idle == 1 && !s.control.fpm_connected
        },
    );
    let dropped_after = connected.elapsed();
    assert!(
        dropped_after >= Duration::from_millis(2500) && dropped_after < Duration::from_secs(5),
        "dropped {dropped_after:?} after the connect (bound 2.5 s)"
    );
    drop(silent);
    assert_eq!(kind_at(&daemon, SERVER_V4), "Nexthop");
    assert!(
        daemon
            .log()
            .contains("FPM session dropped: no complete frame"),
        "{}",
        daemon.log()
    );

    // A session that trickles a frame, a byte every 200 ms (another route
    // and, were it applied, a replay without zebra's route).
    let trickled = frame(&[
        &gateway,
        &route_message("198.51.100.128/26".parse().unwrap(), 1),
    ]);
    let mut trickler = daemon.connect_fpm(&lab.router, port);
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        for b in trickled {
            if trickler.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    wait_for(
        "the trickling session dropped",
        &daemon,
        Duration::from_secs(6),
        || state(&daemon).control.fpm_dropped_partial_frame == 1,
    );
    let dropped_after = started.elapsed();
    assert!(
        dropped_after >= Duration::from_millis(1500) && dropped_after < Duration::from_secs(4),
        "dropped {dropped_after:?} after its first byte (bound 1.5 s)"
    );
    writer.join().unwrap();
    let s = state(&daemon);
    assert_eq!(s.control.rib.swept, swept_before, "nothing swept");
    assert_eq!(kind_at(&daemon, SERVER_V4), "Nexthop");
    assert_eq!(
        kind_at(&daemon, "198.51.100.130"),
        "Miss",
        "nothing of the incomplete frame"
    );
    let page = metrics(&lab);
    for line in [
        "pf_sidecar_fpm_sessions_dropped_total{reason=\"idle\"} 1\n",
        "pf_sidecar_fpm_sessions_dropped_total{reason=\"partial_frame\"} 1\n",
    ] {
        assert!(page.contains(line), "{line}{page}");
    }
}

#[test]
fn traffic_stops_being_cached_within_the_grace_after_frr_stops_and_comes_back_with_zebra() {
    require_root!();
    const GRACE_MS: u64 = 5000;
    let lab = Lab::new("gstl");
    let port = port(26000);
    let socket = std::env::temp_dir().join(format!("pf-test-gstl-{}.sock", std::process::id()));
    let endpoint = format!("ipc://{}", socket.display());
    let daemon = Daemon::start_with(
        SIDECAR,
        &lab,
        &format!(
            "[fpm]\nlisten = \"127.0.0.1:{port}\"\nreplay_quiet_ms = 300\n\
             [routes]\nstale_after_ms = {GRACE_MS}\n[events]\nendpoint = \"{endpoint}\"\n"
        ),
        "gstl",
    );
    let statics = ["ip route 203.0.113.0/24 198.51.100.2"];
    let mut frr = Frr::start(
        &lab.router,
        &FrrConfig {
            fpm_port: Some(port),
            zebra: &[],
            staticd: Some(&statics),
            bgpd: None,
        },
    );
    let own = lab_addresses();
    let installed = || frr.installed_routes(false);
    converge(&installed, &daemon, &own, "the first replay");
    assert_eq!(kind_at(&daemon, SERVER_V4), "Nexthop");

    let mut watch = Kill(
        Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
            .args([
                "--netns",
                &lab.router.name,
                "watch",
                "--endpoint",
                &endpoint,
                "--json",
                "--count",
                "100000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = watch.0.stdout.take().unwrap();
    let (events_tx, events_rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str(&line) {
                let _ = events_tx.send(event);
            }
        }
    });

    // A steady flow to the server, 20 pings a second for up to a minute.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client.name,
            "ping",
            "-q",
            "-i",
            "0.05",
            "-W",
            "1",
            // A count, not a deadline: with -w, ping ends at its first error
            // (net unreachable while the kernel has no route).
            "-c",
            "1200",
            SERVER_V4,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _ping = Kill(ping);
    std::thread::sleep(Duration::from_millis(1500));
    let cache = || counter(&status(&lab, &daemon), "redirect_cache");
    let before = cache();
    std::thread::sleep(Duration::from_millis(500));
    assert!(cache() > before, "the cache forwards the flow");

    // FRR stops the way an operator stops it: zebra removes its routes
    // from the kernel on the way out.
    frr.signal("staticd", libc::SIGTERM);
    frr.signal("zebra", libc::SIGTERM);
    let stopped = Instant::now();
    wait_for(
        "zebra removed its kernel route",
        &daemon,
        Duration::from_secs(10),
        || {
            !lab.router
                .exec_ok("ip", &["route", "show", "203.0.113.0/24"])
                .contains("203.0.113.0/24")
        },
    );
    wait_for(
        "the session closed",
        &daemon,
        Duration::from_secs(10),
        || !state(&daemon).control.fpm_connected,
    );
    let closed = stopped.elapsed();

    // Within the grace the cache still forwards.
    while stopped.elapsed() < Duration::from_millis(GRACE_MS - 1500) {
        assert_eq!(kind_at(&daemon, SERVER_V4), "Nexthop", "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = cache();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        cache() > before,
        "still forwarded from the cache in the grace"
    );

    // Then the prefix is left to bpf_fib_lookup, which follows the kernel.
    wait_for(
        "the prefix left to the kernel",
        &daemon,
        Duration::from_millis(GRACE_MS + 3000),
        || kind_at(&daemon, SERVER_V4) == "Fib",
    );
    let to_kernel = stopped.elapsed();
    // The sample just before and after show the cache no longer forwards.
    let before = cache();
    std::thread::sleep(Duration::from_millis(1000));
    let after = cache();
    assert_eq!(after, before, "redirect_cache stopped rising");
    println!(
        "FRR stopped; session closed after {closed:?}; the route went to the kernel after {to_kernel:?} (grace {GRACE_MS} ms); redirect_cache stayed at {after}"
    );
    assert!(
        to_kernel >= Duration::from_millis(GRACE_MS)
            && to_kernel < closed + Duration::from_millis(GRACE_MS + 1000),
        "within the grace: {to_kernel:?}"
    );
    let lookup = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &lab.router.name, "--pin-dir"])
        .arg(&daemon.pin_dir)
        .args(["lookup", SERVER_V4])
        .output()
        .unwrap();
    let lookup = String::from_utf8_lossy(&lookup.stdout);
    assert!(lookup.contains("Fib"), "{lookup}");

    let s = status(&lab, &daemon);
    assert_eq!(s["daemon"]["routes_stale"], true, "{s}");
    assert!(s["daemon"]["stale_prefixes"].as_u64() >= Some(1), "{s}");
    let page = metrics(&lab);
    assert!(page.contains("pf_sidecar_routes_stale 1\n"), "{page}");
    let text = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &lab.router.name, "--pin-dir"])
        .arg(&daemon.pin_dir)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("routes         STALE"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // zebra comes back: its replay takes the route back to the cache.
    frr.restart("zebra", &["-M", "dplane_fpm_nl"]);
    frr.restart("staticd", &[]);
    let installed = || frr.installed_routes(false);
    converge(&installed, &daemon, &own, "zebra's return");
    wait_for("trusted again", &daemon, Duration::from_secs(10), || {
        !state(&daemon).control.routes_stale
    });
    assert_eq!(kind_at(&daemon, SERVER_V4), "Nexthop");
    let before = status(&lab, &daemon);
    std::thread::sleep(Duration::from_millis(1000));
    let after = status(&lab, &daemon);
    assert!(
        counter(&after, "redirect_cache") > counter(&before, "redirect_cache"),
        "the cache forwards the flow again:\nbefore {before}\nafter {after}\n{}",
        lab.router.exec_ok("ip", &["neigh"])
    );

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(seen
        .iter()
        .any(|e: &serde_json::Value| e["event"] == "stale" && e["active"] == true)
        && seen
            .iter()
            .any(|e| e["event"] == "stale" && e["active"] == false))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no stale events: {seen:#?}");
        if let Ok(event) = events_rx.recv_timeout(left) {
            seen.push(event);
        }
    }
    drop(watch);
    let _ = std::fs::remove_file(&socket);
}
