//! The Grafana dashboard and the Prometheus alerting rules in
//! `observability/` name only metrics the daemon exports, and promtool (from
//! Debian's prometheus package, unpacked by `scripts/setup.sh`) accepts the
//! rules.

use std::{collections::BTreeSet, path::Path, process::Command};

use pf_common::Counter;
use pf_sidecar::{
    metrics::{render, BuildInfo, Snapshot, TableUse},
    ports::PortState,
    state::DaemonState,
};

const PROMTOOL: &str = "/var/cache/pf-sidecar/prometheus/usr/bin/promtool";

fn observability(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../observability")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The metric families of a page with every kind of sample present.
fn exported() -> BTreeSet<String> {
    let mut state = DaemonState {
        interfaces: vec![PortState {
            interface: "eth0".into(),
            ifindex: Some(2),
            attached: true,
            condition: "attached (native)".into(),
        }],
        ..Default::default()
    };
    state.redirect_failures.counting = true;
    state
        .redirect_failures
        .per_interface
        .insert("eth0".into(), 1);
    state.control.programmer.unsupported_routes = 1;
    state.control.fpm_last_message_age_ms = Some(1);
    state.control.route_source_down_ms = Some(1);
    let counters: Vec<(Counter, u64)> = Counter::ALL.iter().map(|c| (*c, 1)).collect();
    let page = render(&Snapshot {
        state: &state,
        counters: &counters,
        tables: &[TableUse::new("nexthops", 1, 4096)],
        fail_safe_active: false,
        events_dropped: 0,
        heartbeat_age_s: Some(0.5),
        build: &BuildInfo::current(),
    });
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every `pf_sidecar_*` name in `text`.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("pf_sidecar_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn the_dashboard_and_the_alerting_rules_name_only_metrics_the_daemon_exports() {
    let exported = exported();
    assert!(exported.contains("pf_sidecar_live"), "{exported:?}");
    let dashboard = observability("grafana-dashboard.json");
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let panels = parsed["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "the dashboard has its panels");
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
    }
    for (file, text) in [
        ("grafana-dashboard.json", dashboard.as_str()),
        (
            "pf-sidecar.rules.yml",
            &observability("pf-sidecar.rules.yml"),
        ),
    ] {
        let unknown: Vec<_> = referenced(text).difference(&exported).cloned().collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics the daemon does not export: {unknown:?}"
        );
    }
}

#[test]
fn promtool_accepts_the_alerting_rules() {
    if !Path::new(PROMTOOL).exists() {
        assert!(
            std::env::var_os("PF_REQUIRE_ROOT").is_none(),
            "{PROMTOOL} is missing: run scripts/setup.sh"
        );
        eprintln!("skipping: {PROMTOOL} is missing (scripts/setup.sh unpacks it)");
        return;
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../observability/pf-sidecar.rules.yml");
    let out = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
