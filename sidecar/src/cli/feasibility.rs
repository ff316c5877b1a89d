//! `feasibility`: can this host run the datapath, and what to fix if not.

use std::path::Path;

use aya::{
    maps::MapType,
    programs::{ProgramType, XdpMode},
    sys::{is_helper_supported, is_map_supported, is_program_supported, BpfHelper},
};
use serde::Serialize;

use crate::datapath::{Capacities, Datapath};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

fn check(name: impl Into<String>, pass: bool, detail: impl Into<String>, fix: &str) -> Check {
    Check {
        name: name.into(),
        pass,
        detail: detail.into(),
        fix: (!pass).then(|| fix.to_string()),
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Runs every check. Interfaces get a trial load and attach (native, then
/// generic), detached again at once.
pub fn run(interfaces: &[String], pin_dir: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    let xdp = is_program_supported(ProgramType::Xdp);
    checks.push(check(
        "bpf syscall and XDP programs",
        matches!(xdp, Ok(true)),
        format!("{xdp:?}"),
        "run as root (CAP_BPF, CAP_NET_ADMIN) on a kernel with CONFIG_BPF_SYSCALL and XDP",
    ));
    for (name, map_type) in [
        ("map type array", MapType::Array),
        ("map type per-CPU array", MapType::PerCpuArray),
        ("map type hash", MapType::Hash),
        ("map type LPM trie", MapType::LpmTrie),
        ("map type devmap hash", MapType::DevMapHash),
        ("map type program array", MapType::ProgramArray),
    ] {
        let supported = is_map_supported(map_type);
        checks.push(check(
            name,
            matches!(supported, Ok(true)),
            format!("{supported:?}"),
            "use kernel 5.15 or later",
        ));
    }
    for (name, helper) in [
        ("helper bpf_fib_lookup", BpfHelper::BPF_FUNC_fib_lookup),
        ("helper bpf_tail_call", BpfHelper::BPF_FUNC_tail_call),
        ("helper bpf_redirect_map", BpfHelper::BPF_FUNC_redirect_map),
        (
            "helper bpf_xdp_adjust_head",
            BpfHelper::BPF_FUNC_xdp_adjust_head,
        ),
        ("helper bpf_ktime_get_ns", BpfHelper::BPF_FUNC_ktime_get_ns),
    ] {
        let supported = is_helper_supported(ProgramType::Xdp, helper);
        checks.push(check(
            name,
            matches!(supported, Ok(true)),
            format!("{supported:?}"),
            "use kernel 5.15 or later",
        ));
    }
    let small = Capacities {
        tbl8_groups: 1,
        v6_routes: 1,
        nexthops: 1,
        ecmp_groups: 1,
        ports: 1,
    };
    let mut loaded = Datapath::load(&small);
    checks.push(check(
        "fast_path and finalize pass the verifier",
        loaded.is_ok(),
        loaded
            .as_ref()
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_else(|| "loaded, tail-call slot filled".into()),
        "read the verifier log above; report it with `uname -r`",
    ));
    // The sysctl is visible only in the initial namespace; the program's
    // own info says whether the kernel JIT-compiled it.
    let jitted = loaded
        .as_mut()
        .ok()
        .and_then(|d| d.fast_path().ok()?.info().ok())
        .map(|info| info.size_jitted());
    checks.push(check(
        "BPF JIT",
        jitted.is_some_and(|size| size > 0),
        match jitted {
            Some(size) if size > 0 => format!("fast_path JIT-compiled to {size} bytes"),
            Some(_) => "fast_path runs in the interpreter".to_string(),
            None => "not loaded".to_string(),
        },
        "sysctl -w net.core.bpf_jit_enable=1 (in the initial namespace)",
    ));
    drop(loaded);

    let bpffs_dir = pin_dir.parent().unwrap_or(pin_dir);
    let on_bpffs = statfs_magic(bpffs_dir) == Some(BPF_FS_MAGIC);
    checks.push(check(
        "bpffs mounted",
        on_bpffs,
        format!(
            "{} {}",
            bpffs_dir.display(),
            if on_bpffs { "is bpffs" } else { "is not bpffs" }
        ),
        "mount -t bpf bpf /sys/fs/bpf (or add it to /etc/fstab)",
    ));
    let v4 = read_trimmed("/proc/sys/net/ipv4/ip_forward");
    checks.push(check(
        "IPv4 forwarding",
        v4.as_deref() == Some("1"),
        format!(
            "net.ipv4.ip_forward = {}",
            v4.as_deref().unwrap_or("unreadable")
        ),
        "sysctl -w net.ipv4.ip_forward=1 (bpf_fib_lookup refuses to forward otherwise)",
    ));
    let v6 = read_trimmed("/proc/sys/net/ipv6/conf/all/forwarding");
    checks.push(check(
        "IPv6 forwarding",
        v6.as_deref() == Some("1"),
        format!(
            "net.ipv6.conf.all.forwarding = {}",
            v6.as_deref().unwrap_or("unreadable")
        ),
        "sysctl -w net.ipv6.conf.all.forwarding=1",
    ));
    for ifname in interfaces {
        checks.push(trial_attach(ifname, pin_dir));
    }
    checks
}

fn trial_attach(ifname: &str, pin_dir: &Path) -> Check {
    let name = format!("attach to {ifname}");
    if super::link_pin(pin_dir, ifname).exists() {
        return check(name, true, "already attached (pinned link)", "");
    }
    let small = Capacities {
        tbl8_groups: 1,
        v6_routes: 1,
        nexthops: 1,
        ecmp_groups: 1,
        ports: 1,
    };
    let mut datapath = match Datapath::load(&small) {
        Ok(d) => d,
        Err(e) => {
            return check(
                name,
                false,
                format!("{e:#}"),
                "fix the verifier failure first",
            )
        }
    };
    let program = match datapath.fast_path() {
        Ok(p) => p,
        Err(e) => {
            return check(
                name,
                false,
                format!("{e:#}"),
                "fix the verifier failure first",
            )
        }
    };
    let mut errors = Vec::new();
    for (mode, label) in [(XdpMode::Driver, "native"), (XdpMode::Skb, "generic")] {
        match program.attach(ifname, mode) {
            Ok(link) => {
                let _ = program.detach(link);
                let detail = if label == "native" {
                    "native XDP works".to_string()
                } else {
                    format!("generic only (native: {})", errors.join("; "))
                };
                return check(name, true, detail, "");
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    check(
        name,
        false,
        errors.join("; "),
        "check that the interface exists and is up, and that no other XDP program owns it (ip -d link show)",
    )
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
        out.push_str(&format!(
            "{}  {:<width$}  {}\n",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("      {:<width$}  fix: {fix}\n", ""));
        }
    }
    let failed = checks.iter().filter(|c| !c.pass).count();
    out.push_str(&format!("{} checks, {failed} failed\n", checks.len()));
    out
}
