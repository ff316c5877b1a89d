//! The raw `bpf()` syscall, for what aya does not wrap or wraps differently:
//! link updates, `TX_PORTS` with 4-byte values,
//! `BPF_PROG_TEST_RUN`, and the kernel probes of `feasibility`. [`bpf`] is
//! the one place pf-sidecar (and its test support) makes the syscall
//! itself; everything else goes through aya.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

pub const BPF_MAP_CREATE: libc::c_long = 0;
pub const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
pub const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
pub const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
pub const BPF_PROG_LOAD: libc::c_long = 5;
pub const BPF_OBJ_GET: libc::c_long = 7;
pub const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
pub const BPF_LINK_UPDATE: libc::c_long = 29;

pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;
pub const BPF_MAP_TYPE_DEVMAP_HASH: u32 = 25;

pub const BPF_PROG_TYPE_XDP: u32 = 6;

pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The kernel's internal `ENOTSUPP`, which reaches userspace from some BPF
/// commands and which libc has no name for.
pub const ENOTSUPP: i32 = 524;

/// An error as a person reads it, naming `ENOTSUPP` (which `strerror` calls
/// "Unknown error 524").
pub fn describe(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(ENOTSUPP) => "not supported by this kernel (ENOTSUPP)".to_string(),
        _ => error.to_string(),
    }
}

/// Calls `bpf(cmd, attr, sizeof attr)`.
pub fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: attr is a valid, initialised bpf_attr variant for `cmd`, and
    // every pointer inside it is alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// The `BPF_MAP_CREATE` member of `union bpf_attr` (up to `map_extra`).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    map_ifindex: u32,
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
    btf_vmlinux_value_type_id: u32,
    map_extra: u64,
}

/// What a map is made of.
#[derive(Debug, Clone, Copy)]
pub struct MapSpec<'a> {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// At most 15 bytes are kept.
    pub name: &'a str,
}

/// Creates a map. Kernels before 5.11 charge maps to RLIMIT_MEMLOCK; on
/// EPERM the limit is lifted once and the creation retried, as aya does.
pub fn map_create(spec: &MapSpec<'_>) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: spec.map_type,
        key_size: spec.key_size,
        value_size: spec.value_size,
        max_entries: spec.max_entries,
        map_flags: spec.flags,
        ..Default::default()
    };
    let name = spec.name.as_bytes();
    let len = name.len().min(15);
    attr.map_name[..len].copy_from_slice(&name[..len]);
    let fd = match bpf(BPF_MAP_CREATE, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && lift_memlock() => {
            bpf(BPF_MAP_CREATE, &mut attr)?
        }
        other => other?,
    };
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Raises RLIMIT_MEMLOCK to infinity. True if it was raised.
fn lift_memlock() -> bool {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) == 0 }
}

/// The element members of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

fn elem(
    cmd: libc::c_long,
    map: BorrowedFd<'_>,
    key: *const u8,
    value: *const u8,
    flags: u64,
) -> io::Result<i64> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key as u64,
        value_or_next_key: value as u64,
        flags,
        ..Default::default()
    };
    bpf(cmd, &mut attr)
}

/// Writes `key` → `value`; both must be exactly the map's sizes.
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    elem(
        BPF_MAP_UPDATE_ELEM,
        map,
        key.as_ptr(),
        value.as_ptr(),
        flags,
    )
    .map(|_| ())
}

/// Reads the value under `key` into `value` (the map's value size). False
/// when the key is absent.
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    match elem(
        BPF_MAP_LOOKUP_ELEM,
        map,
        key.as_ptr(),
        value.as_mut_ptr(),
        0,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes `key`. False when it was absent.
pub fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<bool> {
    match elem(BPF_MAP_DELETE_ELEM, map, key.as_ptr(), std::ptr::null(), 0) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The key after `key` (the first key with `None`) into `next`. False at
/// the end.
pub fn map_next_key(map: BorrowedFd<'_>, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
    match elem(
        BPF_MAP_GET_NEXT_KEY,
        map,
        key.map_or(std::ptr::null(), <[u8]>::as_ptr),
        next.as_mut_ptr(),
        0,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The `BPF_PROG_LOAD` member of `union bpf_attr` (up to
/// `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// A program the verifier refused, with what it said.
#[derive(Debug)]
pub struct ProgLoadError {
    pub error: io::Error,
    pub log: String,
}

/// Loads a program from raw instructions (see [`insn`]). The verifier log is
/// returned on failure.
pub fn prog_load(prog_type: u32, insns: &[[u8; 8]], name: &str) -> Result<OwnedFd, ProgLoadError> {
    prog_load_for(prog_type, 0, insns, name)
}

/// [`prog_load`] with the attach type the program is loaded for (`BPF_XDP`
/// for an XDP program attached by link).
pub fn prog_load_for(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[[u8; 8]],
    name: &str,
) -> Result<OwnedFd, ProgLoadError> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type,
        ..Default::default()
    };
    let bytes = name.as_bytes();
    let len = bytes.len().min(15);
    attr.prog_name[..len].copy_from_slice(&bytes[..len]);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel returned a new fd that we now own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(error) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(ProgLoadError {
                error,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

/// The leading members of `struct bpf_prog_info`; the kernel fills as much
/// as the length given.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
}

#[repr(C)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Bytes of machine code the JIT made of a loaded program (0: the program
/// runs in the interpreter).
pub fn prog_jited_len(prog: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info = ProgInfo::default();
    let mut attr = InfoByFdAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info.jited_prog_len)
}

/// CLOCK_MONOTONIC in nanoseconds: `bpf_ktime_get_ns`'s clock, which the
/// datapath's heartbeat is compared with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One `struct bpf_insn` as it lies in memory on a little-endian host
/// (x86_64, aarch64): `dst_reg` in the low four bits of byte 1.
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let regs = (dst & 0x0f) | ((src & 0x0f) << 4);
    [
        code,
        regs,
        off.to_le_bytes()[0],
        off.to_le_bytes()[1],
        imm.to_le_bytes()[0],
        imm.to_le_bytes()[1],
        imm.to_le_bytes()[2],
        imm.to_le_bytes()[3],
    ]
}
