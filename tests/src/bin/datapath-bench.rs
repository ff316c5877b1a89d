//! Datapath cost per packet under BPF_PROG_TEST_RUN, every case in one run
//! so the figures compare: the floor (an empty XDP program), cache hits at
//! growing table sizes, the bpf_fib_lookup path, and a pass.
//!
//! Run as root: `make bench` (or `cargo run --release -p integration-tests
//! --bin datapath-bench`). It prints figures and asserts only that each
//! case took the path it claims to measure.

use std::{
    collections::BTreeMap,
    mem::size_of,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, BorrowedFd},
    time::Instant,
};

use integration_tests::{
    fixture::{resolved, LOOPBACK, XDP_PASS, XDP_REDIRECT},
    frames::{self, Tagging},
    netns::{veth_pair, NetNs},
    synthetic::{machine, v4_prefix, Rng},
};
use ipnet::{Ipv4Net, Ipv6Net};
use pf_common::{maps as names, Config, Mode, RouteAction, RouteKind, V6Node};
use pf_control::v6trie::nodes_read_in;
use pf_sidecar::datapath::{test_run::run_xdp, Capacities, Datapath};

/// Repeated runs reuse the frame as the previous run left it, so forwarded
/// frames lose one TTL per run: frames start at TTL 255 and a call repeats
/// 250 times, so every run takes the path being measured. The kernel times
/// the runs themselves, so the syscall is not in the figure.
const REPEAT: u32 = 250;
const ROUNDS: usize = 400;
/// The warm cases cycle through this many destinations; each call repeats
/// one frame, so its route entry stays in cache.
const WARM_DESTINATIONS: usize = 64;
/// The cold cases: this many destinations spread over the whole table,
/// one run per call, each a different destination, so lookups meet caches
/// the previous destinations left.
const COLD_DESTINATIONS: usize = 65_536;
const TTL: u8 = 255;
const NEXTHOPS: u32 = 2000;

fn v6_prefix(rng: &mut Rng) -> Ipv6Net {
    let len = match rng.next_u64() % 100 {
        0..=69 => 48,
        70..=89 => 32 + (rng.next_u64() % 16) as u8,
        _ => 56 + (rng.next_u64() % 9) as u8,
    };
    let addr = (0x2000u128 << 112)
        | ((rng.next_u64() as u128) << 64 | rng.next_u64() as u128) & ((1u128 << 125) - 1);
    Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc()
}

fn median(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median and minimum ns per packet of one call per frame of `calls`, each
/// repeating its frame `repeat` times; every run must end in `expect`.
fn measure_calls<'f>(
    prog: BorrowedFd<'_>,
    calls: impl ExactSizeIterator<Item = &'f Vec<u8>>,
    repeat: u32,
    ingress: Option<u32>,
    expect: u32,
    what: &str,
) -> (u32, u32) {
    let mut samples = Vec::with_capacity(calls.len());
    for frame in calls {
        let out = run_xdp(prog, frame, ingress, repeat).expect("test run");
        assert_eq!(
            out.action, expect,
            "{what}: the frame did not take the measured path"
        );
        samples.push(out.ns_per_run);
    }
    (median(samples.clone()), *samples.iter().min().unwrap())
}

/// Median and minimum ns per packet over rounds, cycling through `frames`.
fn measure(
    prog: BorrowedFd<'_>,
    frames: &[Vec<u8>],
    ingress: Option<u32>,
    expect: u32,
    what: &str,
) -> (u32, u32) {
    let calls = (0..ROUNDS).map(|round| &frames[round % frames.len()]);
    measure_calls(prog, calls, REPEAT, ingress, expect, what)
}

/// Median and minimum ns of one run per call, each call on the next of
/// `frames` (the kernel's timer brackets the single run, so the floor is
/// measured the same way).
fn measure_cold(
    prog: BorrowedFd<'_>,
    frames: &[Vec<u8>],
    ingress: Option<u32>,
    expect: u32,
    what: &str,
) -> (u32, u32) {
    measure_calls(prog, frames.iter(), 1, ingress, expect, what)
}

struct Row {
    case: String,
    routes: String,
    median: u32,
    min: u32,
}

impl Row {
    /// A row from `measure`'s (median, minimum).
    fn new(case: &str, routes: &str, (median, min): (u32, u32)) -> Self {
        Self {
            case: case.into(),
            routes: routes.into(),
            median,
            min,
        }
    }
}

/// The source of every IPv4 test frame, on the router's r0 subnet.
const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// A UDP frame from `SRC` to 203.0.113.9, which only the kernel's FIB routes.
fn probe_frame(ttl: u8) -> Vec<u8> {
    frames::udp4(
        Tagging::Untagged,
        SRC,
        Ipv4Addr::new(203, 0, 113, 9),
        ttl,
        1000,
        53,
    )
}

/// The router namespace with r0 towards one peer and r1 towards the other,
/// a kernel route to 203.0.113.0/24 via r1 and a permanent neighbour for
/// its gateway, so `bpf_fib_lookup` resolves it. The peer namespaces are
/// returned too: each is deleted when dropped.
fn wire_router() -> (NetNs, NetNs, NetNs) {
    let router = NetNs::new("bench-r");
    let peer_in = NetNs::new("bench-in");
    let peer_out = NetNs::new("bench-out");
    veth_pair(&router, "r0", &peer_in, "c0");
    veth_pair(&router, "r1", &peer_out, "s0");
    router.ip(&["addr", "add", "192.0.2.1/24", "dev", "r0"]);
    router.ip(&["addr", "add", "198.51.100.1/24", "dev", "r1"]);
    router.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "198.51.100.2",
        "dev",
        "r1",
    ]);
    router.ip(&[
        "neigh",
        "add",
        "198.51.100.2",
        "lladdr",
        "02:bb:00:00:00:02",
        "dev",
        "r1",
        "nud",
        "permanent",
    ]);
    router.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    (router, peer_in, peer_out)
}

/// A fresh datapath in cache-and-fib mode with `NEXTHOPS` resolved nexthops
/// on the loopback and `r1` as a transmit port.
fn load_datapath(r1: u32) -> Datapath {
    let caps = Capacities {
        tbl8_groups: 65_536,
        v6_routes: 1_100_000,
        nexthops: 4096,
        ecmp_groups: 64,
        ports: 64,
    };
    let mut dp = Datapath::load(&caps).expect("load the datapath");
    dp.maps.add_tx_port(LOOPBACK).unwrap();
    dp.maps.add_tx_port(r1).unwrap();
    dp.maps
        .set_config(&Config {
            mode: Mode::CacheAndFib as u32,
            ..Default::default()
        })
        .unwrap();
    for id in 1..=NEXTHOPS {
        dp.maps
            .write_nexthop(
                id,
                id,
                &resolved(LOOPBACK, [2, 0, 0, 0, (id >> 8) as u8, id as u8]),
            )
            .unwrap();
    }
    dp
}

/// Grows the IPv4 table in `loaded` to `target` random routes and prints
/// how fast the map took them.
fn load_v4_routes(dp: &Datapath, rng: &mut Rng, loaded: &mut Vec<Ipv4Net>, target: usize) {
    let started = Instant::now();
    let before = loaded.len();
    let mut deferred = 0;
    while loaded.len() < target {
        let prefix = v4_prefix(rng);
        let id = 1 + (rng.next_u64() % NEXTHOPS as u64) as u32;
        if dp
            .maps
            .v4
            .lock()
            .insert(prefix, RouteAction::new(RouteKind::Nexthop, id))
            .is_err()
        {
            deferred += 1;
        }
        loaded.push(prefix);
    }
    let took = started.elapsed();
    println!(
        "loaded {} IPv4 routes (total {target}) in {:.3} s: {:.0} routes/s; {} tbl8 groups in use, {deferred} deferred",
        target - before,
        took.as_secs_f64(),
        (target - before) as f64 / took.as_secs_f64(),
        dp.maps.v4.lock().groups_in_use(),
    );
}

/// `count` frames to random hosts inside random prefixes of `loaded`.
fn v4_hit_frames(rng: &mut Rng, loaded: &[Ipv4Net], count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| {
            let p = loaded[(rng.next_u64() % loaded.len() as u64) as usize];
            let host = u32::from(p.network()) | (rng.next_u64() as u32 & !u32::from(p.netmask()));
            frames::udp4(Tagging::Untagged, SRC, Ipv4Addr::from(host), TTL, 1000, 53)
        })
        .collect()
}

/// Grows the IPv6 trie in `loaded` to `target` random routes, in batches
/// of 4096 as the daemon's writer thread ships them (with a reclaim after
/// each, as its grace period), and prints how fast and how big.
fn load_v6_routes(dp: &Datapath, rng: &mut Rng, loaded: &mut Vec<Ipv6Net>, target: usize) {
    let started = Instant::now();
    let before = loaded.len();
    let mut table = dp.maps.v6.lock();
    while loaded.len() < target {
        let batch: Vec<(Ipv6Net, Option<RouteAction>)> = (0..(target - loaded.len()).min(4096))
            .map(|_| {
                let id = 1 + (rng.next_u64() % NEXTHOPS as u64) as u32;
                (
                    v6_prefix(rng),
                    Some(RouteAction::new(RouteKind::Nexthop, id)),
                )
            })
            .collect();
        assert!(table.apply(batch.iter().copied()).is_empty(), "room enough");
        table.reclaim();
        loaded.extend(batch.iter().map(|(p, _)| *p));
    }
    table.reclaim();
    table.reclaim();
    let took = started.elapsed();
    println!(
        "loaded {} IPv6 routes (total {target}) in {:.3} s: {:.0} routes/s; {} trie nodes and {} leaves in use ({:.0} bytes per route)",
        target - before,
        took.as_secs_f64(),
        (target - before) as f64 / took.as_secs_f64(),
        table.nodes_in_use(),
        table.leaves_in_use(),
        (table.nodes_in_use() * size_of::<V6Node>() as u64 + table.leaves_in_use() * 4) as f64 / table.len() as f64,
    );
}

/// `count` random hosts inside random prefixes of `v6`.
fn v6_hits(rng: &mut Rng, v6: &[Ipv6Net], count: usize) -> Vec<Ipv6Addr> {
    (0..count)
        .map(|_| {
            let p = v6[(rng.next_u64() % v6.len() as u64) as usize];
            let host = u128::from(p.network())
                | (((rng.next_u64() as u128) << 64 | rng.next_u64() as u128)
                    & !u128::from(p.netmask()));
            Ipv6Addr::from(host)
        })
        .collect()
}

fn v6_frames(hosts: &[Ipv6Addr]) -> Vec<Vec<u8>> {
    let src6: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
    hosts
        .iter()
        .map(|&host| frames::udp6(Tagging::Untagged, src6, host, TTL, 1000, 53))
        .collect()
}

/// How many trie nodes the datapath reads for each of `hosts`, as the
/// report's line after the cases: the IPv6 hit's cost beyond IPv4's is
/// these dependent reads (with the top entry and the leaf).
fn nodes_read(dp: &Datapath, hosts: &[Ipv6Addr]) -> String {
    let table = dp.maps.v6.lock();
    let mut by_count = BTreeMap::<u32, usize>::new();
    for host in hosts {
        *by_count
            .entry(nodes_read_in(table.store(), u128::from(*host)))
            .or_default() += 1;
    }
    let total: u32 = by_count.iter().map(|(n, c)| n * *c as u32).sum();
    let spread: Vec<String> = by_count.iter().map(|(n, c)| format!("{n}: {c}")).collect();
    format!(
        "mean {:.2} ({})",
        f64::from(total) / hosts.len() as f64,
        spread.join(", ")
    )
}

/// Every case, in the order of the report. Runs inside the router
/// namespace, so the fib lookups see its routes.
fn run_cases(r0: u32, r1: u32) -> (Vec<Row>, Vec<String>) {
    let dp = load_datapath(r1);
    let fast_path = dp
        .program_fd(names::PROG_FAST_PATH)
        .unwrap()
        .try_clone_to_owned()
        .unwrap();
    let floor_prog = dp
        .program_fd(names::PROG_PASS)
        .unwrap()
        .try_clone_to_owned()
        .unwrap();
    let fast_path = fast_path.as_fd();
    let mut rows = Vec::new();

    let probe = probe_frame(TTL);
    rows.push(Row::new(
        "floor: empty XDP program",
        "-",
        measure(
            floor_prog.as_fd(),
            std::slice::from_ref(&probe),
            None,
            XDP_PASS,
            "floor",
        ),
    ));
    rows.push(Row::new(
        "miss -> bpf_fib_lookup -> redirect",
        "0",
        measure(
            fast_path,
            std::slice::from_ref(&probe),
            Some(r0),
            XDP_REDIRECT,
            "miss -> fib",
        ),
    ));
    rows.push(Row::new(
        "pass (TTL 1)",
        "-",
        measure(fast_path, &[probe_frame(1)], None, XDP_PASS, "pass"),
    ));

    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut loaded: Vec<Ipv4Net> = Vec::new();
    for target in [1_000usize, 100_000, 1_000_000] {
        load_v4_routes(&dp, &mut rng, &mut loaded, target);
        let hits = v4_hit_frames(&mut rng, &loaded, WARM_DESTINATIONS);
        rows.push(Row::new(
            "IPv4 cache hit",
            &target.to_string(),
            measure(fast_path, &hits, None, XDP_REDIRECT, "IPv4 hit"),
        ));
    }
    rows.push(Row::new(
        "miss -> bpf_fib_lookup -> redirect",
        "1000000",
        measure(
            fast_path,
            std::slice::from_ref(&probe),
            Some(r0),
            XDP_REDIRECT,
            "miss -> fib with 1M routes",
        ),
    ));

    let cold4 = v4_hit_frames(&mut rng, &loaded, COLD_DESTINATIONS);

    let mut v6: Vec<Ipv6Net> = Vec::new();
    let mut cold6 = Vec::new();
    let mut depths = Vec::new();
    for target in [1_000usize, 250_000, 1_000_000] {
        load_v6_routes(&dp, &mut rng, &mut v6, target);
        let hosts = v6_hits(&mut rng, &v6, WARM_DESTINATIONS);
        rows.push(Row::new(
            "IPv6 cache hit (trie)",
            &target.to_string(),
            measure(
                fast_path,
                &v6_frames(&hosts),
                None,
                XDP_REDIRECT,
                "IPv6 hit",
            ),
        ));
        depths.push(format!(
            "trie nodes read per IPv6 hit, {target} routes, the {WARM_DESTINATIONS} warm destinations: {}",
            nodes_read(&dp, &hosts)
        ));
        if target == 250_000 {
            let hosts = v6_hits(&mut rng, &v6, COLD_DESTINATIONS);
            depths.push(format!(
                "trie nodes read per IPv6 hit, {target} routes, the {COLD_DESTINATIONS} cold destinations: {}",
                nodes_read(&dp, &hosts)
            ));
            cold6 = v6_frames(&hosts);
        }
    }
    rows.extend(cold_cases(
        fast_path,
        floor_prog.as_fd(),
        &probe,
        &cold4,
        &cold6,
    ));
    (rows, depths)
}

/// One run per call over 64k destinations spread over the loaded tables,
/// beside the floor measured the same way.
fn cold_cases(
    fast_path: BorrowedFd<'_>,
    floor_prog: BorrowedFd<'_>,
    probe: &[u8],
    cold4: &[Vec<u8>],
    cold6: &[Vec<u8>],
) -> Vec<Row> {
    let probes = vec![probe.to_vec(); COLD_DESTINATIONS];
    vec![
        Row::new(
            "cold: empty XDP program, 1 run/call",
            "-",
            measure_cold(floor_prog, &probes, None, XDP_PASS, "cold floor"),
        ),
        Row::new(
            "cold: IPv4 hit, 64k destinations",
            "1000000",
            measure_cold(fast_path, cold4, None, XDP_REDIRECT, "cold IPv4 hit"),
        ),
        Row::new(
            "cold: IPv6 hit (trie), 64k destinations",
            "250000",
            measure_cold(fast_path, cold6, None, XDP_REDIRECT, "cold IPv6 hit"),
        ),
    ]
}

/// The table of cases against the floor, then the 1M-route comparison
/// of a cache hit with the `bpf_fib_lookup` path.
fn print_report(rows: &[Row]) {
    let floor = rows[0].median.max(1) as f64;
    // Cold rows are set against the floor measured one run per call too.
    let cold_floor = rows
        .iter()
        .find(|r| r.case.starts_with("cold:"))
        .map_or(floor, |r| r.median.max(1) as f64);
    println!(
        "\n{:<38} {:>9} {:>11} {:>8} {:>9}",
        "case", "routes", "median ns", "min ns", "x floor"
    );
    for r in rows {
        let against = if r.case.starts_with("cold:") {
            cold_floor
        } else {
            floor
        };
        println!(
            "{:<38} {:>9} {:>11} {:>8} {:>9.2}",
            r.case,
            r.routes,
            r.median,
            r.min,
            r.median as f64 / against
        );
    }
    let hit_1m = rows
        .iter()
        .find(|r| r.case == "IPv4 cache hit" && r.routes == "1000000")
        .unwrap()
        .median;
    let fib_1m = rows
        .iter()
        .find(|r| r.case.starts_with("miss") && r.routes == "1000000")
        .unwrap()
        .median;
    println!(
        "\ncache hit with 1M IPv4 routes vs bpf_fib_lookup path, same run: {hit_1m} ns vs {fib_1m} ns (ratio {:.2}); hit - floor = {} ns",
        hit_1m as f64 / fib_1m as f64,
        hit_1m as i64 - rows[0].median as i64
    );
    let median_of = |case: &str| rows.iter().find(|r| r.case == case).map(|r| r.median);
    let hit6 = |routes: &str| {
        rows.iter()
            .find(|r| r.case == "IPv6 cache hit (trie)" && r.routes == routes)
            .map_or(0, |r| r.median)
    };
    for routes in ["250000", "1000000"] {
        println!(
            "IPv6 hit with {routes} IPv6 routes vs IPv4 hit with 1M IPv4 routes, same run: {} ns vs {hit_1m} ns (ratio {:.2}; target <= 1.25)",
            hit6(routes),
            hit6(routes) as f64 / hit_1m.max(1) as f64
        );
    }
    if let (Some(v4), Some(v6)) = (
        median_of("cold: IPv4 hit, 64k destinations"),
        median_of("cold: IPv6 hit (trie), 64k destinations"),
    ) {
        println!(
            "cold caches, 64k destinations, same run: IPv6 hit {v6} ns vs IPv4 hit {v4} ns (ratio {:.2}); above the one-run floor: {} ns vs {} ns",
            v6 as f64 / v4.max(1) as f64,
            v6 as i64 - cold_floor as i64,
            v4 as i64 - cold_floor as i64
        );
    }
}

fn main() {
    assert!(
        integration_tests::is_root(),
        "the benchmark loads BPF programs: run it as root"
    );
    println!("{}", machine());
    println!("method: BPF_PROG_TEST_RUN, {ROUNDS} calls of repeat {REPEAT} per case, median of the per-call means, frames cycled\n");

    let (router, _peer_in, _peer_out) = wire_router();
    let (r0, r1) = (router.ifindex("r0"), router.ifindex("r1"));
    let (rows, depths) = router.enter(|| run_cases(r0, r1));
    print_report(&rows);
    for line in depths {
        println!("{line}");
    }
}
