//! Forwarding throughput on veth: a generator namespace transmits UDP with
//! an XDP program in live-frames mode (what `xdp-trafficgen` does; the
//! Debian 12 build of xdp-tools cannot load on kernel 6.18), the router
//! forwards, and a sink namespace counts and drops with XDP. In the same
//! run it measures the kernel's own forwarding (no XDP on the router),
//! pf-sidecar's fast path on a cache hit and on the `bpf_fib_lookup`
//! fallback, and `fib-only` mode (`xdp_fwd`-style), with 1 route and with
//! a full synthetic table of 1M IPv4 routes (in the kernel FIB and in the
//! maps), first to one destination and then to destinations spread over
//! the whole table (drawn uniformly, and Zipf-distributed over the
//! prefixes), beside a redirect-only floor (an XDP program that redirects
//! every frame to the egress with no lookup). Prints packets per second
//! and the ratios.
//!
//! Run as root after `cargo build --release`: `make bench` runs it.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{
    frames::{self, Tagging},
    netns::{veth_pair, NetNs},
    raw_xdp::{self, FieldCopy, SpreadingGenerator},
    synthetic::{distinct, machine, v4_prefix, v6_doc_prefix, Rng},
};
use ipnet::{Ipv4Net, Ipv6Net};
use pf_common::{layout::NH_F_RESOLVED, Config, Counter, Mode, Nexthop, RouteAction, RouteKind};
use pf_sidecar::{
    attach::{attach, detach, AttachMode, AttachOptions},
    datapath::{test_run::run_xdp_live, Capacities, Datapath},
};

/// Packets per measurement; at a few Mpps this is about a second.
const PACKETS: u32 = 3_000_000;
const ROUNDS: usize = 5;
const FULL_TABLE: usize = 1_000_000;
/// Destinations the spreading generator cycles through (a power of two).
const DESTINATIONS: usize = 1 << 20;
/// The Zipf exponent of the skewed traffic: the k-th most popular prefix
/// draws in proportion to 1/k^s; about 1 for traffic at an edge.
const ZIPF_S: f64 = 1.0;
/// IPv6 routes in the IPv6 case: about today's full table.
const V6_TABLE: usize = 250_000;
/// The lab's own IPv6 links, kept out of the synthetic table.
const V6_LINKS: &str = "2001:db8:ffff::/48";

/// What the generator sends: its program and the frame it starts from.
#[derive(Clone, Copy)]
struct Traffic<'a> {
    generator: BorrowedFd<'a>,
    frame: &'a [u8],
}

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
    for (ns, dev, addr) in [
        (&gen, "g0", "2001:db8:ffff:1::2/64"),
        (&router, "r0", "2001:db8:ffff:1::1/64"),
        (&router, "r1", "2001:db8:ffff:2::1/64"),
        (&sink, "s0", "2001:db8:ffff:2::2/64"),
    ] {
        ns.ip(&["addr", "add", addr, "dev", dev, "nodad"]);
    }
    router.exec_ok("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
    router.ip(&[
        "neigh",
        "add",
        "2001:db8:ffff:2::2",
        "lladdr",
        &mac_text(sink.mac("s0")),
        "dev",
        "r1",
        "nud",
        "permanent",
    ]);
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
    /// The IPv6 frame (UDP, the same payload).
    frame6: Vec<u8>,
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
        let mut frame6 = frames::udp6(
            Tagging::Untagged,
            "2001:db8:ffff:1::2".parse().unwrap(),
            "2001:db8:ffff:3::9".parse().unwrap(),
            64,
            1000,
            9,
        );
        frame6[0..6].copy_from_slice(&router.mac("r0"));
        frame6[6..12].copy_from_slice(&gen.mac("g0"));
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
            frame6,
            generator,
            _sink_link: sink_link,
            _sink_prog: sink_prog,
        }
    }

    /// The generator to the one IPv4 destination.
    fn single(&self) -> Traffic<'_> {
        Traffic {
            generator: self.generator.as_fd(),
            frame: &self.frame,
        }
    }

    /// Forwarded packets per second: the sink's count over the generator's time.
    fn measure_with(&self, traffic: Traffic<'_>) -> f64 {
        self.measure_delivered(traffic).0
    }

    /// The median packets per second, and every packet the sink counted.
    fn measure_delivered(&self, traffic: Traffic<'_>) -> (f64, u64) {
        let mut rates = Vec::new();
        let mut total = 0;
        for _ in 0..ROUNDS {
            let before = rx_packets(&self.sink, "s0");
            let started = Instant::now();
            self.gen.enter(|| {
                run_xdp_live(traffic.generator, traffic.frame, self.g0, PACKETS, 64)
                    .expect("live-frames test run")
            });
            let took = started.elapsed();
            std::thread::sleep(Duration::from_millis(50));
            let delivered = rx_packets(&self.sink, "s0") - before;
            total += delivered;
            rates.push(delivered as f64 / took.as_secs_f64());
        }
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (rates[ROUNDS / 2], total)
    }

    /// A generator whose frames go to `destinations` in turn: each entry is
    /// the destination address and the IPv4 header checksum it needs.
    fn spreading(&self, destinations: &[Ipv4Addr], name: &str) -> SpreadingGenerator {
        let entries: Vec<Vec<u8>> = destinations
            .iter()
            .map(|d| {
                let mut frame = self.frame.clone();
                frame[30..34].copy_from_slice(&d.octets());
                frames::fix_ipv4_checksum(&mut frame, 14);
                let mut entry = d.octets().to_vec();
                entry.extend_from_slice(&frame[24..26]);
                entry.extend_from_slice(&[0, 0]);
                entry
            })
            .collect();
        let copies = [
            FieldCopy {
                value: 0,
                packet: 30,
                size: 4,
            },
            FieldCopy {
                value: 4,
                packet: 24,
                size: 2,
            },
        ];
        raw_xdp::spreading_generator(&self.frame[..42], &entries, &copies, name)
            .expect("load the spreading generator")
    }

    /// A generator whose IPv6 frames go to `destinations` in turn.
    fn spreading6(&self, destinations: &[Ipv6Addr], name: &str) -> SpreadingGenerator {
        let entries: Vec<Vec<u8>> = destinations.iter().map(|d| d.octets().to_vec()).collect();
        let copies: Vec<FieldCopy> = (0..4)
            .map(|i| FieldCopy {
                value: 4 * i,
                packet: 38 + 4 * i,
                size: 4,
            })
            .collect();
        raw_xdp::spreading_generator(&self.frame6[..62], &entries, &copies, name)
            .expect("load the IPv6 spreading generator")
    }

    /// The redirect-only floor on the router's r0, for one measurement.
    fn measure_redirect_floor(&self, traffic: Traffic<'_>) -> f64 {
        let r1 = self.router.ifindex("r1");
        let program = raw_xdp::redirect_program(r1, "pf_bench_floor").expect("load the floor");
        let r0 = self.router.ifindex("r0");
        let link = self
            .router
            .enter(|| raw_xdp::attach(&program, r0).expect("attach the floor"));
        let pps = self.measure_with(traffic);
        drop(link);
        pps
    }

    /// Installs `V6_TABLE` synthetic IPv6 routes in the router's kernel FIB
    /// and returns them.
    fn install_v6_table(&self) -> Vec<Ipv6Net> {
        let mut rng = Rng(0x6606_6606_1234_5678);
        let links: Ipv6Net = V6_LINKS.parse().unwrap();
        let prefixes: Vec<Ipv6Net> = distinct(V6_TABLE, || loop {
            let p = v6_doc_prefix(&mut rng);
            if !links.contains(&p) && !p.contains(&links) {
                break p;
            }
        });
        let routes = prefixes
            .iter()
            .map(|p| format!("{p} via 2001:db8:ffff:2::2"));
        self.install_routes("-6", routes, &format!("{V6_TABLE} IPv6 routes"));
        prefixes
    }

    /// Adds `routes` (`PREFIX via GATEWAY`) to the router's kernel FIB
    /// with one `ip -batch` (`family`: `-4` or `-6`).
    fn install_routes(&self, family: &str, routes: impl Iterator<Item = String>, what: &str) {
        let batch = std::env::temp_dir().join(format!("pf-tput-{}.batch", std::process::id()));
        let text: String = routes.map(|r| format!("route add {r}\n")).collect();
        std::fs::write(&batch, text).unwrap();
        let started = Instant::now();
        let out = Command::new("ip")
            .args(["-n", &self.router.name, family, "-batch"])
            .arg(&batch)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {family} -batch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&batch);
        println!(
            "installed {what} in the router's kernel FIB in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// Installs `FULL_TABLE` synthetic routes in the router's kernel FIB
    /// with `ip -batch` and returns them.
    fn install_full_table(&self) -> Vec<Ipv4Net> {
        let mut rng = Rng(0x7707_7707_1234_5678);
        let prefixes: Vec<Ipv4Net> = distinct(FULL_TABLE, || v4_prefix(&mut rng));
        let routes = prefixes.iter().map(|p| format!("{p} via 198.51.100.2"));
        self.install_routes("-4", routes, &format!("{FULL_TABLE} routes"));
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

    /// Attaches the datapath and puts the IPv6 `table` in its route map.
    fn attach_v6(&self, table: &[Ipv6Net]) {
        self.attach(&[]);
        self.lab.router.enter(|| {
            let (dp, _) = Datapath::load_current(&self.caps, &self.pin_dir).unwrap();
            let action = RouteAction::new(RouteKind::Nexthop, 1);
            let mut trie = dp.maps.v6.lock();
            // In batches, as the daemon's writer ships them; no traffic
            // runs yet, so replaced nodes may be reused at once.
            for chunk in table.chunks(4096) {
                let deferred = trie.apply(chunk.iter().map(|p| (*p, Some(action))));
                assert!(deferred.is_empty(), "the IPv6 table has room");
                trie.reclaim();
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
        self.measure_case_with(case, mode, cached, path, self.lab.single())
    }

    fn measure_case_with(
        &self,
        case: &str,
        mode: Mode,
        cached: bool,
        path: Counter,
        traffic: Traffic<'_>,
    ) -> f64 {
        self.configure(mode, cached);
        let before = self.counter(path);
        let (pps, delivered) = self.lab.measure_delivered(traffic);
        let taken = self.counter(path) - before;
        // Of the packets forwarded, nearly all took this path. (Sent
        // packets are no measure: a path slower than the generator loses
        // frames at the veth before XDP sees them.)
        assert!(
            delivered >= ROUNDS as u64 * PACKETS as u64 / 10 && taken >= delivered * 9 / 10,
            "{case}: {delivered} packets forwarded, only {taken} counted as {path:?}"
        );
        pps
    }
}

/// The kernel's forwarding and then every fast-path case, with `table`
/// ("1 route" or "1M routes") installed; returns the table.
fn bench_table(fast: &FastPath, table: &str, results: &mut Vec<(String, f64)>) -> Vec<Ipv4Net> {
    let full_table = if table == "1M routes" {
        fast.lab.install_full_table()
    } else {
        Vec::new()
    };

    // 1. The kernel forwards (nothing attached to the router).
    let kernel = fast.lab.measure_with(fast.lab.single());
    results.push((format!("kernel forwarding ({table})"), kernel));

    // 2.-4. pf-sidecar's datapath on r0 and r1.
    fast.attach(&full_table);
    for (case, mode, cached, path) in FAST_PATH_CASES {
        let pps = fast.measure_case(case, mode, cached, path);
        results.push((format!("{case} ({table})"), pps));
    }
    fast.detach();
    full_table
}

/// `DESTINATIONS` addresses (as integers), each a random address inside a
/// prefix of `table` (`network` gives a prefix's network address and its
/// number of host bits): with `zipf`, the prefixes ranked in a random
/// order and drawn in proportion to 1/rank^ZIPF_S; otherwise uniformly.
fn destinations<P: Copy>(table: &[P], zipf: bool, network: impl Fn(P) -> (u128, u32)) -> Vec<u128> {
    let mut rng = Rng(if zipf { 0x5eed_21bf } else { 0x5eed_0f1a });
    let cdf: Vec<f64> = if zipf {
        let mut sum = 0.0;
        (1..=table.len())
            .map(|rank| {
                sum += 1.0 / (rank as f64).powf(ZIPF_S);
                sum
            })
            .collect()
    } else {
        Vec::new()
    };
    (0..DESTINATIONS)
        .map(|_| {
            let prefix = if zipf {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * cdf[cdf.len() - 1];
                table[cdf.partition_point(|c| *c < u).min(table.len() - 1)]
            } else {
                *rng.pick(table)
            };
            let (base, host_bits) = network(prefix);
            let random = ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128;
            let host = if host_bits == 0 {
                0
            } else {
                random & (u128::MAX >> (128 - host_bits))
            };
            base | host
        })
        .collect()
}

/// The cases again with frames spread over a table: the kernel, the
/// redirect-only floor, the cache hit (`load`: the table in the maps), the
/// miss to `bpf_fib_lookup` (maps empty) and fib-only.
fn bench_traffic(
    fast: &FastPath,
    key: &str,
    traffic: Traffic<'_>,
    load: &dyn Fn(),
    results: &mut Vec<(String, f64)>,
) {
    results.push((
        format!("kernel forwarding ({key})"),
        fast.lab.measure_with(traffic),
    ));
    results.push((
        format!("redirect-only floor ({key})"),
        fast.lab.measure_redirect_floor(traffic),
    ));
    load();
    let (case, mode, cached, path) = FAST_PATH_CASES[0];
    let pps = fast.measure_case_with(case, mode, cached, path, traffic);
    results.push((format!("{case} ({key})"), pps));
    fast.detach();
    fast.attach(&[]);
    for (case, mode, cached, path) in &FAST_PATH_CASES[1..] {
        let pps = fast.measure_case_with(case, *mode, *cached, *path, traffic);
        results.push((format!("{case} ({key})"), pps));
    }
    fast.detach();
}

/// Uniform and Zipf-distributed destinations over the 1M IPv4 routes.
fn bench_spread(fast: &FastPath, table: &[Ipv4Net], results: &mut Vec<(String, f64)>) {
    for (label, zipf) in [("uniform", false), ("Zipf", true)] {
        let started = Instant::now();
        let addresses = destinations(table, zipf, |p| {
            let host_bits = 32 - p.prefix_len() as u32;
            (u32::from(p.network()) as u128, host_bits)
        });
        let addresses: Vec<Ipv4Addr> = addresses
            .into_iter()
            .map(|a| Ipv4Addr::from(a as u32))
            .collect();
        let spread = fast.lab.spreading(&addresses, "pf_bench_spread");
        println!(
            "{DESTINATIONS} {label} destinations over the table ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let traffic = Traffic {
            generator: spread.program.as_fd(),
            frame: &fast.lab.frame,
        };
        let key = format!("1M routes, {label} destinations");
        bench_traffic(fast, &key, traffic, &|| fast.attach(table), results);
    }
}

/// Uniform and Zipf-distributed destinations over 250k IPv6 routes (in
/// the kernel FIB and, for the cache hit, in the maps).
fn bench_spread_v6(fast: &FastPath, results: &mut Vec<(String, f64)>) {
    let table = fast.lab.install_v6_table();
    for (label, zipf) in [("uniform", false), ("Zipf", true)] {
        let addresses = destinations(&table, zipf, |p| {
            let host_bits = 128 - p.prefix_len() as u32;
            (u128::from(p.network()), host_bits)
        });
        let addresses: Vec<Ipv6Addr> = addresses.into_iter().map(Ipv6Addr::from).collect();
        let spread = fast.lab.spreading6(&addresses, "pf_bench_spread6");
        let traffic = Traffic {
            generator: spread.program.as_fd(),
            frame: &fast.lab.frame6,
        };
        let key = format!("250k IPv6 routes, {label} destinations");
        bench_traffic(fast, &key, traffic, &|| fast.attach_v6(&table), results);
    }
}

/// The results table, each case against the kernel and (for spread
/// destinations) the redirect-only floor with the same table and traffic.
fn print_report(results: &[(String, f64)]) {
    println!("\n| case | forwarded packets/s | × kernel (same table and traffic) | of the redirect-only floor |");
    println!("|---|---:|---:|---:|");
    for (case, pps) in results {
        // The table and traffic: what the parentheses say.
        let key = case.rsplit_once(" (").map_or("", |(_, k)| k);
        let same = |name: &str| {
            results
                .iter()
                .find(|(c, _)| c.starts_with(name) && c.ends_with(key))
                .map(|(_, p)| *p)
        };
        let kernel = same("kernel").expect("every table has a kernel case");
        let floor = same("redirect-only floor").map_or(String::new(), |floor| {
            format!("{:.0} %", pps / floor * 100.0)
        });
        println!("| {case} | {:.0} | {:.2} | {floor} |", pps, pps / kernel);
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
            v6_routes: 262_144,
            nexthops: 64,
            ecmp_groups: 8,
            ports: 16,
        },
        r1: lab.router.ifindex("r1"),
    };
    let mut results: Vec<(String, f64)> = Vec::new();
    bench_table(&fast, "1 route", &mut results);
    let full_table = bench_table(&fast, "1M routes", &mut results);
    bench_spread(&fast, &full_table, &mut results);
    bench_spread_v6(&fast, &mut results);
    print_report(&results);
    let _ = std::fs::remove_dir_all(&fast.pin_dir);
}
