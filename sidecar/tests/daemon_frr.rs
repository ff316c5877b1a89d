//! `pf-sidecar run` against real FRR: after every vtysh change the pinned
//! maps answer exactly what `show ip route json` / `show ipv6 route json`
//! mark as installed, and traffic takes the fast path.

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{
    frr::{Frr, FrrConfig},
    lab::{Lab, SERVER_V4, SERVER_V6},
    require_root,
};
use pf_sidecar::pinned_maps::PinnedMaps;
use support::{converge, lab_addresses, Bird, Daemon, SIDECAR};

#[test]
fn the_maps_follow_real_frr_through_adds_ecmp_blackholes_and_deletes() {
    require_root!();
    let lab = Lab::new("dfrr");
    let port = 27000 + (std::process::id() % 1000) as u16;
    let daemon = Daemon::start(SIDECAR, &lab, port, "dfrr");
    let frr = Frr::start(
        &lab.router,
        &FrrConfig {
            fpm_port: Some(port),
            zebra: &[],
            staticd: Some(&[
                "ip route 203.0.113.0/24 198.51.100.2",
                "ipv6 route 2001:db8:ff::/48 2001:db8:2::2",
            ]),
            bgpd: None,
        },
    );
    let own = lab_addresses();
    let installed = || [frr.installed_routes(false), frr.installed_routes(true)].concat();
    converge(&installed, &daemon, &own, "the first replay");
    daemon.assert_diff_clean_everywhere(&frr.name, "the first replay");
    diff_reads_frr_pathspace_from_the_configuration(&daemon, &lab, &frr.name);

    // Traffic to the server takes the fast path.
    let ping = lab
        .client
        .exec("ping", &["-c", "5", "-i", "0.2", "-W", "2", SERVER_V4]);
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let ping6 = lab.client.exec(
        "ping",
        &["-6", "-c", "5", "-i", "0.2", "-W", "2", SERVER_V6],
    );
    assert!(
        ping6.status.success(),
        "ping -6: {}",
        String::from_utf8_lossy(&ping6.stdout)
    );
    let status = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &lab.router.name, "--pin-dir"])
        .arg(&daemon.pin_dir)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let redirect_cache = status["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "redirect_cache")
        .unwrap()["value"]
        .as_u64()
        .unwrap();
    assert!(
        redirect_cache >= 6,
        "the route cache forwarded the pings: {status}"
    );
    assert_eq!(status["daemon"]["fpm_connected"], true, "{status}");
    assert_eq!(status["daemon"]["fpm_replay_complete"], true, "{status}");
    assert_eq!(status["daemon"]["kernel_synced"], true, "{status}");
    assert_eq!(
        status["fail_safe_active"], false,
        "a live daemon keeps the heartbeat fresh: {status}"
    );
    assert_eq!(
        status["program_ids"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    // Occupancy: the two gateways (IPv4 and IPv6) are two nexthops.
    let nexthops = status["occupancy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["table"].as_str().unwrap().starts_with("nexthops"))
        .unwrap();
    assert_eq!(nexthops["used"], 2, "{status}");
    assert!(nexthops["capacity"].as_u64().unwrap() >= 1024, "{status}");
    // Rates: a bounded ping stream runs while status measures over 500 ms.
    let pinger = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client.name,
            "ping",
            "-c",
            "60",
            "-i",
            "0.01",
            "-W",
            "1",
            SERVER_V4,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args(["--netns", &lab.router.name, "--pin-dir"])
        .arg(&daemon.pin_dir)
        .args(["status", "--json", "--rate-interval-ms", "500"])
        .output()
        .unwrap();
    let _ = pinger.wait_with_output();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["rate_interval_s"], 0.5);
    let rate = status["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "redirect_cache")
        .unwrap()["rate_per_s"]
        .as_f64()
        .unwrap();
    // Echo requests and replies at 100/s each way, all from the cache.
    assert!(
        (40.0..=400.0).contains(&rate),
        "redirect_cache at {rate}/s: {status}"
    );

    frr.configure(&["ip route 203.0.113.0/24 198.51.100.66"]);
    converge(&installed, &daemon, &own, "adding a second path (ECMP)");
    daemon.assert_diff_clean_everywhere(&frr.name, "adding a second path (ECMP)");
    let answer = PinnedMaps::open(&daemon.pin_dir)
        .unwrap()
        .answer(SERVER_V4.parse().unwrap())
        .unwrap();
    assert_eq!(answer.kind, "Group", "{answer:?}");

    frr.configure(&[
        "ip route 203.0.113.128/25 blackhole",
        "ipv6 route 2001:db8:ff:1::/64 blackhole",
    ]);
    converge(&installed, &daemon, &own, "adding blackholes");
    daemon.assert_diff_clean_everywhere(&frr.name, "adding blackholes");

    frr.configure(&["no ip route 203.0.113.0/24 198.51.100.2"]);
    converge(&installed, &daemon, &own, "removing one ECMP path");
    daemon.assert_diff_clean_everywhere(&frr.name, "removing one ECMP path");

    frr.configure(&[
        "no ip route 203.0.113.128/25 blackhole",
        "no ipv6 route 2001:db8:ff:1::/64 blackhole",
    ]);
    converge(&installed, &daemon, &own, "deleting the blackholes");
    daemon.assert_diff_clean_everywhere(&frr.name, "deleting the blackholes");
    let answer = PinnedMaps::open(&daemon.pin_dir)
        .unwrap()
        .answer("203.0.113.200".parse().unwrap())
        .unwrap();
    assert_eq!(
        answer.kind, "Nexthop",
        "the /24 answers again where the /25 was: {answer:?}"
    );
}

#[test]
fn after_frr_dies_mid_withdrawal_and_restarts_the_replay_leaves_no_stale_entry() {
    require_root!();
    let lab = Lab::new("dfrrrs");
    let port = 28000 + (std::process::id() % 1000) as u16;
    let daemon = Daemon::start(SIDECAR, &lab, port, "dfrrrs");
    let statics = [
        "ip route 203.0.113.0/25 198.51.100.2",
        "ip route 203.0.113.128/25 198.51.100.66",
        "ip route 192.0.2.128/26 blackhole",
    ];
    let mut frr = Frr::start(
        &lab.router,
        &FrrConfig {
            fpm_port: Some(port),
            zebra: &[],
            staticd: Some(&statics),
            bgpd: None,
        },
    );
    let own = lab_addresses();
    let installed = || [frr.installed_routes(false), frr.installed_routes(true)].concat();
    converge(&installed, &daemon, &own, "the first replay");
    daemon.assert_diff_clean_everywhere(&frr.name, "the first replay");

    // Withdraw two routes and kill FRR while the withdrawal is in flight.
    frr.configure(&[
        "no ip route 203.0.113.128/25 198.51.100.66",
        "no ip route 192.0.2.128/26 blackhole",
    ]);
    frr.kill("staticd");
    frr.kill("zebra");
    frr.rewrite_config("staticd", &statics[..1]);
    frr.restart("zebra", &["-M", "dplane_fpm_nl"]);
    frr.restart("staticd", &[]);
    let installed = || [frr.installed_routes(false), frr.installed_routes(true)].concat();
    converge(&installed, &daemon, &own, "FRR's restart and replay");
    daemon.assert_diff_clean_everywhere(&frr.name, "FRR's restart and replay");

    // A restarted zebra first takes over the routes its predecessor left in
    // the kernel and sweeps them later (under load it can keep them as
    // kernel routes for a while). Whatever FRR no longer has, the maps must
    // not have either.
    let maps = PinnedMaps::open(&daemon.pin_dir).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for (gone, prefix) in [
        ("203.0.113.200", "203.0.113.128/25"),
        ("192.0.2.150", "192.0.2.128/26"),
    ] {
        loop {
            let frr_has_it = installed().iter().any(|r| r.prefix == prefix);
            let answer = maps.answer(gone.parse().unwrap()).unwrap();
            let maps_have_it = !matches!(answer.kind.as_str(), "Miss" | "Fib");
            // The maps follow FRR: a route zebra still holds (its
            // predecessor's kernel route, until zebra sweeps it) may stay.
            if frr_has_it == maps_have_it {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{gone}: FRR still has {prefix}: {frr_has_it}; the maps: {answer:?}\n{}",
                frr.vtysh(&["show ip route"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    daemon.assert_diff_clean_everywhere(&frr.name, "zebra's sweep of its predecessor's routes");
}

#[test]
fn bgp_announcements_and_withdrawals_from_a_bird_peer_reach_the_maps() {
    require_root!();
    let lab = Lab::new("dbgp");
    let port = 29000 + (std::process::id() % 1000) as u16;
    let daemon = Daemon::start(SIDECAR, &lab, port, "dbgp");
    let bird = Bird::start(
        &lab.up1,
        "router id 198.51.100.2;\n\
         protocol device { }\n\
         protocol static announce4 { ipv4; route 203.0.113.0/24 blackhole; route 192.0.2.128/25 blackhole; }\n\
         protocol bgp uplink { local 198.51.100.2 as 65002; neighbor 198.51.100.1 as 65001; \
         ipv4 { import none; export where proto = \"announce4\"; }; }\n",
    );
    let frr = Frr::start(
        &lab.router,
        &FrrConfig {
            fpm_port: Some(port),
            zebra: &[],
            staticd: None,
            bgpd: Some(&[
                "router bgp 65001",
                " bgp router-id 198.51.100.1",
                " no bgp ebgp-requires-policy",
                " neighbor 198.51.100.2 remote-as 65002",
                " neighbor 198.51.100.2 timers connect 1",
                "exit",
            ]),
        },
    );
    let own = lab_addresses();
    let installed = || [frr.installed_routes(false), frr.installed_routes(true)].concat();
    let wait_for_bgp = |present: bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while installed()
            .iter()
            .any(|r| r.protocol == "bgp" && r.prefix == "203.0.113.0/24")
            != present
        {
            assert!(
                Instant::now() < deadline,
                "BGP route present={present} never happened:\n{}",
                frr.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for_bgp(true);
    converge(&installed, &daemon, &own, "BGP announcements");
    daemon.assert_diff_clean_everywhere(&frr.name, "BGP announcements");
    let answer = PinnedMaps::open(&daemon.pin_dir)
        .unwrap()
        .answer(SERVER_V4.parse().unwrap())
        .unwrap();
    assert_eq!(
        answer.paths().first().and_then(|p| p.1),
        Some("198.51.100.2".parse().unwrap()),
        "{answer:?}"
    );

    bird.birdc("disable announce4");
    wait_for_bgp(false);
    converge(&installed, &daemon, &own, "BGP withdrawals");
    daemon.assert_diff_clean_everywhere(&frr.name, "BGP withdrawals");
    let answer = PinnedMaps::open(&daemon.pin_dir)
        .unwrap()
        .answer(SERVER_V4.parse().unwrap())
        .unwrap();
    assert!(
        matches!(answer.kind.as_str(), "Miss" | "Fib"),
        "the withdrawn prefix is gone: {answer:?}"
    );

    bird.birdc("enable announce4");
    wait_for_bgp(true);
    converge(&installed, &daemon, &own, "BGP re-announcement");
    daemon.assert_diff_clean_everywhere(&frr.name, "BGP re-announcement");
}

/// `diff --against frr` finds this FRR instance (it runs with `-N`) through
/// `frr.pathspace` in the configuration, with no `--frr-pathspace`; with
/// no pathspace it asks the default instance, which does not exist here.
fn diff_reads_frr_pathspace_from_the_configuration(daemon: &Daemon, lab: &Lab, pathspace: &str) {
    let config = std::env::temp_dir().join(format!(
        "pf-test-dfrr-{}-pathspace.toml",
        std::process::id()
    ));
    let diff = |frr_section: &str| {
        std::fs::write(
            &config,
            format!(
                "[general]\npin_dir = \"{}\"\n{frr_section}",
                daemon.pin_dir.display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(SIDECAR)
            .args(["--netns", &lab.router.name])
            .args(["diff", "--json", "--against", "frr", "--config"])
            .arg(&config)
            .output()
            .expect("run pf-sidecar diff");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = diff(&format!("[frr]\npathspace = \"{pathspace}\"\n"));
    assert_eq!(code, Some(0), "with frr.pathspace: {stdout}\n{stderr}");
    let (code, stdout, stderr) = diff("");
    assert_eq!(
        code,
        Some(2),
        "without a pathspace there is no FRR to ask: {stdout}\n{stderr}"
    );
    assert!(stderr.contains("vtysh"), "{stderr}");
    let _ = std::fs::remove_file(&config);
}
