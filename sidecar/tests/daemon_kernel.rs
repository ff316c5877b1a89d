//! `pf-sidecar run` with `routes.from = kernel`: BIRD 2 writes the kernel
//! FIB and the maps follow it, hand edits included; neighbour changes move
//! nexthops between resolved and unresolved.

mod support;

use std::time::{Duration, Instant};

use integration_tests::{lab::Lab, require_root};
use pf_sidecar::pinned_maps::{Answer, PinnedMaps};
use support::{converge, kernel_routes, lab_addresses, Bird, Daemon, SIDECAR};

const KERNEL_SOURCE: &str = "[routes]\nfrom = \"kernel\"\n";
/// The kernel protocols come from the snippet operators deploy.
const BIRD_SNIPPET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../frr-integration/bird.conf.snippet"
);

#[test]
fn bird_routes_in_the_kernel_are_mirrored_and_so_are_hand_edits() {
    require_root!();
    let lab = Lab::new("dbird");
    let daemon = Daemon::start_with(SIDECAR, &lab, KERNEL_SOURCE, "dbird");
    let _bird = Bird::start(
        &lab.router,
        "router id 198.51.100.1;\n\
         protocol device { scan time 1; }\n\
         protocol static static4 { ipv4; route 203.0.113.0/24 via 198.51.100.2; route 203.0.113.128/25 via 198.51.100.66; route 198.51.100.192/26 blackhole; }\n\
         protocol static static6 { ipv6; route 2001:db8:ff::/48 via 2001:db8:2::2; }\n\
         include \"{BIRD_SNIPPET}\";\n"
            .replace("{BIRD_SNIPPET}", BIRD_SNIPPET)
            .as_str(),
    );
    let own = lab_addresses();
    let installed = || kernel_routes(&lab.router);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !installed().iter().any(|r| r.protocol == "bird") {
        assert!(Instant::now() < deadline, "BIRD did not write its routes");
        std::thread::sleep(Duration::from_millis(100));
    }
    converge(&installed, &daemon, &own, "BIRD exported its static routes");
    daemon.assert_diff_clean("kernel", None, "BIRD exported its static routes");

    lab.router
        .ip(&["route", "add", "192.0.2.128/26", "via", "198.51.100.66"]);
    lab.router.ip(&[
        "route",
        "add",
        "203.0.113.64/26",
        "nexthop",
        "via",
        "198.51.100.2",
        "nexthop",
        "via",
        "198.51.100.66",
    ]);
    converge(
        &installed,
        &daemon,
        &own,
        "adding routes by hand (one multipath)",
    );
    let answer = PinnedMaps::open(&daemon.pin_dir)
        .unwrap()
        .answer("203.0.113.70".parse().unwrap())
        .unwrap();
    assert_eq!(answer.legs.len(), 2, "{answer:?}");

    lab.router.ip(&["route", "del", "192.0.2.128/26"]);
    lab.router.ip(&["route", "del", "203.0.113.64/26"]);
    converge(&installed, &daemon, &own, "deleting them again");
    daemon.assert_diff_clean("kernel", None, "deleting them again");
}

fn leg_state(daemon: &Daemon) -> Option<(bool, String)> {
    let answer: Answer = PinnedMaps::open(&daemon.pin_dir)
        .ok()?
        .answer("203.0.113.10".parse().unwrap())
        .ok()?;
    answer.legs.first().map(|l| (l.resolved, l.dmac.clone()))
}

fn wait_for(daemon: &Daemon, want: (bool, &str), step: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = leg_state(daemon);
        if state
            .as_ref()
            .is_some_and(|(r, m)| *r == want.0 && (want.1.is_empty() || m == want.1))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {step}: nexthop is {state:?}, want {want:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn neighbour_changes_move_a_nexthop_between_resolved_and_unresolved() {
    require_root!();
    let lab = Lab::new("dneigh");
    let daemon = Daemon::start_with(SIDECAR, &lab, KERNEL_SOURCE, "dneigh");
    lab.router.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "198.51.100.2",
        "dev",
        "r1",
    ]);
    wait_for(
        &daemon,
        (false, ""),
        "adding a route over an unknown neighbour",
    );
    lab.router.ip(&[
        "neigh",
        "replace",
        "198.51.100.2",
        "lladdr",
        "02:aa:00:00:00:01",
        "dev",
        "r1",
        "nud",
        "permanent",
    ]);
    wait_for(&daemon, (true, "02:aa:00:00:00:01"), "adding the neighbour");
    lab.router.ip(&[
        "neigh",
        "replace",
        "198.51.100.2",
        "lladdr",
        "02:aa:00:00:00:02",
        "dev",
        "r1",
        "nud",
        "permanent",
    ]);
    wait_for(&daemon, (true, "02:aa:00:00:00:02"), "changing its MAC");
    lab.router
        .ip(&["neigh", "del", "198.51.100.2", "dev", "r1"]);
    wait_for(&daemon, (false, ""), "deleting the neighbour");
}

#[test]
fn a_netlink_overrun_ends_in_a_resync_and_a_correct_state() {
    require_root!();
    let lab = Lab::new("dover");
    let daemon = Daemon::start_with(
        SIDECAR,
        &lab,
        &format!("{KERNEL_SOURCE}[kernel]\nreceive_buffer = 65536\n"),
        "dover",
    );
    let own = lab_addresses();
    let installed = || kernel_routes(&lab.router);
    converge(&installed, &daemon, &own, "start-up");
    daemon.assert_diff_clean("kernel", None, "start-up");

    // Stop the daemon so its socket buffer fills during a burst of changes.
    let pid = daemon.pid();
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let batch = std::env::temp_dir().join(format!("pf-overrun-{}.batch", std::process::id()));
    let mut lines = String::new();
    for i in 0..4000u32 {
        lines.push_str(&format!(
            "route add 2001:db8:100:{i:x}::/64 via 2001:db8:2::2\n"
        ));
    }
    for i in 0..1000u32 {
        lines.push_str(&format!("route del 2001:db8:100:{i:x}::/64\n"));
    }
    std::fs::write(&batch, lines).unwrap();
    lab.router
        .exec_ok("ip", &["-batch", batch.to_str().unwrap()]);
    let _ = std::fs::remove_file(&batch);
    unsafe { libc::kill(pid, libc::SIGCONT) };

    converge(&installed, &daemon, &own, "the overrun and resync");
    daemon.assert_diff_clean("kernel", None, "the overrun and resync");
    let log = daemon.log();
    assert!(
        log.contains("ENOBUFS"),
        "the burst overran the socket and forced a resync:\n{log}"
    );
    let maps = PinnedMaps::open(&daemon.pin_dir).unwrap();
    let deleted = maps.answer("2001:db8:100:5::1".parse().unwrap()).unwrap();
    assert_eq!(
        deleted.kind, "Miss",
        "a route deleted during the overrun is gone: {deleted:?}"
    );
}
