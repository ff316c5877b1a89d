//! Helpers shared by the integration tests: throwaway network namespaces,
//! commands run inside them, and a guard that skips root-only tests with a
//! loud message when not root.

pub mod bird;
pub mod capture;
pub mod daemon;
pub mod differential;
pub mod fixture;
pub mod fpm_messages;
pub mod frames;
pub mod frr;
pub mod full_table;
pub mod kernel_matrix;
pub mod lab;
pub mod netns;
pub mod raw_xdp;
pub mod script_lab;
pub mod synthetic;

/// `ping -q`'s summary line and its (transmitted, received) counts.
pub fn ping_summary(stdout: &[u8]) -> (String, u64, u64) {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default()
        .to_owned();
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let count = |i: usize| numbers.get(i).copied().unwrap_or(0);
    (line, count(0), count(1))
}

/// True when the process may load BPF programs and create namespaces.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Root-only tests call this first. `make test` runs as root, so a skip
/// there would hide a regression: with `PF_REQUIRE_ROOT=1` (set by the
/// Makefile) a non-root run fails instead of skipping.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            if std::env::var_os("PF_REQUIRE_ROOT").is_some() {
                panic!("this test needs root (CAP_BPF, CAP_NET_ADMIN)");
            }
            eprintln!("skipping: needs root");
            return;
        }
    };
}
