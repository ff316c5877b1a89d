//! Small XDP programs for the throughput benchmark, loaded straight through
//! the bpf syscall so the product's object carries nothing for
//! benchmarking: the generator (run in live-frames mode, `XDP_TX`), one
//! that spreads its frames over many destinations, the sink (`XDP_DROP`),
//! and the redirect-only floor (`bpf_redirect` to one device, no lookup).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use pf_sidecar::datapath::sys::{self, insn, MapSpec, BPF_MAP_TYPE_ARRAY, BPF_PROG_TYPE_XDP};

pub const XDP_DROP: i32 = 1;
pub const XDP_TX: i32 = 3;

const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_REDIRECT: i32 = 23;
/// `src_reg` of a `BPF_LD_IMM64` that names a map by fd.
const BPF_PSEUDO_MAP_FD: u8 = 1;

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
    let mut insns = header_writes(header);
    insns.extend(tx_or_drop());
    patch_drops(&mut insns);
    load(&insns, name)
}

/// `size` bytes (4 or 2) copied from offset `value` of a destination entry
/// to offset `packet` of the frame.
#[derive(Debug, Clone, Copy)]
pub struct FieldCopy {
    pub value: i16,
    pub packet: i16,
    pub size: u8,
}

/// A generator that writes `header`, then the next entry of a table of
/// destinations into the frame (see [`FieldCopy`]): entry `n & mask` for the
/// `n`-th frame, so the frames cycle through the table in its order.
pub struct SpreadingGenerator {
    pub program: OwnedFd,
    _destinations: OwnedFd,
    _counter: OwnedFd,
}

pub fn spreading_generator(
    header: &[u8],
    entries: &[Vec<u8>],
    copies: &[FieldCopy],
    name: &str,
) -> std::io::Result<SpreadingGenerator> {
    assert!(entries.len().is_power_of_two(), "a power of two of entries");
    let value_size = entries[0].len() as u32;
    let destinations = sys::map_create(&MapSpec {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size,
        max_entries: entries.len() as u32,
        flags: 0,
        name: "pf_bench_dsts",
    })?;
    for (i, entry) in entries.iter().enumerate() {
        sys::map_update(destinations.as_fd(), &(i as u32).to_ne_bytes(), entry, 0)?;
    }
    let counter = sys::map_create(&MapSpec {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        flags: 0,
        name: "pf_bench_next",
    })?;
    let mask = entries.len() as i32 - 1;
    let mut insns = header_writes(header);
    insns.extend([
        insn(0xbf, 6, 2, 0, 0),   // r6 = data (kept across calls)
        insn(0x62, 10, 0, -4, 0), // *(u32 *)(fp - 4) = 0
    ]);
    insns.extend(ld_map(1, &counter));
    insns.extend([
        insn(0xbf, 2, 10, 0, 0),                       // r2 = fp
        insn(0x07, 2, 0, 0, -4),                       // r2 += -4
        insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // r0 = &counter
        insn(0x15, 0, 0, DROP, 0),                     // if r0 == 0 goto drop
        insn(0x79, 7, 0, 0, 0),                        // r7 = *(u64 *)r0
        insn(0xbf, 8, 7, 0, 0),                        // r8 = r7
        insn(0x07, 8, 0, 0, 1),                        // r8 += 1
        insn(0x7b, 0, 8, 0, 0),                        // *(u64 *)r0 = r8
        insn(0x57, 7, 0, 0, mask),                     // r7 &= mask
        insn(0x63, 10, 7, -8, 0),                      // *(u32 *)(fp - 8) = r7
    ]);
    insns.extend(ld_map(1, &destinations));
    insns.extend([
        insn(0xbf, 2, 10, 0, 0),                       // r2 = fp
        insn(0x07, 2, 0, 0, -8),                       // r2 += -8
        insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // r0 = &entry
        insn(0x15, 0, 0, DROP, 0),                     // if r0 == 0 goto drop
    ]);
    for copy in copies {
        let (load, store) = match copy.size {
            4 => (0x61, 0x63),
            2 => (0x69, 0x6b),
            other => panic!("copies are 4 or 2 bytes, not {other}"),
        };
        assert!(
            copy.packet as usize + copy.size as usize <= header.len(),
            "copies land inside the checked header"
        );
        insns.push(insn(load, 3, 0, copy.value, 0)); // r3 = entry[value]
        insns.push(insn(store, 6, 3, copy.packet, 0)); // frame[packet] = r3
    }
    insns.extend(tx_or_drop());
    patch_drops(&mut insns);
    Ok(SpreadingGenerator {
        program: load(&insns, name)?,
        _destinations: destinations,
        _counter: counter,
    })
}

/// The redirect-only floor: every frame to `ifindex`, no parsing, no
/// lookup, no rewrite: what veth allows an XDP forwarder at best.
pub fn redirect_program(ifindex: u32, name: &str) -> std::io::Result<OwnedFd> {
    load(
        &[
            insn(0xb7, 1, 0, 0, ifindex as i32),    // r1 = ifindex
            insn(0xb7, 2, 0, 0, 0),                 // r2 = 0
            insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT), // r0 = bpf_redirect(r1, r2)
            insn(0x95, 0, 0, 0, 0),
        ],
        name,
    )
}

/// A jump's placeholder offset: "to the drop at the end" (see
/// [`patch_drops`]).
const DROP: i16 = i16::MIN;

/// `r2 = data`, the bounds check, and stores of `header` into the frame.
fn header_writes(header: &[u8]) -> Vec<[u8; 8]> {
    let len = header.len().div_ceil(2) * 2;
    let mut padded = header.to_vec();
    padded.resize(len, 0);
    let mut insns = vec![
        insn(0x61, 2, 1, 0, 0),          // r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),          // r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),          // r4 = r2
        insn(0x07, 4, 0, 0, len as i32), // r4 += len
        insn(0x2d, 4, 3, DROP, 0),       // if r4 > r3 goto drop
    ];
    let mut offset = 0;
    while offset < len {
        if offset + 4 <= len {
            let imm = i32::from_le_bytes(padded[offset..offset + 4].try_into().unwrap());
            insns.push(insn(0x62, 2, 0, offset as i16, imm)); // *(u32 *)(r2 + off) = imm
            offset += 4;
        } else {
            let imm = u16::from_le_bytes(padded[offset..offset + 2].try_into().unwrap()) as i32;
            insns.push(insn(0x6a, 2, 0, offset as i16, imm)); // *(u16 *)(r2 + off) = imm
            offset += 2;
        }
    }
    insns
}

/// `return XDP_TX`, then the drop every [`DROP`] jump lands on.
fn tx_or_drop() -> [[u8; 8]; 4] {
    [
        insn(0xb7, 0, 0, 0, XDP_TX),   // r0 = XDP_TX
        insn(0x95, 0, 0, 0, 0),        // exit
        insn(0xb7, 0, 0, 0, XDP_DROP), // drop: r0 = XDP_DROP
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// Points every [`DROP`] jump at the last two instructions.
fn patch_drops(insns: &mut [[u8; 8]]) {
    let drop = insns.len() - 2;
    for (i, ins) in insns.iter_mut().enumerate() {
        if i16::from_le_bytes([ins[2], ins[3]]) == DROP && ins[0] & 0x07 == 0x05 {
            let off = (drop - i - 1) as i16;
            ins[2..4].copy_from_slice(&off.to_le_bytes());
        }
    }
}

/// `BPF_LD_IMM64 reg, map` (two instructions).
fn ld_map(reg: u8, map: &OwnedFd) -> [[u8; 8]; 2] {
    [
        insn(0x18, reg, BPF_PSEUDO_MAP_FD, 0, map.as_raw_fd()),
        insn(0, 0, 0, 0, 0),
    ]
}

fn load(insns: &[[u8; 8]], name: &str) -> std::io::Result<OwnedFd> {
    sys::prog_load_for(BPF_PROG_TYPE_XDP, BPF_XDP, insns, name).map_err(|e| e.error)
}

/// Attaches `prog` to `ifindex` (of the calling thread's namespace) in
/// native mode; detached when the returned link fd closes.
pub fn attach(prog: &OwnedFd, ifindex: u32) -> std::io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: 1 << 2, // XDP_FLAGS_DRV_MODE
        ..Default::default()
    };
    bpf(BPF_LINK_CREATE, &mut attr)
}
