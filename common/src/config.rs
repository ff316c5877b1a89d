//! The single-element `CONFIG` map.

use bytemuck::{Pod, Zeroable};

#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Route cache first, `bpf_fib_lookup` on a miss.
    #[default]
    CacheAndFib = 0,
    /// `bpf_fib_lookup` only (what `xdp_fwd` does).
    FibOnly = 1,
    /// Route cache only; a miss goes to the kernel.
    CacheOnly = 2,
}

impl Mode {
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::CacheAndFib,
            1 => Self::FibOnly,
            2 => Self::CacheOnly,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::CacheAndFib => "cache+fib",
            Self::FibOnly => "fib-only",
            Self::CacheOnly => "cache-only",
        }
    }
}

/// Count what would have happened, then pass every packet.
pub const CFG_F_DRY_RUN: u32 = 1 << 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Config {
    /// A [`Mode`] value.
    pub mode: u32,
    /// `CFG_F_*` bits.
    pub flags: u32,
    /// Seed of the ECMP flow hash.
    pub hash_seed: u32,
    pub reserved: u32,
    /// CLOCK_MONOTONIC ns of the sidecar's last heartbeat.
    pub heartbeat_ns: u64,
    /// Fail-safe bound: when the heartbeat is older than this, the cache is
    /// skipped and only `bpf_fib_lookup` forwards. 0 disables the fail-safe.
    pub stale_after_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Config>() == 32);
