//! BGP that advertises only what the router forwards: BIRD upstream (up1,
//! AS 65001) → FRR router (AS 65000, `bgp suppress-fib-pending`, zebra
//! `--asic-offload=notify_on_offload`, pf-sidecar with offload replies) →
//! BIRD downstream (the client, AS 65010).
//!
//! On an FRR that takes offload replies (9 to 10.2, 10.4 and later):
//! - nothing is advertised while no sidecar answers;
//! - a prefix reaches the downstream peer only once the maps hold it;
//! - a route the sidecar leaves to the kernel (here: no second-level group
//!   left for its /24) is advertised too, since the kernel forwards it;
//! - after a sidecar restart, a route learned meanwhile is advertised;
//! - `show ip route json` marks the routes offloaded.
//!
//! On FRR 8.4 and 10.3.x, which drop the replies, routes stay queued for
//! ever: the test asserts the warning `status` gives, and that the warning
//! is true (nothing reaches the downstream peer).

mod support;

use std::time::{Duration, Instant};

use integration_tests::{
    frr::{Frr, FrrConfig},
    lab::Lab,
    require_root,
};
use pf_sidecar::pinned_maps::PinnedMaps;
use support::{Bird, Daemon, SIDECAR};

/// On the fast path: IPv6 routes live in the LPM trie, which has room.
const FAST: &str = "2001:db8:ff::/48";
const FAST_ADDRESS: &str = "2001:db8:ff::1";
/// Left to the kernel: with one second-level group, taken by the router's
/// own addresses (198.51.100.0/26 and .64/26; FRR 10's local 192.0.2.1/32)
/// which come first in zebra's replay, no /24 block is left for this /25.
const KERNEL: &str = "203.0.113.128/25";
const KERNEL_ADDRESS: &str = "203.0.113.200";
/// Announced while the sidecar is down.
const LATER: &str = "2001:db8:fe::/48";
const LATER_ADDRESS: &str = "2001:db8:fe::1";

fn downstream_has(bird: &Bird, prefix: &str) -> bool {
    bird.birdc("show route")
        .lines()
        .any(|l| l.split_whitespace().next() == Some(prefix))
}

/// zebra's view of `prefix`: (installed, queued, offloaded).
fn zebra_state(frr: &Frr, prefix: &str) -> Option<(bool, bool, bool)> {
    let family = if prefix.contains(':') { "ipv6" } else { "ip" };
    let json = frr.vtysh(&[&format!("show {family} route {prefix} json")]);
    let parsed: serde_json::Value = serde_json::from_str(&json).ok()?;
    let entry = parsed[prefix]
        .as_array()?
        .iter()
        .find(|e| e["protocol"] == "bgp")?
        .clone();
    Some((
        entry["installed"] == true,
        entry["queued"] == true,
        entry["offloaded"] == true,
    ))
}

fn maps_hold(pin_dir: &std::path::Path, address: &str) -> String {
    PinnedMaps::open(pin_dir)
        .and_then(|m| m.answer(address.parse().unwrap()))
        .map(|a| a.kind)
        .unwrap_or_else(|e| format!("no maps: {e}"))
}

fn on_fast_path(kind: &str) -> bool {
    !matches!(kind, "Miss" | "Fib") && !kind.starts_with("no maps")
}

fn frr_warnings(daemon: &Daemon) -> Vec<String> {
    daemon.status()["frr_warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_owned))
        .collect()
}

fn wait_until(
    what: &str,
    seconds: u64,
    mut done: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} within {seconds} s\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bgp_advertises_what_the_router_forwards_once_the_sidecar_answers_for_it() {
    require_root!();
    let lab = Lab::new("sfp");
    let port = 26000 + (std::process::id() % 1000) as u16;
    let upstream = Bird::start(
        &lab.up1,
        &format!(
            "router id 198.51.100.2;\n\
             protocol device {{ }}\n\
             protocol static up4 {{ ipv4; route {KERNEL} blackhole; }}\n\
             protocol static up6 {{ ipv6; route {FAST} blackhole; }}\n\
             protocol static later6 {{ ipv6; disabled; route {LATER} blackhole; }}\n\
             template bgp tup {{ local as 65001; hold time 9; error wait time 1, 5; }}\n\
             protocol bgp uplink4 from tup {{ local 198.51.100.2; neighbor 198.51.100.1 as 65000; \
             ipv4 {{ import none; export where proto = \"up4\"; }}; }}\n\
             protocol bgp uplink6 from tup {{ local 2001:db8:2::2; neighbor 2001:db8:2::1 as 65000; \
             ipv6 {{ import none; export where proto = \"up6\" || proto = \"later6\"; }}; }}\n"
        ),
    );
    let downstream = Bird::start(
        &lab.client,
        "router id 192.0.2.2;\n\
         protocol device { }\n\
         template bgp tdown { local as 65010; hold time 9; error wait time 1, 5; }\n\
         protocol bgp down4 from tdown { local 192.0.2.2; neighbor 192.0.2.1 as 65000; \
         ipv4 { import all; export none; }; }\n\
         protocol bgp down6 from tdown { local 2001:db8:1::2; neighbor 2001:db8:1::1 as 65000; \
         ipv6 { import all; export none; }; }\n",
    );
    let frr = Frr::start_with_zebra_args(
        &lab.router,
        &FrrConfig {
            fpm_port: Some(port),
            zebra: &[],
            staticd: None,
            bgpd: Some(&[
                "router bgp 65000",
                " bgp router-id 192.0.2.1",
                " no bgp ebgp-requires-policy",
                " no bgp default ipv4-unicast",
                " bgp suppress-fib-pending",
                " timers bgp 3 9",
                " neighbor 198.51.100.2 remote-as 65001",
                " neighbor 2001:db8:2::2 remote-as 65001",
                " neighbor 192.0.2.2 remote-as 65010",
                " neighbor 2001:db8:1::2 remote-as 65010",
                " neighbor 198.51.100.2 timers connect 1",
                " neighbor 2001:db8:2::2 timers connect 1",
                " neighbor 192.0.2.2 timers connect 1",
                " neighbor 2001:db8:1::2 timers connect 1",
                " address-family ipv4 unicast",
                "  neighbor 198.51.100.2 activate",
                "  neighbor 192.0.2.2 activate",
                "  neighbor 192.0.2.2 advertisement-interval 0",
                " exit-address-family",
                " address-family ipv6 unicast",
                "  neighbor 2001:db8:2::2 activate",
                "  neighbor 2001:db8:1::2 activate",
                "  neighbor 2001:db8:1::2 advertisement-interval 0",
                " exit-address-family",
            ]),
        },
        &["--asic-offload=notify_on_offload"],
    );
    let version = frr.install.version();
    let takes_replies =
        !matches!(version, (major, ..) if major < 9) && !matches!(version, (10, 3, _));
    let show = || {
        format!(
            "{}\nrouter:\n{}\ndownstream:\n{}",
            frr.install.describe(),
            frr.vtysh(&["show ip route", "show ipv6 route", "show bgp summary"]),
            downstream.birdc("show route")
        )
    };

    // No sidecar: zebra holds the routes queued, BGP advertises nothing.
    wait_until(
        "the router learns both prefixes from upstream",
        30,
        || zebra_state(&frr, FAST).is_some() && zebra_state(&frr, KERNEL).is_some(),
        show,
    );
    wait_until(
        "the downstream session is up",
        30,
        || {
            downstream
                .birdc("show protocols")
                .matches("Established")
                .count()
                == 2
        },
        show,
    );
    std::thread::sleep(Duration::from_secs(3));
    for prefix in [FAST, KERNEL] {
        assert!(
            !downstream_has(&downstream, prefix),
            "{prefix} advertised with no sidecar answering\n{}",
            show()
        );
        let (_, queued, offloaded) = zebra_state(&frr, prefix).unwrap();
        assert!(
            queued && !offloaded,
            "{prefix} is queued in zebra\n{}",
            show()
        );
    }

    let mut daemon = Daemon::start_with(
        SIDECAR,
        &lab,
        &format!(
            "[fpm]\nlisten = \"127.0.0.1:{port}\"\nreplay_quiet_ms = 300\noffload_replies = true\n\
             [capacity]\ntbl8_groups = 1\n"
        ),
        "sfp",
    );

    if !takes_replies {
        // The documented breakage: the warning says so, and it is true.
        let why = if version.0 < 9 {
            "FRR before 9 discards offload replies"
        } else {
            "FRR 10.3.x drops every offload reply"
        };
        wait_until(
            "status warns about this FRR",
            20,
            || frr_warnings(&daemon).iter().any(|w| w.contains(why)),
            || format!("{:?}\n{}", frr_warnings(&daemon), daemon.log()),
        );
        wait_until(
            "the maps hold the fast-path route",
            20,
            || on_fast_path(&maps_hold(&daemon.pin_dir, FAST_ADDRESS)),
            show,
        );
        std::thread::sleep(Duration::from_secs(5));
        for prefix in [FAST, KERNEL] {
            assert!(
                !downstream_has(&downstream, prefix),
                "{prefix} advertised although {} drops offload replies\n{}",
                frr.install.describe(),
                show()
            );
        }
        println!(
            "{}: routes stay queued and BGP advertises nothing, as `status` warns",
            frr.install.describe()
        );
        return;
    }

    // Each prefix is advertised once the maps hold it, not before.
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        for (prefix, address) in [(FAST, FAST_ADDRESS), (KERNEL, KERNEL_ADDRESS)] {
            if seen.contains(&prefix) || !downstream_has(&downstream, prefix) {
                continue;
            }
            let kind = maps_hold(&daemon.pin_dir, address);
            if prefix == FAST {
                assert!(
                    on_fast_path(&kind),
                    "{prefix} advertised while the maps answer {kind} for {address}\n{}",
                    show()
                );
            }
            seen.push(prefix);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "advertised so far: {seen:?}\n{}\n{}",
            show(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{}: both prefixes advertised {:.2} s after the sidecar started",
        frr.install.describe(),
        started.elapsed().as_secs_f64()
    );
    // The kernel forwards the route the maps leave to it, and BGP said so.
    assert!(
        !on_fast_path(&maps_hold(&daemon.pin_dir, KERNEL_ADDRESS)),
        "{KERNEL} was meant to be left to the kernel (no second-level group left)"
    );
    for prefix in [FAST, KERNEL] {
        let (installed, queued, offloaded) = zebra_state(&frr, prefix).unwrap();
        assert!(
            installed && !queued && offloaded,
            "show ip route json marks {prefix} offloaded\n{}",
            show()
        );
    }

    // A route learned while the sidecar is down waits for its return.
    daemon.kill();
    upstream.birdc("enable later6");
    wait_until(
        "the router learns the later prefix",
        20,
        || zebra_state(&frr, LATER).is_some(),
        show,
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !downstream_has(&downstream, LATER),
        "{LATER} advertised with the sidecar down\n{}",
        show()
    );
    daemon.restart();
    wait_until(
        "the later prefix is advertised after the sidecar's restart",
        30,
        || downstream_has(&downstream, LATER),
        || format!("{}\n{}", show(), daemon.log()),
    );
    assert!(
        on_fast_path(&maps_hold(&daemon.pin_dir, LATER_ADDRESS)),
        "{LATER} is in the maps"
    );
    for prefix in [FAST, KERNEL, LATER] {
        assert!(
            downstream_has(&downstream, prefix),
            "{prefix} still advertised\n{}",
            show()
        );
        let (_, _, offloaded) = zebra_state(&frr, prefix).unwrap();
        assert!(
            offloaded,
            "{prefix} offloaded after the restart\n{}",
            show()
        );
    }
}
