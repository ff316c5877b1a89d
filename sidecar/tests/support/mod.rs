//! What the daemon tests share lives in `integration-tests` (so the
//! benches use it too); this names the binary under test.
#![allow(dead_code, unused_imports)]

pub use integration_tests::{
    bird::Bird,
    daemon::{converge, kernel_routes, lab_addresses, mismatches, probe, Daemon},
};

/// The pf-sidecar binary cargo built for these tests.
pub const SIDECAR: &str = env!("CARGO_BIN_EXE_pf-sidecar");
