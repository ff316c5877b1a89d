//! Faults on the lab of `scripts/lab` with traffic flowing: the sidecar
//! killed during churn and during its own start-up, hung until the
//! fail-safe engages, and a neighbour flapping 1000 times a second.

use std::{
    io::Write,
    net::{IpAddr, SocketAddr, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use etherparse::{SlicedPacket, TransportSlice};
use integration_tests::{capture::Capture, require_root, script_lab::ScriptLab};

fn lab(tag: &str) -> ScriptLab {
    ScriptLab::up(tag, env!("CARGO_BIN_EXE_pf-sidecar"))
}

fn status(lab: &ScriptLab) -> serde_json::Value {
    let out = lab.sidecar(&["status", "--json", "--rate-interval-ms", "0"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn counter(status: &serde_json::Value, name: &str) -> u64 {
    status["counters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == name)
        .filter_map(|c| c["value"].as_u64())
        .sum()
}

fn daemon_pid(lab: &ScriptLab) -> i32 {
    std::fs::read_to_string(format!("{}/pf-sidecar.pid", lab.var("LAB_DIR")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a daemon this test's lab started.
    unsafe { libc::kill(pid, signal) };
}

/// Starts `pf-sidecar run` again with the lab's configuration.
fn restart(lab: &ScriptLab) -> i32 {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(lab.var("LAB_SIDECAR_LOG"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args([
            "--netns",
            &lab.router.name,
            "run",
            "--config",
            lab.var("LAB_SIDECAR_CONFIG"),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    std::fs::write(
        format!("{}/pf-sidecar.pid", lab.var("LAB_DIR")),
        pid.to_string(),
    )
    .unwrap();
    // The lab's `down` kills whatever runs in its namespaces.
    std::mem::forget(child);
    pid
}

/// Waits until every thread of `pid` has exited. A killed multi-threaded
/// leader shows as a zombie while its other threads still tear down and
/// hold the file table, so the pin-directory lock is only free once the
/// leader is the last task left (or the process is reaped).
fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let zombie =
            std::fs::read_to_string(format!("/proc/{pid}/status")).map(|s| s.contains("zombie"));
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count());
        match (zombie, tasks) {
            (Err(_), _) => return,
            (Ok(true), Ok(1)) => return,
            _ => {}
        }
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_steady_flow_keeps_flowing_while_the_sidecar_is_killed_restarted_and_hung() {
    require_root!();
    let lab = lab("e2ek");
    // 4000 pings 5 ms apart: 20 s of traffic through every fault below.
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client.name,
            "ping",
            "-q",
            "-c",
            "4000",
            "-i",
            "0.005",
            "-W",
            "1",
        ])
        .arg(lab.var("LAB_SERVER_V4"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));

    // Killed during churn: up2 withdraws its path and the daemon dies at once.
    lab.vtysh(
        true,
        &[
            "configure terminal",
            "router bgp 64502",
            "address-family ipv4 unicast",
            "no network 203.0.113.0/24",
        ],
    );
    signal(daemon_pid(&lab), libc::SIGKILL);
    wait_gone(daemon_pid(&lab));
    std::thread::sleep(Duration::from_millis(500));
    lab.vtysh(
        true,
        &[
            "configure terminal",
            "router bgp 64502",
            "address-family ipv4 unicast",
            "network 203.0.113.0/24",
        ],
    );

    // Killed during its own start-up (the kernel dump and zebra's replay).
    let pid = restart(&lab);
    std::thread::sleep(Duration::from_millis(150));
    signal(pid, libc::SIGKILL);
    wait_gone(pid);
    let pid = restart(&lab);
    lab.assert_diff_clean("after two kills and a restart");
    let log = lab.sidecar_log();
    assert!(log.contains("loaded a new datapath generation"), "{log}");

    // Hung: the fail-safe engages within its bound (3 s) and traffic flows.
    signal(pid, libc::SIGSTOP);
    let stopped = Instant::now();
    let engaged = loop {
        if status(&lab)["fail_safe_active"] == true {
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(6),
            "the fail-safe never engaged"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let before = counter(&status(&lab), "fail_safe");
    std::thread::sleep(Duration::from_millis(500));
    let during = status(&lab);
    assert!(
        counter(&during, "fail_safe") > before,
        "packets take the fail-safe path: {during}"
    );
    signal(pid, libc::SIGCONT);
    let resumed = Instant::now();
    while status(&lab)["fail_safe_active"] == true {
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "the fail-safe did not leave"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "fail-safe engaged {:.2} s after SIGSTOP (bound 3 s), left {:.2} s after SIGCONT",
        engaged.as_secs_f64(),
        resumed.elapsed().as_secs_f64()
    );

    let output = ping.wait_with_output().unwrap();
    let (summary, sent, received) = integration_tests::ping_summary(&output.stdout);
    println!("steady flow through two kills, two restarts and a hang: {summary}");
    assert_eq!(sent, 4000, "the ping ran to the end: {summary}");
    let lost = sent - received;
    assert!(
        lost * 100 <= sent,
        "lost {lost} of {sent} packets: {summary}"
    );
    lab.assert_diff_clean("at the end");
}

/// UDP to port 9100 from the client, as a capture filter at up1.
fn probe_mac(frame: &[u8]) -> Option<[u8; 6]> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    match packet.transport {
        Some(TransportSlice::Udp(udp)) if udp.destination_port() == 9100 => {
            Some(frame[0..6].try_into().unwrap())
        }
        _ => None,
    }
}

#[test]
fn a_neighbour_flapping_a_thousand_times_a_second_for_30_s_never_gets_a_wrong_mac() {
    require_root!();
    let lab = lab("e2es");
    // A gateway that only this test uses (BGP keeps its own neighbours).
    lab.vtysh(
        false,
        &[
            "configure terminal",
            "ip route 203.0.113.250/32 198.51.100.3",
        ],
    );
    let mac_x = "02:00:00:00:0a:0a";
    let mac_y = "02:00:00:00:0b:0b";
    let allowed = [[2, 0, 0, 0, 0x0a, 0x0a], [2, 0, 0, 0, 0x0b, 0x0b]];
    lab.router.ip(&[
        "neigh",
        "replace",
        "198.51.100.3",
        "lladdr",
        mac_x,
        "dev",
        "r1",
        "nud",
        "permanent",
    ]);
    lab.assert_diff_clean("before the storm");

    let capture = Capture::start(&lab.up1, "u1", Duration::from_secs(45), |f| {
        probe_mac(f).is_some()
    });
    let client: IpAddr = lab.var("LAB_CLIENT_V4").parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let client_ns = integration_tests::netns::NetNs::existing(&lab.client.name);
        std::thread::spawn(move || {
            client_ns.enter(|| {
                let socket = UdpSocket::bind(SocketAddr::new(client, 0)).unwrap();
                let target = SocketAddr::new("203.0.113.250".parse().unwrap(), 9100);
                let mut sent = 0u64;
                // Bounded: at most 40 s at about 2000 packets/s.
                let deadline = Instant::now() + Duration::from_secs(40);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    for _ in 0..10 {
                        let _ = socket.send_to(b"pf-e2e storm probe", target);
                        sent += 1;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                sent
            })
        })
    };

    // The storm: 30,000 changes, paced at 1000 per second, through one
    // `ip -batch` so the pacing is ours and not process start-up.
    let mut batch = Command::new("ip")
        .args(["-n", &lab.router.name, "-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = batch.stdin.take().unwrap();
    let started = Instant::now();
    for change in 0..30_000u32 {
        let line = match change % 4 {
            0 => format!("neigh replace 198.51.100.3 lladdr {mac_y} dev r1 nud permanent\n"),
            1 => "neigh del 198.51.100.3 dev r1\n".to_owned(),
            2 => format!("neigh replace 198.51.100.3 lladdr {mac_x} dev r1 nud permanent\n"),
            _ => format!("neigh replace 198.51.100.3 lladdr {mac_y} dev r1 nud stale\n"),
        };
        stdin.write_all(line.as_bytes()).unwrap();
        if change % 10 == 9 {
            stdin.flush().unwrap();
            let due = Duration::from_millis(change as u64 + 1);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    stdin
        .write_all(
            format!("neigh replace 198.51.100.3 lladdr {mac_x} dev r1 nud permanent\n").as_bytes(),
        )
        .unwrap();
    drop(stdin);
    let _ = batch.wait();
    let storm = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let settled = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let frames = capture.finish(Duration::from_millis(300));
    let macs: Vec<[u8; 6]> = frames.iter().filter_map(|f| probe_mac(&f.bytes)).collect();
    println!(
        "neighbour storm: 30,001 changes in {:.1} s, {sent} probes sent, {} captured at up1",
        storm.as_secs_f64(),
        macs.len()
    );
    let wrong: Vec<_> = macs.iter().filter(|m| !allowed.contains(m)).collect();
    assert!(
        wrong.is_empty(),
        "{} frames carried a MAC the neighbour never had: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    assert!(
        macs.len() as u64 * 2 > sent,
        "most probes were forwarded ({} of {sent})",
        macs.len()
    );
    // The final state: every probe after the storm uses the last MAC.
    let _ = settled;
    let tail: Vec<_> = macs.iter().rev().take(200).collect();
    assert!(
        tail.iter().all(|m| **m == allowed[0]),
        "after the storm the last MAC is used"
    );
    let answer =
        pf_sidecar::pinned_maps::PinnedMaps::open(std::path::Path::new(lab.var("LAB_PIN_DIR")))
            .unwrap()
            .answer("203.0.113.250".parse().unwrap())
            .unwrap();
    assert_eq!(answer.legs[0].dmac, mac_x, "{answer:?}");
    assert!(answer.legs[0].resolved);
    lab.assert_diff_clean("after the storm");
}
