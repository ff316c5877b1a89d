//! The map programmer against the real maps: what it writes is what
//! fast_path forwards with.

use std::net::{IpAddr, Ipv4Addr};

use integration_tests::{
    fixture::{Fixture, LOOPBACK, XDP_DROP, XDP_REDIRECT},
    frames::{self, Tagging},
    netns::NetNs,
    require_root,
};
use pf_common::Counter;
use pf_control::programmer::{Leg, Limits, LinkInfo, Programmer, Target};

const GW: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const GW_MAC: [u8; 6] = [2, 0xcc, 0, 0, 0, 1];
const LO_MAC: [u8; 6] = [2, 0xcc, 0, 0, 0, 0xfe];

#[test]
fn routes_written_by_the_programmer_are_forwarded_by_fast_path() {
    require_root!();
    let ns = NetNs::new("prog");
    ns.enter(|| {
        let mut fixture = Fixture::new();
        let limits = Limits {
            nexthops: 256,
            ecmp_groups: 16,
        };
        let fast_path = fixture
            .datapath
            .program_fd(pf_common::maps::PROG_FAST_PATH)
            .unwrap()
            .try_clone_to_owned()
            .unwrap();
        let mut programmer = Programmer::new(&mut fixture.datapath.maps, limits);
        programmer.set_link(
            LOOPBACK,
            Some(LinkInfo {
                mac: LO_MAC,
                mtu: 1500,
                up: true,
                vlan: None,
                master: 0,
                vrf_table: None,
            }),
        );
        programmer.set_neighbour(LOOPBACK, GW, Some(GW_MAC));
        let via_gw = Target::Forward(vec![Leg {
            ifindex: LOOPBACK,
            gateway: Some(GW),
            weight: 1,
        }]);
        programmer.upsert("198.51.100.0/24".parse().unwrap(), &via_gw);
        programmer.upsert("203.0.113.0/24".parse().unwrap(), &Target::Blackhole);

        let run = |dst: Ipv4Addr| {
            let frame = frames::udp4(
                Tagging::Untagged,
                Ipv4Addr::new(192, 0, 2, 50),
                dst,
                64,
                1,
                2,
            );
            pf_sidecar::datapath::test_run::run_xdp(
                std::os::fd::AsFd::as_fd(&fast_path),
                &frame,
                None,
                1,
            )
            .unwrap()
        };
        let out = run(Ipv4Addr::new(198, 51, 100, 9));
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(&out.frame[0..6], &GW_MAC);
        assert_eq!(&out.frame[6..12], &LO_MAC);
        assert_eq!(run(Ipv4Addr::new(203, 0, 113, 9)).action, XDP_DROP);

        programmer.remove("203.0.113.0/24".parse().unwrap());
        assert_eq!(
            programmer.writer().counter(Counter::DropBlackhole).unwrap(),
            1
        );
        assert_ne!(
            run(Ipv4Addr::new(203, 0, 113, 9)).action,
            XDP_DROP,
            "the removed route no longer drops"
        );
    });
}
