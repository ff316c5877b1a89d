//! The kernel matrix: Debian's stock kernels (5.10, 6.1, 6.12 and the newest,
//! amd64 and arm64) booted under qemu, each running the static `pf-sidecar`
//! for its arch: feasibility, load and native attach through `run`, a generic
//! attach, the datapath test cases, real frames forwarded between two
//! namespaces (untagged, over an 802.1Q VLAN, over 802.1ad QinQ, between
//! two VLANs of one port, over a VLAN with a smaller MTU), and a control
//! program the arm64 5.10 JIT must reject.
//!
//! Needs `scripts/kernel-matrix/build.sh` to have run (`make test` runs it)
//! and downloads the kernels once into /var/cache/pf-sidecar.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use integration_tests::{
    kernel_matrix::{guests, judge, series, Console, Row},
    require_root,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

struct Guest {
    suite: String,
    arch: String,
    console: Console,
    rows: Vec<Row>,
}

fn boot(suite: &str, arch: &str) -> Console {
    let root = repo();
    let log = root.join(format!("target/kernel-matrix/{suite}-{arch}.log"));
    let status = Command::new("bash")
        .arg(root.join("scripts/kernel-matrix/boot.sh"))
        .arg(format!("{suite}/{arch}"))
        .arg(&log)
        .status()
        .expect("run boot.sh");
    assert!(status.success(), "boot.sh {suite}/{arch} failed: {status}");
    let bytes = std::fs::read(&log).expect("read the guest console");
    Console::parse(&String::from_utf8_lossy(&bytes))
}

/// The "Supported kernels" table of docs/datapath.md, from the matrix.
fn supported_kernels(guests: &[Guest]) -> String {
    let mut table = String::from(
        "| Debian | kernel | arch | verifier | native | generic | datapath cases | forwarding | 802.1Q both ways | 802.1ad (QinQ) | tag rewrite | VLAN MTU | VRF | bond | tail call + bpf-to-bpf mix |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let yes = |pass: bool| if pass { "yes" } else { "no" };
    for g in guests {
        let row = |what: &str| g.rows.iter().find(|r| r.what.starts_with(what));
        let pass = |what: &str| row(what).is_some_and(|r| r.pass);
        let forwarding =
            pass("forward IPv4") && pass("forward IPv6") && pass("forwarded by the fast path");
        let all = |prefix: &str| {
            g.rows
                .iter()
                .filter(|r| r.what.starts_with(prefix))
                .all(|r| r.pass)
        };
        let qinq = if all("802.1ad") {
            "in: fast path, out: kernel"
        } else {
            "no"
        };
        let mix = g
            .console
            .feasibility(integration_tests::kernel_matrix::MIX_PROBE)
            .map(|(_, value, _)| value)
            .unwrap_or_else(|| "?".to_owned());
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            g.suite,
            // sid moves on: its row names the role, the log the release.
            if g.suite == "sid" {
                "newest".to_owned()
            } else {
                series(&g.console.release())
            },
            g.arch,
            yes(pass("verifier")),
            yes(pass("run:")),
            yes(pass("attach generic")),
            yes(pass("datapath cases")),
            yes(forwarding),
            yes(all("802.1Q")),
            qinq,
            yes(all("tag rewrite")),
            if all("VLAN MTU") {
                "to the kernel"
            } else {
                "no"
            },
            if all("VRF") {
                "fib in the port's VRF; VLAN in another: kernel"
            } else {
                "no"
            },
            if row("bond: before 5.15").is_some() {
                if all("bond") {
                    "no native XDP (said by feasibility)"
                } else {
                    "no"
                }
            } else if all("bond") {
                "yes, with failover"
            } else {
                "no"
            },
            mix
        ));
    }
    table
}

const DOCS_BEGIN: &str = "<!-- kernel-matrix:begin -->\n";
const DOCS_END: &str = "<!-- kernel-matrix:end -->";

#[test]
fn the_datapath_loads_attaches_and_forwards_on_every_kernel_of_the_matrix() {
    require_root!();
    let root = repo();
    let bin = root.join("target/kernel-matrix/bin");
    for arch in ["amd64", "arm64"] {
        for name in ["pf-sidecar", "datapath-cases"] {
            let path = bin.join(format!("{name}-{arch}"));
            assert!(
                path.exists(),
                "{} is missing: run scripts/kernel-matrix/build.sh (make test does)",
                path.display()
            );
        }
    }
    let guests_sh = std::fs::read_to_string(root.join("scripts/kernel-matrix/guests.sh"))
        .expect("read guests.sh");
    let list = guests(&guests_sh);
    assert!(list.len() >= 6, "guests.sh lists {list:?}");
    let fetched = Command::new("bash")
        .arg(root.join("scripts/kernel-matrix/fetch.sh"))
        .status()
        .expect("run fetch.sh");
    assert!(fetched.success(), "fetching the kernels failed");

    // Three guests at a time on two cores: a guest spends much of its run
    // waiting on paced pings, which a third uses (274 s against 305 s with
    // two, same tree and machine).
    let jobs: usize = std::env::var("PF_MATRIX_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(3);
    let queue = Mutex::new(list.clone());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap().pop();
                let Some((suite, arch)) = next else { break };
                let console = boot(&suite, &arch);
                let control_must_fail = suite == "bullseye" && arch == "arm64";
                let rows = judge(&console, control_must_fail);
                done.lock().unwrap().push(Guest {
                    suite,
                    arch,
                    console,
                    rows,
                });
            });
        }
    });
    let mut guests = done.into_inner().unwrap();
    guests.sort_by_key(|g| {
        list.iter()
            .position(|(s, a)| *s == g.suite && *a == g.arch)
            .unwrap_or(usize::MAX)
    });

    let mut report =
        String::from("\nkernel matrix\n| kernel | arch | what | verdict |\n|---|---|---|---|\n");
    let mut failures = Vec::new();
    for g in &guests {
        for row in &g.rows {
            let first_line = row.verdict.lines().next().unwrap_or("");
            report += &format!(
                "| {} ({}) | {} | {} | {}{} |\n",
                g.console.release(),
                g.suite,
                g.arch,
                row.what,
                if row.pass { "" } else { "FAIL: " },
                first_line
            );
            if !row.pass {
                failures.push(format!(
                    "{} {} / {}: {}\n{}",
                    g.suite,
                    g.arch,
                    row.what,
                    first_line,
                    row.verdict.lines().skip(1).collect::<Vec<_>>().join("\n")
                ));
            }
        }
    }

    if !failures.is_empty() {
        report += &format!("\n{}\n", failures.join("\n\n"));
    }
    // `make test` prints this file after the run (cargo keeps a passing
    // test's output to itself).
    print!("{report}");
    std::fs::write(root.join("target/kernel-matrix/matrix.txt"), &report)
        .expect("write the matrix report");

    let table = supported_kernels(&guests);
    std::fs::write(
        root.join("target/kernel-matrix/supported-kernels.md"),
        &table,
    )
    .expect("write the table");
    let docs = std::fs::read_to_string(root.join("docs/datapath.md")).expect("read docs");
    let documented = docs
        .split_once(DOCS_BEGIN)
        .and_then(|(_, rest)| rest.split_once(DOCS_END))
        .map(|(table, _)| table.to_owned())
        .unwrap_or_default();
    if documented != table {
        failures.push(format!(
            "docs/datapath.md's \"Supported kernels\" table differs from the matrix; \
             the matrix says (also in target/kernel-matrix/supported-kernels.md):\n{table}"
        ));
    }
    assert!(
        failures.is_empty(),
        "kernel matrix failures (consoles in target/kernel-matrix/):\n\n{}",
        failures.join("\n\n")
    );
}
