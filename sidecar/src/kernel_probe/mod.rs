//! What the running kernel can do for the datapath, found by asking it:
//! `uname`, the JIT's sysctl, small programs and maps loaded through the
//! raw `bpf()` syscall, and the links' XDP and veth state over rtnetlink.
//! `feasibility` reports these; `attach` and `run` use
//! [`explain_generic_refusal`].

pub mod bpf;
pub mod link;

use std::{fmt, os::fd::AsRawFd};

/// `uname`'s release and machine, and the version parsed from the release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// As `uname -r` prints it (`5.10.0-32-arm64`).
    pub release: String,
    /// As `uname -m` prints it (`x86_64`, `aarch64`).
    pub machine: String,
    pub version: KernelVersion,
}

/// Major, minor, patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl KernelVersion {
    /// Parses the leading `major.minor[.patch]` of a release string.
    pub fn parse(release: &str) -> Option<Self> {
        let mut numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|n| n.parse::<u32>().ok());
        let major = numbers.next()??;
        let minor = numbers.next()??;
        let patch = numbers.next().flatten().unwrap_or(0);
        Some(Self(major, minor, patch))
    }

    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.0, self.1) >= (major, minor)
    }
}

fn c_chars(chars: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Kernel {
    pub fn running() -> Self {
        // SAFETY: uname fills the zeroed struct.
        let mut name: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: a valid out-pointer.
        let ok = unsafe { libc::uname(&mut name) } == 0;
        let (release, machine) = if ok {
            (c_chars(&name.release), c_chars(&name.machine))
        } else {
            (String::new(), String::new())
        };
        let version = KernelVersion::parse(&release).unwrap_or_default();
        Self {
            release,
            machine,
            version,
        }
    }

    /// Linux 5.8 to 5.13 refuse generic (skb) XDP for a program that uses
    /// a devmap whose values can carry a program (`bpf_devmap_val`, 8 bytes).
    pub fn refuses_generic_with_devmap_programs(&self) -> bool {
        self.version.at_least(5, 8) && !self.version.at_least(5, 14)
    }

    /// Since 5.13 a veth receives redirected frames when its GRO is on; before,
    /// only when it has an XDP program.
    pub fn veth_gro_receives_redirects(&self) -> bool {
        self.version.at_least(5, 13)
    }
}

/// Why generic mode was refused, if this kernel has a known limit that
/// explains it, with the fix. `devmap_value_size` is `TX_PORTS`' value size
/// when known.
pub fn explain_generic_refusal(
    kernel: &Kernel,
    error: &std::io::Error,
    devmap_value_size: Option<u32>,
) -> Option<String> {
    if !kernel.refuses_generic_with_devmap_programs() || error.raw_os_error() != Some(libc::EINVAL)
    {
        return None;
    }
    let old_map = match devmap_value_size {
        Some(8) => "`pf-sidecar detach --all` and load again (TX_PORTS has 8-byte values here, from an older pf-sidecar; new ones have 4), or ",
        _ => "",
    };
    Some(format!(
        "Linux 5.8 to 5.13 ({} here) refuse generic (skb) XDP for a program that uses a devmap whose values can carry a devmap program; fix: {old_map}use native mode (general.xdp_mode = \"native\", `attach --xdp-mode native`) or Linux 5.14 or later",
        kernel.version
    ))
}

/// The JIT: its sysctl as the initial network namespace sees it, whether
/// it is built in, and whether the interpreter is built at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jit {
    /// `net.core.bpf_jit_enable` (0 off, 1 on, 2 on with debug output);
    /// `None` when it could not be read (it exists only in the initial
    /// network namespace).
    pub sysctl: Option<u32>,
    /// CONFIG_BPF_JIT, and what says so; `None` when nothing does.
    pub compiled_in: Option<(bool, String)>,
    /// CONFIG_BPF_JIT_ALWAYS_ON (no interpreter), and what says so.
    pub always_on: Option<(bool, String)>,
}

const JIT_SYSCTL: &str = "/proc/sys/net/core/bpf_jit_enable";

/// Reads `path` here or, failing that, in the initial network namespace
/// (where `net.core`'s JIT sysctls live), from a thread that enters it:
/// `/proc/sys/net` shows the reader's namespace.
fn read_in_initial_netns(path: &'static str) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Some(text);
    }
    std::thread::spawn(move || {
        let ns = std::fs::File::open("/proc/1/ns/net").ok()?;
        // SAFETY: setns on this short-lived thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        std::fs::read_to_string(path).ok()
    })
    .join()
    .ok()
    .flatten()
}

fn config_flag(config: &str, key: &str) -> bool {
    config
        .lines()
        .any(|line| line.strip_prefix(key).is_some_and(|rest| rest == "=y"))
}

impl Jit {
    pub fn probe(kernel: &Kernel) -> Self {
        let sysctl = read_in_initial_netns(JIT_SYSCTL).and_then(|s| s.trim().parse().ok());
        let config_path = format!("/boot/config-{}", kernel.release);
        if let Ok(config) = std::fs::read_to_string(&config_path) {
            return Self {
                sysctl,
                compiled_in: Some((config_flag(&config, "CONFIG_BPF_JIT"), config_path.clone())),
                always_on: Some((
                    config_flag(&config, "CONFIG_BPF_JIT_ALWAYS_ON"),
                    config_path,
                )),
            };
        }
        // No config file: the sysctl exists only with CONFIG_BPF_JIT, and
        // the interpreter's functions only without CONFIG_BPF_JIT_ALWAYS_ON.
        let always_on = std::fs::read_to_string("/proc/kallsyms").ok().map(|syms| {
            let interpreter = syms.lines().any(|line| {
                line.ends_with(" __bpf_prog_run32") || line.ends_with(" ___bpf_prog_run")
            });
            (!interpreter, "/proc/kallsyms".to_string())
        });
        Self {
            sysctl,
            compiled_in: sysctl.map(|_| (true, "net.core.bpf_jit_enable exists".to_string())),
            always_on,
        }
    }

    /// `on`, `off`, `always` (no interpreter), or `unknown`.
    pub fn mode(&self) -> &'static str {
        let always = matches!(self.always_on, Some((true, _)))
            && !matches!(self.compiled_in, Some((false, _)));
        match (self.sysctl, always) {
            (_, true) => "always",
            (Some(0), _) => "off",
            (Some(_), _) => "on",
            (None, _) => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_distribution_releases() {
        assert_eq!(
            KernelVersion::parse("5.10.0-32-arm64"),
            Some(KernelVersion(5, 10, 0))
        );
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v1045"),
            Some(KernelVersion(6, 18, 44))
        );
        assert_eq!(KernelVersion::parse("6.1"), Some(KernelVersion(6, 1, 0)));
        assert_eq!(KernelVersion::parse("garbage"), None);
    }

    fn kernel(release: &str) -> Kernel {
        Kernel {
            release: release.into(),
            machine: "aarch64".into(),
            version: KernelVersion::parse(release).unwrap(),
        }
    }

    #[test]
    fn generic_refusals_are_explained_only_where_the_kernel_has_the_limit() {
        let einval = std::io::Error::from_raw_os_error(libc::EINVAL);
        let explained = explain_generic_refusal(&kernel("5.10.0-32-arm64"), &einval, Some(4));
        assert!(explained.unwrap().contains("Linux 5.8 to 5.13"));
        let old_map = explain_generic_refusal(&kernel("5.13.19"), &einval, Some(8)).unwrap();
        assert!(old_map.contains("detach --all"), "{old_map}");
        assert_eq!(
            explain_generic_refusal(&kernel("5.14.0"), &einval, None),
            None
        );
        assert_eq!(
            explain_generic_refusal(&kernel("5.4.0"), &einval, None),
            None
        );
        let busy = std::io::Error::from_raw_os_error(libc::EBUSY);
        assert_eq!(
            explain_generic_refusal(&kernel("5.10.0"), &busy, None),
            None
        );
    }

    #[test]
    fn jit_modes_read_as_operators_say_them() {
        let known = |b: Option<bool>| b.map(|b| (b, String::new()));
        let jit = |sysctl, compiled_in, always_on| Jit {
            sysctl,
            compiled_in: known(compiled_in),
            always_on: known(always_on),
        };
        assert_eq!(jit(Some(1), Some(true), Some(true)).mode(), "always");
        assert_eq!(jit(Some(1), Some(true), Some(false)).mode(), "on");
        assert_eq!(jit(Some(2), Some(true), None).mode(), "on");
        assert_eq!(jit(Some(0), Some(true), Some(false)).mode(), "off");
        assert_eq!(jit(None, None, None).mode(), "unknown");
    }
}
