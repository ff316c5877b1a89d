//! Both programs pass this kernel's verifier and attach to a veth.

use integration_tests::{
    netns::{veth_pair, NetNs},
    require_root,
};
use pf_sidecar::datapath::{Capacities, Datapath};

#[test]
fn both_programs_load_and_fast_path_attaches_to_a_veth_in_native_mode() {
    require_root!();
    let a = NetNs::new("load-a");
    let b = NetNs::new("load-b");
    veth_pair(&a, "veth0", &b, "veth1");
    a.enter(|| {
        let mut datapath =
            Datapath::load(&Capacities::default()).expect("load through the verifier");
        let program = datapath.fast_path().expect("fast_path");
        let link = program
            .attach("veth0", aya::programs::XdpMode::Driver)
            .expect("native attach on veth");
        let shown = std::process::Command::new("ip")
            .args(["-d", "link", "show", "veth0"])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(
            shown.contains("xdp"),
            "ip link does not show the program:\n{shown}"
        );
        program.detach(link).expect("detach");
    });
}

/// `TX_PORTS` is a devmap hash with 4-byte values (the ifindex alone), in
/// the map `fast_path` and `finalize` really use and in the pins: a devmap
/// whose values can carry a program makes Linux 5.8 to 5.13 refuse generic
/// XDP. And with it, fast_path attaches in generic mode.
#[test]
fn tx_ports_has_four_byte_values_and_fast_path_attaches_in_generic_mode() {
    require_root!();
    let a = NetNs::new("txports-a");
    let b = NetNs::new("txports-b");
    veth_pair(&a, "veth0", &b, "veth1");
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/pf-test-txports-{}",
        std::process::id()
    ));
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(pin_dir.clone());
    let veth0 = a.ifindex("veth0");
    a.enter(|| {
        let (mut datapath, generation) =
            Datapath::load_next_generation(&Capacities::default(), &pin_dir).expect("load");
        assert_eq!(datapath.maps.tx_ports.value_size(), 4);
        datapath.maps.add_tx_port(veth0).unwrap();
        assert_eq!(datapath.maps.tx_ports.get(veth0).unwrap(), Some(veth0));
        assert_eq!(datapath.maps.tx_ports.keys().unwrap(), vec![veth0]);

        // The maps the programs were verified against.
        for program in [
            pf_common::maps::PROG_FAST_PATH,
            pf_common::maps::PROG_FINALIZE,
        ] {
            let info =
                aya::programs::ProgramInfo::from_pin(generation.join(format!("prog_{program}")))
                    .expect("program info");
            let tx_ports: Vec<aya::maps::MapInfo> = info
                .map_ids()
                .unwrap()
                .expect("map ids")
                .into_iter()
                .map(|id| aya::maps::MapInfo::from_id(id).unwrap())
                .filter(|m| m.name_as_str() == Some(pf_common::maps::TX_PORTS))
                .collect();
            assert_eq!(tx_ports.len(), 1, "{program} uses TX_PORTS");
            assert_eq!(tx_ports[0].value_size(), 4, "{program}'s TX_PORTS");
        }
        let pinned = pf_sidecar::datapath::tx_ports::TxPorts::from_pin(
            &generation.join(pf_common::maps::TX_PORTS),
        )
        .unwrap();
        assert_eq!(pinned.value_size(), 4);
        assert_eq!(
            pinned.get(veth0).unwrap(),
            Some(veth0),
            "the pin is the live map"
        );

        // A restart adopts the pinned map as it is.
        drop(datapath);
        let (adopted, _) = Datapath::load_current(&Capacities::default(), &pin_dir).unwrap();
        assert_eq!(adopted.maps.tx_ports.get(veth0).unwrap(), Some(veth0));
        drop(adopted);

        let (mut datapath, _) = Datapath::load_current(&Capacities::default(), &pin_dir).unwrap();
        let program = datapath.fast_path().unwrap();
        let link = pf_sidecar::attach::try_attach(program, "veth0", aya::programs::XdpMode::Skb)
            .expect("generic attach");
        let shown = std::process::Command::new("ip")
            .args(["-d", "link", "show", "veth0"])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(
            shown.contains("xdpgeneric"),
            "not attached in generic mode:\n{shown}"
        );
        drop(link);
    });
}
