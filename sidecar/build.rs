//! Builds the XDP object (`ebpf/`) with the nightly toolchain and embeds it.
//!
//! The object goes to `target/ebpf/`, shared by every host profile, so a
//! debug and a release build of the sidecar embed the same bytes and the eBPF
//! crate is compiled once. A failure stops the host build with the missing
//! tool's name; there is no fallback object.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

const NIGHTLY: &str = "nightly";
const SETUP_HINT: &str = "run `scripts/setup.sh` (or `make setup`) as root to install it";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("sidecar/ has a parent")
        .to_path_buf();
    let ebpf_dir = root.join("ebpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    for path in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "ebpf/Cargo.lock",
        "ebpf/.cargo/config.toml",
        "ebpf/bpf-link",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=PATH");

    if let Err(problem) = preflight() {
        fail(&problem);
    }

    let target_dir = root.join("target").join("ebpf");
    let mut cargo = Command::new("rustup");
    cargo
        .current_dir(&ebpf_dir)
        .args([
            "run",
            NIGHTLY,
            "cargo",
            "build",
            "--release",
            "--locked",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer cargo exports variables meant for this build script; the
    // inner build must see none of them.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let inherited = key.starts_with("CARGO_") && key != "CARGO_HOME";
        if inherited
            || matches!(
                key.as_str(),
                "RUSTC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTFLAGS"
                    | "RUSTDOC"
                    | "RUSTC_LINKER"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
            )
        {
            cargo.env_remove(&key);
        }
    }
    // Build-script stdout is read by cargo as directives; send the inner
    // build's chatter to stderr.
    cargo.stdout(std::io::stderr());
    let status = match cargo.status() {
        Ok(status) => status,
        Err(err) => fail(&format!(
            "could not run `rustup run {NIGHTLY} cargo`: {err}"
        )),
    };
    if !status.success() {
        fail(&format!(
            "building the XDP object in {} failed ({status}); the compiler output is above",
            ebpf_dir.display()
        ));
    }

    let built = target_dir.join("bpfel-unknown-none/release/pf-ebpf");
    let embedded = out_dir.join("pf-ebpf.o");
    if let Err(err) = fs::copy(&built, &embedded) {
        fail(&format!(
            "copying {} to {}: {err}",
            built.display(),
            embedded.display()
        ));
    }
}

/// Checks each tool the eBPF build needs and names the first one missing.
fn preflight() -> Result<(), String> {
    let rustup_ok = Command::new("rustup")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !rustup_ok {
        return Err(format!(
            "`rustup` is not on PATH; it is needed to run the {NIGHTLY} toolchain"
        ));
    }
    let sysroot = Command::new("rustup")
        .args(["run", NIGHTLY, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .ok_or_else(|| format!("the `{NIGHTLY}` Rust toolchain is not installed"))?;
    let core_src = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core_src.exists() {
        return Err(format!(
            "the `rust-src` component of the `{NIGHTLY}` toolchain is missing ({} not found)",
            core_src.display()
        ));
    }
    if !on_path("bpf-linker") {
        return Err("`bpf-linker` is not on PATH".to_string());
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .map(|paths| env::split_paths(&paths).any(|dir| is_executable(&dir.join(program))))
        .unwrap_or(false)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn fail(problem: &str) -> ! {
    eprintln!();
    eprintln!("error: cannot build the pf-sidecar XDP object: {problem}");
    eprintln!("hint: {SETUP_HINT}");
    panic!("pf-sidecar eBPF build failed: {problem}");
}
