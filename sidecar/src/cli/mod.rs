//! Operator commands that work on the pinned datapath.

pub mod diff;
pub mod feasibility;
pub mod lookup;
pub mod lookup_vrf;
pub mod status;
pub mod watch;

/// Where maps, programs and links are pinned unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/pf-sidecar";

/// Exit codes shared by every command.
pub mod exit {
    pub const OK: u8 = 0;
    /// `diff`: the maps and the router disagree.
    pub const DRIFT: u8 = 1;
    /// Bad configuration, or the command could not do its job.
    pub const ERROR: u8 = 2;
}

/// Moves the calling thread into the named network namespace. Call before
/// any other thread starts, so every thread the process creates inherits it.
pub fn enter_netns(name: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let path = std::path::Path::new("/run/netns").join(name);
    let ns = std::fs::File::open(&path)
        .map_err(|e| anyhow::anyhow!("network namespace {name} ({}): {e}", path.display()))?;
    // SAFETY: setns on an open namespace fd.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        anyhow::bail!(
            "entering network namespace {name}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
