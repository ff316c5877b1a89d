//! A restarted daemon builds a new generation and moves the links to it
//! while traffic keeps flowing: no detach, no empty maps.

use std::process::Command;

use integration_tests::{
    netns::{veth_pair, NetNs},
    require_root,
};
use pf_common::{Config, Counter, Mode};
use pf_sidecar::datapath::{pins, Capacities, Datapath};

struct Pins(std::path::PathBuf);
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_new_generation_takes_over_every_link_while_pings_keep_flowing() {
    require_root!();
    let client = NetNs::new("gen-c");
    let router = NetNs::new("gen-r");
    let server = NetNs::new("gen-s");
    veth_pair(&client, "c0", &router, "r0");
    veth_pair(&router, "r1", &server, "s0");
    client.ip(&["addr", "add", "192.0.2.2/24", "dev", "c0"]);
    router.ip(&["addr", "add", "192.0.2.1/24", "dev", "r0"]);
    router.ip(&["addr", "add", "198.51.100.1/24", "dev", "r1"]);
    server.ip(&["addr", "add", "198.51.100.2/24", "dev", "s0"]);
    client.ip(&["route", "add", "default", "via", "192.0.2.1"]);
    server.ip(&["route", "add", "default", "via", "198.51.100.1"]);
    router.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    client.exec_ok("ethtool", &["-K", "c0", "gro", "on"]);
    server.exec_ok("ethtool", &["-K", "s0", "gro", "on"]);
    let pin_dir = Pins(std::path::PathBuf::from(format!(
        "/sys/fs/bpf/pf-test-gen-{}",
        std::process::id()
    )));

    let caps = Capacities {
        tbl8_groups: 4,
        v6_routes: 16,
        nexthops: 16,
        ecmp_groups: 4,
        ports: 8,
    };
    let (r0, r1) = (router.ifindex("r0"), router.ifindex("r1"));
    router.enter(|| {
        let fib_only = Config {
            mode: Mode::FibOnly as u32,
            ..Default::default()
        };
        let (mut first, first_dir) = Datapath::load_current(&caps, &pin_dir.0).unwrap();
        first.maps.set_config(&fib_only).unwrap();
        for (ifname, ifindex) in [("r0", r0), ("r1", r1)] {
            let program = first.fast_path().unwrap();
            let link = program
                .attach(ifname, aya::programs::XdpMode::Driver)
                .unwrap();
            let link = program.take_link(link).unwrap();
            aya::programs::links::FdLink::try_from(link)
                .unwrap()
                .pin(pin_dir.0.join(format!("link_{ifname}")))
                .unwrap();
            first.maps.add_tx_port(ifindex).unwrap();
        }
        let first_fast_path = first.fast_path().unwrap().info().unwrap().id();
        drop(first);

        // A steady ping while generation 2 is built and takes over.
        let ping = Command::new("ip")
            .args([
                "netns",
                "exec",
                &client.name,
                "ping",
                "-q",
                "-i",
                "0.01",
                "-c",
                "300",
                "-W",
                "1",
                "198.51.100.2",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1000));
        let (mut second, second_dir) = Datapath::load_next_generation(&caps, &pin_dir.0).unwrap();
        assert_ne!(first_dir, second_dir);
        second.maps.set_config(&fib_only).unwrap();
        second.maps.add_tx_port(r0).unwrap();
        second.maps.add_tx_port(r1).unwrap();
        let before = second.maps.counter(Counter::RedirectFib).unwrap();
        assert!(before > 0, "counters carried over from generation 1");
        let moved = second.take_over(&pin_dir.0, &second_dir).unwrap();
        assert_eq!(moved, vec!["r0".to_string(), "r1".to_string()]);

        let output = ping.wait_with_output().unwrap();
        let summary = String::from_utf8_lossy(&output.stdout);
        assert!(
            summary.contains(" 0% packet loss"),
            "traffic was lost during the switch:\n{summary}"
        );
        assert!(
            second.maps.counter(Counter::RedirectFib).unwrap() > before,
            "generation 2 forwards"
        );
        assert_eq!(
            pins::generations(&pin_dir.0),
            vec![2],
            "generation 1 is retired"
        );
        let live = second.fast_path().unwrap().info().unwrap().id();
        assert_ne!(live, first_fast_path);
        let shown = router.ip(&["-d", "link", "show", "r0"]);
        assert!(
            shown.contains(&format!("prog/xdp id {live}")),
            "r0 runs generation 2:\n{shown}"
        );
    });
}
