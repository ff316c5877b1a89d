//! `pf-sidecar run` against real FRR: after every vtysh change the pinned
//! maps answer exactly what `show ip route json` / `show ipv6 route json`
//! mark as installed, and traffic takes the fast path.

use std::{
    net::IpAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    frr::{Frr, FrrConfig, InstalledRoute},
    lab::{Lab, SERVER_V4, SERVER_V6},
    require_root,
};
use ipnet::IpNet;
use pf_sidecar::inspect::PinnedMaps;

/// The daemon, stopped and its pins removed on drop.
struct Daemon {
    child: Child,
    pin_dir: PathBuf,
    netns: String,
    log: PathBuf,
}

impl Daemon {
    fn start(lab: &Lab, fpm_port: u16, tag: &str) -> Self {
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/pf-test-{tag}-{}", std::process::id()));
        let config =
            std::env::temp_dir().join(format!("pf-test-{tag}-{}.toml", std::process::id()));
        std::fs::write(
            &config,
            format!(
                "[general]\npin_dir = \"{}\"\ninterfaces = [\"r0\", \"r1\", \"r2\"]\nlog_level = \"info\"\n\
                 [fpm]\nlisten = \"127.0.0.1:{fpm_port}\"\nreplay_quiet_ms = 300\n",
                pin_dir.display()
            ),
        )
        .unwrap();
        let log = std::env::temp_dir().join(format!("pf-test-{tag}-{}.log", std::process::id()));
        let child = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
            .args(["--netns", &lab.router.name, "run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start pf-sidecar run");
        Self {
            child,
            pin_dir,
            netns: lab.router.name.clone(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
            .args(["--netns", &self.netns, "--pin-dir"])
            .arg(&self.pin_dir)
            .args(["detach", "--all"])
            .output();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// An address inside `prefix` that no longer installed prefix covers and
/// that is not one of the router's own addresses.
fn probe(prefix: &IpNet, all: &[IpNet], own: &[IpAddr]) -> Option<IpAddr> {
    let hosts: Vec<IpAddr> = match prefix {
        IpNet::V4(p) => {
            let (first, last) = (u32::from(p.network()), u32::from(p.broadcast()));
            [
                last.saturating_sub(1),
                first + 1,
                first + (last - first) / 2,
                first,
            ]
            .iter()
            .map(|a| IpAddr::from(std::net::Ipv4Addr::from(*a)))
            .collect()
        }
        IpNet::V6(p) => {
            let (first, last) = (u128::from(p.network()), u128::from(p.broadcast()));
            [last - 1, first + 1, first + (last - first) / 2]
                .iter()
                .map(|a| IpAddr::from(std::net::Ipv6Addr::from(*a)))
                .collect()
        }
    };
    hosts.into_iter().find(|h| {
        !own.contains(h)
            && !all
                .iter()
                .any(|o| o.prefix_len() > prefix.prefix_len() && o.contains(h))
    })
}

/// What differs between FRR's installed routes and the maps' answers.
fn mismatches(frr: &Frr, pin_dir: &std::path::Path, own: &[IpAddr]) -> Vec<String> {
    let maps = match PinnedMaps::open(pin_dir) {
        Ok(maps) => maps,
        Err(e) => return vec![format!("no pinned maps yet: {e:#}")],
    };
    let routes: Vec<InstalledRoute> =
        [frr.installed_routes(false), frr.installed_routes(true)].concat();
    let prefixes: Vec<IpNet> = routes.iter().map(|r| r.prefix.parse().unwrap()).collect();
    let mut problems = Vec::new();
    for (route, prefix) in routes.iter().zip(&prefixes) {
        if prefix.addr().is_ipv6() && prefix.addr().to_string().starts_with("fe80") {
            continue;
        }
        let Some(address) = probe(prefix, &prefixes, own) else {
            continue;
        };
        let answer = match maps.answer(address) {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("{prefix}: reading the maps: {e}"));
                continue;
            }
        };
        let ok = match route.kind.as_str() {
            "connected" => answer.kind == "Fib",
            "blackhole" => answer.kind == "Blackhole",
            _ => {
                let mut want: Vec<String> = route
                    .nexthops
                    .iter()
                    .filter_map(|(g, _)| g.clone())
                    .collect();
                let mut have: Vec<String> = answer
                    .legs
                    .iter()
                    .filter_map(|l| l.gateway.map(|g| g.to_string()))
                    .collect();
                want.sort();
                have.sort();
                matches!(answer.kind.as_str(), "Nexthop" | "Group") && want == have
            }
        };
        if !ok {
            problems.push(format!(
                "{prefix} ({}) probed at {address}: FRR {:?}, maps {} {:?}",
                route.protocol,
                route.nexthops,
                answer.kind,
                answer.paths()
            ));
        }
    }
    problems
}

fn converge(frr: &Frr, daemon: &Daemon, own: &[IpAddr], step: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let problems = mismatches(frr, &daemon.pin_dir, own);
        if problems.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "after {step}, the maps differ from FRR's FIB:\n{}\n--- daemon log ---\n{}",
                problems.join("\n"),
                daemon.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_maps_follow_real_frr_through_adds_ecmp_blackholes_and_deletes() {
    require_root!();
    let lab = Lab::new("dfrr");
    let port = 27000 + (std::process::id() % 1000) as u16;
    let daemon = Daemon::start(&lab, port, "dfrr");
    let frr = Frr::start(
        &lab.router,
        &FrrConfig {
            fpm_port: Some(port),
            zebra: &[],
            staticd: Some(&[
                "ip route 203.0.113.0/24 198.51.100.2",
                "ipv6 route 2001:db8:ff::/48 2001:db8:2::2",
            ]),
            bgpd: None,
        },
    );
    let own: Vec<IpAddr> = [
        "192.0.2.1",
        "198.51.100.1",
        "198.51.100.65",
        "2001:db8:1::1",
        "2001:db8:2::1",
        "2001:db8:3::1",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    converge(&frr, &daemon, &own, "the first replay");

    // Traffic to the server takes the fast path.
    let ping = lab
        .client
        .exec("ping", &["-c", "5", "-i", "0.2", "-W", "2", SERVER_V4]);
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let ping6 = lab.client.exec(
        "ping",
        &["-6", "-c", "5", "-i", "0.2", "-W", "2", SERVER_V6],
    );
    assert!(
        ping6.status.success(),
        "ping -6: {}",
        String::from_utf8_lossy(&ping6.stdout)
    );
    let status = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &lab.router.name, "--pin-dir"])
        .arg(&daemon.pin_dir)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let redirect_cache = status["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "redirect_cache")
        .unwrap()["value"]
        .as_u64()
        .unwrap();
    assert!(
        redirect_cache >= 6,
        "the route cache forwarded the pings: {status}"
    );

    frr.configure(&["ip route 203.0.113.0/24 198.51.100.66"]);
    converge(&frr, &daemon, &own, "adding a second path (ECMP)");
    let answer = PinnedMaps::open(&daemon.pin_dir)
        .unwrap()
        .answer(SERVER_V4.parse().unwrap())
        .unwrap();
    assert_eq!(answer.kind, "Group", "{answer:?}");

    frr.configure(&[
        "ip route 203.0.113.128/25 blackhole",
        "ipv6 route 2001:db8:ff:1::/64 blackhole",
    ]);
    converge(&frr, &daemon, &own, "adding blackholes");

    frr.configure(&["no ip route 203.0.113.0/24 198.51.100.2"]);
    converge(&frr, &daemon, &own, "removing one ECMP path");

    frr.configure(&[
        "no ip route 203.0.113.128/25 blackhole",
        "no ipv6 route 2001:db8:ff:1::/64 blackhole",
    ]);
    converge(&frr, &daemon, &own, "deleting the blackholes");
    let answer = PinnedMaps::open(&daemon.pin_dir)
        .unwrap()
        .answer("203.0.113.200".parse().unwrap())
        .unwrap();
    assert_eq!(
        answer.kind, "Nexthop",
        "the /24 answers again where the /25 was: {answer:?}"
    );
}
