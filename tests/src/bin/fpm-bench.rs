//! Full-table load through the FPM path: a generator streams nexthop
//! objects and 1M IPv4 + 250k IPv6 routes as FPM frames to a real
//! `pf-sidecar run`, and the benchmark reports the time until the maps hold
//! them all, routes/s, the daemon's peak RSS per route, and the raw floor
//! (the same map writes in a tight loop) measured in the same run. Then it
//! measures change latency under a steady churn.
//!
//! Run as root after `cargo build --release`: `make bench` runs it.

use std::{
    io::Write,
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::maps::IterableMap;
use integration_tests::{
    fpm_messages::route_message,
    full_table::{fpm_frames, FullTable, GATEWAYS, GROUPS, V4_ROUTES, V6_ROUTES},
    netns::{veth_pair, NetNs},
    synthetic::machine,
};
use pf_common::{RouteAction, RouteKind};
use pf_sidecar::{
    control::fpm::frame,
    datapath::{batch, Capacities, Datapath},
    inspect::PinnedMaps,
};
use std::os::fd::AsFd;

const CHURN: usize = 2000;
const REPLAY_QUIET_MS: u64 = 2000;

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    assert!(integration_tests::is_root(), "run as root");
    let daemon_bin: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("pf-sidecar");
    assert!(
        daemon_bin.exists(),
        "build pf-sidecar first (cargo build --release)"
    );
    println!("{}", machine());

    let table = FullTable::new();
    let (v4, v6) = (&table.v4, &table.v6);
    // Churn targets: /32 routes (nothing longer can cover them), each with
    // the gateway object it points at.
    let mut churn = FullTable::churn_targets(CHURN);

    // The floor: the same writes straight into fresh maps in a tight loop.
    let caps = Capacities {
        tbl8_groups: 65_536,
        v6_routes: 300_000,
        nexthops: 4096,
        ecmp_groups: 512,
        ports: 64,
    };
    let floor = {
        let mut dp = Datapath::load(&caps).unwrap();
        let started = Instant::now();
        for (i, p) in v4.iter().enumerate() {
            let _ = dp.maps.v4.insert(
                *p,
                RouteAction::new(RouteKind::Nexthop, 1 + i as u32 % GATEWAYS),
            );
        }
        for (i, p) in v6.iter().enumerate() {
            dp.maps
                .set_v6_route(
                    p.network().octets(),
                    p.prefix_len(),
                    RouteAction::new(RouteKind::Nexthop, 1 + i as u32 % GATEWAYS).0,
                )
                .unwrap();
        }
        started.elapsed()
    };
    // The same, with the IPv6 inserts made 4096 to a syscall
    // (BPF_MAP_UPDATE_BATCH), as the daemon's IPv6 writer makes them.
    let floor_batched = {
        let mut dp = Datapath::load(&caps).unwrap();
        let started = Instant::now();
        for (i, p) in v4.iter().enumerate() {
            let _ = dp.maps.v4.insert(
                *p,
                RouteAction::new(RouteKind::Nexthop, 1 + i as u32 % GATEWAYS),
            );
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct LpmKey6 {
            prefix_len: u32,
            address: [u8; 16],
        }
        let keys: Vec<LpmKey6> = v6
            .iter()
            .map(|p| LpmKey6 {
                prefix_len: p.prefix_len() as u32,
                address: p.network().octets(),
            })
            .collect();
        let values: Vec<u32> = (0..v6.len())
            .map(|i| RouteAction::new(RouteKind::Nexthop, 1 + i as u32 % GATEWAYS).0)
            .collect();
        let fd = dp.maps.v6_routes.map().fd().as_fd();
        for (k, v) in keys.chunks(4096).zip(values.chunks(4096)) {
            batch::update(fd, k, v).unwrap();
        }
        started.elapsed()
    };

    let router = NetNs::new("fpmb-r");
    let peer = NetNs::new("fpmb-p");
    veth_pair(&router, "r1", &peer, "p1");
    router.ip(&["addr", "add", "2001:db8:2::1/64", "dev", "r1", "nodad"]);
    let ifindex = router.ifindex("r1");
    let pin_dir = format!("/sys/fs/bpf/pf-fpmbench-{}", std::process::id());
    let config = std::env::temp_dir().join(format!("pf-fpmbench-{}.toml", std::process::id()));
    let port = 30000 + (std::process::id() % 1000) as u16;
    std::fs::write(
        &config,
        format!(
            "[general]\npin_dir = \"{pin_dir}\"\ninterfaces = [\"r1\"]\nlog_level = \"warn\"\n\
             [capacity]\ntbl8_groups = 65536\nv6_routes = 300000\nnexthops = 4096\necmp_groups = 512\n\
             [fpm]\nlisten = \"127.0.0.1:{port}\"\nreplay_quiet_ms = {REPLAY_QUIET_MS}\n"
        ),
    )
    .unwrap();
    let mut daemon = Command::new(&daemon_bin)
        .args(["--netns", &router.name, "run", "--config"])
        .arg(&config)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let baseline_kib = rss_kib(daemon.id(), "VmRSS:");

    let mut messages = FullTable::nexthop_messages(ifindex);
    messages.extend(churn.iter().map(|(p, id)| route_message((*p).into(), *id)));
    messages.extend(table.route_messages());

    let stream_bytes = fpm_frames(messages.iter().map(Vec::as_slice)).concat();
    drop(messages);
    println!(
        "generator: {} routes + {} nexthop objects in {:.1} MB of FPM frames",
        V4_ROUTES + V6_ROUTES,
        GATEWAYS + GROUPS,
        stream_bytes.len() as f64 / 1e6
    );

    let (last_v4, last_v6) = (v4[V4_ROUTES - 1], v6[V6_ROUTES - 1]);
    eprintln!("streaming...");
    let mut socket = router
        .enter(|| TcpStream::connect(("127.0.0.1", port)).expect("connect to the FPM listener"));
    let started = Instant::now();
    socket.write_all(&stream_bytes).unwrap();
    let sent = started.elapsed();
    let maps = loop {
        if let Ok(m) = PinnedMaps::open(std::path::Path::new(&pin_dir)) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let present = |maps: &PinnedMaps| {
        let a = maps
            .action(last_v4.network().into())
            .map(|a| a.kind() != Some(RouteKind::Miss))
            .unwrap_or(false);
        let b = maps
            .action(last_v6.network().into())
            .map(|a| a.kind() != Some(RouteKind::Miss))
            .unwrap_or(false);
        a && b
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while !present(&maps) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not program the table in 300 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let loaded = started.elapsed();
    let routes = (V4_ROUTES + V6_ROUTES) as f64;
    let peak_kib = rss_kib(daemon.id(), "VmHWM:");
    println!("\nfull table through FPM: {routes} routes programmed in {:.2} s ({:.0} routes/s); the generator finished sending after {:.2} s", loaded.as_secs_f64(), routes / loaded.as_secs_f64(), sent.as_secs_f64());
    println!("floor, same run: the same map writes in a tight loop took {:.2} s ({:.0} routes/s); end to end / floor = {:.2}", floor.as_secs_f64(), routes / floor.as_secs_f64(), loaded.as_secs_f64() / floor.as_secs_f64());
    println!(
        "floor with batched IPv6 writes, same run: {:.2} s; end to end / batched floor = {:.2}",
        floor_batched.as_secs_f64(),
        loaded.as_secs_f64() / floor_batched.as_secs_f64()
    );
    println!(
        "daemon RSS: {:.0} MiB before, peak {:.0} MiB: {:.0} B/route",
        baseline_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
        (peak_kib.saturating_sub(baseline_kib) * 1024) as f64 / routes
    );

    // Change latency: one route change per frame at about 1k changes/s,
    // each moving a /32 to another gateway.
    // Steady state: the replay has been declared over (replay_quiet_ms
    // without a message) and swept before the churn starts.
    std::thread::sleep(Duration::from_millis(REPLAY_QUIET_MS + 1000));
    // diff on the full table: the daemon's FPM view against the pinned maps.
    let diff_started = Instant::now();
    let diff = Command::new(&daemon_bin)
        .args([
            "--netns",
            &router.name,
            "--pin-dir",
            &pin_dir,
            "diff",
            "--against",
            "fpm",
            "--json",
        ])
        .output()
        .unwrap();
    let diff_took = diff_started.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&diff.stdout).unwrap_or_default();
    println!(
        "diff --against fpm on the full table: {:.2} s, exit {}, {} prefixes and {} nexthops compared, in sync: {}",
        diff_took.as_secs_f64(),
        diff.status.code().unwrap_or(-1),
        report["summary"]["compared_prefixes"],
        report["summary"]["compared_nexthops"],
        report["summary"]["in_sync"],
    );
    let mut latencies = Vec::with_capacity(CHURN);
    for (prefix, object) in churn.iter_mut() {
        let before = maps.action(prefix.network().into()).unwrap();
        *object = *object % GATEWAYS + 1;
        let bytes = frame(&[&route_message((*prefix).into(), *object)]);
        let sent_at = Instant::now();
        socket.write_all(&bytes).unwrap();
        while maps.action(prefix.network().into()).unwrap() == before {
            assert!(
                sent_at.elapsed() < Duration::from_secs(5),
                "{prefix} never changed"
            );
        }
        latencies.push(sent_at.elapsed());
        std::thread::sleep(Duration::from_millis(1).saturating_sub(sent_at.elapsed()));
    }
    latencies.sort();
    println!(
        "change latency over {CHURN} changes at up to 1k/s on the full table: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );

    drop(socket);
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    let _ = Command::new(&daemon_bin)
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
    let _ = std::fs::remove_file(&config);
}
