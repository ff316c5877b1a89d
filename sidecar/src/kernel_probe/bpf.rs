//! Probes that load small programs and maps through the raw `bpf()`
//! syscall: is the JIT used, does the verifier accept tail calls mixed with
//! bpf-to-bpf calls, can arrays be mmapped.

use std::os::fd::{AsFd, OwnedFd};

use crate::datapath::{
    mmap::MmapRegion,
    sys::{
        self, insn, MapSpec, ProgLoadError, BPF_F_MMAPABLE, BPF_MAP_TYPE_ARRAY,
        BPF_MAP_TYPE_PROG_ARRAY, BPF_PROG_TYPE_XDP,
    },
    verifier_log::{log_reason, log_tail, LOG_TAIL_LINES},
};

const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_DW | BPF_IMM
const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
const PSEUDO_MAP_FD: u8 = 1;
const PSEUDO_CALL: u8 = 1;
const FUNC_TAIL_CALL: i32 = 12;
const XDP_PASS: i32 = 2;

/// What the verifier said about a probe program.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Loaded; the JIT made this many bytes of it (0: interpreted).
    Accepted { jited_bytes: u32 },
    Rejected {
        /// `strerror` of the load's errno.
        error: String,
        /// The tail of the verifier log.
        log: String,
    },
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }

    fn of(result: Result<OwnedFd, ProgLoadError>) -> Self {
        match result {
            Ok(fd) => Self::Accepted {
                jited_bytes: sys::prog_jited_len(fd.as_fd()).unwrap_or(0),
            },
            Err(e) => Self::Rejected {
                error: sys::describe(&e.error),
                log: log_tail(&e.log, LOG_TAIL_LINES),
            },
        }
    }

    /// The verifier's last line, or the errno text when it said nothing.
    pub fn reason(&self) -> String {
        match self {
            Self::Accepted { .. } => String::new(),
            Self::Rejected { error, log } => match log_reason(log) {
                Some(last) => format!("{last} ({error})"),
                None => error.clone(),
            },
        }
    }
}

/// `return XDP_PASS`: does the kernel load XDP programs at all, and is the
/// JIT used for them.
pub fn trivial_program() -> Verdict {
    Verdict::of(sys::prog_load(
        BPF_PROG_TYPE_XDP,
        &[insn(MOV64_IMM, 0, 0, 0, XDP_PASS), insn(EXIT, 0, 0, 0, 0)],
        "pf_probe_pass",
    ))
}

/// The tail-call probes: the mix of a tail call and a bpf-to-bpf call, and,
/// as the control that shows the probe itself works, the tail call alone.
#[derive(Debug, Clone)]
pub struct TailCallMix {
    pub mixed: Verdict,
    pub tail_call_alone: Verdict,
}

/// Loads an XDP program that makes a bpf-to-bpf call (`BPF_PSEUDO_CALL`)
/// to a subprogram and then a `bpf_tail_call` through a fresh program
/// array: the shape a datapath gets when LLVM outlines a copy into a
/// `memcpy` call. Kernels whose JIT cannot combine the two (arm64 before
/// 6.0), and the interpreter, reject it: "tail_calls are not allowed in
/// non-JITed programs with bpf-to-bpf calls". The same tail call without
/// the subprogram is loaded too, as the control that the probe itself
/// works.
pub fn tail_call_mix() -> std::io::Result<TailCallMix> {
    let jump = sys::map_create(&MapSpec {
        map_type: BPF_MAP_TYPE_PROG_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        flags: 0,
        name: "pf_probe_jump",
    })?;
    use std::os::fd::AsRawFd;
    let map_fd = jump.as_raw_fd();
    // r1 = ctx, r2 = &jump, r3 = 0; bpf_tail_call; return XDP_PASS.
    let tail_call_and_exit = [
        insn(MOV64_REG, 1, 6, 0, 0),
        insn(LD_IMM64, 2, PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_IMM, 3, 0, 0, 0),
        insn(CALL, 0, 0, 0, FUNC_TAIL_CALL),
        insn(MOV64_IMM, 0, 0, 0, XDP_PASS),
        insn(EXIT, 0, 0, 0, 0),
    ];
    // r6 = ctx; call the subprogram after the tail call's exit.
    let mut mixed = vec![
        insn(MOV64_REG, 6, 1, 0, 0),
        insn(CALL, 0, PSEUDO_CALL, 0, tail_call_and_exit.len() as i32),
    ];
    mixed.extend_from_slice(&tail_call_and_exit);
    // The subprogram: return 0.
    mixed.extend_from_slice(&[insn(MOV64_IMM, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)]);
    let mut alone = vec![insn(MOV64_REG, 6, 1, 0, 0)];
    alone.extend_from_slice(&tail_call_and_exit);
    Ok(TailCallMix {
        mixed: Verdict::of(sys::prog_load(BPF_PROG_TYPE_XDP, &mixed, "pf_probe_mix")),
        tail_call_alone: Verdict::of(sys::prog_load(BPF_PROG_TYPE_XDP, &alone, "pf_probe_tail")),
    })
}

/// Creates a `BPF_F_MMAPABLE` array, maps it, writes through the mapping
/// and reads the element back with a lookup.
pub fn mmapable_array() -> Result<(), String> {
    const ELEMENTS: u32 = 512;
    let map = sys::map_create(&MapSpec {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: ELEMENTS,
        flags: BPF_F_MMAPABLE,
        name: "pf_probe_mmap",
    })
    .map_err(|e| format!("creating a BPF_F_MMAPABLE array: {e}"))?;
    let region = MmapRegion::map(map.as_fd(), ELEMENTS as usize * 8, true)
        .map_err(|e| format!("mmap of the array: {e}"))?;
    // Element 3's low word.
    region.store(6, 0x00c0_ffee);
    let mut value = [0u8; 8];
    match sys::map_lookup(map.as_fd(), &3u32.to_ne_bytes(), &mut value) {
        Ok(true) if value[..4] == 0x00c0_ffeeu32.to_ne_bytes() => Ok(()),
        Ok(_) => Err("a write through the mapping is not seen by a lookup".into()),
        Err(e) => Err(format!("lookup: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_laid_out_as_the_kernel_reads_them() {
        // r2 = 7 (BPF_ALU64 | BPF_MOV | BPF_K), dst in the low nibble.
        assert_eq!(insn(MOV64_IMM, 2, 0, 0, 7), [0xb7, 0x02, 0, 0, 7, 0, 0, 0]);
        // call +2 as a bpf-to-bpf call: src_reg = BPF_PSEUDO_CALL.
        assert_eq!(
            insn(CALL, 0, PSEUDO_CALL, 0, 2),
            [0x85, 0x10, 0, 0, 2, 0, 0, 0]
        );
        assert_eq!(
            insn(0, 0, 0, -1, -2),
            [0, 0, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff]
        );
    }
}
