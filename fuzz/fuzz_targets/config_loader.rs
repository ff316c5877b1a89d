//! The configuration loader on arbitrary TOML: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pf_sidecar::config::{Config, Overrides};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("pf-fuzz-config-{}.toml", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        let _ = Config::load_from(Some(&path), &[], &Overrides::default());
    }
});
