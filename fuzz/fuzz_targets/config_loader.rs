//! The configuration loader on arbitrary text: errors, never panics. The
//! text goes in as the file's contents (`Config::load_from` reads the file
//! and hands it to `Config::load_text`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pf_sidecar::config::{Config, Overrides};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::load_text(
            Some(text),
            std::path::Path::new("fuzz.toml"),
            &[],
            &Overrides::default(),
        );
    }
});
