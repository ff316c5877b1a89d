//! The `pf-sidecar` binary, driven as an operator would.

use std::process::{Command, Output};

use integration_tests::{
    netns::{veth_pair, NetNs},
    require_root,
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

#[test]
fn feasibility_passes_on_this_host_for_a_prepared_namespace() {
    require_root!();
    let a = NetNs::new("feas-a");
    let b = NetNs::new("feas-b");
    veth_pair(&a, "v0", &b, "v1");
    a.exec_ok(
        "sysctl",
        &[
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ],
    );
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
        text.contains("PASS  attach to v0") && text.contains("native XDP works"),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn feasibility_fails_with_a_fix_when_something_is_missing() {
    require_root!();
    let a = NetNs::new("feas-fail");
    let pins = pins("feasfail");
    let out = pf_sidecar(&a, &pins.0, &["feasibility", "--json", "nosuch0"]);
    assert_eq!(out.status.code(), Some(1));
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&serde_json::Value> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["pass"] == false)
        .collect();
    let names: Vec<&str> = failed.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"attach to nosuch0"), "{names:?}");
    assert!(
        names.contains(&"IPv4 forwarding"),
        "a fresh namespace does not forward: {names:?}"
    );
    assert!(
        failed.iter().all(|c| c["fix"].is_string()),
        "every failure says how to fix it"
    );
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
