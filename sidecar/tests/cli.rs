//! The `pf-sidecar` binary, driven as an operator would.

use std::process::{Command, Output};

use integration_tests::{
    netns::{veth_pair, NetNs},
    raw_xdp, require_root,
};

fn pf_sidecar(ns: &NetNs, pin_dir: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &ns.name, "--pin-dir", pin_dir])
        .args(args)
        .output()
        .expect("run pf-sidecar")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pin directory that is removed even if the test fails.
struct Pins(String);
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pins(tag: &str) -> Pins {
    Pins(format!("/sys/fs/bpf/pf-test-{tag}-{}", std::process::id()))
}

fn forwarding_on(ns: &NetNs) {
    ns.exec_ok(
        "sysctl",
        &[
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ],
    );
}

/// `feasibility --json`'s checks by name.
fn feasibility_json(
    ns: &NetNs,
    pin_dir: &str,
    args: &[&str],
) -> (Option<i32>, Vec<serde_json::Value>) {
    let mut full = vec!["feasibility", "--json"];
    full.extend_from_slice(args);
    let out = pf_sidecar(ns, pin_dir, &full);
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "feasibility --json printed no JSON ({e}): {}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), checks.as_array().unwrap().clone())
}

fn check<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check named {name:?} in {checks:#?}"))
}

#[test]
fn feasibility_passes_on_this_host_for_a_prepared_namespace() {
    require_root!();
    let a = NetNs::new("feas-a");
    let b = NetNs::new("feas-b");
    veth_pair(&a, "v0", &b, "v1");
    forwarding_on(&a);
    // The peer receives redirected frames (Linux 5.13+: GRO is enough).
    b.exec_ok("ethtool", &["-K", "v1", "gro", "on"]);
    let pins = pins("feas");
    let out = pf_sidecar(&a, &pins.0, &["feasibility", "v0"]);
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("PASS  interface v0: native attach")
            && text.contains("PASS  interface v0: generic attach")
            && text.contains("PASS  interface v0: veth peer receives redirected frames")
            && text.contains("the datapath can run here"),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
    assert!(
        !text.contains("Ok(") && !text.contains("Err("),
        "details are sentences, not Rust values: {text}"
    );
    let shown = a.ip(&["-d", "link", "show", "v0"]);
    assert!(
        !shown.contains("prog/xdp"),
        "the trial attaches are detached again:\n{shown}"
    );
}

#[test]
fn feasibility_json_names_the_kernel_the_jit_the_mix_probe_and_each_program() {
    require_root!();
    let a = NetNs::new("feas-json");
    let b = NetNs::new("feas-json-b");
    veth_pair(&a, "v0", &b, "v1");
    b.exec_ok("ethtool", &["-K", "v1", "gro", "on"]);
    forwarding_on(&a);
    let pins = pins("feasjson");
    let (code, checks) = feasibility_json(&a, &pins.0, &["v0"]);
    assert_eq!(code, Some(0), "{checks:#?}");
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .unwrap();
    for c in &checks {
        let name = c["name"]
            .as_str()
            .unwrap()
            .replace("interface v0:", "interface IF:");
        assert!(
            doc.contains(&format!("`{name}`")),
            "docs/operations.md does not list the check `{name}`"
        );
    }
    let uname = |flag: &str| {
        let out = Command::new("uname").arg(flag).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(check(&checks, "kernel: release")["value"], uname("-r"));
    assert_eq!(check(&checks, "kernel: architecture")["value"], uname("-m"));
    for c in &checks {
        for field in ["name", "status", "detail"] {
            assert!(c[field].is_string(), "{field} in {c}");
        }
        assert!(c["pass"].is_boolean() && c["required"].is_boolean(), "{c}");
        let detail = c["detail"].as_str().unwrap();
        assert!(
            !detail.contains("Ok(") && !detail.contains("Err("),
            "debug text in {c}"
        );
    }
    let jit = check(&checks, "jit: enabled");
    assert!(
        ["on", "off", "always"].contains(&jit["value"].as_str().unwrap()),
        "{jit}"
    );
    assert!(check(&checks, "jit: compiled in")["value"].is_string());
    // The control the kernel matrix asserts on: a real load of a tail call
    // mixed with a bpf-to-bpf call. Informational: never a failure.
    let mix = check(&checks, "jit: tail calls mixed with bpf-to-bpf calls");
    assert_eq!(mix["required"], false);
    let accepted = mix["pass"].as_bool().unwrap();
    assert_eq!(
        mix["value"],
        if accepted { "accepted" } else { "rejected" },
        "{mix}"
    );
    if jit["value"] != "off" && uname("-m") == "x86_64" {
        assert!(accepted, "x86_64's JIT takes the mix: {mix}");
    }
    if !accepted {
        assert!(
            mix["log"].is_string(),
            "a rejection carries the verifier log: {mix}"
        );
    }
    for name in ["finalize", "fast_path", "xdp_pass"] {
        let program = check(&checks, &format!("datapath: program {name}"));
        assert_eq!(program["value"], "accepted", "{program}");
        assert_eq!(program["required"], true);
    }
    assert_eq!(check(&checks, "datapath: assembled")["pass"], true);
    assert_eq!(check(&checks, "maps: mmapable arrays")["value"], "yes");
}

#[test]
fn feasibility_fails_when_a_veth_peer_has_neither_xdp_nor_gro_and_passes_with_xdp_pass() {
    require_root!();
    let a = NetNs::new("feas-peer-a");
    let b = NetNs::new("feas-peer-b");
    veth_pair(&a, "v0", &b, "v1");
    forwarding_on(&a);
    let pins = pins("feaspeer");
    const PEER: &str = "interface v0: veth peer receives redirected frames";

    // The peer lives in another (named) namespace: it is found there.
    let (code, checks) = feasibility_json(&a, &pins.0, &["v0"]);
    let peer = check(&checks, PEER);
    assert_eq!(peer["status"], "fail", "{peer}");
    assert_eq!(peer["value"], "none");
    assert!(
        peer["detail"].as_str().unwrap().contains(&b.name)
            && peer["fix"].as_str().unwrap().contains("gro on"),
        "{peer}"
    );
    assert_eq!(code, Some(1), "every redirected frame would be dropped");

    // An XDP program in native mode on the peer lets it receive them.
    let index = b.ifindex("v1");
    let link = b.enter(|| {
        let prog = raw_xdp::constant_program(2, "pass").expect("load XDP_PASS");
        raw_xdp::attach(&prog, index).expect("attach natively to v1")
    });
    let (code, checks) = feasibility_json(&a, &pins.0, &["v0"]);
    let peer = check(&checks, PEER);
    assert_eq!(
        (peer["status"].as_str(), peer["value"].as_str()),
        (Some("pass"), Some("xdp")),
        "{peer}"
    );
    assert_eq!(code, Some(0), "{checks:#?}");
    drop(link);

    // So does GRO (Linux 5.13 and later).
    b.exec_ok("ethtool", &["-K", "v1", "gro", "on"]);
    let (_, checks) = feasibility_json(&a, &pins.0, &["v0"]);
    assert_eq!(check(&checks, PEER)["value"], "gro");

    // A peer in the same namespace, down.
    a.ip(&["link", "add", "v2", "type", "veth", "peer", "name", "v3"]);
    a.ip(&["link", "set", "v2", "up"]);
    let (_, checks) = feasibility_json(&a, &pins.0, &["v2"]);
    let peer = check(
        &checks,
        "interface v2: veth peer receives redirected frames",
    );
    assert_eq!(
        (peer["status"].as_str(), peer["value"].as_str()),
        (Some("fail"), Some("down")),
        "{peer}"
    );
    assert!(
        peer["fix"].as_str().unwrap().contains("ip link set v3 up"),
        "{peer}"
    );
}

#[test]
fn feasibility_takes_interfaces_and_capacities_from_the_configuration() {
    require_root!();
    let a = NetNs::new("feas-cfg-a");
    let b = NetNs::new("feas-cfg-b");
    veth_pair(&a, "v0", &b, "v1");
    forwarding_on(&a);
    let pins = pins("feascfg");
    let config = std::env::temp_dir().join(format!("pf-feas-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[general]\ninterfaces = [\"v0\"]\nxdp_mode = \"native\"\n[capacity]\nv6_routes = 4096\n",
    )
    .unwrap();
    let (_, checks) = feasibility_json(&a, &pins.0, &["--config", config.to_str().unwrap()]);
    std::fs::remove_file(&config).unwrap();
    let native = check(&checks, "interface v0: native attach");
    assert_eq!(native["value"], "accepted");
    assert_eq!(native["required"], true, "xdp_mode = native needs it");
    assert_eq!(
        check(&checks, "interface v0: generic attach")["required"],
        false
    );
    let maps = check(&checks, "datapath: maps");
    assert!(
        maps["detail"].as_str().unwrap().contains("v6_routes 4096"),
        "{maps}"
    );
}

#[test]
fn feasibility_fails_with_a_fix_when_something_is_missing() {
    require_root!();
    let a = NetNs::new("feas-fail");
    let pins = pins("feasfail");
    let (code, checks) = feasibility_json(&a, &pins.0, &["nosuch0"]);
    assert_eq!(code, Some(1));
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|c| c["status"] == "fail").collect();
    let names: Vec<&str> = failed.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"interface nosuch0: native attach"),
        "{names:?}"
    );
    assert!(
        names.contains(&"forwarding: IPv4"),
        "a fresh namespace does not forward: {names:?}"
    );
    assert!(
        failed.iter().all(|c| c["fix"].is_string()),
        "every failure says how to fix it"
    );
    for check in &checks {
        let detail = check["detail"].as_str().unwrap_or("");
        let parts: Vec<&str> = detail.split(": ").map(str::trim).collect();
        let mut unique = parts.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            parts.len(),
            "a detail says each thing once: {check}"
        );
        assert!(
            !detail.contains("Ok(") && !detail.contains("Err("),
            "{check}"
        );
    }
}

#[test]
fn attach_status_and_detach_all_leave_nothing_behind() {
    require_root!();
    let a = NetNs::new("attach-a");
    let b = NetNs::new("attach-b");
    veth_pair(&a, "v0", &b, "v1");
    let pins = pins("attach");
    let out = pf_sidecar(&a, &pins.0, &["attach", "v0", "--mode", "fib-only"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("attached fast_path to v0 (native)"));

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&pins.0).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the pin directory is root-only");
    let again = pf_sidecar(&a, &pins.0, &["attach", "v0"]);
    assert_eq!(again.status.code(), Some(2), "a second attach is refused");

    let status = pf_sidecar(&a, &pins.0, &["status", "--json"]);
    assert!(status.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["mode"], "fib-only");
    assert_eq!(status["attached"], serde_json::json!(["v0"]));
    assert_eq!(
        status["rate_interval_s"], 0.0,
        "status reads once unless asked for rates"
    );
    assert!(status["counters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "rx_packets"));

    let detach = pf_sidecar(&a, &pins.0, &["detach", "--all"]);
    assert!(detach.status.success());
    assert!(!std::path::Path::new(&pins.0).exists(), "every pin is gone");
    let shown = a.ip(&["-d", "link", "show", "v0"]);
    assert!(
        !shown.contains("prog/xdp"),
        "the program is detached:\n{shown}"
    );
}

#[test]
fn a_bad_configuration_key_or_value_is_named_and_exits_2() {
    let dir = std::env::temp_dir();
    for (name, toml, expected) in [
        ("badkey", "[fpm]\nlisten_port = 2620\n", "listen_port"),
        (
            "badvalue",
            "[routes]\nfrom = \"ospf\"\n",
            "`routes.from` = \"ospf\": fpm (FRR zebra's FPM stream) or kernel",
        ),
    ] {
        let path = dir.join(format!("pf-cli-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("configuration error") && stderr.contains(expected),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn run_refuses_a_string_for_a_number_lo_a_duplicate_interface_and_a_huge_capacity() {
    require_root!();
    // In a throwaway namespace with a test pin directory, so that a
    // configuration wrongly accepted starts nothing that matters.
    let ns = NetNs::new("badcfg");
    let pins = pins("badcfg");
    for (name, toml, expected) in [
        (
            "badtype",
            "[datapath]\nheartbeat_interval_ms = \"500\"\n",
            "`datapath.heartbeat_interval_ms` = \"500\": expected an integer, found a string; write 500 without quotes",
        ),
        (
            "loopback",
            "[general]\ninterfaces = [\"lo\"]\n",
            "lo is the loopback",
        ),
        (
            "twice",
            "[general]\ninterfaces = [\"v0\", \"v1\", \"v0\"]\n",
            "v0 is listed twice",
        ),
        (
            "huge",
            "[capacity]\nnexthops = 134217727\n",
            "would pin 10.0 GiB of kernel memory",
        ),
    ] {
        let path = std::env::temp_dir().join(format!("pf-cli-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, format!("{toml}[metrics]\nlisten = \"\"\n")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
            .args(["--netns", &ns.name, "--pin-dir", &pins.0, "run", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(&path);
                panic!("{name}: the daemon started with this configuration");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let _ = std::fs::remove_file(&path);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains("configuration error") && stderr.contains(expected),
            "{name}: {stderr}"
        );
        assert!(
            !std::path::Path::new(&pins.0).exists(),
            "{name}: nothing is pinned before the configuration is accepted"
        );
    }
}

#[test]
fn run_with_detach_on_exit_leaves_no_program_or_pin_after_sigterm() {
    require_root!();
    let lab = integration_tests::lab::Lab::new("doexit");
    let pins = pins("doexit");
    let config = std::env::temp_dir().join(format!("pf-doexit-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[general]\npin_dir = \"{}\"\ninterfaces = [\"r0\", \"r1\"]\n[routes]\nfrom = \"kernel\"\n[metrics]\nlisten = \"\"\n",
            pins.0
        ),
    )
    .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args([
            "--netns",
            &lab.router.name,
            "run",
            "--detach-on-exit",
            "--config",
        ])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !lab
        .router
        .ip(&["-d", "link", "show", "r1"])
        .contains("prog/xdp")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never attached"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    let _ = std::fs::remove_file(&config);
    assert!(status.success(), "{status}");
    assert!(!std::path::Path::new(&pins.0).exists(), "every pin is gone");
    for port in ["r0", "r1"] {
        let shown = lab.router.ip(&["-d", "link", "show", port]);
        assert!(!shown.contains("prog/xdp"), "{port} is detached:\n{shown}");
    }
}

#[test]
fn status_diff_and_lookup_as_a_user_say_permission_denied() {
    require_root!();
    let a = NetNs::new("perm-a");
    let b = NetNs::new("perm-b");
    veth_pair(&a, "v0", &b, "v1");
    let pins = pins("perm");
    let out = pf_sidecar(&a, &pins.0, &["attach", "v0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["lookup", "192.0.2.1"],
        &["diff"],
    ] {
        // As nobody, in this network namespace (no --netns: that needs root).
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_pf-sidecar"))
            .args(["--pin-dir", &pins.0])
            .args(args)
            .output()
            .expect("setpriv");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("permission denied") && !stderr.contains("no datapath is pinned"),
            "{args:?}: {stderr}"
        );
    }
    let out = pf_sidecar(&a, &pins.0, &["detach", "--all"]);
    assert!(out.status.success());
}

#[test]
fn the_manual_and_the_completions_cover_every_command() {
    let dir = std::env::temp_dir().join(format!("pf-generate-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .arg("generate")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commands = [
        "run",
        "attach",
        "detach",
        "feasibility",
        "lookup",
        "diff",
        "watch",
        "status",
    ];
    for page in std::iter::once("pf-sidecar".to_string())
        .chain(commands.iter().map(|c| format!("pf-sidecar-{c}")))
    {
        let text = std::fs::read_to_string(dir.join("man").join(format!("{page}.1")))
            .unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(text.contains(".SH SYNOPSIS"), "{page}.1 is a manual page");
    }
    let bash = std::fs::read_to_string(dir.join("completions/pf-sidecar.bash")).unwrap();
    for command in commands {
        assert!(bash.contains(command), "bash completes {command}");
    }
    for file in ["_pf-sidecar", "pf-sidecar.fish"] {
        assert!(dir.join("completions").join(file).exists(), "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watch_refuses_an_unknown_topic_with_the_list() {
    let out = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args([
            "watch",
            "--endpoint",
            "ipc:///nonexistent",
            "--topic",
            "foo",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'foo'") && stderr.contains("resync_done"),
        "{stderr}"
    );
}

#[test]
fn the_reading_verbs_take_the_pin_directory_from_the_configuration() {
    let dir = std::env::temp_dir().join(format!("pf-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pf-sidecar.toml");
    let pin_dir = format!("/sys/fs/bpf/pf-test-from-config-{}", std::process::id());
    std::fs::write(&config, format!("[general]\npin_dir = \"{pin_dir}\"\n")).unwrap();
    for args in [vec!["status"], vec!["lookup", "192.0.2.1"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
            .args(&args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&pin_dir),
            "{args:?} used general.pin_dir of --config: {stderr}{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_command_whose_output_is_cut_short_ends_quietly() {
    require_root!();
    let ns = NetNs::new("pipe");
    let pins = pins("pipe");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &ns.name, "--pin-dir", &pins.0])
        .args(["feasibility", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before a byte is read (`| head -c 0`).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "it panicked: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_daemon_logs_one_json_object_per_line_with_log_format_json() {
    require_root!();
    let ns = NetNs::new("logjson");
    let pins = pins("logjson");
    let dir = std::env::temp_dir().join(format!("pf-logjson-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pf-sidecar.toml");
    std::fs::write(
        &config,
        "[routes]\nfrom = \"kernel\"\n[metrics]\nlisten = \"\"\n",
    )
    .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &ns.name, "--pin-dir", &pins.0, "run", "--config"])
        .arg(&config)
        .args(["--log-format", "json"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = daemon.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let first = lines_rx.recv_timeout(std::time::Duration::from_secs(20));
    // SIGTERM: the daemon removes its state file and socket on the way out.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let first = first.expect("the daemon logged a line");
    let line: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert!(
        line["level"].is_string() && line["fields"]["message"].is_string(),
        "{line}"
    );
}
