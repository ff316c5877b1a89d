//! `feasibility`: can this host run the datapath, and what to fix if not.
//!
//! Every check asks the kernel the way the real thing does: the datapath is
//! loaded as `run` loads it (same object, same capacities), each interface
//! gets a trial attach in each mode through a bpf_link (as `run` and
//! `attach` make them) and is detached again, and the kernel probes load
//! small programs and maps through the raw `bpf()` syscall. The check names
//! and JSON fields are stable (docs/operations.md); the kernel matrix
//! asserts on them.

use std::path::{Path, PathBuf};

use aya::programs::XdpMode;
use serde::Serialize;

use crate::attach::{link_pin, AttachMode};
use crate::{
    datapath::{tx_ports, Capacities, Datapath},
    kernel_probe::{
        self,
        bpf::{self as probe, Verdict},
        link::{self, PeerLookup},
        Kernel,
    },
};

mod probes;

use probes::{helpers, jit_checks, map_types, mmapable, tail_call_mix};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// A required check failed: the datapath cannot run as configured.
    Fail,
    /// A check that does not stop the datapath failed (slower, or not
    /// verifiable from here); the detail says what it means.
    Warn,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name, `<area>: <what>` (see docs/operations.md).
    pub name: String,
    pub status: Status,
    /// The thing checked holds (the probe was accepted, the mode attaches...).
    pub pass: bool,
    /// A failure means the datapath cannot run (exit code 1).
    pub required: bool,
    /// A short machine-readable answer (`accepted`, `rejected`, `on`, `6.1.0-57-arm64`...).
    pub value: Option<String>,
    /// What was found, for a person.
    pub detail: String,
    /// What to do about a failure or warning.
    pub fix: Option<String>,
    /// The tail of the verifier log, for a refused program.
    pub log: Option<String>,
}

impl Check {
    fn new(name: impl Into<String>, pass: bool, required: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: match (pass, required) {
                (true, _) => Status::Pass,
                (false, true) => Status::Fail,
                (false, false) => Status::Warn,
            },
            pass,
            required,
            value: None,
            detail: detail.into(),
            fix: None,
            log: None,
        }
    }

    fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Kept only when the check did not pass.
    fn fix(mut self, fix: impl Into<String>) -> Self {
        if !self.pass {
            self.fix = Some(fix.into());
        }
        self
    }

    fn log(mut self, log: &str) -> Self {
        if !log.is_empty() {
            self.log = Some(log.to_string());
        }
        self
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Interfaces to trial-attach.
    pub interfaces: Vec<String>,
    pub pin_dir: PathBuf,
    /// The capacities `run` would load with.
    pub capacities: Capacities,
    /// `general.xdp_mode`: which attach modes the datapath needs.
    pub xdp_mode: AttachMode,
    /// Where the interfaces and capacities came from, for the report.
    pub source: String,
    /// `fpm.offload_replies`.
    pub offload_replies: bool,
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// True when the datapath can run: no required check failed.
pub fn can_run(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// Runs every check.
pub fn run(options: &Options) -> Vec<Check> {
    let kernel = Kernel::running();
    let mut checks = vec![
        Check::new(
            "kernel: release",
            !kernel.release.is_empty(),
            false,
            format!("Linux {} (version {})", kernel.release, kernel.version),
        )
        .value(kernel.release.clone()),
        Check::new(
            "kernel: architecture",
            !kernel.machine.is_empty(),
            false,
            kernel.machine.clone(),
        )
        .value(kernel.machine.clone()),
    ];

    let trivial = probe::trivial_program();
    checks.push(
        Check::new(
            "bpf: XDP programs load",
            trivial.accepted(),
            true,
            match &trivial {
                Verdict::Accepted { .. } => "a program that returns XDP_PASS loads".to_string(),
                rejected => format!("refused: {}", rejected.reason()),
            },
        )
        .fix("run as root (CAP_BPF and CAP_NET_ADMIN) on a kernel built with CONFIG_BPF_SYSCALL and XDP"),
    );
    checks.push(map_types());
    checks.push(helpers());
    let jited_bytes = match trivial {
        Verdict::Accepted { jited_bytes } => Some(jited_bytes),
        Verdict::Rejected { .. } => None,
    };
    checks.extend(jit_checks(&kernel, jited_bytes));
    checks.push(tail_call_mix());
    checks.push(mmapable());

    let mut trial = Datapath::trial_load(&options.capacities);
    checks.extend(datapath_checks(options, &trial));

    let bpffs_dir = options.pin_dir.parent().unwrap_or(&options.pin_dir);
    let on_bpffs = statfs_magic(bpffs_dir) == Some(BPF_FS_MAGIC);
    checks.push(
        Check::new(
            "bpffs: mounted",
            on_bpffs,
            true,
            format!(
                "{} {} (the pin directory is {})",
                bpffs_dir.display(),
                if on_bpffs { "is bpffs" } else { "is not bpffs" },
                options.pin_dir.display()
            ),
        )
        .fix("mount -t bpf bpf /sys/fs/bpf (or add it to /etc/fstab)"),
    );
    for (name, path, fix) in [
        (
            "forwarding: IPv4",
            "/proc/sys/net/ipv4/ip_forward",
            "sysctl -w net.ipv4.ip_forward=1 (bpf_fib_lookup refuses to forward otherwise)",
        ),
        (
            "forwarding: IPv6",
            "/proc/sys/net/ipv6/conf/all/forwarding",
            "sysctl -w net.ipv6.conf.all.forwarding=1",
        ),
    ] {
        let value = read_trimmed(path);
        let key = path.trim_start_matches("/proc/sys/").replace('/', ".");
        checks.push(
            Check::new(
                name,
                value.as_deref() == Some("1"),
                true,
                format!("{key} = {}", value.as_deref().unwrap_or("unreadable")),
            )
            .value(value.unwrap_or_default())
            .fix(fix),
        );
    }

    checks.extend(frr_checks(options));

    for ifname in &options.interfaces {
        checks.extend(interface_checks(
            ifname,
            options,
            &kernel,
            trial.datapath.as_mut().ok(),
        ));
    }
    checks
}

/// One check per zebra of this namespace: will its routes sit queued for
/// want of offload replies? (Whether a sidecar will connect is not known
/// before `run`; `status` says.)
fn frr_checks(options: &Options) -> Vec<Check> {
    let sidecar = crate::frr_offload::Sidecar {
        offload_replies: options.offload_replies,
        connected: None,
    };
    crate::frr_offload::find()
        .iter()
        .map(|zebra| {
            let warnings = crate::frr_offload::warnings(zebra, sidecar);
            let version = zebra
                .version
                .map(|(a, b, c)| format!("{a}.{b}.{c}"))
                .unwrap_or_else(|| "unknown".into());
            let detail = if warnings.is_empty() {
                format!(
                    "zebra pid {}, FRR {version}, {}",
                    zebra.pid,
                    if zebra.notify_on_offload {
                        "--asic-offload=notify_on_offload with fpm.offload_replies = true"
                    } else {
                        "routes count as installed without offload replies"
                    }
                )
            } else {
                warnings.join("; ")
            };
            Check::new("frr: offload feedback", warnings.is_empty(), false, detail)
                .value(version)
                .fix("see docs/operations.md, Offload feedback: FRR 9 to 10.2 or 10.4 and later, fpm.offload_replies = true and the sidecar running, or zebra without --asic-offload")
        })
        .collect()
}

fn datapath_checks(options: &Options, trial: &crate::datapath::TrialLoad) -> Vec<Check> {
    let c = &options.capacities;
    let capacities = format!(
        "tbl8_groups {}, v6_routes {}, nexthops {}, ecmp_groups {}, ports {} ({})",
        c.tbl8_groups, c.v6_routes, c.nexthops, c.ecmp_groups, c.ports, options.source
    );
    let mut checks = vec![Check::new(
        "datapath: maps",
        trial.maps.is_ok(),
        true,
        match &trial.maps {
            Ok(()) => format!("created with the capacities run uses: {capacities}"),
            Err(e) => format!("{e} (capacities: {capacities})"),
        },
    )
    .fix("lower [capacity] in the configuration, or free memory (before Linux 5.11 maps count against RLIMIT_MEMLOCK)")];
    for (name, verdict) in &trial.programs {
        let check = match verdict {
            Ok(loaded) => Check::new(
                format!("datapath: program {name}"),
                true,
                true,
                format!(
                    "accepted{}{}",
                    loaded
                        .instructions
                        .map(|n| format!(", {n} instructions verified"))
                        .unwrap_or_default(),
                    if loaded.jited_bytes > 0 {
                        format!(", JIT-compiled to {} bytes", loaded.jited_bytes)
                    } else {
                        ", interpreted".to_string()
                    }
                ),
            )
            .value("accepted"),
            Err(refused) => Check::new(
                format!("datapath: program {name}"),
                false,
                true,
                match crate::datapath::verifier_log::log_reason(&refused.log_tail) {
                    Some(last) => format!("rejected: {last} ({})", refused.error),
                    None => format!("rejected: {}", refused.error),
                },
            )
            .value("rejected")
            .fix("the verifier log says where; report it with `uname -r`, `uname -m` and the log (this is a datapath bug, not a host setting)")
            .log(&refused.log_tail),
        };
        checks.push(check);
    }
    if trial.maps.is_ok() && trial.programs.iter().all(|(_, v)| v.is_ok()) {
        checks.push(
            Check::new(
                "datapath: assembled",
                trial.datapath.is_ok(),
                true,
                match &trial.datapath {
                    Ok(_) => {
                        "finalize is in the tail-call slot, the IPv4 tables are mapped".to_string()
                    }
                    Err(e) => e.clone(),
                },
            )
            .fix("report it with `uname -r` and this output"),
        );
    }
    checks
}

/// Which attach modes are required under `xdp_mode`, given which worked.
fn required_modes(xdp_mode: AttachMode, native_ok: bool, generic_ok: bool) -> (bool, bool) {
    match xdp_mode {
        AttachMode::Native => (true, false),
        AttachMode::Generic => (false, true),
        // One of the two is enough; when neither works both are failures.
        AttachMode::Auto => (!generic_ok, !native_ok),
    }
}

fn interface_checks(
    ifname: &str,
    options: &Options,
    kernel: &Kernel,
    datapath: Option<&mut Datapath>,
) -> Vec<Check> {
    let native_name = format!("interface {ifname}: native attach");
    let generic_name = format!("interface {ifname}: generic attach");
    let link = match link::link_by_name(ifname) {
        Ok(Some(link)) => link,
        Ok(None) => {
            let detail = format!("no interface named {ifname} in this network namespace");
            let fix = "check the name (ip link show), or run in the router's namespace (--netns)";
            return vec![
                Check::new(native_name, false, true, detail.clone())
                    .value("refused")
                    .fix(fix),
                Check::new(generic_name, false, true, detail)
                    .value("refused")
                    .fix(fix),
            ];
        }
        Err(e) => {
            let detail = format!("rtnetlink: {e}");
            return vec![
                Check::new(native_name, false, true, detail.clone()).fix("run as root"),
                Check::new(generic_name, false, true, detail).fix("run as root"),
            ];
        }
    };

    let mut checks = Vec::new();
    let pin = link_pin(&options.pin_dir, ifname);
    if pin.exists() {
        let mode = if link.xdp.native.is_some() {
            "native"
        } else if link.xdp.generic.is_some() {
            "generic"
        } else {
            "unknown mode"
        };
        checks.push(
            Check::new(
                native_name,
                true,
                false,
                format!(
                    "pf-sidecar's fast_path is attached ({mode}, link pinned at {})",
                    pin.display()
                ),
            )
            .value("attached"),
        );
        checks.push(
            Check::new(
                generic_name,
                true,
                false,
                "not tried while pf-sidecar's fast_path is attached",
            )
            .value("not tried"),
        );
    } else {
        checks.extend(trial_attach(
            ifname,
            &native_name,
            &generic_name,
            options,
            kernel,
            &link,
            datapath,
        ));
    }
    if link.is_veth() {
        checks.push(veth_peer_check(ifname, kernel, &link));
    }
    checks
}

fn trial_attach(
    ifname: &str,
    native_name: &str,
    generic_name: &str,
    options: &Options,
    kernel: &Kernel,
    link: &link::Link,
    datapath: Option<&mut Datapath>,
) -> Vec<Check> {
    let Some(datapath) = datapath else {
        let detail = "not tried: the datapath did not load (see above)";
        let fix = "fix the datapath load first";
        return vec![
            Check::new(native_name, false, true, detail).fix(fix),
            Check::new(generic_name, false, true, detail).fix(fix),
        ];
    };
    let devmap_value_size = datapath.maps.tx_ports.value_size();
    let program = match datapath.fast_path() {
        Ok(p) => p,
        Err(e) => {
            let detail = format!("not tried: {e:#}");
            return vec![
                Check::new(native_name, false, true, detail.clone()),
                Check::new(generic_name, false, true, detail),
            ];
        }
    };
    let mut results = Vec::new();
    for mode in [XdpMode::Driver, XdpMode::Skb] {
        // Attached through a bpf_link, as run does; dropping it detaches.
        let result = crate::attach::try_attach(program, ifname, mode)
            .map(drop)
            .map_err(|e| (e.message, e.errno));
        results.push(result);
    }
    let (native, generic) = (&results[0], &results[1]);
    let (native_required, generic_required) =
        required_modes(options.xdp_mode, native.is_ok(), generic.is_ok());
    let other_program = link.xdp.any().then(|| {
        format!(
            "another XDP program is attached to {ifname} (ids: native {:?}, generic {:?}); detach it (ip link set dev {ifname} xdp off) or use another interface",
            link.xdp.native, link.xdp.generic
        )
    });
    let falls_back_to_generic = generic.is_ok() && options.xdp_mode == AttachMode::Auto;
    let native_fix = other_program
        .clone()
        .or_else(|| bond_native_fix(ifname, kernel));
    vec![
        native_attach_check(
            native_name,
            native,
            native_required,
            falls_back_to_generic,
            native_fix.as_deref(),
        ),
        generic_attach_check(
            generic_name,
            generic,
            generic_required,
            kernel,
            devmap_value_size,
            other_program.as_deref(),
        ),
    ]
}

/// The fix for a bond that refuses native XDP: the bonding driver takes it
/// from Linux 5.15 (bond_xdp_set), in some modes, with members whose
/// drivers have XDP. `None` when `ifname` is not a bond.
fn bond_native_fix(ifname: &str, kernel: &Kernel) -> Option<String> {
    if !Path::new("/sys/class/net")
        .join(ifname)
        .join("bonding")
        .exists()
    {
        return None;
    }
    Some(if kernel.version.at_least(5, 15) {
        format!("{ifname} is a bond: native XDP on a bond needs mode balance-rr, active-backup, balance-xor or 802.3ad (not xmit_hash_policy vlan+srcmac) and members whose drivers have native XDP and no program of their own (cat /proc/net/bonding/{ifname}); otherwise use generic mode (general.xdp_mode = \"generic\")")
    } else {
        format!("{ifname} is a bond: the bonding driver takes native XDP from Linux 5.15 (this kernel is {}); use generic mode (general.xdp_mode = \"generic\"), or a newer kernel", kernel.version)
    })
}

/// A trial attach's outcome: the error and the kernel's errno when refused.
type AttachResult = Result<(), (String, Option<i32>)>;

/// The native (driver) mode trial; `other_program`, when another XDP
/// program owns the interface, is the fix whatever the error.
fn native_attach_check(
    name: &str,
    result: &AttachResult,
    required: bool,
    falls_back_to_generic: bool,
    other_program: Option<&str>,
) -> Check {
    match result {
        Ok(()) => Check::new(
            name,
            true,
            required,
            "fast_path attaches in native (driver) mode",
        )
        .value("accepted"),
        Err((error, errno)) => {
            let fix = other_program.map(str::to_string).unwrap_or_else(|| match errno {
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => {
                    "the driver has no native XDP: use generic mode (general.xdp_mode = \"generic\"), or a NIC and driver with XDP support".to_string()
                }
                _ => "check that the interface is up and that no other XDP program owns it (ip -d link show)".to_string(),
            });
            let note = if falls_back_to_generic {
                "; run falls back to generic mode"
            } else {
                ""
            };
            Check::new(name, false, required, format!("refused: {error}{note}"))
                .value("refused")
                .fix(fix)
        }
    }
}

/// The generic (skb) mode trial; a refusal this kernel is known for (a
/// devmap whose values can carry a program, Linux 5.8 to 5.13) gets its fix.
fn generic_attach_check(
    name: &str,
    result: &AttachResult,
    required: bool,
    kernel: &Kernel,
    devmap_value_size: u32,
    other_program: Option<&str>,
) -> Check {
    match result {
        Ok(()) => Check::new(
            name,
            true,
            required,
            "fast_path attaches in generic (skb) mode",
        )
        .value("accepted"),
        Err((error, errno)) => {
            let explained = errno.map(std::io::Error::from_raw_os_error).and_then(|e| {
                kernel_probe::explain_generic_refusal(kernel, &e, Some(devmap_value_size))
            });
            let fix = other_program.map(str::to_string).unwrap_or_else(|| {
                explained.clone().unwrap_or_else(|| {
                    "check that the interface is up and that no other XDP program owns it (ip -d link show)".to_string()
                })
            });
            let devmap = if devmap_value_size == tx_ports::VALUE_SIZE {
                String::new()
            } else {
                format!(" (TX_PORTS has {devmap_value_size}-byte values)")
            };
            Check::new(name, false, required, format!("refused: {error}{devmap}"))
                .value("refused")
                .fix(fix)
        }
    }
}

fn veth_peer_check(ifname: &str, kernel: &Kernel, link: &link::Link) -> Check {
    let name = format!("interface {ifname}: veth peer receives redirected frames");
    let fix_for = |peer: &str, netns: Option<&str>| {
        let exec = netns
            .and_then(|n| n.strip_prefix("netns "))
            .map(|n| format!("ip netns exec {n} "))
            .unwrap_or_default();
        let consequence = format!(
            "without it, every frame fast_path redirects out of {ifname} is dropped silently"
        );
        if kernel.veth_gro_receives_redirects() {
            format!("enable GRO on the peer ({exec}ethtool -K {peer} gro on) or attach an XDP program to {peer} in native mode (one that returns XDP_PASS is enough); {consequence}")
        } else {
            format!("attach an XDP program to {peer} in native mode (one that returns XDP_PASS is enough; GRO does not count before Linux 5.13); {consequence}")
        }
    };
    match link::veth_peer(link) {
        Ok(PeerLookup::Found(peer)) => {
            let peer_name = peer.link.name.clone();
            let place = peer
                .namespace
                .as_deref()
                .map(|n| format!(" (in {n})"))
                .unwrap_or_default();
            let link::Reception {
                receives,
                value,
                why,
            } = peer.reception(kernel);
            let fix = if peer.link.up {
                fix_for(&peer_name, peer.namespace.as_deref())
            } else {
                format!("ip link set {peer_name} up")
            };
            Check::new(name, receives, true, format!("peer {peer_name}{place} {why}"))
                .value(value)
                .fix(fix)
        }
        Ok(PeerLookup::Unreachable { nsid, ifindex }) => Check::new(
            name,
            false,
            false,
            format!("cannot be verified from here: the peer (ifindex {ifindex}) is in another network namespace (nsid {nsid}) that has no name under /run/netns and no process this one can see"),
        )
        .value("unknown")
        .fix(fix_for("the peer", None)),
        Ok(PeerLookup::None) => Check::new(
            name,
            false,
            false,
            "cannot be verified: the veth reports no peer",
        )
        .value("unknown")
        .fix(fix_for("the peer", None)),
        Err(e) => Check::new(
            name,
            false,
            false,
            format!("cannot be verified: looking up the peer: {e}"),
        )
        .value("unknown")
        .fix(fix_for("the peer", None)),
    }
}

fn statfs_magic(path: &Path) -> Option<i64> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    Some(stats.f_type as i64)
}

pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let status = match c.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Warn => "WARN",
        };
        out.push_str(&format!("{status}  {:<width$}  {}\n", c.name, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("      {:<width$}  fix: {fix}\n", ""));
        }
        if let Some(log) = &c.log {
            for line in log.lines() {
                out.push_str(&format!("      {:<width$}  | {line}\n", ""));
            }
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    out.push_str(&format!(
        "{} checks, {failed} failed, {warned} warnings: {}\n",
        checks.len(),
        if failed == 0 {
            "the datapath can run here"
        } else {
            "the datapath cannot run here as configured"
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_mode_needs_one_working_mode_and_the_others_need_theirs() {
        assert_eq!(required_modes(AttachMode::Auto, true, true), (false, false));
        // The one mode that works is needed; the other only warns.
        assert_eq!(required_modes(AttachMode::Auto, true, false), (true, false));
        assert_eq!(required_modes(AttachMode::Auto, false, true), (false, true));
        assert_eq!(required_modes(AttachMode::Auto, false, false), (true, true));
        assert_eq!(
            required_modes(AttachMode::Native, true, false),
            (true, false)
        );
        assert_eq!(
            required_modes(AttachMode::Generic, true, false),
            (false, true)
        );
    }

    #[test]
    fn statuses_follow_pass_and_required() {
        assert_eq!(Check::new("a", true, true, "").status, Status::Pass);
        assert_eq!(Check::new("a", false, true, "").status, Status::Fail);
        assert_eq!(Check::new("a", false, false, "").status, Status::Warn);
        assert_eq!(Check::new("a", true, false, "").fix("x").fix, None);
        let failed = [Check::new("a", false, true, "")];
        assert!(!can_run(&failed));
        assert!(can_run(&[Check::new("a", false, false, "")]));
    }
}
