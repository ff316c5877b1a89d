//! A full table through real FRR: BIRD 2 in a peer namespace announces
//! 1,000,000 IPv4 and 250,000 IPv6 prefixes over eBGP to FRR's bgpd; zebra
//! installs them in the kernel and streams them over FPM to a real
//! `pf-sidecar run`. Reports when zebra had all of them in its FIB against
//! when the pinned maps had all of them, both from the moment BGP came up.
//!
//! Run as root after `cargo build --release`: `make bench` runs it.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
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

/// The `pf-sidecar` binary next to this one.
fn sidecar_binary() -> PathBuf {
    let sidecar: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("pf-sidecar");
    assert!(
        sidecar.exists(),
        "build pf-sidecar first (cargo build --release)"
    );
    sidecar
}

/// BIRD's configuration: `v4` and `v6` as static blackholes, exported over
/// passive eBGP sessions to the router.
fn bird_config(v4: &[Ipv4Net], v6: &[Ipv6Net]) -> String {
    let mut bird =
        String::from("router id 198.51.100.2;\nprotocol device { }\nprotocol static s4 { ipv4;\n");
    for p in v4 {
        let _ = writeln!(bird, "route {p} blackhole;");
    }
    bird.push_str("}\nprotocol static s6 { ipv6;\n");
    for p in v6 {
        let _ = writeln!(bird, "route {p} blackhole;");
    }
    bird.push_str(
        "}\nprotocol bgp r4 { local 198.51.100.2 as 65002; neighbor 198.51.100.1 as 65001; passive on; \
         ipv4 { import none; export where proto = \"s4\"; }; }\n\
         protocol bgp r6 { local 2001:db8:2::2 as 65002; neighbor 2001:db8:2::1 as 65001; passive on; \
         ipv6 { import none; export where proto = \"s6\"; }; }\n",
    );
    bird
}

/// Writes the sidecar's configuration into `dir` and starts `pf-sidecar
/// run` in the router namespace with FPM listening on `port`.
fn start_sidecar(sidecar: &Path, router: &NetNs, dir: &Path, pin_dir: &str, port: u16) -> Child {
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
    Command::new(sidecar)
        .args(["--netns", &router.name, "run", "--config"])
        .arg(&config)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// FRR in the router namespace: bgpd peering with BIRD over IPv4 and IPv6,
/// zebra streaming FPM to `fpm_port`.
fn start_frr(router: &NetNs, fpm_port: u16) -> Frr {
    Frr::start(
        router,
        &FrrConfig {
            fpm_port: Some(fpm_port),
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
    )
}

/// Whether the sidecar reports the whole table programmed and the pinned
/// maps route `last4` and `last6`, the table's last prefixes, to a nexthop.
fn maps_hold_table(pin_dir: &Path, last4: Ipv4Net, last6: Ipv6Net) -> bool {
    let state = pf_sidecar::state::read_state(pin_dir);
    let programmed = state
        .map(|s| s.control.programmer.routes_v4 + s.control.programmer.routes_v6)
        .unwrap_or(0);
    let maps = pf_sidecar::pinned_maps::PinnedMaps::open(pin_dir);
    let has = |a: std::net::IpAddr| {
        maps.as_ref()
            .ok()
            .and_then(|m| m.action(a).ok())
            .is_some_and(|a| a.kind() == Some(pf_common::RouteKind::Nexthop))
    };
    programmed >= (V4_ROUTES + V6_ROUTES) as u64
        && has(last4.network().into())
        && has(last6.network().into())
}

/// When the table arrived, from BIRD's start.
struct Arrival {
    /// The first routes in zebra's FIB.
    first: Duration,
    /// All routes in zebra's FIB.
    zebra: Duration,
    /// All routes in the pinned maps.
    maps: Duration,
}

/// Polls zebra and the pinned maps until both hold the whole table.
fn wait_for_table(
    frr: &Frr,
    pin_dir: &Path,
    bird_started: Instant,
    last4: Ipv4Net,
    last6: Ipv6Net,
) -> Arrival {
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
            let (n4, n6) = (zebra_fib_routes(frr, false), zebra_fib_routes(frr, true));
            if first_route.is_none() && n4 + n6 > 10 {
                first_route = Some(bird_started.elapsed());
            }
            if n4 >= V4_ROUTES as u64 && n6 >= V6_ROUTES as u64 {
                zebra_done = Some(bird_started.elapsed());
            }
        }
        if maps_done.is_none() && maps_hold_table(pin_dir, last4, last6) {
            maps_done = Some(bird_started.elapsed());
        }
    }
    Arrival {
        first: first_route.unwrap_or_default(),
        zebra: zebra_done.unwrap(),
        maps: maps_done.unwrap(),
    }
}

fn print_report(arrival: &Arrival) {
    let Arrival { first, zebra, maps } = *arrival;
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
}

fn main() {
    assert!(integration_tests::is_root(), "run as root");
    let sidecar = sidecar_binary();
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
    let bird = bird_config(&v4, &v6);

    // The sidecar first, so it sees zebra's first connection.
    let pin_dir = format!("/sys/fs/bpf/pf-frrtb-{}", std::process::id());
    let port = 31000 + (std::process::id() % 1000) as u16;
    let mut daemon = start_sidecar(&sidecar, &router, &dir, &pin_dir, port);
    let frr = start_frr(&router, port);
    std::thread::sleep(Duration::from_secs(2));

    let bird_started = Instant::now();
    let bird = integration_tests::bird::Bird::start(&peer, &bird);
    let (last4, last6) = (v4[V4_ROUTES - 1], v6[V6_ROUTES - 1]);
    let arrival = wait_for_table(&frr, Path::new(&pin_dir), bird_started, last4, last6);
    print_report(&arrival);

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
