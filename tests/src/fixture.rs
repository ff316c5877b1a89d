//! A loaded datapath with small maps, programmed by hand, for test runs.

use std::os::fd::BorrowedFd;

use ipnet::{Ipv4Net, Ipv6Net};
use pf_common::{layout::NH_F_RESOLVED, maps as names, Config, Counter, Nexthop, RouteAction};
use pf_sidecar::datapath::{
    test_run::{run_xdp, TestRunOutput},
    Capacities, Datapath,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

/// Loopback is in every namespace, so it serves as a devmap target in
/// test runs (redirects are not executed without live frames).
pub const LOOPBACK: u32 = 1;

pub struct Fixture {
    pub datapath: Datapath,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    /// Loads with small capacities; loopback is a redirect target.
    /// Call on a thread inside a test namespace (`NetNs::enter`).
    pub fn new() -> Self {
        let capacities = Capacities {
            tbl8_groups: 16,
            v6_routes: 1024,
            nexthops: 256,
            ecmp_groups: 16,
            ports: 64,
        };
        let mut datapath = Datapath::load(&capacities).expect("load the datapath");
        datapath
            .maps
            .add_tx_port(LOOPBACK)
            .expect("add loopback to TX_PORTS");
        datapath.maps.set_config(&Config::default()).unwrap();
        Self { datapath }
    }

    pub fn config(&mut self, config: Config) {
        self.datapath.maps.set_config(&config).unwrap();
    }

    /// Writes nexthop `id` into slot `id`.
    pub fn nexthop(&mut self, id: u32, nexthop: Nexthop) {
        self.datapath.maps.write_nexthop(id, id, &nexthop).unwrap();
    }

    pub fn route4(&mut self, prefix: &str, action: RouteAction) {
        let prefix: Ipv4Net = prefix.parse().unwrap();
        self.datapath.maps.v4.lock().insert(prefix, action).unwrap();
    }

    pub fn route6(&mut self, prefix: &str, action: RouteAction) {
        let prefix: Ipv6Net = prefix.parse().unwrap();
        self.datapath
            .maps
            .set_v6_route(prefix.network().octets(), prefix.prefix_len(), action.0)
            .unwrap();
    }

    fn fast_path(&self) -> BorrowedFd<'_> {
        self.datapath.program_fd(names::PROG_FAST_PATH).unwrap()
    }

    /// One test run arriving on loopback.
    pub fn run(&self, frame: &[u8]) -> TestRunOutput {
        run_xdp(self.fast_path(), frame, None, 1).expect("BPF_PROG_TEST_RUN")
    }

    /// One test run arriving on `ifindex` of the calling thread's namespace.
    /// Kernels before 5.15 take no `xdp_md` context in a test run (EINVAL):
    /// there the frame arrives on the namespace's loopback instead, which
    /// `bpf_fib_lookup` serves the same once forwarding is on for every
    /// device (`net.ipv4.ip_forward=1`).
    pub fn run_on(&self, frame: &[u8], ifindex: u32) -> TestRunOutput {
        match run_xdp(self.fast_path(), frame, Some(ifindex), 1) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                run_xdp(self.fast_path(), frame, None, 1).expect("BPF_PROG_TEST_RUN")
            }
            result => result.expect("BPF_PROG_TEST_RUN"),
        }
    }

    pub fn counter(&self, counter: Counter) -> u64 {
        self.datapath.maps.counter(counter).unwrap()
    }
}

/// A resolved nexthop out of `tx_ifindex` to `dmac`.
pub fn resolved(tx_ifindex: u32, dmac: [u8; 6]) -> Nexthop {
    Nexthop {
        tx_ifindex,
        mtu: 1500,
        vlan_id: 0,
        dmac,
        smac: [0x02, 0xaa, 0, 0, 0, 0x01],
        vlan_proto: 0,
        flags: NH_F_RESOLVED,
    }
}
