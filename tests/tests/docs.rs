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
