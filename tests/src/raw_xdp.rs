//! Two-instruction XDP programs for the throughput benchmark: `XDP_TX` (the
//! generator's program, run in live-frames mode) and `XDP_DROP` (the sink,
//! attached to the receiving device), loaded straight through the bpf
//! syscall so the product's object carries nothing for benchmarking.

use std::os::fd::{FromRawFd, OwnedFd};

use pf_sidecar::datapath::sys::{self, insn, BPF_PROG_TYPE_XDP};

pub const XDP_DROP: i32 = 1;
pub const XDP_TX: i32 = 3;

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

/// A `bpf()` command that returns a new descriptor, through pf-sidecar's
/// one syscall funnel.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    let fd = sys::bpf(cmd, attr)?;
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// An XDP program that returns `action` for every packet.
pub fn constant_program(action: i32, name: &str) -> std::io::Result<OwnedFd> {
    load(&[insn(0xb7, 0, 0, 0, action), insn(0x95, 0, 0, 0, 0)], name)
}

/// The generator: rewrites the first `header.len()` bytes (rounded up to
/// whole 16-bit words) of every frame, then returns `XDP_TX`. In
/// live-frames mode the kernel recycles frames as the receiver left them
/// (a router decrements the TTL and rewrites MACs in place), so the
/// headers must be written back each time.
pub fn generator_program(header: &[u8], name: &str) -> std::io::Result<OwnedFd> {
    let len = header.len().div_ceil(2) * 2;
    let mut padded = header.to_vec();
    padded.resize(len, 0);
    let mut stores = Vec::new();
    let mut offset = 0;
    while offset < len {
        if offset + 4 <= len {
            let imm = i32::from_le_bytes(padded[offset..offset + 4].try_into().unwrap());
            stores.push(insn(0x62, 2, 0, offset as i16, imm)); // *(u32 *)(r2 + off) = imm
            offset += 4;
        } else {
            let imm = u16::from_le_bytes(padded[offset..offset + 2].try_into().unwrap()) as i32;
            stores.push(insn(0x6a, 2, 0, offset as i16, imm)); // *(u16 *)(r2 + off) = imm
            offset += 2;
        }
    }
    let mut insns = vec![
        insn(0x61, 2, 1, 0, 0),                       // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),                       // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),                       // r4 = r2
        insn(0x07, 4, 0, 0, len as i32),              // r4 += len
        insn(0x2d, 4, 3, stores.len() as i16 + 2, 0), // if r4 > r3 goto drop
    ];
    insns.extend(stores);
    insns.extend([
        insn(0xb7, 0, 0, 0, XDP_TX),   // r0 = XDP_TX
        insn(0x95, 0, 0, 0, 0),        // exit
        insn(0xb7, 0, 0, 0, XDP_DROP), // drop: r0 = XDP_DROP
        insn(0x95, 0, 0, 0, 0),
    ]);
    load(&insns, name)
}

fn load(insns: &[[u8; 8]], name: &str) -> std::io::Result<OwnedFd> {
    sys::prog_load_for(BPF_PROG_TYPE_XDP, BPF_XDP, insns, name).map_err(|e| e.error)
}

/// Attaches `prog` to `ifindex` (of the calling thread's namespace) in
/// native mode; detached when the returned link fd closes.
pub fn attach(prog: &OwnedFd, ifindex: u32) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: 1 << 2, // XDP_FLAGS_DRV_MODE
        ..Default::default()
    };
    bpf(BPF_LINK_CREATE, &mut attr)
}
