//! `BPF_PROG_TEST_RUN` for XDP programs (aya has no wrapper for it).

use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct xdp_md` as the test-run context.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XdpMd {
    pub data: u32,
    pub data_end: u32,
    pub data_meta: u32,
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
    pub egress_ifindex: u32,
}

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Room for the frame plus the largest push `finalize` makes.
const OUT_SLACK: usize = 256;

#[derive(Debug, Clone)]
pub struct TestRunOutput {
    /// The program's return value (an `xdp_action`).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Mean nanoseconds per run, as the kernel measured it.
    pub ns_per_run: u32,
}

/// Runs `prog` over `frame` `repeat` times. With `ingress_ifindex`, the
/// packet appears to arrive on that device of the calling thread's netns
/// (needed for `bpf_fib_lookup`).
pub fn run_xdp(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ingress_ifindex: Option<u32>,
    repeat: u32,
) -> std::io::Result<TestRunOutput> {
    let mut out = vec![0u8; frame.len() + OUT_SLACK];
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex: ingress_ifindex.unwrap_or(0),
        ..Default::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: repeat.max(1),
        ..Default::default()
    };
    if ingress_ifindex.is_some() {
        attr.ctx_size_in = std::mem::size_of::<XdpMd>() as u32;
        attr.ctx_in = &ctx as *const XdpMd as u64;
    }
    // attr points at buffers that outlive the call; the kernel writes at
    // most data_size_out bytes to data_out.
    super::sys::bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate(attr.data_size_out as usize);
    Ok(TestRunOutput {
        action: attr.retval,
        frame: out,
        ns_per_run: attr.duration,
    })
}

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: frames the program returns `XDP_TX` or
/// `XDP_REDIRECT` for are really transmitted.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// Runs `prog` over `frame` `repeat` times in live-frames mode, as if each
/// copy arrived on `ingress_ifindex`: what the program transmits leaves
/// through the device (a traffic generator, as `xdp-trafficgen` is).
pub fn run_xdp_live(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
    batch_size: u32,
) -> std::io::Result<()> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex,
        ..Default::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: repeat.max(1),
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..Default::default()
    };
    // attr points at a frame and a context that outlive the call;
    // live-frames mode writes no output buffer.
    super::sys::bpf(BPF_PROG_TEST_RUN, &mut attr).map(|_| ())
}
