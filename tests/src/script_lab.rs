//! The lab of `scripts/lab` (the one `make demo` runs), started and torn
//! down by a guard, so end-to-end tests drive the same topology.

use std::{collections::HashMap, path::PathBuf, process::Command};

use crate::netns::NetNs;

pub struct ScriptLab {
    pub name: String,
    pub env: HashMap<String, String>,
    pub client: NetNs,
    pub router: NetNs,
    pub up1: NetNs,
    pub up2: NetNs,
    pub server: NetNs,
    pub sidecar: PathBuf,
    script: PathBuf,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab")
}

impl ScriptLab {
    /// `scripts/lab up <name>` with `sidecar` as the pf-sidecar binary; it
    /// returns once BGP has converged and `diff` is clean.
    pub fn up(tag: &str, sidecar: &str) -> Self {
        let name = format!("{tag}{}", std::process::id() % 100_000);
        let script = script();
        let out = Command::new(&script)
            .args(["up", &name])
            .env("PF_SIDECAR_BIN", sidecar)
            .output()
            .expect("run scripts/lab");
        if !out.status.success() {
            let _ = Command::new(&script).args(["down", &name]).output();
            panic!(
                "scripts/lab up {name} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let listing = Command::new(&script)
            .args(["env", &name])
            .output()
            .expect("scripts/lab env");
        let env: HashMap<String, String> = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let ns = |key: &str| NetNs::existing(&env[key]);
        Self {
            client: ns("LAB_CLIENT"),
            router: ns("LAB_ROUTER"),
            up1: ns("LAB_UP1"),
            up2: ns("LAB_UP2"),
            server: ns("LAB_SERVER"),
            name,
            env,
            sidecar: PathBuf::from(sidecar),
            script,
        }
    }

    pub fn var(&self, key: &str) -> &str {
        &self.env[key]
    }

    /// Runs `pf-sidecar <args>` against the lab's router.
    pub fn sidecar(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.sidecar)
            .args([
                "--netns",
                &self.router.name,
                "--pin-dir",
                self.var("LAB_PIN_DIR"),
            ])
            .args(args)
            .output()
            .expect("run pf-sidecar")
    }

    /// vtysh on the router's FRR (or up2's with `up2`).
    pub fn vtysh(&self, up2: bool, commands: &[&str]) -> String {
        let (ns, pathspace) = if up2 {
            (&self.up2, self.var("LAB_UP2_FRR"))
        } else {
            (&self.router, self.var("LAB_ROUTER_FRR"))
        };
        crate::frr::vtysh(
            &crate::frr::Install::from_env(),
            &ns.name,
            &std::path::Path::new("/var/run/frr").join(pathspace),
            commands,
        )
    }

    /// Waits (up to 20 s each) until `diff` is clean against the daemon's
    /// FPM view, FRR's RIB and the kernel FIB; the first that is not, with
    /// its output.
    pub fn diff_clean(&self) -> Result<(), String> {
        for against in ["fpm", "frr", "kernel"] {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let out = self.sidecar(&[
                    "diff",
                    "--config",
                    self.var("LAB_SIDECAR_CONFIG"),
                    "--against",
                    against,
                    "--frr-pathspace",
                    self.var("LAB_ROUTER_FRR"),
                ]);
                if out.status.code() == Some(0) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(format!(
                        "diff --against {against} exits {:?}:\n{}{}",
                        out.status.code(),
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
        Ok(())
    }

    /// Panics with the daemon's log unless [`ScriptLab::diff_clean`].
    pub fn assert_diff_clean(&self, step: &str) {
        if let Err(problem) = self.diff_clean() {
            panic!("{step}: {problem}\n{}", self.sidecar_log());
        }
    }

    pub fn sidecar_log(&self) -> String {
        std::fs::read_to_string(self.var("LAB_SIDECAR_LOG")).unwrap_or_default()
    }
}

impl Drop for ScriptLab {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .args(["down", &self.name])
            .output();
    }
}
