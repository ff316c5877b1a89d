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
    net::{IpAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    fpm_messages::route_message,
    full_table::{fpm_frames, FullTable, IpV6Writes, GATEWAYS, GROUPS, V4_ROUTES, V6_ROUTES},
    netns::{veth_pair, NetNs},
    synthetic::machine,
};
use ipnet::{Ipv4Net, Ipv6Net};
use pf_common::RouteKind;
use pf_control::fpm::frame;
use pf_sidecar::pinned_maps::PinnedMaps;

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

/// CPU seconds each thread of `pid` has used, summed by thread name.
fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // comm is in parentheses and may hold spaces; utime and stime are
        // the 12th and 13th fields after it.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let cpu: f64 =
            fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
        *by_name
            .entry(stat[open + 1..close].to_string())
            .or_insert(0.0) += cpu / ticks;
    }
    by_name
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The `pf-sidecar` binary next to this one.
fn daemon_binary() -> PathBuf {
    let daemon_bin: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("pf-sidecar");
    assert!(
        daemon_bin.exists(),
        "build pf-sidecar first (cargo build --release)"
    );
    daemon_bin
}

/// The FPM stream the generator sends: the nexthop objects, the churn
/// targets, then the full table.
fn full_table_stream(table: &FullTable, churn: &[(Ipv4Net, u32)], ifindex: u32) -> Vec<u8> {
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
    stream_bytes
}

/// Whether the maps hold a route (anything but a miss) for `addr`.
fn holds_route(maps: &PinnedMaps, addr: IpAddr) -> bool {
    maps.action(addr)
        .map(|a| a.kind() != Some(RouteKind::Miss))
        .unwrap_or(false)
}

/// What the full-table load measured.
struct Load {
    /// Until the generator finished writing the stream.
    sent: Duration,
    /// Until the maps held the table's last IPv4 and IPv6 routes.
    loaded: Duration,
    /// CPU seconds per daemon thread during the load, as the report prints them.
    cpu_used: Vec<String>,
    peak_kib: u64,
}

/// A `pf-sidecar run` in the router namespace with FPM listening on `port`.
struct Daemon {
    bin: PathBuf,
    netns: String,
    child: Child,
    pin_dir: String,
    config: PathBuf,
    port: u16,
}

impl Daemon {
    /// Writes the daemon's configuration, starts it and gives it time to
    /// attach and listen.
    fn start(bin: PathBuf, router: &NetNs) -> Self {
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
        let child = Command::new(&bin)
            .args(["--netns", &router.name, "run", "--config"])
            .arg(&config)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        Self {
            bin,
            netns: router.name.clone(),
            child,
            pin_dir,
            config,
            port,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's maps, once it has pinned them.
    fn wait_for_maps(&self) -> PinnedMaps {
        loop {
            if let Ok(m) = PinnedMaps::open(std::path::Path::new(&self.pin_dir)) {
                break m;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `stream_bytes` over a new FPM connection and waits until the
    /// maps hold `last_v4` and `last_v6`, the table's last routes. Returns
    /// the connection and the maps for the churn that follows.
    fn load(
        &self,
        router: &NetNs,
        stream_bytes: &[u8],
        last_v4: Ipv4Net,
        last_v6: Ipv6Net,
    ) -> (TcpStream, PinnedMaps, Load) {
        let mut socket = router.enter(|| {
            TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the FPM listener")
        });
        let cpu_before = thread_cpu(self.pid());
        let started = Instant::now();
        socket.write_all(stream_bytes).unwrap();
        let sent = started.elapsed();
        let maps = self.wait_for_maps();
        let present = |maps: &PinnedMaps| {
            let a = holds_route(maps, last_v4.network().into());
            let b = holds_route(maps, last_v6.network().into());
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
        let cpu_used: Vec<String> = thread_cpu(self.pid())
            .into_iter()
            .map(|(name, after)| {
                let used = after - cpu_before.get(&name).copied().unwrap_or(0.0);
                format!("{name} {used:.2} s")
            })
            .collect();
        let peak_kib = rss_kib(self.pid(), "VmHWM:");
        let load = Load {
            sent,
            loaded,
            cpu_used,
            peak_kib,
        };
        (socket, maps, load)
    }

    /// Times `diff --against fpm` on the full table: the daemon's FPM view
    /// against the pinned maps.
    fn report_diff(&self) {
        let diff_started = Instant::now();
        let diff = Command::new(&self.bin)
            .args([
                "--netns",
                &self.netns,
                "--pin-dir",
                &self.pin_dir,
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
    }

    /// Stops the daemon and removes what it left: the attachment, the pins
    /// and the configuration.
    fn stop(mut self) {
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = Command::new(&self.bin)
            .args([
                "--netns",
                &self.netns,
                "--pin-dir",
                &self.pin_dir,
                "detach",
                "--all",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Prints the load against the floors measured in the same run, the
/// daemon's CPU by thread and its RSS per route.
fn print_load(load: &Load, floor: Duration, floor_batched: Duration, baseline_kib: u64) {
    let Load {
        sent,
        loaded,
        cpu_used,
        peak_kib,
    } = load;
    let routes = (V4_ROUTES + V6_ROUTES) as f64;
    println!("\nfull table through FPM: {routes} routes programmed in {:.2} s ({:.0} routes/s); the generator finished sending after {:.2} s", loaded.as_secs_f64(), routes / loaded.as_secs_f64(), sent.as_secs_f64());
    println!("floor, same run: the same map writes in a tight loop took {:.2} s ({:.0} routes/s); end to end / floor = {:.2}", floor.as_secs_f64(), routes / floor.as_secs_f64(), loaded.as_secs_f64() / floor.as_secs_f64());
    println!(
        "floor with batched IPv6 writes, same run: {:.2} s; end to end / batched floor = {:.2}",
        floor_batched.as_secs_f64(),
        loaded.as_secs_f64() / floor_batched.as_secs_f64()
    );
    println!(
        "daemon CPU during the load, by thread: {}",
        cpu_used.join(", ")
    );
    println!(
        "daemon RSS: {:.0} MiB before, peak {:.0} MiB: {:.0} B/route",
        baseline_kib as f64 / 1024.0,
        *peak_kib as f64 / 1024.0,
        (peak_kib.saturating_sub(baseline_kib) * 1024) as f64 / routes
    );
}

/// Change latency: one route change per frame at about 1k changes/s, each
/// moving a /32 to another gateway; the time until the maps show it.
/// Returns the latencies sorted.
fn churn_latencies(
    maps: &PinnedMaps,
    socket: &mut TcpStream,
    churn: &mut [(Ipv4Net, u32)],
) -> Vec<Duration> {
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
    latencies
}

fn main() {
    assert!(integration_tests::is_root(), "run as root");
    let daemon_bin = daemon_binary();
    println!("{}", machine());

    let table = FullTable::new();
    // Churn targets: /32 routes (nothing longer can cover them), each with
    // the gateway object it points at.
    let mut churn = FullTable::churn_targets(CHURN);

    // The floor: the same writes straight into fresh maps in a tight loop.
    let floor = table.write_floor(IpV6Writes::OneByOne);
    let floor_batched = table.write_floor(IpV6Writes::Batched);

    let router = NetNs::new("fpmb-r");
    let peer = NetNs::new("fpmb-p");
    veth_pair(&router, "r1", &peer, "p1");
    router.ip(&["addr", "add", "2001:db8:2::1/64", "dev", "r1", "nodad"]);
    let ifindex = router.ifindex("r1");
    let daemon = Daemon::start(daemon_bin, &router);
    let baseline_kib = rss_kib(daemon.pid(), "VmRSS:");

    let stream_bytes = full_table_stream(&table, &churn, ifindex);
    let (last_v4, last_v6) = (table.v4[V4_ROUTES - 1], table.v6[V6_ROUTES - 1]);
    eprintln!("streaming...");
    let (mut socket, maps, load) = daemon.load(&router, &stream_bytes, last_v4, last_v6);
    print_load(&load, floor, floor_batched, baseline_kib);

    // Steady state: the replay has been declared over (replay_quiet_ms
    // without a message) and swept before the churn starts.
    std::thread::sleep(Duration::from_millis(REPLAY_QUIET_MS + 1000));
    daemon.report_diff();
    let latencies = churn_latencies(&maps, &mut socket, &mut churn);
    println!(
        "change latency over {CHURN} changes at up to 1k/s on the full table: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );

    drop(socket);
    daemon.stop();
}
