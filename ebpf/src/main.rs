//! pf-sidecar's XDP datapath.
//!
//! `fast_path` parses the frame, finds the egress in the route cache (or asks
//! the kernel with `bpf_fib_lookup`) and tail-calls `finalize`, which rewrites
//! the frame and redirects it. Everything it cannot forward goes to the
//! kernel untouched with `XDP_PASS`.
//!
//! Verifier rules this crate keeps (see docs/datapath.md):
//! - every function is `#[inline(always)]`: strict JITs reject programs that
//!   mix tail calls with bpf-to-bpf calls;
//! - no slice indexing, no `?` on fallible conversions that could panic, no
//!   copies of variable size: each would pull in a call.
#![no_std]
#![no_main]

mod devmap;
mod fast_path;
mod finalize;
mod maps;
mod packet;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Passes everything. The benchmark floor, and what test and lab hosts put
/// on veth ends that only need XDP enabled to receive redirected frames.
#[aya_ebpf::macros::xdp]
pub fn xdp_pass(_ctx: aya_ebpf::programs::XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_PASS
}
