//! `feasibility` finds the zebra of its network namespace, its version and
//! its `--asic-offload` setting (also when zebra runs from a chroot, as the
//! FRR matrix's do), and warns when routes would sit queued for want of
//! offload replies: FRR 8.4 discards them and 10.3.x drops them, so
//! `--asic-offload=notify_on_offload` is refused with a WARN there; 10.4 and
//! later take them. Without it the check passes.

use std::process::Command;

use integration_tests::{
    frr::{Frr, FrrConfig},
    netns::NetNs,
    require_root,
};

/// The `frr: offload feedback` checks of `feasibility --json` in `ns`.
fn offload_checks(ns: &NetNs, config: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &ns.name, "feasibility", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "feasibility --json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    checks
        .into_iter()
        .filter(|c| c["name"] == "frr: offload feedback")
        .collect()
}

#[test]
fn feasibility_warns_when_zebra_waits_for_offload_replies_it_will_never_take() {
    require_root!();
    let ns = NetNs::new("frro");
    let config = std::env::temp_dir().join(format!("pf-test-frro-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[general]\npin_dir = \"/sys/fs/bpf/pf-test-frro-{}\"\n[fpm]\noffload_replies = true\n",
            std::process::id()
        ),
    )
    .unwrap();
    // No zebra in the namespace: nothing to say about it.
    assert!(offload_checks(&ns, &config).is_empty());

    let install = integration_tests::frr::Install::from_env();
    let version = install.version();
    let expected = format!("{}.{}.{}", version.0, version.1, version.2);

    let mut frr = Frr::start(
        &ns,
        &FrrConfig {
            fpm_port: Some(2620),
            zebra: &[],
            staticd: None,
            bgpd: None,
        },
    );
    let checks = offload_checks(&ns, &config);
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0]["status"], "pass", "{checks:?}");
    assert_eq!(checks[0]["value"], expected.as_str(), "{checks:?}");

    frr.kill("zebra");
    frr.restart(
        "zebra",
        &["-M", "dplane_fpm_nl", "--asic-offload=notify_on_offload"],
    );
    let checks = offload_checks(&ns, &config);
    assert_eq!(checks.len(), 1, "{checks:?}");
    let broken = match version {
        (major, ..) if major < 9 => Some("FRR before 9 discards offload replies"),
        (10, 3, _) => Some("FRR 10.3.x drops every offload reply"),
        _ => None,
    };
    match broken {
        Some(why) => {
            assert_eq!(checks[0]["status"], "warn", "{checks:?}");
            let detail = checks[0]["detail"].as_str().unwrap();
            assert!(detail.contains(why), "{detail}");
        }
        None => assert_eq!(checks[0]["status"], "pass", "FRR {expected}: {checks:?}"),
    }
    drop(frr);
    let _ = std::fs::remove_file(&config);
}

mod support;

/// `status` says so too, with the daemon's view: zebra with
/// `notify_on_offload` pointed at a port no sidecar listens on (and on FRR
/// 8.4 and 10.3.x, the version's own warning).
#[test]
fn status_warns_when_zebra_waits_for_replies_and_no_sidecar_has_its_session() {
    require_root!();
    let lab = integration_tests::lab::Lab::new("frrs");
    let port = 27000 + (std::process::id() % 1000) as u16;
    let daemon = support::Daemon::start_with(
        support::SIDECAR,
        &lab,
        &format!("[fpm]\nlisten = \"127.0.0.1:{port}\"\noffload_replies = true\n"),
        "frrs",
    );
    let mut frr = Frr::start(
        &lab.router,
        &FrrConfig {
            fpm_port: Some(port + 1),
            zebra: &[],
            staticd: None,
            bgpd: None,
        },
    );
    frr.kill("zebra");
    frr.restart(
        "zebra",
        &["-M", "dplane_fpm_nl", "--asic-offload=notify_on_offload"],
    );
    let broken_version = match frr.install.version() {
        (major, ..) if major < 9 => Some("FRR before 9 discards offload replies"),
        (10, 3, _) => Some("FRR 10.3.x drops every offload reply"),
        _ => None,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
            .args(["--netns", &lab.router.name, "--pin-dir"])
            .arg(&daemon.pin_dir)
            .args(["status", "--json", "--rate-interval-ms", "0"])
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let warnings: Vec<String> = status["frr_warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .map(|w| w.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let said = |what: &str| warnings.iter().any(|w| w.contains(what));
        if status["daemon"].is_object()
            && broken_version.is_none_or(said)
            && said("no sidecar has its FPM session")
            && !said("fpm.offload_replies is false")
        {
            let text = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
                .args(["--netns", &lab.router.name, "--pin-dir"])
                .arg(&daemon.pin_dir)
                .args(["status", "--rate-interval-ms", "0"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&text.stdout);
            assert!(
                text.lines()
                    .any(|l| l.starts_with("WARN") && l.contains("no sidecar has its FPM session")),
                "{text}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never warned: {warnings:?}\n{status}\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
