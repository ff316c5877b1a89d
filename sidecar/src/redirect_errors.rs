//! Redirect failures: frames `finalize` handed to `XDP_REDIRECT` that the
//! kernel then dropped.
//!
//! `finalize` counts a redirect when `bpf_redirect_map` accepts the port,
//! but the frame can still be lost after the program returns: the egress
//! device refuses it when it is queued (a veth whose peer has neither an XDP
//! program nor GRO, from Linux 6.3 on; a device that is down; a frame over
//! the MTU), or its driver drops it when the queue is flushed (the same veth
//! on Linux 5.10 to 6.2, a full TX ring). The kernel reports both through
//! tracepoints, whatever the driver:
//!
//! - `xdp:xdp_redirect_err` and `xdp:xdp_redirect_map_err`: one event per
//!   frame refused when it was queued, with the ingress (`ifindex`) and the
//!   egress (`to_ifindex`) device;
//! - `xdp:xdp_devmap_xmit`: one event per flush of a device's queue, with
//!   `from_ifindex`, `to_ifindex` and the frames the driver dropped
//!   (`drops`).
//!
//! A small tracepoint program (raw instructions: no ELF, no bpf-to-bpf
//! calls) is attached to each; it adds the frames lost to a hash map keyed
//! by egress ifindex, but only when both the ingress and the egress device
//! are keys of the map, which the daemon fills with its own ports. The
//! field offsets come from each tracepoint's `format` file in tracefs, so
//! they follow the running kernel (5.10 and later have these fields). When
//! tracefs is not mounted, it is mounted in a private mount namespace of a
//! short-lived thread, which leaves the host's mounts alone.
//!
//! Tracepoints are not per network namespace: a frame that another XDP
//! program in another namespace fails to redirect between two devices with
//! the same ifindex numbers as two of ours is counted too. The counts
//! start when the daemon starts and live as long as it runs.

use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
};

use serde::{Deserialize, Serialize};

use crate::datapath::sys::{self, insn, MapSpec, BPF_MAP_TYPE_HASH};

/// `BPF_PROG_TYPE_TRACEPOINT`.
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

const MOV64_IMM: u8 = 0xb7;
const MOV64_REG: u8 = 0xbf;
const ADD64_IMM: u8 = 0x07;
const LDX_W: u8 = 0x61;
const STX_W: u8 = 0x63;
const XADD_DW: u8 = 0xdb;
const LD_IMM64: u8 = 0x18;
const JEQ_IMM: u8 = 0x15;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const PSEUDO_MAP_FD: u8 = 1;
const FUNC_MAP_LOOKUP_ELEM: i32 = 1;

/// Where tracefs usually is.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// A tracepoint: its id and the offsets of the fields the program reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracepoint {
    pub name: &'static str,
    pub id: u64,
    pub ingress_offset: i16,
    pub egress_offset: i16,
    /// Where the number of frames lost is; `None`: each event is one frame.
    pub count_offset: Option<i16>,
}

/// (tracepoint, ingress field, egress field, count field).
const TRACEPOINTS: [(&str, &str, &str, Option<&str>); 3] = [
    ("xdp_redirect_err", "ifindex", "to_ifindex", None),
    ("xdp_redirect_map_err", "ifindex", "to_ifindex", None),
    (
        "xdp_devmap_xmit",
        "from_ifindex",
        "to_ifindex",
        Some("drops"),
    ),
];

/// The offset of a 4-byte integer field in a tracepoint `format` file:
/// `field:int to_ifindex; offset:16; size:4; signed:1;`.
pub fn field_offset(format: &str, field: &str) -> Result<i16, String> {
    for line in format.lines() {
        let line = line.trim();
        let Some(declaration) = line
            .strip_prefix("field:")
            .and_then(|rest| rest.split(';').next())
        else {
            continue;
        };
        if declaration.split_whitespace().last() != Some(field) {
            continue;
        }
        let value = |key: &str| {
            line.split(';')
                .filter_map(|part| part.trim().strip_prefix(key))
                .find_map(|v| v.trim().parse::<i64>().ok())
        };
        let (Some(offset), Some(size)) = (value("offset:"), value("size:")) else {
            return Err(format!("the field {field} has no offset or size"));
        };
        if size != 4 {
            return Err(format!("the field {field} is {size} bytes, not 4"));
        }
        // The program may not read the first 8 bytes (the kernel puts a
        // pointer there) and reads aligned words only.
        if offset < 8 || offset % 4 != 0 || offset > 4096 {
            return Err(format!("the field {field} is at offset {offset}"));
        }
        return Ok(offset as i16);
    }
    Err(format!("the format has no field {field}"))
}

/// Reads the ids and formats of the tracepoints from tracefs at `root`.
/// Linux 5.10 has all three; later kernels fold `xdp_redirect_map_err`
/// into `xdp_redirect_err`, so a missing one of those two is skipped.
fn read_tracepoints(root: &Path) -> Result<Vec<Tracepoint>, String> {
    let found: Vec<Tracepoint> = TRACEPOINTS
        .iter()
        .filter(|(name, ..)| {
            *name == "xdp_devmap_xmit" || root.join("events/xdp").join(name).is_dir()
        })
        .map(|(name, ingress, egress, count)| {
            let dir = root.join("events/xdp").join(name);
            let read = |file: &str| {
                std::fs::read_to_string(dir.join(file))
                    .map_err(|e| format!("reading {}: {e}", dir.join(file).display()))
            };
            let id = read("id")?
                .trim()
                .parse()
                .map_err(|e| format!("the id of xdp:{name}: {e}"))?;
            let format = read("format")?;
            let offset =
                |field| field_offset(&format, field).map_err(|e| format!("xdp:{name}: {e}"));
            Ok(Tracepoint {
                name,
                id,
                ingress_offset: offset(ingress)?,
                egress_offset: offset(egress)?,
                count_offset: count.map(offset).transpose()?,
            })
        })
        .collect::<Result<_, String>>()?;
    if found.len() < 2 {
        return Err(
            "this kernel has neither xdp:xdp_redirect_err nor xdp:xdp_redirect_map_err".into(),
        );
    }
    Ok(found)
}

/// The tracepoints, from a mounted tracefs or, failing that, one mounted in
/// a private mount namespace of a short-lived thread.
fn find_tracepoints() -> Result<Vec<Tracepoint>, String> {
    for root in TRACEFS {
        if Path::new(root).join("events/xdp").is_dir() {
            return read_tracepoints(Path::new(root));
        }
    }
    std::thread::Builder::new()
        .name("pf-tracefs".into())
        .spawn(|| {
            // SAFETY: unshare and mount with valid NUL-terminated strings;
            // the new mount namespace is this thread's alone and goes with it.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(format!(
                        "tracefs is not mounted, and a private mount namespace to mount it in could not be made: {}",
                        io::Error::last_os_error()
                    ));
                }
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                    || libc::mount(
                        c"tracefs".as_ptr(),
                        c"/sys/kernel/tracing".as_ptr(),
                        c"tracefs".as_ptr(),
                        0,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(format!(
                        "tracefs is not mounted and could not be mounted: {}",
                        io::Error::last_os_error()
                    ));
                }
            }
            read_tracepoints(Path::new(TRACEFS[0]))
        })
        .map_err(|e| format!("starting a thread: {e}"))?
        .join()
        .map_err(|_| "the tracefs thread panicked".to_string())?
}

/// The program for one tracepoint: look up the ingress ifindex (one of ours
/// or nothing is counted), then the egress one, and add the frames lost to
/// its counter.
pub fn program(tracepoint: &Tracepoint, map_fd: i32) -> Vec<[u8; 8]> {
    let mut p = vec![
        insn(MOV64_REG, 6, 1, 0, 0),
        // r7 = frames lost
        match tracepoint.count_offset {
            Some(offset) => insn(LDX_W, 7, 6, offset, 0),
            None => insn(MOV64_IMM, 7, 0, 0, 1),
        },
    ];
    // if r7 == 0 goto out (patched below)
    let skip_none = p.len();
    p.push(insn(JEQ_IMM, 7, 0, 0, 0));
    let mut lookups = Vec::new();
    for (offset, slot) in [
        (tracepoint.ingress_offset, -8i16),
        (tracepoint.egress_offset, -4),
    ] {
        p.extend_from_slice(&[
            insn(LDX_W, 2, 6, offset, 0),
            insn(STX_W, 10, 2, slot, 0),
            insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
            insn(0, 0, 0, 0, 0),
            insn(MOV64_REG, 2, 10, 0, 0),
            insn(ADD64_IMM, 2, 0, 0, slot as i32),
            insn(CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM),
        ]);
        lookups.push(p.len());
        p.push(insn(JEQ_IMM, 0, 0, 0, 0));
    }
    // lock *(u64 *)(r0 + 0) += r7
    p.push(insn(XADD_DW, 0, 7, 0, 0));
    let out = p.len();
    p.extend_from_slice(&[insn(MOV64_IMM, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)]);
    for at in std::iter::once(skip_none).chain(lookups) {
        let jump = (out - at - 1) as i16;
        p[at][2..4].copy_from_slice(&jump.to_le_bytes());
    }
    p
}

/// `struct perf_event_attr`, its leading members, padded (the kernel reads
/// `size` bytes and wants the ones it does not know to be zero).
#[repr(C)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    rest: [u64; 8],
}

fn perf_event_open(tracepoint_id: u64) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: tracepoint_id,
        sample_period: 1,
        sample_type: PERF_SAMPLE_RAW,
        read_format: 0,
        // disabled: enabled once the program is set.
        flags: 1,
        wakeup_events: 1,
        bp_type: 0,
        rest: [0; 8],
    };
    // SAFETY: a valid attr; pid -1 with cpu 0 is a system-wide event (a BPF
    // program on a tracepoint runs on every CPU whichever CPU the event names).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn ioctl(fd: BorrowedFd<'_>, request: libc::c_ulong, arg: libc::c_int) -> io::Result<()> {
    // SAFETY: a perf event ioctl with an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The counting, while the daemon runs: the map and the attached programs.
pub struct RedirectFailures {
    map: OwnedFd,
    /// The perf events holding the programs on their tracepoints.
    _events: Vec<OwnedFd>,
}

/// What `status` and the metrics show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Failures are being counted.
    pub counting: bool,
    /// Why they are not, when they are not.
    pub unavailable: Option<String>,
    /// Frames lost after `XDP_REDIRECT`, per egress interface, since the
    /// daemon started.
    pub per_interface: BTreeMap<String, u64>,
}

impl Report {
    pub fn total(&self) -> u64 {
        self.per_interface.values().sum()
    }
}

impl RedirectFailures {
    /// Loads the programs and attaches them to the tracepoints; the error
    /// says why failures cannot be counted here.
    pub fn start(ports: u32) -> Result<Self, String> {
        let tracepoints = find_tracepoints()?;
        let map = sys::map_create(&MapSpec {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: 4,
            value_size: 8,
            max_entries: ports.max(1),
            flags: 0,
            name: "pf_redirect_err",
        })
        .map_err(|e| format!("creating the counter map: {}", sys::describe(&e)))?;
        let mut events = Vec::new();
        for tracepoint in &tracepoints {
            let insns = program(tracepoint, map.as_raw_fd());
            let prog = sys::prog_load(BPF_PROG_TYPE_TRACEPOINT, &insns, "pf_redirect_err")
                .map_err(|e| {
                    format!(
                        "the program for xdp:{} was refused: {} {}",
                        tracepoint.name,
                        sys::describe(&e.error),
                        crate::datapath::verifier_log::log_reason(&e.log).unwrap_or_default()
                    )
                })?;
            let event = perf_event_open(tracepoint.id)
                .map_err(|e| format!("perf_event_open for xdp:{}: {e}", tracepoint.name))?;
            ioctl(event.as_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd())
                .and_then(|()| ioctl(event.as_fd(), PERF_EVENT_IOC_ENABLE, 0))
                .map_err(|e| format!("attaching to xdp:{}: {e}", tracepoint.name))?;
            // The perf event holds the program.
            events.push(event);
        }
        Ok(Self {
            map,
            _events: events,
        })
    }

    /// Counts redirects from and to `ifindex`.
    pub fn watch(&self, ifindex: u32) -> io::Result<()> {
        const BPF_NOEXIST: u64 = 1;
        match sys::map_update(
            self.map.as_fd(),
            &ifindex.to_ne_bytes(),
            &0u64.to_ne_bytes(),
            BPF_NOEXIST,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Stops counting for `ifindex` and returns what it had counted.
    pub fn unwatch(&self, ifindex: u32) -> u64 {
        let count = self.count(ifindex);
        let _ = sys::map_delete(self.map.as_fd(), &ifindex.to_ne_bytes());
        count
    }

    /// Frames lost on their way out of `ifindex`.
    pub fn count(&self, ifindex: u32) -> u64 {
        let mut value = [0u8; 8];
        match sys::map_lookup(self.map.as_fd(), &ifindex.to_ne_bytes(), &mut value) {
            Ok(true) => u64::from_ne_bytes(value),
            _ => 0,
        }
    }
}

/// The counter of each watched interface, where names come from the caller.
pub fn report(
    failures: &Result<RedirectFailures, String>,
    interfaces: &[(String, Option<u32>)],
    carried: &BTreeMap<String, u64>,
) -> Report {
    match failures {
        Err(reason) => Report {
            counting: false,
            unavailable: Some(reason.clone()),
            per_interface: BTreeMap::new(),
        },
        Ok(failures) => Report {
            counting: true,
            unavailable: None,
            per_interface: interfaces
                .iter()
                .map(|(name, index)| {
                    let now = index.map_or(0, |i| failures.count(i));
                    (name.clone(), now + carried.get(name).copied().unwrap_or(0))
                })
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVMAP_XMIT: &str = "name: xdp_devmap_xmit
ID: 1234
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:int from_ifindex;	offset:8;	size:4;	signed:1;
	field:u32 act;	offset:12;	size:4;	signed:0;
	field:int to_ifindex;	offset:16;	size:4;	signed:1;
	field:int drops;	offset:20;	size:4;	signed:1;
	field:int sent;	offset:24;	size:4;	signed:1;
	field:int err;	offset:28;	size:4;	signed:1;
";

    #[test]
    fn field_offsets_come_from_the_format_file() {
        assert_eq!(field_offset(DEVMAP_XMIT, "from_ifindex"), Ok(8));
        assert_eq!(field_offset(DEVMAP_XMIT, "to_ifindex"), Ok(16));
        assert_eq!(field_offset(DEVMAP_XMIT, "drops"), Ok(20));
        // "ifindex" is not "from_ifindex" or "to_ifindex".
        assert!(field_offset(DEVMAP_XMIT, "ifindex").is_err());
        let err = field_offset(DEVMAP_XMIT, "common_pid").unwrap_err();
        assert!(err.contains("offset 4"), "{err}");
        let err = field_offset(DEVMAP_XMIT, "common_type").unwrap_err();
        assert!(err.contains("2 bytes"), "{err}");
    }

    #[test]
    fn every_jump_of_the_program_lands_on_the_exit() {
        let tracepoint = Tracepoint {
            name: "xdp_devmap_xmit",
            id: 1,
            ingress_offset: 8,
            egress_offset: 16,
            count_offset: Some(20),
        };
        let p = program(&tracepoint, 7);
        let out = p.len() - 2;
        assert_eq!(p[out], insn(MOV64_IMM, 0, 0, 0, 0));
        let jumps: Vec<usize> = (0..p.len()).filter(|&i| p[i][0] == JEQ_IMM).collect();
        assert_eq!(jumps.len(), 3);
        for at in jumps {
            let off = i16::from_le_bytes([p[at][2], p[at][3]]);
            assert_eq!(at as i64 + 1 + off as i64, out as i64, "jump at {at}");
        }
        // The count is read from `drops`; without a count field it is 1.
        assert_eq!(p[1], insn(LDX_W, 7, 6, 20, 0));
        let per_frame = program(
            &Tracepoint {
                count_offset: None,
                ..tracepoint
            },
            7,
        );
        assert_eq!(per_frame[1], insn(MOV64_IMM, 7, 0, 0, 1));
    }

    #[test]
    fn an_unavailable_counter_says_why() {
        let report = report(&Err("tracefs is not mounted".into()), &[], &BTreeMap::new());
        assert!(!report.counting);
        assert_eq!(
            report.unavailable.as_deref(),
            Some("tracefs is not mounted")
        );
        assert_eq!(report.total(), 0);
    }
}
