//! `pf-sidecar run` as a child process of a test, and checks that the
//! pinned maps answer what a route source says is installed.

use std::{
    net::IpAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{frr::InstalledRoute, lab::Lab, netns::NetNs};
use ipnet::IpNet;
use pf_sidecar::pinned_maps::PinnedMaps;

/// The daemon, stopped and its pins removed on drop.
pub struct Daemon {
    /// The pf-sidecar binary (cargo's `CARGO_BIN_EXE_pf-sidecar` in
    /// pf-sidecar's tests).
    bin: PathBuf,
    child: Child,
    pub pin_dir: PathBuf,
    netns: String,
    log: PathBuf,
    tag: String,
}

impl Daemon {
    pub fn start(bin: &str, lab: &Lab, fpm_port: u16, tag: &str) -> Self {
        Self::start_with(
            bin,
            lab,
            &format!("[fpm]\nlisten = \"127.0.0.1:{fpm_port}\"\nreplay_quiet_ms = 300\n"),
            tag,
        )
    }

    /// Starts with `extra` TOML appended to the lab's general section.
    pub fn start_with(bin: &str, lab: &Lab, extra: &str, tag: &str) -> Self {
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/pf-test-{tag}-{}", std::process::id()));
        let config =
            std::env::temp_dir().join(format!("pf-test-{tag}-{}.toml", std::process::id()));
        std::fs::write(
            &config,
            format!(
                "[general]\npin_dir = \"{}\"\ninterfaces = [\"r0\", \"r1\", \"r2\"]\nlog_level = \"info\"\n{extra}",
                pin_dir.display()
            ),
        )
        .unwrap();
        let log = std::env::temp_dir().join(format!("pf-test-{tag}-{}.log", std::process::id()));
        let child = Command::new(bin)
            .args(["--netns", &lab.router.name, "run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start pf-sidecar run");
        Self {
            bin: PathBuf::from(bin),
            child,
            pin_dir,
            netns: lab.router.name.clone(),
            log,
            tag: tag.to_owned(),
        }
    }

    /// SIGKILLs the daemon (the datapath stays pinned) and starts it again
    /// with the same configuration, appending to the same log.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// SIGKILLs the daemon and reaps it (the datapath stays pinned).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the daemon again with the same configuration, appending to
    /// the same log (after [`Daemon::kill`]).
    pub fn restart(&mut self) {
        let config =
            std::env::temp_dir().join(format!("pf-test-{}-{}.toml", self.tag, std::process::id()));
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Command::new(&self.bin)
            .args(["--netns", &self.netns, "run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("restart pf-sidecar run");
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `pf-sidecar diff --json --against <against>` in the router: the exit
    /// code, the JSON if it printed any, and stderr.
    pub fn diff(
        &self,
        against: &str,
        frr_pathspace: Option<&str>,
    ) -> (i32, Option<serde_json::Value>, String) {
        let mut command = Command::new(&self.bin);
        command
            .args(["--netns", &self.netns, "--pin-dir"])
            .arg(&self.pin_dir)
            .args(["diff", "--json", "--against", against]);
        if let Some(pathspace) = frr_pathspace {
            command.args(["--frr-pathspace", pathspace]);
        }
        let output = command.output().expect("run pf-sidecar diff");
        (
            output.status.code().unwrap_or(-1),
            serde_json::from_slice(&output.stdout).ok(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// [`Daemon::assert_diff_clean`] against FRR's RIB, the FPM view and the kernel.
    pub fn assert_diff_clean_everywhere(&self, frr_pathspace: &str, step: &str) {
        for against in ["frr", "fpm", "kernel"] {
            self.assert_diff_clean(against, Some(frr_pathspace), step);
        }
    }

    /// `pf-sidecar status --json` (rates off): the JSON, or Null if it
    /// printed none.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(&self.bin)
            .args(["--netns", &self.netns, "--pin-dir"])
            .arg(&self.pin_dir)
            .args(["status", "--json", "--rate-interval-ms", "0"])
            .output()
            .expect("run pf-sidecar status");
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Connects to the daemon's FPM listener in `ns` as zebra would.
    pub fn connect_fpm(&self, ns: &NetNs, port: u16) -> std::net::TcpStream {
        ns.enter(|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match std::net::TcpStream::connect(("127.0.0.1", port)) {
                    Ok(s) => return s,
                    Err(e) => assert!(
                        Instant::now() < deadline,
                        "the FPM listener never opened: {e}\n{}",
                        self.log()
                    ),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    /// Waits until `diff --against <against>` exits 0 (in sync).
    pub fn assert_diff_clean(&self, against: &str, frr_pathspace: Option<&str>, step: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (code, json, stderr) = self.diff(against, frr_pathspace);
            if code == 0
                && json
                    .as_ref()
                    .is_some_and(|j| j["summary"]["in_sync"] == true)
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "after {step}, `diff --against {against}` is not clean (exit {code}):\n{}\n{stderr}\n--- daemon log ---\n{}",
                    json.map(|j| format!("{j:#}")).unwrap_or_default(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A test may fail while the daemon is stopped: continue it first, and
        // never wait more than a few seconds.
        let pid = self.child.id() as i32;
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new(&self.bin)
            .args(["--netns", &self.netns, "--pin-dir"])
            .arg(&self.pin_dir)
            .args(["detach", "--all"])
            .output();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// An address inside `prefix` that no longer installed prefix covers and
/// that is not one of the router's own addresses.
pub fn probe(prefix: &IpNet, all: &[IpNet], own: &[IpAddr]) -> Option<IpAddr> {
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
pub fn mismatches(
    routes: &[InstalledRoute],
    pin_dir: &std::path::Path,
    own: &[IpAddr],
) -> Vec<String> {
    let maps = match PinnedMaps::open(pin_dir) {
        Ok(maps) => maps,
        Err(e) => return vec![format!("no pinned maps yet: {e:#}")],
    };
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

/// Waits until the maps answer what `installed()` reports, or fails with the
/// differences and the daemon's log.
pub fn converge(
    installed: &dyn Fn() -> Vec<InstalledRoute>,
    daemon: &Daemon,
    own: &[IpAddr],
    step: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let problems = mismatches(&installed(), &daemon.pin_dir, own);
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

/// The router's own addresses in the lab.
pub fn lab_addresses() -> Vec<IpAddr> {
    [
        "192.0.2.1",
        "198.51.100.1",
        "198.51.100.65",
        "2001:db8:1::1",
        "2001:db8:2::1",
        "2001:db8:3::1",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect()
}

/// Routes in a namespace's kernel FIB (main table), as `ip -j route` shows them.
pub fn kernel_routes(ns: &NetNs) -> Vec<InstalledRoute> {
    let mut routes = Vec::new();
    for family in ["-4", "-6"] {
        let out = ns.exec_ok("ip", &["-j", family, "route", "show", "table", "main"]);
        let parsed: serde_json::Value =
            serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
        for r in parsed.as_array().into_iter().flatten() {
            let dst = r["dst"].as_str().unwrap_or("");
            let prefix = match dst {
                "default" => {
                    if family == "-4" {
                        "0.0.0.0/0".to_string()
                    } else {
                        "::/0".to_string()
                    }
                }
                d if d.contains('/') => d.to_string(),
                d => format!("{d}/{}", if family == "-4" { 32 } else { 128 }),
            };
            let kind = match r["type"].as_str() {
                Some("blackhole") => "blackhole",
                _ if r["gateway"].is_null() && r["nexthops"].is_null() => "connected",
                _ => "unicast",
            };
            let mut nexthops = Vec::new();
            if let Some(g) = r["gateway"].as_str() {
                nexthops.push((Some(g.to_string()), None));
            }
            for nh in r["nexthops"].as_array().into_iter().flatten() {
                nexthops.push((nh["gateway"].as_str().map(str::to_owned), None));
            }
            routes.push(InstalledRoute {
                prefix,
                protocol: r["protocol"].as_str().unwrap_or("").into(),
                kind: kind.into(),
                nexthops,
            });
        }
    }
    routes
}
