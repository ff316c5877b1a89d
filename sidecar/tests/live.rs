//! Every command reads the live datapath, and the daemon knows what is
//! attached: one daemon per pin directory, a failed start leaves nothing
//! behind, `status`, `diff` and `lookup` read the generation the links run
//! (not a leftover one), a forced detach is noticed, interfaces that go and
//! come back are followed, a reload applies the interface list, and frames
//! the kernel drops after a redirect are counted.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    fpm_messages::{nexthop_message, route_message},
    lab::{Lab, SERVER_V4},
    netns::{veth_pair, NetNs},
    require_root,
};

/// `pf-sidecar run` in a namespace, its stderr in a log file; SIGKILLed on
/// drop if it still runs.
struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    fn start(ns: &NetNs, config: &Path, log: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
            .args(["--netns", &ns.name, "run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start pf-sidecar run");
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the child we started.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the process to exit.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pf-sidecar run did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's pin directory, configurations and logs, removed at the end
/// (after a forced detach of whatever is still attached).
struct Scratch {
    tag: String,
    pin_dir: String,
    netns: String,
}

impl Scratch {
    fn new(tag: &str, ns: &NetNs) -> Self {
        Self {
            tag: tag.to_owned(),
            pin_dir: format!("/sys/fs/bpf/pf-test-{tag}-{}", std::process::id()),
            netns: ns.name.clone(),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "pf-test-{}-{}-{name}",
            self.tag,
            std::process::id()
        ))
    }

    /// Writes a configuration with this pin directory; `body` follows the
    /// `[general]` section's first keys.
    fn config(&self, name: &str, interfaces: &[&str], body: &str) -> PathBuf {
        let path = self.file(&format!("{name}.toml"));
        let list: Vec<String> = interfaces.iter().map(|i| format!("\"{i}\"")).collect();
        std::fs::write(
            &path,
            format!(
                "[general]\npin_dir = \"{}\"\ninterfaces = [{}]\n{body}",
                self.pin_dir,
                list.join(", ")
            ),
        )
        .unwrap();
        path
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
            .args(["--netns", &self.netns, "--pin-dir", &self.pin_dir])
            .args(args)
            .output()
            .expect("run pf-sidecar")
    }

    fn json(&self, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
        let out = self.cli(args);
        (
            out.status.code(),
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn status(&self) -> serde_json::Value {
        self.json(&["status", "--json", "--rate-interval-ms", "0"])
            .1
    }

    fn generations(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(&self.pin_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with("gen-"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    fn links(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(&self.pin_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with("link_"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.cli(&["detach", "--all", "--force"]);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        for suffix in ["state.json", "sock"] {
            let name = Path::new(&self.pin_dir)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap();
            let _ = std::fs::remove_file(format!("/run/pf-sidecar/{name}.{suffix}"));
        }
    }
}

fn wait_until(
    what: &str,
    timeout: Duration,
    log: &dyn Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}\n--- log ---\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn xdp_on(ns: &NetNs, dev: &str) -> bool {
    ns.ip(&["-d", "link", "show", dev]).contains("prog/xdp")
}

fn daemon_live(scratch: &Scratch) -> bool {
    scratch.status()["daemon"]["live"] == true
}

/// The metrics page of the daemon in `ns` (127.0.0.1:9469).
fn metrics(ns: &NetNs) -> String {
    ns.enter(|| {
        let mut stream = TcpStream::connect("127.0.0.1:9469").expect("the metrics endpoint");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: pf-sidecar\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
}

const KERNEL: &str = "[routes]\nfrom = \"kernel\"\n";

#[test]
fn a_second_run_is_refused_and_status_diff_and_lookup_read_the_generation_the_links_run() {
    require_root!();
    let lab = Lab::new("lv2");
    lab.router
        .ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2"]);
    let s = Scratch::new("lv2", &lab.router);
    let kernel = s.config("kernel", &["r0", "r1", "r2"], KERNEL);
    let log = s.file("log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut first = Run::start(&lab.router, &kernel, &log);
    wait_until(
        "the first daemon goes live",
        Duration::from_secs(20),
        &logs,
        || daemon_live(&s),
    );
    wait_until("a heartbeat", Duration::from_secs(10), &logs, || {
        s.status()["heartbeat_age_s"].is_number()
    });
    let live = s.status()["pin_dir"].as_str().unwrap().to_owned();
    assert_eq!(s.generations(), vec!["gen-1"]);

    // A second daemon on the same pin directory refuses to start and
    // pins nothing.
    let second_log = s.file("second.log");
    let mut second = Run::start(&lab.router, &kernel, &second_log);
    let status = second.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{}", second.log());
    assert!(
        second.log().contains(&format!(
            "is in use by another `pf-sidecar run` (pid {})",
            first.pid()
        )),
        "{}",
        second.log()
    );
    assert_eq!(
        s.generations(),
        vec!["gen-1"],
        "the refused start pinned nothing"
    );

    // The first stops; its generation keeps forwarding. A start that never
    // goes live (FPM, and zebra never comes) is killed: its generation is
    // left behind, run by no link.
    first.signal(libc::SIGTERM);
    assert!(first.wait(Duration::from_secs(10)).success());
    let port = 26000 + (std::process::id() % 1000) as u16;
    let fpm = s.config(
        "fpm",
        &["r0", "r1", "r2"],
        &format!("[fpm]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let mut stuck = Run::start(&lab.router, &fpm, &log);
    wait_until(
        "the FPM daemon loads its generation",
        Duration::from_secs(20),
        &logs,
        || s.generations().len() == 2 && logs().contains("stay on the live generation"),
    );
    stuck.signal(libc::SIGKILL);
    stuck.wait(Duration::from_secs(5));
    assert_eq!(s.generations(), vec!["gen-1", "gen-2"]);

    // status, diff and lookup read gen-1, which the links run.
    let status = s.status();
    assert_eq!(status["pin_dir"], live.as_str(), "{status:#}");
    assert_eq!(status["generation_source"], "links");
    let notes = status["generation_notes"].to_string();
    assert!(notes.contains("gen-2 pinned but run by no link"), "{notes}");
    let fast_path = status["program_ids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "fast_path")
        .map(|p| p[1].clone())
        .expect("fast_path's id");
    for link in status["links"].as_array().unwrap() {
        assert_eq!(link["prog_id"], fast_path, "{status:#}");
        assert_eq!(link["attached"], true);
        assert_eq!(link["runs_live_generation"], true);
    }
    assert_eq!(status["attached"], serde_json::json!(["r0", "r1", "r2"]));
    assert!(
        status["heartbeat_age_s"].is_number(),
        "gen-1 had a heartbeat; gen-2 never did: {status:#}"
    );
    let (code, diff, stderr) = s.json(&["diff", "--json"]);
    assert_eq!(code, Some(0), "{diff:#}\n{stderr}");
    assert!(diff["summary"]["generation"]
        .as_str()
        .unwrap()
        .ends_with("/gen-1"));
    assert_eq!(diff["summary"]["generation_source"], "links");
    let (_, lookup, stderr) = s.json(&["lookup", SERVER_V4, "--json"]);
    assert!(
        lookup["generation"]
            .as_str()
            .is_some_and(|g| g.ends_with("/gen-1")),
        "{lookup:#}\n{stderr}"
    );
    assert_eq!(lookup["maps"]["kind"], "Nexthop", "{lookup:#}");
    // No daemon runs: the matched prefix is unknown, and lookup says why.
    assert!(lookup["route"].is_null(), "{lookup:#}");
    assert!(
        lookup["route_note"]
            .as_str()
            .is_some_and(|n| n.contains("is `pf-sidecar run` running")),
        "{lookup:#}"
    );

    // The next start takes over from gen-1 and removes the leftover.
    let _third = Run::start(&lab.router, &kernel, &log);
    wait_until(
        "the third daemon goes live and retires the others",
        Duration::from_secs(20),
        &logs,
        || daemon_live(&s) && s.generations() == vec!["gen-3"],
    );
    assert!(s.status()["pin_dir"].as_str().unwrap().ends_with("/gen-3"));

    // With a daemon: the programmed prefix the maps answer from, and none
    // for an address no route holds.
    let (code, lookup, stderr) = s.json(&["lookup", SERVER_V4, "--json"]);
    assert_eq!(code, Some(0), "{lookup:#}\n{stderr}");
    assert_eq!(lookup["route"]["prefix"], "203.0.113.0/24", "{lookup:#}");
    assert_eq!(lookup["route"]["route_source"], "kernel", "{lookup:#}");
    let text = String::from_utf8_lossy(&s.cli(&["lookup", SERVER_V4]).stdout).into_owned();
    assert!(
        text.contains("prefix    203.0.113.0/24 (nexthop "),
        "{text}"
    );
    let (_, unrouted, stderr) = s.json(&["lookup", "2001:db8:ffff::1", "--json"]);
    assert!(
        unrouted["route"]["prefix"].is_null(),
        "{unrouted:#}\n{stderr}"
    );
    // Addresses fast_path hands to the kernel before any lookup are named
    // as such, whatever the maps hold for them.
    for special in ["224.0.0.1", "255.255.255.255", "ff02::1"] {
        let (code, answer, stderr) = s.json(&["lookup", special, "--json"]);
        assert_eq!(code, Some(0), "{special}: {answer:#}\n{stderr}");
        assert_eq!(answer["agree"], true, "{special}: {answer:#}");
        assert!(
            answer["note"]
                .as_str()
                .is_some_and(|n| n.contains("passes it to the kernel before any lookup")),
            "{special}: {answer:#}"
        );
    }
}

#[test]
fn a_failed_start_removes_what_it_pinned_and_the_next_start_attaches_at_once() {
    require_root!();
    let lab = Lab::new("lvf");
    let s = Scratch::new("lvf", &lab.router);
    let log = s.file("log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    // Fails after attaching: the FPM port is taken.
    let port = 27000 + (std::process::id() % 1000) as u16;
    let busy = lab
        .router
        .enter(|| std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
    let fpm = s.config(
        "fpm",
        &["r0", "r1", "r2"],
        &format!("[fpm]\nlisten = \"127.0.0.1:{port}\"\n[metrics]\nlisten = \"\"\n"),
    );
    let status = Run::start(&lab.router, &fpm, &log).wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{}", logs());
    assert!(logs().contains("binding the FPM listener"), "{}", logs());
    assert!(logs().contains("the start failed: detached what it had attached"));
    for port in ["r0", "r1", "r2"] {
        assert!(!xdp_on(&lab.router, port), "{port} is still attached");
    }
    assert!(s.generations().is_empty() && s.links().is_empty());
    drop(busy);

    // Fails before attaching: an interface that does not exist.
    let missing = s.config("missing", &["r0", "nosuch9"], KERNEL);
    let status = Run::start(&lab.router, &missing, &log).wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(2));
    assert!(logs().contains("no interface named nosuch9"), "{}", logs());
    assert!(s.generations().is_empty(), "{:?}", s.generations());

    // The next correct start attaches at once, though zebra never comes
    // (it would otherwise wait for the replay, up to a minute).
    let started = Instant::now();
    let _run = Run::start(&lab.router, &fpm, &log);
    wait_until("attached at once", Duration::from_secs(10), &logs, || {
        ["r0", "r1", "r2"].iter().all(|p| xdp_on(&lab.router, p))
    });
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_until("logged", Duration::from_secs(5), &logs, || {
        logs().matches("attached").count() >= 3 && logs().contains("this generation is live")
    });
    let status = s.status();
    assert_eq!(status["attached"], serde_json::json!(["r0", "r1", "r2"]));
}

#[test]
fn detach_is_refused_while_the_daemon_runs_and_a_forced_one_is_noticed() {
    require_root!();
    let lab = Lab::new("lvd");
    let s = Scratch::new("lvd", &lab.router);
    let config = s.config("kernel", &["r0", "r1", "r2"], KERNEL);
    let log = s.file("log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let daemon = Run::start(&lab.router, &config, &log);
    wait_until("live", Duration::from_secs(20), &logs, || daemon_live(&s));

    for args in [&["detach", "r1"][..], &["detach", "--all"]] {
        let out = s.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("refused")
                && stderr.contains(&format!("(pid {})", daemon.pid()))
                && stderr.contains("--force"),
            "{stderr}"
        );
    }
    assert!(xdp_on(&lab.router, "r1"));

    let out = s.cli(&["detach", "--force", "r1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!xdp_on(&lab.router, "r1"));
    let r1 = |status: &serde_json::Value| {
        status["daemon"]["interfaces"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["interface"] == "r1").cloned())
            .unwrap_or_default()
    };
    wait_until("the daemon notices", Duration::from_secs(5), &logs, || {
        let status = s.status();
        r1(&status)["attached"] == false
            && r1(&status)["condition"]
                .as_str()
                .is_some_and(|c| c.contains("detached from outside"))
    });
    assert!(
        logs().contains("its link was removed from outside"),
        "{}",
        logs()
    );
    let page = metrics(&lab.router);
    assert!(
        page.contains("pf_sidecar_attached{interface=\"r1\"} 0\n"),
        "{page}"
    );
    assert!(
        page.contains("pf_sidecar_attached{interface=\"r0\"} 1\n"),
        "{page}"
    );
    assert!(page.contains("pf_sidecar_live 1\n"), "{page}");

    // A reload attaches it again.
    daemon.signal(libc::SIGHUP);
    wait_until(
        "re-attached on reload",
        Duration::from_secs(5),
        &logs,
        || xdp_on(&lab.router, "r1") && r1(&s.status())["attached"] == true,
    );

    // Everything removed under it: it says it is not live any more.
    let out = s.cli(&["detach", "--all", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("emptied"));
    wait_until("not live, and said", Duration::from_secs(5), &logs, || {
        metrics(&lab.router).contains("pf_sidecar_live 0\n")
            && logs().contains("generation was removed from outside")
    });
    for port in ["r0", "r1", "r2"] {
        assert!(!xdp_on(&lab.router, port));
    }
    // It still holds the directory: another daemon is refused.
    let status =
        Run::start(&lab.router, &config, &s.file("second.log")).wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
}

#[test]
fn an_interface_removed_and_back_is_logged_reported_and_attached_again() {
    require_root!();
    let lab = Lab::new("lvi");
    let s = Scratch::new("lvi", &lab.router);
    let config = s.config("kernel", &["r0", "r1", "r2"], KERNEL);
    let log = s.file("log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let _daemon = Run::start(&lab.router, &config, &log);
    wait_until("live", Duration::from_secs(20), &logs, || daemon_live(&s));

    lab.router.ip(&["link", "del", "r2"]);
    wait_until(
        "the removal is logged",
        Duration::from_secs(5),
        &logs,
        || {
            logs()
                .lines()
                .any(|l| l.contains("ifname=r2") && l.contains("the interface was removed"))
        },
    );
    let status = s.status();
    let link = status["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["interface"] == "r2")
        .cloned()
        .expect("the link pin stays until the interface returns");
    assert_eq!(
        link["attached"], false,
        "the kernel says it runs on nothing"
    );
    assert_eq!(status["attached"], serde_json::json!(["r0", "r1"]));
    assert!(metrics(&lab.router).contains("pf_sidecar_attached{interface=\"r2\"} 0\n"));

    veth_pair(&lab.up2, "u2", &lab.router, "r2");
    lab.router
        .ip(&["addr", "add", "198.51.100.65/26", "dev", "r2", "nodad"]);
    wait_until(
        "re-attached on return",
        Duration::from_secs(5),
        &logs,
        || xdp_on(&lab.router, "r2"),
    );
    assert!(
        logs()
            .lines()
            .any(|l| l.contains("ifname=r2") && l.contains("the interface is back")),
        "{}",
        logs()
    );
    assert_eq!(
        s.status()["attached"],
        serde_json::json!(["r0", "r1", "r2"])
    );
    let r2 = lab.router.ifindex("r2");
    // The daemon's view, published on its next heartbeat.
    wait_until(
        "the daemon reports it",
        Duration::from_secs(3),
        &logs,
        || {
            s.status()["daemon"]["interfaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["interface"] == "r2" && p["attached"] == true && p["ifindex"] == r2)
        },
    );
}

#[test]
fn a_reload_attaches_added_interfaces_detaches_removed_ones_and_names_what_needs_a_restart() {
    require_root!();
    let lab = Lab::new("lvh");
    let s = Scratch::new("lvh", &lab.router);
    let config = s.config("kernel", &["r0", "r1"], KERNEL);
    let log = s.file("log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let daemon = Run::start(&lab.router, &config, &log);
    wait_until("live", Duration::from_secs(20), &logs, || daemon_live(&s));
    assert!(!xdp_on(&lab.router, "r2"));

    std::fs::write(
        &config,
        format!(
            "[general]\npin_dir = \"{}\"\ninterfaces = [\"r0\", \"r2\"]\n{KERNEL}[capacity]\nports = 512\n",
            s.pin_dir
        ),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("applied", Duration::from_secs(5), &logs, || {
        xdp_on(&lab.router, "r2") && !xdp_on(&lab.router, "r1")
    });
    let text = logs();
    assert!(
        text.contains("removed from general.interfaces: detached"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("not applied until a restart") && l.contains("capacity")),
        "{text}"
    );
    assert_eq!(s.status()["attached"], serde_json::json!(["r0", "r2"]));

    // A reload with a bad list is refused, and said so.
    std::fs::write(
        &config,
        format!(
            "[general]\npin_dir = \"{}\"\ninterfaces = [\"r0\", \"lo\"]\n{KERNEL}",
            s.pin_dir
        ),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("refused", Duration::from_secs(5), &logs, || {
        logs()
            .lines()
            .any(|l| l.contains("reload refused") && l.contains("lo is the loopback"))
    });
    assert_eq!(s.status()["attached"], serde_json::json!(["r0", "r2"]));
}

#[test]
fn frames_redirected_to_a_veth_whose_peer_has_neither_xdp_nor_gro_are_counted_as_failures() {
    require_root!();
    let lab = Lab::new("lvr");
    // up1's end takes no redirected frame: no XDP program, no GRO.
    lab.up1.exec_ok("ethtool", &["-K", "u1", "gro", "off"]);
    lab.router
        .ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2"]);
    let s = Scratch::new("lvr", &lab.router);
    let config = s.config(
        "kernel",
        &["r0", "r1", "r2"],
        &format!("xdp_mode = \"native\"\n{KERNEL}"),
    );
    let log = s.file("log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let _daemon = Run::start(&lab.router, &config, &log);
    wait_until("live", Duration::from_secs(20), &logs, || daemon_live(&s));
    assert!(
        logs().contains("is a veth whose peer u1"),
        "run warns: {}",
        logs()
    );

    let ping = lab.client.exec(
        "ping",
        &["-c", "40", "-i", "0.02", "-W", "1", "-q", SERVER_V4],
    );
    let (summary, _, received) = integration_tests::ping_summary(&ping.stdout);
    let failures = |status: &serde_json::Value| {
        status["daemon"]["redirect_failures"]["per_interface"]["r1"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until("failures counted", Duration::from_secs(5), &logs, || {
        failures(&s.status()) > 0
    });
    let status = s.status();
    assert_eq!(status["daemon"]["redirect_failures"]["counting"], true);
    assert!(received < 40, "the frames were lost: {summary}");
    assert!(
        failures(&status) >= 30,
        "most of 40 echo requests fail on r1 (the first waits for ARP): {status:#}"
    );
    assert_eq!(
        status["daemon"]["redirect_failures"]["per_interface"]["r0"], 0,
        "{status:#}"
    );
    let redirected: u64 = status["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "redirect_fib" || c["name"] == "redirect_cache")
        .map(|c| c["value"].as_u64().unwrap())
        .sum();
    assert!(
        redirected >= failures(&status),
        "finalize counted them as redirected"
    );
    let page = metrics(&lab.router);
    assert!(
        page.lines().any(|l| l
            .strip_prefix("pf_sidecar_redirect_failures_total{interface=\"r1\"} ")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v >= 30.0)),
        "{page}"
    );
    let text =
        String::from_utf8_lossy(&s.cli(&["status", "--rate-interval-ms", "0"]).stdout).into_owned();
    assert!(text.contains("redirect fails "), "{text}");

    // With GRO on the peer they get through and the count stops (the
    // daemon publishes its counts on every heartbeat, 500 ms).
    lab.up1.exec_ok("ethtool", &["-K", "u1", "gro", "on"]);
    std::thread::sleep(Duration::from_millis(1200));
    let before = failures(&s.status());
    let ping = lab.client.exec(
        "ping",
        &["-c", "10", "-i", "0.02", "-W", "1", "-q", SERVER_V4],
    );
    let (summary, _, received) = integration_tests::ping_summary(&ping.stdout);
    assert_eq!(received, 10, "{summary}");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(failures(&s.status()), before);
}

#[test]
fn diff_against_fpm_says_when_the_session_is_down_and_the_query_socket_answers_json() {
    require_root!();
    let lab = Lab::new("lvq");
    let s = Scratch::new("lvq", &lab.router);
    let port = 28000 + (std::process::id() % 1000) as u16;
    let config = s.config(
        "fpm",
        &["r0", "r1", "r2"],
        &format!("[fpm]\nlisten = \"127.0.0.1:{port}\"\nreplay_quiet_ms = 300\n"),
    );
    let log = s.file("log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let _daemon = Run::start(&lab.router, &config, &log);

    // zebra: one nexthop object and one route.
    let mut zebra = lab.router.enter(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => return stream,
                Err(e) => assert!(Instant::now() < deadline, "no FPM listener: {e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let r1 = lab.router.ifindex("r1");
    zebra
        .write_all(&pf_control::fpm::frame(&[
            &nexthop_message(1, r1, Some("198.51.100.2".parse().unwrap()), &[]),
            &route_message("203.0.113.0/24".parse().unwrap(), 1),
        ]))
        .unwrap();
    wait_until(
        "the replay completes",
        Duration::from_secs(10),
        &logs,
        || s.status()["daemon"]["fpm_replay_complete"] == true,
    );
    let (code, diff, stderr) = s.json(&["diff", "--json", "--against", "fpm"]);
    assert_eq!(code, Some(0), "{diff:#}\n{stderr}");
    assert_eq!(diff["summary"]["fpm_session"]["connected"], true);
    assert_eq!(diff["summary"]["fpm_session"]["view_stale"], false);

    // The query socket answers what it does not understand with JSON.
    let name = Path::new(&s.pin_dir)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let socket = format!("/run/pf-sidecar/{name}.sock");
    for request in [&b"hello\n"[..], &[0xc3, 0x28, b'\n'], &[b'a'; 400]] {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.write_all(request).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&answer)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&answer)));
        assert!(json["error"].is_string(), "{json}");
    }

    // zebra goes away: the view is as old as its last message, and diff
    // says so and exits 2.
    drop(zebra);
    wait_until("the session is down", Duration::from_secs(5), &logs, || {
        s.status()["daemon"]["fpm_connected"] == false
    });
    let (code, diff, stderr) = s.json(&["diff", "--json", "--against", "fpm"]);
    assert_eq!(code, Some(2), "{diff:#}\n{stderr}");
    let session = &diff["summary"]["fpm_session"];
    assert_eq!(session["connected"], false, "{diff:#}");
    assert_eq!(session["view_stale"], true);
    assert!(session["last_message_age_s"].is_number(), "{diff:#}");
    let out = s.cli(&["diff", "--against", "fpm"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("zebra's FPM session is DOWN") && text.contains("view STALE"),
        "{text}"
    );
}
