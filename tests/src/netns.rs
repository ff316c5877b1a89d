//! Network namespaces that belong to one test and vanish with it.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A namespace named `pf-<tag>-<pid>-<n>`, deleted on drop (also when the
/// test panics).
pub struct NetNs {
    pub name: String,
    /// Deleted on drop; false for a namespace someone else manages.
    owned: bool,
}

impl NetNs {
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "pf-{tag}-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        run_ok("ip", &["netns", "add", &name]);
        let ns = Self { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A handle on an existing namespace (for example one of `scripts/lab`'s),
    /// left in place on drop.
    pub fn existing(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            owned: false,
        }
    }

    /// Runs `ip <args>` inside the namespace and panics with its stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// Runs a program inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        Command::new("ip")
            .args(&full)
            .output()
            .expect("spawn ip netns exec")
    }

    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ifindex(&self, ifname: &str) -> u32 {
        let out = self.exec_ok("cat", &[&format!("/sys/class/net/{ifname}/ifindex")]);
        out.trim().parse().expect("ifindex")
    }

    pub fn mac(&self, ifname: &str) -> [u8; 6] {
        let out = self.exec_ok("cat", &[&format!("/sys/class/net/{ifname}/address")]);
        let bytes: Vec<u8> = out
            .trim()
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).expect("mac"))
            .collect();
        bytes.try_into().expect("6-byte mac")
    }

    /// Runs `f` on a fresh thread that has entered this namespace, so
    /// syscalls in `f` (test runs with an ingress ifindex, `bpf_fib_lookup`)
    /// see this namespace's devices and routes.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = File::open(&path).expect("open netns");
                    // SAFETY: setns on this thread only; the thread ends with the scope.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("netns thread panicked")
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair with one end in each namespace, both up.
pub fn veth_pair(a: &NetNs, a_name: &str, b: &NetNs, b_name: &str) {
    run_ok(
        "ip",
        &[
            "link", "add", a_name, "netns", &a.name, "type", "veth", "peer", "name", b_name,
            "netns", &b.name,
        ],
    );
    a.ip(&["link", "set", a_name, "up"]);
    b.ip(&["link", "set", b_name, "up"]);
}

pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
