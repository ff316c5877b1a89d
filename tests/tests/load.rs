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
