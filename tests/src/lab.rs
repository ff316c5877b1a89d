//! A small router lab: client — router — two upstreams that both reach a
//! server address (so the router has two equal paths), all veth, all
//! documentation prefixes, deleted with the namespaces.
//!
//! ```text
//! client c0 192.0.2.2/24        r0 192.0.2.1/24        router
//!           2001:db8:1::2/64       2001:db8:1::1/64
//! up1    u1 198.51.100.2/26     r1 198.51.100.1/26
//!           2001:db8:2::2/64       2001:db8:2::1/64
//! up2    u2 198.51.100.66/26    r2 198.51.100.65/26
//!           2001:db8:3::2/64       2001:db8:3::1/64
//! up1, up2: lo 203.0.113.10/32, 2001:db8:ff::10/128 (the "server")
//! ```

use crate::netns::{veth_pair, NetNs};

pub const SERVER_V4: &str = "203.0.113.10";
pub const SERVER_V6: &str = "2001:db8:ff::10";

pub struct Lab {
    pub client: NetNs,
    pub router: NetNs,
    pub up1: NetNs,
    pub up2: NetNs,
}

impl Lab {
    pub fn new(tag: &str) -> Self {
        let lab = Self {
            client: NetNs::new(&format!("{tag}-c")),
            router: NetNs::new(&format!("{tag}-r")),
            up1: NetNs::new(&format!("{tag}-u1")),
            up2: NetNs::new(&format!("{tag}-u2")),
        };
        veth_pair(&lab.client, "c0", &lab.router, "r0");
        veth_pair(&lab.up1, "u1", &lab.router, "r1");
        veth_pair(&lab.up2, "u2", &lab.router, "r2");
        let addr = |ns: &NetNs, dev: &str, a: &str| ns.ip(&["addr", "add", a, "dev", dev, "nodad"]);
        addr(&lab.client, "c0", "192.0.2.2/24");
        addr(&lab.client, "c0", "2001:db8:1::2/64");
        addr(&lab.router, "r0", "192.0.2.1/24");
        addr(&lab.router, "r0", "2001:db8:1::1/64");
        addr(&lab.router, "r1", "198.51.100.1/26");
        addr(&lab.router, "r1", "2001:db8:2::1/64");
        addr(&lab.router, "r2", "198.51.100.65/26");
        addr(&lab.router, "r2", "2001:db8:3::1/64");
        addr(&lab.up1, "u1", "198.51.100.2/26");
        addr(&lab.up1, "u1", "2001:db8:2::2/64");
        addr(&lab.up2, "u2", "198.51.100.66/26");
        addr(&lab.up2, "u2", "2001:db8:3::2/64");
        for (up, gw4, gw6) in [
            (&lab.up1, "198.51.100.1", "2001:db8:2::1"),
            (&lab.up2, "198.51.100.65", "2001:db8:3::1"),
        ] {
            up.ip(&["addr", "add", "203.0.113.10/32", "dev", "lo"]);
            up.ip(&["addr", "add", "2001:db8:ff::10/128", "dev", "lo"]);
            up.ip(&["route", "add", "192.0.2.0/24", "via", gw4]);
            up.ip(&["-6", "route", "add", "2001:db8:1::/64", "via", gw6]);
        }
        lab.client
            .ip(&["route", "add", "default", "via", "192.0.2.1"]);
        lab.client
            .ip(&["-6", "route", "add", "default", "via", "2001:db8:1::1"]);
        lab.router.exec_ok(
            "sysctl",
            &[
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        );
        // Veth ends that receive redirected frames need NAPI: GRO turns it on.
        for (ns, dev) in [(&lab.client, "c0"), (&lab.up1, "u1"), (&lab.up2, "u2")] {
            ns.exec_ok("ethtool", &["-K", dev, "gro", "on"]);
        }
        lab
    }
}
