//! The docs keep up with the code they describe.

use pf_common::Counter;

#[test]
fn every_datapath_counter_is_documented_in_datapath_md() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/datapath.md"))
        .unwrap();
    let missing: Vec<_> = Counter::ALL
        .iter()
        .map(|c| c.name())
        .filter(|name| !doc.contains(&format!("| `{name}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/datapath.md does not document: {missing:?}"
    );
}

#[test]
fn the_lab_runs_the_frr_integration_snippets_verbatim() {
    let lab =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lab")).unwrap();
    for snippet in [
        "frr-integration/frr.conf.snippet",
        "frr-integration/daemons.snippet",
    ] {
        assert!(lab.contains(snippet), "scripts/lab does not use {snippet}");
    }
    let bird_test = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sidecar/tests/daemon_kernel.rs"
    ))
    .unwrap();
    assert!(bird_test.contains("frr-integration/bird.conf.snippet"));
}
