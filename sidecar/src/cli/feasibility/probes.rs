//! Checks that ask the kernel directly, through small probe programs and
//! maps: what the BPF subsystem offers, whether the JIT runs, and how maps
//! can be written.

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_helper_supported, is_map_supported, BpfHelper},
};

use super::Check;
use crate::kernel_probe::{
    bpf::{self as probe, Verdict},
    Jit, Kernel,
};

pub(super) fn map_types() -> Check {
    let mut missing = Vec::new();
    let mut unknown = Vec::new();
    let types = [
        ("array", MapType::Array),
        ("per-CPU array", MapType::PerCpuArray),
        ("hash", MapType::Hash),
        ("LPM trie", MapType::LpmTrie),
        ("devmap hash", MapType::DevMapHash),
        ("program array", MapType::ProgramArray),
    ];
    for (name, map_type) in types {
        match is_map_supported(map_type) {
            Ok(true) => {}
            Ok(false) => missing.push(name),
            Err(e) => unknown.push(format!("{name} ({e})")),
        }
    }
    let names: Vec<&str> = types.iter().map(|(n, _)| *n).collect();
    Check::new(
        "bpf: map types",
        missing.is_empty() && unknown.is_empty(),
        false,
        if missing.is_empty() && unknown.is_empty() {
            format!("supported: {}", names.join(", "))
        } else {
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("not supported: {}", missing.join(", ")));
            }
            if !unknown.is_empty() {
                parts.push(format!("probe failed: {}", unknown.join(", ")));
            }
            format!(
                "{} (the datapath load below is the verdict)",
                parts.join("; ")
            )
        },
    )
    .fix("Linux 5.10 or later has every map type the datapath uses")
}

pub(super) fn helpers() -> Check {
    let mut missing = Vec::new();
    let helpers = [
        ("bpf_fib_lookup", BpfHelper::BPF_FUNC_fib_lookup),
        ("bpf_tail_call", BpfHelper::BPF_FUNC_tail_call),
        ("bpf_redirect_map", BpfHelper::BPF_FUNC_redirect_map),
        ("bpf_xdp_adjust_head", BpfHelper::BPF_FUNC_xdp_adjust_head),
        ("bpf_ktime_get_ns", BpfHelper::BPF_FUNC_ktime_get_ns),
    ];
    for (name, helper) in helpers {
        if !matches!(is_helper_supported(ProgramType::Xdp, helper), Ok(true)) {
            missing.push(name);
        }
    }
    let names: Vec<&str> = helpers.iter().map(|(n, _)| *n).collect();
    Check::new(
        "bpf: helpers",
        missing.is_empty(),
        false,
        if missing.is_empty() {
            format!("available to XDP: {}", names.join(", "))
        } else {
            format!(
                "not available to XDP: {} (the datapath load below is the verdict)",
                missing.join(", ")
            )
        },
    )
    .fix("Linux 5.10 or later has every helper the datapath calls")
}

pub(super) fn jit_checks(kernel: &Kernel, jited_bytes: Option<u32>) -> Vec<Check> {
    let jit = Jit::probe(kernel);
    let jited = jited_bytes.is_some_and(|b| b > 0);
    let compiled_in = jit
        .compiled_in
        .clone()
        .or_else(|| jited.then(|| (true, "a test program was JIT-compiled".to_string())));
    let compiled = Check::new(
        "jit: compiled in",
        matches!(compiled_in, Some((true, _))),
        false,
        match &compiled_in {
            Some((true, from)) => format!("CONFIG_BPF_JIT=y ({from})"),
            Some((false, from)) => format!("CONFIG_BPF_JIT is not set ({from})"),
            None => "cannot tell: no /boot/config file, net.core.bpf_jit_enable is unreadable from here and a test program was not JIT-compiled".to_string(),
        },
    )
    .value(match compiled_in {
        Some((true, _)) => "yes",
        Some((false, _)) => "no",
        None => "unknown",
    })
    .fix("a kernel built with CONFIG_BPF_JIT=y (the interpreter runs the datapath several times slower)");

    let mode = match jit.mode() {
        "unknown" if jited_bytes.is_some() => {
            if jited {
                "on"
            } else {
                "off"
            }
        }
        mode => mode,
    };
    let sysctl = match jit.sysctl {
        Some(v) => format!(
            "net.core.bpf_jit_enable = {v}{}",
            if v == 2 {
                " (on, with debug output)"
            } else {
                ""
            }
        ),
        None => "net.core.bpf_jit_enable is not readable from this network namespace".to_string(),
    };
    let always = match &jit.always_on {
        Some((true, from)) => format!("; CONFIG_BPF_JIT_ALWAYS_ON=y, no interpreter ({from})"),
        Some((false, from)) => format!("; the interpreter is built in ({from})"),
        None => String::new(),
    };
    let test = match jited_bytes {
        Some(0) => "; a test program runs in the interpreter".to_string(),
        Some(bytes) => format!("; a test program was JIT-compiled to {bytes} bytes"),
        None => String::new(),
    };
    let enabled = Check::new(
        "jit: enabled",
        jited || (jited_bytes.is_none() && matches!(mode, "on" | "always")),
        false,
        format!("{sysctl}{always}{test}"),
    )
    .value(mode)
    .fix("sysctl -w net.core.bpf_jit_enable=1 (in the initial network namespace); without the JIT the interpreter runs the datapath several times slower");
    vec![compiled, enabled]
}

pub(super) fn tail_call_mix() -> Check {
    const NAME: &str = "jit: tail calls mixed with bpf-to-bpf calls";
    const OURS: &str = "The datapath makes no bpf-to-bpf calls (tests/tests/elf_scan.rs checks every build), so it does not need this";
    let probes = match probe::tail_call_mix() {
        Ok(probes) => probes,
        Err(e) => {
            return Check::new(
                NAME,
                false,
                false,
                format!("the probe could not run: creating a program array: {e}"),
            )
            .value("unknown")
            .fix("run as root on a kernel with BPF program arrays")
        }
    };
    if let Verdict::Rejected { log, .. } = &probes.tail_call_alone {
        return Check::new(
            NAME,
            false,
            false,
            format!(
                "the probe could not run: a program with the tail call alone was refused too: {}",
                probes.tail_call_alone.reason()
            ),
        )
        .value("unknown")
        .fix("see the verifier log")
        .log(log);
    }
    match &probes.mixed {
        Verdict::Accepted { jited_bytes } => Check::new(
            NAME,
            true,
            false,
            format!(
                "accepted: a program with a bpf-to-bpf call and a tail call loads ({}). {OURS}.",
                if *jited_bytes > 0 {
                    format!("JIT-compiled to {jited_bytes} bytes")
                } else {
                    "interpreted".to_string()
                }
            ),
        )
        .value("accepted"),
        rejected @ Verdict::Rejected { log, .. } => Check::new(
            NAME,
            false,
            false,
            format!("rejected: {}. {OURS}, and loads here all the same.", rejected.reason()),
        )
        .value("rejected")
        .fix("nothing for pf-sidecar; other programs that mix the two need a JIT with subprogram tail calls (x86_64, arm64 from Linux 6.0) and net.core.bpf_jit_enable=1")
        .log(log),
    }
}

pub(super) fn mmapable() -> Check {
    let result = probe::mmapable_array();
    Check::new(
        "maps: mmapable arrays",
        result.is_ok(),
        true,
        match &result {
            Ok(()) => {
                "a BPF_F_MMAPABLE array maps into memory and a write through it is seen by a lookup"
                    .to_string()
            }
            Err(e) => e.clone(),
        },
    )
    .value(if result.is_ok() { "yes" } else { "no" })
    .fix("Linux 5.5 or later: the IPv4 table (DIR-24-8) is written through mmapped arrays")
}
