//! Frames the kernel drops after `XDP_REDIRECT` are counted.

use integration_tests::require_root;
use pf_sidecar::redirect_errors::RedirectFailures;

#[test]
fn the_tracepoint_programs_load_and_attach() {
    require_root!();
    let failures = RedirectFailures::start(16).expect("counting redirect failures");
    failures.watch(7).unwrap();
    failures.watch(7).unwrap();
    assert_eq!(failures.count(7), 0);
    assert_eq!(failures.unwatch(7), 0);
}
