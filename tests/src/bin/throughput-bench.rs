//! Forwarding throughput on veth: a generator namespace transmits UDP with
//! an XDP program in live-frames mode (what `xdp-trafficgen` does; the
//! Debian 12 build of xdp-tools cannot load on kernel 6.18), the router
//! forwards, and a sink namespace counts and drops with XDP. In the same
//! run it measures the kernel's own forwarding (no XDP on the router),
//! pf-sidecar's fast path on a cache hit and on the `bpf_fib_lookup`
//! fallback, and `fib-only` mode (`xdp_fwd`-style), with 1 route and with
//! a full synthetic table of 1M IPv4 routes (in the kernel FIB and in the
//! maps). Prints packets per second and the ratios.
//!
//! Run as root after `cargo build --release`: `make bench` runs it.

use std::{
    net::Ipv4Addr,
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{
    frames::{self, Tagging},
    netns::{veth_pair, NetNs},
    raw_xdp,
    synthetic::{distinct, machine, v4_prefix, Rng},
};
use ipnet::Ipv4Net;
use pf_common::{layout::NH_F_RESOLVED, Config, Counter, Mode, Nexthop, RouteAction, RouteKind};
use pf_sidecar::{
    attach::{attach, detach, AttachMode, AttachOptions},
    datapath::{test_run::run_xdp_live, Capacities, Datapath},
};

/// Packets per measurement; at a few Mpps this is about a second.
const PACKETS: u32 = 3_000_000;
const ROUNDS: usize = 5;
const FULL_TABLE: usize = 1_000_000;

/// Frames the sink's XDP program dropped (veth counts them per queue; they
/// never reach `rx_packets`).
fn rx_packets(ns: &NetNs, ifname: &str) -> u64 {
    ns.exec_ok("ethtool", &["-S", ifname])
        .lines()
        .filter(|l| l.trim_start().starts_with("rx_queue_") && l.contains("_xdp_drops:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
        .sum()
}

/// The measured cases for pf-sidecar's datapath: name, mode, whether the
/// route is a cached nexthop, and the counter its packets must reach (so
/// each case checks that its packets took the path it is named for).
const FAST_PATH_CASES: [(&str, Mode, bool, Counter); 3] = [
    (
        "pf-sidecar cache hit",
        Mode::CacheAndFib,
        true,
        Counter::RedirectCache,
    ),
    (
        "pf-sidecar miss -> bpf_fib_lookup",
        Mode::CacheAndFib,
        false,
        Counter::RedirectFib,
    ),
    (
        "fib-only, xdp_fwd-style",
        Mode::FibOnly,
        false,
        Counter::RedirectFib,
    ),
];

/// `aa:bb:cc:dd:ee:ff`, as `ip neigh` takes it.
fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Generator, router and sink namespaces joined by veth pairs, addressed,
/// with permanent neighbours and a route to 203.0.113.0/24 via the sink.
fn wire_namespaces() -> (NetNs, NetNs, NetNs) {
    let gen = NetNs::new("tput-g");
    let router = NetNs::new("tput-r");
    let sink = NetNs::new("tput-s");
    veth_pair(&gen, "g0", &router, "r0");
    veth_pair(&router, "r1", &sink, "s0");
    gen.ip(&["addr", "add", "192.0.2.2/24", "dev", "g0"]);
    router.ip(&["addr", "add", "192.0.2.1/24", "dev", "r0"]);
    router.ip(&["addr", "add", "198.51.100.1/24", "dev", "r1"]);
    sink.ip(&["addr", "add", "198.51.100.2/24", "dev", "s0"]);
    router.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    router.ip(&[
        "neigh",
        "add",
        "198.51.100.2",
        "lladdr",
        &mac_text(sink.mac("s0")),
        "dev",
        "r1",
        "nud",
        "permanent",
    ]);
    router.ip(&[
        "neigh",
        "add",
        "192.0.2.2",
        "lladdr",
        &mac_text(gen.mac("g0")),
        "dev",
        "r0",
        "nud",
        "permanent",
    ]);
    router.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2"]);
    // Without XDP on r0 (the kernel case) veth delivers frames transmitted
    // by XDP only with GRO (NAPI) on.
    router.exec_ok("ethtool", &["-K", "r0", "gro", "on"]);
    (gen, router, sink)
}

/// The namespaces with the sink's dropping program attached and the
/// generator's program loaded.
///
/// Fields drop in order, so the namespaces go before the sink's link and
/// program.
struct Lab {
    gen: NetNs,
    router: NetNs,
    sink: NetNs,
    frame: Vec<u8>,
    g0: u32,
    generator: OwnedFd,
    /// The sink's s0 and the router's r1: the nexthop's addresses.
    s0_mac: [u8; 6],
    r1_mac: [u8; 6],
    _sink_link: OwnedFd,
    _sink_prog: OwnedFd,
}

impl Lab {
    fn new() -> Self {
        let (gen, router, sink) = wire_namespaces();
        let sink_prog =
            raw_xdp::constant_program(raw_xdp::XDP_DROP, "pf_bench_sink").expect("load the sink");
        let s0 = sink.ifindex("s0");
        let sink_link = sink.enter(|| raw_xdp::attach(&sink_prog, s0).expect("attach the sink"));
        let mut frame = frames::udp4(
            Tagging::Untagged,
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(203, 0, 113, 9),
            64,
            1000,
            9,
        );
        frame[0..6].copy_from_slice(&router.mac("r0"));
        frame[6..12].copy_from_slice(&gen.mac("g0"));
        let generator =
            raw_xdp::generator_program(&frame[..42], "pf_bench_gen").expect("load the generator");
        Self {
            g0: gen.ifindex("g0"),
            s0_mac: sink.mac("s0"),
            r1_mac: router.mac("r1"),
            gen,
            router,
            sink,
            frame,
            generator,
            _sink_link: sink_link,
            _sink_prog: sink_prog,
        }
    }

    /// Forwarded packets per second: the sink's count over the generator's time.
    fn measure(&self) -> f64 {
        let mut rates = Vec::new();
        for _ in 0..ROUNDS {
            let before = rx_packets(&self.sink, "s0");
            let started = Instant::now();
            self.gen.enter(|| {
                run_xdp_live(self.generator.as_fd(), &self.frame, self.g0, PACKETS, 64)
                    .expect("live-frames test run")
            });
            let took = started.elapsed();
            std::thread::sleep(Duration::from_millis(50));
            let delivered = rx_packets(&self.sink, "s0") - before;
            rates.push(delivered as f64 / took.as_secs_f64());
        }
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
        rates[ROUNDS / 2]
    }

    /// Installs `FULL_TABLE` synthetic routes in the router's kernel FIB
    /// with `ip -batch` and returns them.
    fn install_full_table(&self) -> Vec<Ipv4Net> {
        let mut rng = Rng(0x7707_7707_1234_5678);
        let prefixes: Vec<Ipv4Net> = distinct(FULL_TABLE, || v4_prefix(&mut rng));
        let batch = std::env::temp_dir().join(format!("pf-tput-{}.batch", std::process::id()));
        let text: String = prefixes
            .iter()
            .map(|p| format!("route add {p} via 198.51.100.2\n"))
            .collect();
        std::fs::write(&batch, text).unwrap();
        let started = Instant::now();
        let out = Command::new("ip")
            .args(["-n", &self.router.name, "-batch"])
            .arg(&batch)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip -batch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&batch);
        println!(
            "installed {FULL_TABLE} routes in the router's kernel FIB in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        prefixes
    }
}

/// pf-sidecar's datapath on the router's r0 and r1, driven through its
/// pinned maps.
struct FastPath<'a> {
    lab: &'a Lab,
    pin_dir: PathBuf,
    caps: Capacities,
    r1: u32,
}

impl FastPath<'_> {
    /// Attaches the datapath and puts `table` in its route map.
    fn attach(&self, table: &[Ipv4Net]) {
        self.lab.router.enter(|| {
            attach(&AttachOptions {
                interfaces: &["r0".to_string(), "r1".to_string()],
                attach_mode: AttachMode::Native,
                mode: Mode::CacheAndFib,
                dry_run: false,
                pin_dir: &self.pin_dir,
                capacities: self.caps,
            })
            .expect("attach fast_path");
            // The same table in the maps.
            let (dp, _) = Datapath::load_current(&self.caps, &self.pin_dir).unwrap();
            for p in table {
                let _ = dp
                    .maps
                    .v4
                    .lock()
                    .insert(*p, RouteAction::new(RouteKind::Nexthop, 1));
            }
        });
    }

    /// Sets `mode` and routes 203.0.113.0/24 either to the cached nexthop
    /// towards the sink or to the kernel's FIB.
    fn configure(&self, mode: Mode, cached: bool) {
        self.lab.router.enter(|| {
            let (mut dp, _) = Datapath::load_current(&self.caps, &self.pin_dir).unwrap();
            let nexthop = Nexthop {
                tx_ifindex: self.r1,
                mtu: 1500,
                dmac: self.lab.s0_mac,
                smac: self.lab.r1_mac,
                flags: NH_F_RESOLVED,
                ..Default::default()
            };
            dp.maps.write_nexthop(1, 1, &nexthop).unwrap();
            let prefix: Ipv4Net = "203.0.113.0/24".parse().unwrap();
            // An explicit hand-off to the kernel, so the lookup misses.
            let action = if cached {
                RouteAction::new(RouteKind::Nexthop, 1)
            } else {
                RouteAction::simple(RouteKind::Fib)
            };
            dp.maps.v4.lock().insert(prefix, action).unwrap();
            // No daemon here: the fail-safe is off (stale_after_ns 0).
            dp.maps
                .set_config(&Config {
                    mode: mode as u32,
                    ..Default::default()
                })
                .unwrap();
        })
    }

    fn counter(&self, c: Counter) -> u64 {
        self.lab.router.enter(|| {
            Datapath::load_current(&self.caps, &self.pin_dir)
                .unwrap()
                .0
                .maps
                .counter(c)
                .unwrap()
        })
    }

    fn detach(&self) {
        self.lab
            .router
            .enter(|| detach(&self.pin_dir, &[], true, false).expect("detach"));
    }

    /// Runs one case and asserts that nearly all its packets reached `path`.
    fn measure_case(&self, case: &str, mode: Mode, cached: bool, path: Counter) -> f64 {
        self.configure(mode, cached);
        let before = self.counter(path);
        let pps = self.lab.measure();
        let taken = self.counter(path) - before;
        assert!(
            taken >= (ROUNDS as u64 * PACKETS as u64) * 9 / 10,
            "{case}: only {taken} packets counted as {path:?}"
        );
        pps
    }
}

/// The kernel's forwarding and then every fast-path case, with `table`
/// ("1 route" or "1M routes") installed.
fn bench_table(fast: &FastPath, table: &str, results: &mut Vec<(String, f64)>) {
    let full_table = if table == "1M routes" {
        fast.lab.install_full_table()
    } else {
        Vec::new()
    };

    // 1. The kernel forwards (nothing attached to the router).
    let kernel = fast.lab.measure();
    results.push((format!("kernel forwarding ({table})"), kernel));

    // 2.-4. pf-sidecar's datapath on r0 and r1.
    fast.attach(&full_table);
    for (case, mode, cached, path) in FAST_PATH_CASES {
        let pps = fast.measure_case(case, mode, cached, path);
        results.push((format!("{case} ({table})"), pps));
    }
    fast.detach();
}

/// The results table, each case against the kernel with the same table.
fn print_report(results: &[(String, f64)]) {
    println!("\n| case | forwarded packets/s | × kernel (same table) |");
    println!("|---|---:|---:|");
    for (case, pps) in results {
        let table = if case.contains("1M") {
            "1M routes"
        } else {
            "1 route"
        };
        let kernel = results
            .iter()
            .find(|(c, _)| c.starts_with("kernel") && c.contains(table))
            .map(|(_, p)| *p)
            .unwrap();
        println!("| {case} | {:.0} | {:.2} |", pps, pps / kernel);
    }
}

fn main() {
    assert!(integration_tests::is_root(), "run as root");
    println!("{}", machine());
    println!("method: {PACKETS} UDP packets per round from an XDP live-frames generator, {ROUNDS} rounds, median of forwarded packets/s at the XDP sink\n");

    let lab = Lab::new();
    let fast = FastPath {
        lab: &lab,
        pin_dir: PathBuf::from(format!("/sys/fs/bpf/pf-tput-{}", std::process::id())),
        caps: Capacities {
            tbl8_groups: 65_536,
            v6_routes: 1024,
            nexthops: 64,
            ecmp_groups: 8,
            ports: 16,
        },
        r1: lab.router.ifindex("r1"),
    };
    let mut results: Vec<(String, f64)> = Vec::new();
    for table in ["1 route", "1M routes"] {
        bench_table(&fast, table, &mut results);
    }
    print_report(&results);
    let _ = std::fs::remove_dir_all(&fast.pin_dir);
}
