//! Whether zebra's offload feedback can work here: `feasibility` and
//! `status` find the zebra of this network namespace, its FRR version
//! (`zebra --version`) and its `--asic-offload` setting, and say when routes
//! will sit queued in zebra (and BGP under `bgp suppress-fib-pending`
//! advertise nothing): with `--asic-offload=notify_on_offload` zebra tells
//! BGP a route is installed only when an offload reply says so, and
//! - FRR 8.4 reads replies and discards them;
//! - FRR 10.3.x drops every reply (`fpm_read` takes the table as a VRF id;
//!   fixed in 10.4);
//! - no reply comes with `fpm.offload_replies = false`, or no sidecar
//!   connected.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

use serde::Serialize;

/// A zebra process as far as offload feedback goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Zebra {
    pub pid: u32,
    /// (major, minor, patch), from `zebra --version`.
    pub version: Option<(u32, u32, u32)>,
    /// Started with `--asic-offload=notify_on_offload`.
    pub notify_on_offload: bool,
    /// Its FRR pathspace (`-N`), if it has one.
    pub pathspace: Option<String>,
}

impl Zebra {
    /// `program` (a path inside zebra's filesystem) run in zebra's root
    /// directory: FRR in a chroot or a container runs its own binaries
    /// with its own libraries (its vtysh, its `zebra --version`).
    pub fn command(&self, program: &str) -> Command {
        command_in_root_of(self.pid, program)
    }
}

/// `program` run with `pid`'s root directory as its root (plainly when
/// that is ours).
pub fn command_in_root_of(pid: u32, program: &str) -> Command {
    let root = format!("/proc/{pid}/root");
    let mut command = Command::new(program);
    if std::fs::read_link(&root).is_ok_and(|r| r != Path::new("/")) {
        let root = std::ffi::CString::new(root).expect("no NUL in a /proc path");
        // SAFETY: chroot(2) and chdir(2) are async-signal-safe, and the
        // closure touches nothing but its own C string.
        unsafe {
            command.pre_exec(move || {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command
}

/// The path of `pid`'s executable inside its own root.
fn exe_inside_root(pid: &str) -> Option<PathBuf> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let root = std::fs::read_link(format!("/proc/{pid}/root")).ok()?;
    Some(match exe.strip_prefix(&root) {
        Ok(inner) if root != Path::new("/") => Path::new("/").join(inner),
        _ => exe,
    })
}

/// The value of `-N` / `--pathspace` in a command line.
fn pathspace(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-N" || arg == "--pathspace" {
            return it.next().cloned();
        }
        if let Some(value) = arg.strip_prefix("--pathspace=") {
            return Some(value.to_string());
        }
        if let Some(value) = arg.strip_prefix("-N").filter(|v| !v.is_empty()) {
            return Some(value.to_string());
        }
    }
    None
}

/// The version in `zebra --version`'s first line ("zebra version 8.4.4",
/// "zebra version 10.3.1").
pub fn parse_version(output: &str) -> Option<(u32, u32, u32)> {
    let line = output.lines().next()?;
    let word = line
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    // The leading dotted numbers only: "10.4-dev-g1234" is 10.4.
    let dotted: String = word
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut numbers = dotted
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().ok());
    let major = numbers.next()??;
    let minor = numbers.next().flatten().unwrap_or(0);
    let patch = numbers.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Whether zebra's arguments ask to be told of offloads
/// (`--asic-offload=notify_on_offload`; `--asic-offload` alone and
/// `=notify_on_ack` acknowledge on install instead).
pub fn notifies_on_offload(args: &[String]) -> bool {
    args.iter()
        .rev()
        .find(|a| a.starts_with("--asic-offload"))
        .is_some_and(|a| a == "--asic-offload=notify_on_offload")
}

fn net_namespace(pid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// The zebra processes of this network namespace.
pub fn find() -> Vec<Zebra> {
    let ours = net_namespace("self");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "zebra" || net_namespace(pid) != ours {
            continue;
        }
        let args: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // A zombie (a zebra killed and not reaped yet) has no command line.
        if args.iter().all(String::is_empty) {
            continue;
        }
        let pid_number = pid.parse().unwrap_or(0);
        let version = exe_inside_root(pid).and_then(|exe| version_of(pid_number, &exe));
        found.push(Zebra {
            pid: pid_number,
            version,
            notify_on_offload: notifies_on_offload(&args),
            pathspace: pathspace(&args),
        });
    }
    found.sort_by_key(|z| z.pid);
    found
}

fn version_of(pid: u32, exe: &Path) -> Option<(u32, u32, u32)> {
    let output = command_in_root_of(pid, exe.to_str()?)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&output.stdout))
}

/// What the sidecar side is known to do.
#[derive(Debug, Clone, Copy)]
pub struct Sidecar {
    /// `fpm.offload_replies`.
    pub offload_replies: bool,
    /// A sidecar has zebra's FPM session (`None`: not known here).
    pub connected: Option<bool>,
}

/// Why routes will sit queued in `zebra`, if they will.
pub fn warnings(zebra: &Zebra, sidecar: Sidecar) -> Vec<String> {
    if !zebra.notify_on_offload {
        return Vec::new();
    }
    let mut out = Vec::new();
    let version = zebra
        .version
        .map(|(a, b, c)| format!("{a}.{b}.{c}"))
        .unwrap_or_else(|| "of unknown version".into());
    match zebra.version {
        Some((major, ..)) if major < 9 => out.push(format!(
            "zebra (pid {}, FRR {version}) runs with --asic-offload=notify_on_offload but FRR before 9 discards offload replies: every route stays queued and BGP with suppress-fib-pending advertises nothing; drop --asic-offload",
            zebra.pid
        )),
        Some((10, 3, _)) => out.push(format!(
            "zebra (pid {}, FRR {version}) runs with --asic-offload=notify_on_offload but FRR 10.3.x drops every offload reply (fpm_read takes the table as a VRF id): every route stays queued and BGP with suppress-fib-pending advertises nothing; drop --asic-offload or move to FRR 10.4 or later",
            zebra.pid
        )),
        _ => {}
    }
    if !sidecar.offload_replies {
        out.push(format!(
            "zebra (pid {}) runs with --asic-offload=notify_on_offload but fpm.offload_replies is false: no reply comes and every route stays queued; set fpm.offload_replies = true or drop --asic-offload",
            zebra.pid
        ));
    }
    if sidecar.connected == Some(false) {
        out.push(format!(
            "zebra (pid {}) runs with --asic-offload=notify_on_offload and no sidecar has its FPM session: routes stay queued until one answers",
            zebra.pid
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pathspaces_come_from_any_spelling_of_n() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            pathspace(&args(&["zebra", "-d", "-N", "edge1"])),
            Some("edge1".into())
        );
        assert_eq!(
            pathspace(&args(&["zebra", "--pathspace=edge2"])),
            Some("edge2".into())
        );
        assert_eq!(
            pathspace(&args(&["zebra", "-Nedge3"])),
            Some("edge3".into())
        );
        assert_eq!(pathspace(&args(&["zebra", "-d"])), None);
    }

    fn zebra(version: Option<(u32, u32, u32)>, notify_on_offload: bool) -> Zebra {
        Zebra {
            pid: 42,
            version,
            notify_on_offload,
            pathspace: None,
        }
    }

    const ANSWERING: Sidecar = Sidecar {
        offload_replies: true,
        connected: Some(true),
    };

    #[test]
    fn versions_come_from_zebras_first_line() {
        assert_eq!(
            parse_version("zebra version 8.4.4\nCopyright 1996-2005"),
            Some((8, 4, 4))
        );
        assert_eq!(parse_version("zebra version 10.3.1"), Some((10, 3, 1)));
        assert_eq!(parse_version("zebra version 10.7"), Some((10, 7, 0)));
        assert_eq!(
            parse_version("zebra version 10.4-dev-g1234"),
            Some((10, 4, 0))
        );
        assert_eq!(parse_version("zebra: unknown option"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn only_notify_on_offload_waits_for_replies() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(notifies_on_offload(&args(&[
            "/usr/lib/frr/zebra",
            "-M",
            "dplane_fpm_nl",
            "--asic-offload=notify_on_offload"
        ])));
        assert!(!notifies_on_offload(&args(&["zebra", "--asic-offload"])));
        assert!(!notifies_on_offload(&args(&[
            "zebra",
            "--asic-offload=notify_on_ack"
        ])));
        assert!(!notifies_on_offload(&args(&[
            "zebra",
            "-M",
            "dplane_fpm_nl"
        ])));
        assert!(!notifies_on_offload(&args(&[
            "zebra",
            "--asic-offload=notify_on_offload",
            "--asic-offload=notify_on_ack"
        ])));
    }

    #[test]
    fn routes_sit_queued_on_8_4_and_10_3_with_replies_off_or_no_sidecar() {
        // Without notify_on_offload nothing waits for a reply.
        for version in [Some((8, 4, 4)), Some((10, 3, 1)), None] {
            let off = Sidecar {
                offload_replies: false,
                connected: Some(false),
            };
            assert!(warnings(&zebra(version, false), off).is_empty());
        }
        assert!(warnings(&zebra(Some((10, 7, 1)), true), ANSWERING).is_empty());
        assert!(warnings(&zebra(Some((10, 4, 0)), true), ANSWERING).is_empty());
        assert!(warnings(&zebra(Some((9, 1, 0)), true), ANSWERING).is_empty());

        let on_10_3 = warnings(&zebra(Some((10, 3, 1)), true), ANSWERING);
        assert_eq!(on_10_3.len(), 1);
        assert!(on_10_3[0].contains("FRR 10.3.x drops every offload reply"));
        let on_8_4 = warnings(&zebra(Some((8, 4, 4)), true), ANSWERING);
        assert_eq!(on_8_4.len(), 1);
        assert!(on_8_4[0].contains("discards offload replies"));

        let replies_off = warnings(
            &zebra(Some((10, 7, 1)), true),
            Sidecar {
                offload_replies: false,
                connected: Some(true),
            },
        );
        assert_eq!(replies_off.len(), 1);
        assert!(replies_off[0].contains("fpm.offload_replies is false"));
        let nobody = warnings(
            &zebra(Some((10, 7, 1)), true),
            Sidecar {
                offload_replies: true,
                connected: Some(false),
            },
        );
        assert_eq!(nobody.len(), 1);
        assert!(nobody[0].contains("no sidecar has its FPM session"));
        // Unknown connection (feasibility, before a run): not a warning.
        let unknown = Sidecar {
            offload_replies: true,
            connected: None,
        };
        assert!(warnings(&zebra(None, true), unknown).is_empty());
    }
}
