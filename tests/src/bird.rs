//! BIRD 2 inside a test namespace: its own config, control socket and pid
//! file in a temporary directory, killed and removed on drop.

use std::{path::PathBuf, process::Command};

/// BIRD 2 in a namespace, killed on drop.
pub struct Bird {
    pub dir: PathBuf,
    netns: String,
}

impl Bird {
    pub fn start(ns: &crate::netns::NetNs, config: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pf-bird-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bird.conf"), config).unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name, "bird", "-c"])
            .arg(dir.join("bird.conf"))
            .arg("-s")
            .arg(dir.join("bird.ctl"))
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .output()
            .expect("start bird");
        assert!(
            out.status.success(),
            "bird: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir,
            netns: ns.name.clone(),
        }
    }

    /// Runs a birdc command (e.g. `disable static4`).
    pub fn birdc(&self, command: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "birdc", "-s"])
            .arg(self.dir.join("bird.ctl"))
            .args(command.split_whitespace())
            .output()
            .expect("run birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("bird.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
