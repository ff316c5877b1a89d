//! Real FRR daemons inside a test namespace.
//!
//! Each instance has its own pathspace (`-N`), so sockets under
//! /var/run/frr/<name>/ never collide between concurrent tests, its own
//! config and log directory, and is stopped (and its files removed) on drop.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::netns::NetNs;

const FRR_BIN: &str = "/usr/lib/frr";
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

pub struct Frr {
    pub name: String,
    pub netns: String,
    pub dir: PathBuf,
    pub run_dir: PathBuf,
    daemons: Vec<String>,
}

/// Configuration of one FRR instance.
pub struct FrrConfig<'a> {
    /// `fpm address 127.0.0.1 port <port>`; None runs zebra without FPM.
    pub fpm_port: Option<u16>,
    /// Extra zebra configuration lines.
    pub zebra: &'a [&'a str],
    /// staticd configuration lines (static routes); None: no staticd.
    pub staticd: Option<&'a [&'a str]>,
    /// bgpd configuration lines; None: no bgpd.
    pub bgpd: Option<&'a [&'a str]>,
}

impl Frr {
    pub fn start(ns: &NetNs, config: &FrrConfig<'_>) -> Self {
        let name = format!(
            "pft{}x{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("pf-frr-{name}"));
        let run_dir = PathBuf::from("/var/run/frr").join(&name);
        for d in [&dir, &run_dir] {
            std::fs::create_dir_all(d).expect("create FRR directory");
            chown_frr(d);
        }
        let mut frr = Self {
            name,
            netns: ns.name.clone(),
            dir,
            run_dir,
            daemons: Vec::new(),
        };
        let log = frr.dir.join("frr.log");
        let header = format!(
            "frr defaults traditional\nhostname {}\nlog file {}\n",
            frr.name,
            log.display()
        );
        let mut zebra = header.clone();
        if let Some(port) = config.fpm_port {
            zebra.push_str(&format!("fpm address 127.0.0.1 port {port}\n"));
        }
        for line in config.zebra {
            zebra.push_str(line);
            zebra.push('\n');
        }
        frr.write_config("zebra", &zebra);
        let zebra_modules: &[&str] = if config.fpm_port.is_some() {
            &["-M", "dplane_fpm_nl"]
        } else {
            &[]
        };
        frr.spawn("zebra", zebra_modules);
        frr.wait_for_socket("zserv.api");
        for (daemon, lines) in [("staticd", config.staticd), ("bgpd", config.bgpd)] {
            if let Some(lines) = lines {
                frr.write_config(daemon, &format!("{header}{}\n", lines.join("\n")));
                frr.spawn(daemon, &[]);
            }
        }
        frr
    }

    fn write_config(&self, daemon: &str, text: &str) {
        let path = self.dir.join(format!("{daemon}.conf"));
        std::fs::write(&path, text).expect("write FRR config");
        chown_frr(&path);
    }

    fn spawn(&mut self, daemon: &str, extra: &[&str]) {
        let config = self.dir.join(format!("{daemon}.conf"));
        let pid = self.dir.join(format!("{daemon}.pid"));
        let program = format!("{FRR_BIN}/{daemon}");
        let mut args = vec![
            "netns",
            "exec",
            &self.netns,
            &program,
            "-d",
            "-N",
            &self.name,
            "-F",
            "traditional",
        ];
        args.extend_from_slice(extra);
        let (config, pid, vty) = (
            config.display().to_string(),
            pid.display().to_string(),
            self.run_dir.display().to_string(),
        );
        args.extend_from_slice(&["-f", &config, "-i", &pid, "--vty_socket", &vty]);
        let out = Command::new("ip")
            .args(&args)
            .output()
            .expect("start an FRR daemon");
        assert!(
            out.status.success(),
            "{daemon} failed to start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.daemons.push(daemon.to_string());
    }

    fn wait_for_socket(&self, socket: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.run_dir.join(socket).exists() {
            assert!(
                Instant::now() < deadline,
                "FRR socket {socket} did not appear"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs vtysh commands; `configure` wraps them in configure terminal.
    pub fn vtysh(&self, commands: &[&str]) -> String {
        let vty = self.run_dir.display().to_string();
        let mut args = vec!["netns", "exec", &self.netns, "vtysh", "--vty_socket", &vty];
        for c in commands {
            args.push("-c");
            args.push(c);
        }
        let out = Command::new("ip").args(&args).output().expect("run vtysh");
        assert!(
            out.status.success(),
            "vtysh {commands:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn configure(&self, lines: &[&str]) {
        let mut commands = vec!["configure terminal"];
        commands.extend_from_slice(lines);
        self.vtysh(&commands);
    }

    pub fn pid(&self, daemon: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.join(format!("{daemon}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Sends `signal` to a daemon.
    pub fn signal(&self, daemon: &str, signal: i32) {
        if let Some(pid) = self.pid(daemon) {
            // SAFETY: plain kill(2) on a pid we started.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// SIGKILLs a daemon and waits until it is gone.
    pub fn kill(&mut self, daemon: &str) {
        if let Some(pid) = self.pid(daemon) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::path::Path::new(&format!("/proc/{pid}/status")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .contains("zombie")
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_file(self.dir.join(format!("{daemon}.pid")));
        }
        self.daemons.retain(|d| d != daemon);
    }

    /// Replaces a daemon's configuration file (read when it next starts).
    pub fn rewrite_config(&self, daemon: &str, lines: &[&str]) {
        let header = format!(
            "frr defaults traditional\nhostname {}\nlog file {}\n",
            self.name,
            self.dir.join("frr.log").display()
        );
        self.write_config(daemon, &format!("{header}{}\n", lines.join("\n")));
    }

    /// Starts a daemon that was killed, with its configuration file.
    pub fn restart(&mut self, daemon: &str, extra: &[&str]) {
        let _ = std::fs::remove_file(self.run_dir.join(format!("{daemon}.vty")));
        if daemon == "zebra" {
            let _ = std::fs::remove_file(self.run_dir.join("zserv.api"));
        }
        self.spawn(daemon, extra);
        if daemon == "zebra" {
            self.wait_for_socket("zserv.api");
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("frr.log")).unwrap_or_default()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for daemon in self.daemons.clone().iter().rev() {
            self.signal(daemon, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chown_frr(path: &std::path::Path) {
    let _ = Command::new("chown")
        .args(["-R", "frr:frr"])
        .arg(path)
        .status();
}

/// A route FRR says is installed in the FIB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRoute {
    pub prefix: String,
    pub protocol: String,
    /// "unicast", "blackhole", "connected"
    pub kind: String,
    /// (gateway, ifindex) of each FIB nexthop.
    pub nexthops: Vec<(Option<String>, Option<u32>)>,
}

impl Frr {
    /// Routes of `show ip route json` / `show ipv6 route json` marked installed.
    pub fn installed_routes(&self, v6: bool) -> Vec<InstalledRoute> {
        let json = self.vtysh(&[if v6 {
            "show ipv6 route json"
        } else {
            "show ip route json"
        }]);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("vtysh JSON");
        let mut routes = Vec::new();
        for (prefix, entries) in parsed.as_object().expect("an object of prefixes") {
            for entry in entries.as_array().into_iter().flatten() {
                if entry["installed"] != true {
                    continue;
                }
                let mut kind = "unicast".to_string();
                let mut nexthops = Vec::new();
                for nh in entry["nexthops"].as_array().into_iter().flatten() {
                    if nh["fib"] != true {
                        continue;
                    }
                    if nh["blackhole"] == true || nh["unreachable"] == true {
                        kind = "blackhole".into();
                    } else if nh["directlyConnected"] == true {
                        kind = "connected".into();
                    }
                    nexthops.push((
                        nh["ip"].as_str().map(str::to_owned),
                        nh["interfaceIndex"].as_u64().map(|i| i as u32),
                    ));
                }
                routes.push(InstalledRoute {
                    prefix: prefix.clone(),
                    protocol: entry["protocol"].as_str().unwrap_or("").to_owned(),
                    kind,
                    nexthops,
                });
            }
        }
        routes
    }
}
