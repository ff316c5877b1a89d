//! A full table through real FRR: BIRD 2 in a peer namespace announces
//! 1,000,000 IPv4 and 250,000 IPv6 prefixes over eBGP to FRR's bgpd; zebra
//! installs them in the kernel and streams them over FPM to a real
//! `pf-sidecar run`. Reports when zebra had all of them in its FIB against
//! when the pinned maps had all of them, both from the moment BGP came up.
//!
//! Run as root after `cargo build --release`: `make bench` runs it.

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    frr::{Frr, FrrConfig},
    netns::{veth_pair, NetNs},
    synthetic::{distinct, machine, v4_prefix, v6_doc_prefix, Rng},
};
use ipnet::{Ipv4Net, Ipv6Net};

const V4_ROUTES: usize = 1_000_000;
const V6_ROUTES: usize = 250_000;

/// zebra's FIB route count per family (`show ip[v6] route summary json`).
fn zebra_fib_routes(frr: &Frr, v6: bool) -> u64 {
    let json = frr.vtysh(&[if v6 {
        "show ipv6 route summary json"
    } else {
        "show ip route summary json"
    }]);
    serde_json::from_str::<serde_json::Value>(&json)
        .ok()
        .and_then(|v| v["routesTotalFib"].as_u64())
        .unwrap_or(0)
}

fn main() {
    assert!(integration_tests::is_root(), "run as root");
    let sidecar: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("pf-sidecar");
    assert!(
        sidecar.exists(),
        "build pf-sidecar first (cargo build --release)"
    );
    println!("{}", machine());

    let router = NetNs::new("frrtb-r");
    let peer = NetNs::new("frrtb-p");
    veth_pair(&router, "r1", &peer, "p1");
    router.ip(&["addr", "add", "198.51.100.1/24", "dev", "r1"]);
    router.ip(&["addr", "add", "2001:db8:2::1/64", "dev", "r1", "nodad"]);
    peer.ip(&["addr", "add", "198.51.100.2/24", "dev", "p1"]);
    peer.ip(&["addr", "add", "2001:db8:2::2/64", "dev", "p1", "nodad"]);

    let mut rng = Rng(0xf447_ab1e_0000_0001);
    let v4: Vec<Ipv4Net> = distinct(V4_ROUTES, || v4_prefix(&mut rng));
    let v6: Vec<Ipv6Net> = distinct(V6_ROUTES, || v6_doc_prefix(&mut rng));
    let dir = std::env::temp_dir().join(format!("pf-frrtb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bird =
        String::from("router id 198.51.100.2;\nprotocol device { }\nprotocol static s4 { ipv4;\n");
    for p in &v4 {
        let _ = writeln!(bird, "route {p} blackhole;");
    }
    bird.push_str("}\nprotocol static s6 { ipv6;\n");
    for p in &v6 {
        let _ = writeln!(bird, "route {p} blackhole;");
    }
    bird.push_str(
        "}\nprotocol bgp r4 { local 198.51.100.2 as 65002; neighbor 198.51.100.1 as 65001; passive on; \
         ipv4 { import none; export where proto = \"s4\"; }; }\n\
         protocol bgp r6 { local 2001:db8:2::2 as 65002; neighbor 2001:db8:2::1 as 65001; passive on; \
         ipv6 { import none; export where proto = \"s6\"; }; }\n",
    );

    // The sidecar first, so it sees zebra's first connection.
    let pin_dir = format!("/sys/fs/bpf/pf-frrtb-{}", std::process::id());
    let port = 31000 + (std::process::id() % 1000) as u16;
    let config = dir.join("pf-sidecar.toml");
    std::fs::write(
        &config,
        format!(
            "[general]\npin_dir = \"{pin_dir}\"\ninterfaces = [\"r1\"]\nlog_level = \"warn\"\n\
             [capacity]\ntbl8_groups = 65536\nv6_routes = 300000\n\
             [fpm]\nlisten = \"127.0.0.1:{port}\"\nreplay_quiet_ms = 2000\n[metrics]\nlisten = \"\"\n"
        ),
    )
    .unwrap();
    let mut daemon = Command::new(&sidecar)
        .args(["--netns", &router.name, "run", "--config"])
        .arg(&config)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let frr = Frr::start(
        &router,
        &FrrConfig {
            fpm_port: Some(port),
            zebra: &[],
            staticd: None,
            bgpd: Some(&[
                "router bgp 65001",
                " bgp router-id 198.51.100.1",
                " no bgp ebgp-requires-policy",
                " no bgp default ipv4-unicast",
                " neighbor 198.51.100.2 remote-as 65002",
                " neighbor 2001:db8:2::2 remote-as 65002",
                " neighbor 198.51.100.2 timers connect 1",
                " neighbor 2001:db8:2::2 timers connect 1",
                " address-family ipv4 unicast",
                "  neighbor 198.51.100.2 activate",
                " exit-address-family",
                " address-family ipv6 unicast",
                "  neighbor 2001:db8:2::2 activate",
                " exit-address-family",
            ]),
        },
    );
    std::thread::sleep(Duration::from_secs(2));

    let bird_started = Instant::now();
    let bird = integration_tests::bird::Bird::start(&peer, &bird);
    let (last4, last6) = (v4[V4_ROUTES - 1], v6[V6_ROUTES - 1]);
    let mut zebra_done = None;
    let mut maps_done = None;
    let mut first_route = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    while zebra_done.is_none() || maps_done.is_none() {
        assert!(
            Instant::now() < deadline,
            "the table did not arrive in 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
        if zebra_done.is_none() {
            let (n4, n6) = (zebra_fib_routes(&frr, false), zebra_fib_routes(&frr, true));
            if first_route.is_none() && n4 + n6 > 10 {
                first_route = Some(bird_started.elapsed());
            }
            if n4 >= V4_ROUTES as u64 && n6 >= V6_ROUTES as u64 {
                zebra_done = Some(bird_started.elapsed());
            }
        }
        if maps_done.is_none() {
            let state = pf_sidecar::state::read_state(std::path::Path::new(&pin_dir));
            let programmed = state
                .map(|s| s.control.programmer.routes_v4 + s.control.programmer.routes_v6)
                .unwrap_or(0);
            let maps = pf_sidecar::pinned_maps::PinnedMaps::open(std::path::Path::new(&pin_dir));
            let has = |a: std::net::IpAddr| {
                maps.as_ref()
                    .ok()
                    .and_then(|m| m.action(a).ok())
                    .is_some_and(|a| a.kind() == Some(pf_common::RouteKind::Nexthop))
            };
            if programmed >= (V4_ROUTES + V6_ROUTES) as u64
                && has(last4.network().into())
                && has(last6.network().into())
            {
                maps_done = Some(bird_started.elapsed());
            }
        }
    }
    let (first, zebra, maps) = (
        first_route.unwrap_or_default(),
        zebra_done.unwrap(),
        maps_done.unwrap(),
    );
    let routes = (V4_ROUTES + V6_ROUTES) as f64;
    println!("\nfull table through real FRR (BIRD -> bgpd -> zebra -> kernel + FPM -> pf-sidecar), times from BIRD's start:");
    println!(
        "  first routes in zebra's FIB after {:.1} s",
        first.as_secs_f64()
    );
    println!(
        "  zebra had all {routes} routes in its FIB (installed in the kernel) after {:.1} s ({:.0} routes/s from the first)",
        zebra.as_secs_f64(),
        routes / (zebra - first).as_secs_f64()
    );
    println!(
        "  the pinned maps held all of them after {:.1} s: {:.1} s after zebra",
        maps.as_secs_f64(),
        maps.as_secs_f64() - zebra.as_secs_f64()
    );

    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    drop(bird);
    drop(frr);
    let _ = Command::new(&sidecar)
        .args([
            "--netns",
            &router.name,
            "--pin-dir",
            &pin_dir,
            "detach",
            "--all",
        ])
        .output();
    let _ = std::fs::remove_dir_all(&pin_dir);
    let _ = std::fs::remove_dir_all(&dir);
}
