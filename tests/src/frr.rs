//! Real FRR daemons inside a test namespace.
//!
//! Each instance has its own pathspace (`-N`), so sockets under
//! /var/run/frr/<name>/ never collide between concurrent tests, its own
//! config and log directory, and is stopped (and its files removed) on drop.
//!
//! `PF_FRR` picks the FRR: unset (or `host`) runs the host's (Debian 12's
//! 8.4); `trixie` or `sid` runs the daemons of a chroot made by
//! scripts/frr-matrix/prepare.sh, through scripts/frr-matrix/run.sh.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::netns::NetNs;

const FRR_BIN: &str = "/usr/lib/frr";
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// The FRR installation the tests run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    Host,
    /// A Debian suite's FRR in a prepared chroot.
    Chroot(String),
}

impl Install {
    /// From `PF_FRR`; an unknown value or a chroot that was never prepared
    /// fails the test rather than quietly testing the host's FRR.
    pub fn from_env() -> Self {
        match std::env::var("PF_FRR").as_deref() {
            Err(_) | Ok("") | Ok("host") => Self::Host,
            Ok(suite) => {
                let install = Self::Chroot(suite.to_string());
                let root = install.root();
                assert!(
                    root.join(".ready").exists(),
                    "PF_FRR={suite}: no FRR chroot in {} (scripts/frr-matrix/prepare.sh {suite})",
                    root.display()
                );
                install
            }
        }
    }

    /// The directory the installation's `/` is.
    pub fn root(&self) -> PathBuf {
        match self {
            Self::Host => PathBuf::from("/"),
            Self::Chroot(suite) => PathBuf::from(
                std::env::var("PF_CACHE_DIR").unwrap_or_else(|_| "/var/cache/pf-sidecar".into()),
            )
            .join("frr")
            .join(suite),
        }
    }

    /// `program` of this installation, run in `netns` (None: here).
    pub fn command(&self, netns: Option<&str>, program: &str) -> Command {
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if let Self::Chroot(suite) = self {
            argv.push(run_script().display().to_string());
            argv.push(suite.clone());
        }
        argv.push(program.to_string());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
    }

    /// Whether static routes go through mgmtd (FRR 9 and later), whose
    /// staticd reads no configuration file of its own.
    pub fn has_mgmtd(&self) -> bool {
        self.root().join("usr/lib/frr/mgmtd").exists()
    }

    /// (major, minor, patch) of this installation's zebra.
    pub fn version(&self) -> (u32, u32, u32) {
        let out = self
            .command(None, &format!("{FRR_BIN}/zebra"))
            .arg("--version")
            .output()
            .expect("zebra --version");
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or_default();
        let version = first
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("zebra --version printed {text:?}"));
        let mut parts = version
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        )
    }

    /// "FRR 10.7.1 (sid)" or "FRR 8.4.4 (host)", for test output.
    pub fn describe(&self) -> String {
        let (a, b, c) = self.version();
        match self {
            Self::Host => format!("FRR {a}.{b}.{c} (host)"),
            Self::Chroot(suite) => format!("FRR {a}.{b}.{c} ({suite})"),
        }
    }
}

/// vtysh of `install` in `netns`, on the daemons whose vty sockets are in
/// `vty_dir`; panics with its output if it fails.
pub fn vtysh(install: &Install, netns: &str, vty_dir: &Path, commands: &[&str]) -> String {
    let vty = vty_dir.display().to_string();
    let mut args = vec!["--vty_socket", &vty];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    // FRR 10's mgmtd refuses a change while it holds its datastore lock
    // (committing to a backend that just connected, say): "could not lock
    // running DS". Such a change is tried again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = install
            .command(Some(netns), "vtysh")
            .args(&args)
            .output()
            .expect("run vtysh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        if text.contains("could not lock") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        assert!(
            out.status.success(),
            "vtysh {commands:?} in {netns}: {text}"
        );
        return stdout;
    }
}

/// scripts/frr-matrix/run.sh of this repository.
pub fn run_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/frr-matrix/run.sh")
}

pub struct Frr {
    pub name: String,
    pub netns: String,
    pub dir: PathBuf,
    pub run_dir: PathBuf,
    pub install: Install,
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
        Self::start_with_zebra_args(ns, config, &[])
    }

    /// Starts with `zebra_args` added to zebra's command line (for example
    /// `--asic-offload=notify_on_offload`).
    pub fn start_with_zebra_args(ns: &NetNs, config: &FrrConfig<'_>, zebra_args: &[&str]) -> Self {
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
        let install = Install::from_env();
        let mut frr = Self {
            name,
            netns: ns.name.clone(),
            dir,
            run_dir,
            install,
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
        if frr.install.has_mgmtd() {
            frr.spawn("mgmtd", &[]);
            frr.wait_for_socket("mgmtd_fe.sock");
        }
        let mut zebra_options: Vec<&str> = if config.fpm_port.is_some() {
            vec!["-M", "dplane_fpm_nl"]
        } else {
            Vec::new()
        };
        zebra_options.extend_from_slice(zebra_args);
        frr.spawn("zebra", &zebra_options);
        frr.wait_for_socket("zserv.api");
        for (daemon, lines) in [("staticd", config.staticd), ("bgpd", config.bgpd)] {
            if let Some(lines) = lines {
                frr.write_config(daemon, &format!("{header}{}\n", lines.join("\n")));
                frr.spawn(daemon, &[]);
            }
        }
        if let Some(lines) = config.staticd.filter(|_| frr.install.has_mgmtd()) {
            // mgmtd holds static routes; it pushes them to staticd.
            frr.wait_for_socket("staticd.vty");
            if !lines.is_empty() {
                frr.configure(lines);
            }
        }
        frr
    }

    /// Whether `daemon` of this installation takes `-f` (FRR 10's mgmtd
    /// and staticd do not: their configuration comes from mgmtd).
    fn reads_config_file(&self, daemon: &str) -> bool {
        !(self.install.has_mgmtd() && matches!(daemon, "mgmtd" | "staticd"))
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
        let mut args = vec!["-d", "-N", &self.name, "-F", "traditional"];
        args.extend_from_slice(extra);
        let (config, pid, vty) = (
            config.display().to_string(),
            pid.display().to_string(),
            self.run_dir.display().to_string(),
        );
        if self.reads_config_file(daemon) {
            args.extend_from_slice(&["-f", &config]);
        }
        args.extend_from_slice(&["-i", &pid, "--vty_socket", &vty]);
        // FRR 10's daemons keep stdout and stderr open after -d: a pipe
        // here would never see its end, so they write to a file.
        let start_log = self.dir.join("start.log");
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&start_log)
            .expect("open the FRR start log");
        let status = self
            .install
            .command(Some(&self.netns), &program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(output.try_clone().expect("dup the start log"))
            .stderr(output)
            .status()
            .expect("start an FRR daemon");
        assert!(
            status.success(),
            "{daemon} failed to start: {}",
            std::fs::read_to_string(&start_log).unwrap_or_default()
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
        vtysh(&self.install, &self.netns, &self.run_dir, commands)
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
