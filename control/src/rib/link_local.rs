//! IPv4 routes over IPv6 next hops (RFC 5549, BGP unnumbered) as zebra
//! sends them inline (`no fpm use-next-hop-groups`): `RTA_GATEWAY
//! 169.254.0.1`, onlink, on the interface, where the kernel's own route
//! says `via inet6 fe80::…` (zebra still gives the kernel nexthop objects).
//! The kernel forwards through that IPv6 link-local peer and its neighbour
//! entry, so the fast path must too: the peer is learnt from the kernel's
//! nexthop objects over rtnetlink, and each `169.254.0.1` leg takes the
//! link-local address the kernel uses on its interface. While an interface
//! has no such object, or several different link-local gateways, the leg
//! stays as zebra sent it (the kernel forwards it after `XDP_PASS`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::change::NexthopDef;
use crate::{
    fast_maps::{FastMap, HashMapExt},
    programmer::{Leg, Target},
};

/// The gateway zebra writes for an IPv4 route over an IPv6 next hop.
pub const IPV4_LL_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

fn is_link_local(address: &Ipv6Addr) -> bool {
    address.segments()[0] & 0xffc0 == 0xfe80
}

/// The IPv6 link-local peers the kernel forwards through, per interface.
#[derive(Debug, Default)]
pub struct LinkLocalPeers {
    /// Kernel nexthop objects with a link-local gateway: id → (ifindex, gateway).
    objects: FastMap<u32, (u32, Ipv6Addr)>,
    /// Each interface's one link-local peer (absent when none or several).
    peers: FastMap<u32, Ipv6Addr>,
}

impl LinkLocalPeers {
    pub fn new() -> Self {
        Self {
            objects: FastMap::new(),
            peers: FastMap::new(),
        }
    }

    /// A kernel nexthop object was added or changed (`Some`) or removed
    /// (`None`). True when an interface's peer changed, so the routes
    /// naming `169.254.0.1` must be resolved again.
    pub fn kernel_object(&mut self, id: u32, def: Option<&NexthopDef>) -> bool {
        let now = match def {
            Some(NexthopDef::Gateway {
                ifindex,
                gateway: Some(IpAddr::V6(gateway)),
            }) if is_link_local(gateway) => Some((*ifindex, *gateway)),
            _ => None,
        };
        let before = match now {
            Some(value) => self.objects.insert(id, value),
            None => self.objects.remove(&id),
        };
        if before == now {
            return false;
        }
        let mut changed = false;
        for ifindex in [before.map(|b| b.0), now.map(|n| n.0)]
            .into_iter()
            .flatten()
        {
            changed |= self.recompute(ifindex);
        }
        changed
    }

    fn recompute(&mut self, ifindex: u32) -> bool {
        let mut found: Option<Ipv6Addr> = None;
        let mut unique = true;
        for (index, gateway) in self.objects.values() {
            if *index != ifindex {
                continue;
            }
            match found {
                None => found = Some(*gateway),
                Some(f) if f != *gateway => unique = false,
                Some(_) => {}
            }
        }
        let peer = found.filter(|_| unique);
        let before = match peer {
            Some(peer) => self.peers.insert(ifindex, peer),
            None => self.peers.remove(&ifindex),
        };
        before != peer
    }

    /// The link-local peer the kernel uses on `ifindex`, if there is one.
    pub fn peer(&self, ifindex: u32) -> Option<Ipv6Addr> {
        self.peers.get(&ifindex).copied()
    }

    /// Whether `target` has a `169.254.0.1` leg this would change.
    pub fn applies(&self, target: &Target) -> bool {
        !self.peers.is_empty() && names_ipv4_ll(target)
    }

    /// `target` with each `169.254.0.1` leg going to its interface's peer.
    pub fn resolve(&self, target: &Target) -> Target {
        match target {
            Target::Forward(legs) => Target::Forward(
                legs.iter()
                    .map(|leg| match (leg.gateway, self.peer(leg.ifindex)) {
                        (Some(IpAddr::V4(IPV4_LL_GATEWAY)), Some(peer)) => Leg {
                            gateway: Some(IpAddr::V6(peer)),
                            ..leg.clone()
                        },
                        _ => leg.clone(),
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Whether a target forwards through zebra's `169.254.0.1` gateway.
pub fn names_ipv4_ll(target: &Target) -> bool {
    matches!(target, Target::Forward(legs)
        if legs.iter().any(|l| l.gateway == Some(IpAddr::V4(IPV4_LL_GATEWAY))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(ifindex: u32, address: &str) -> NexthopDef {
        NexthopDef::Gateway {
            ifindex,
            gateway: Some(address.parse().unwrap()),
        }
    }

    fn leg(ifindex: u32, address: &str) -> Leg {
        Leg {
            ifindex,
            gateway: Some(address.parse().unwrap()),
            weight: 1,
        }
    }

    #[test]
    fn a_169_254_0_1_leg_takes_the_link_local_peer_of_the_kernels_objects() {
        let mut peers = LinkLocalPeers::new();
        let inline = Target::Forward(vec![leg(3, "169.254.0.1"), leg(4, "169.254.0.1")]);
        assert!(!peers.applies(&inline), "no peer known: left as sent");
        assert_eq!(peers.resolve(&inline), inline);

        // Global gateways and other interfaces' objects do not count.
        assert!(!peers.kernel_object(7, Some(&gateway(3, "2001:db8:2::2"))));
        assert!(peers.kernel_object(16, Some(&gateway(3, "fe80::cc70:72ff:fe58:d"))));
        assert!(!peers.kernel_object(16, Some(&gateway(3, "fe80::cc70:72ff:fe58:d"))));
        assert!(peers.applies(&inline));
        assert_eq!(
            peers.resolve(&inline),
            Target::Forward(vec![
                leg(3, "fe80::cc70:72ff:fe58:d"),
                leg(4, "169.254.0.1")
            ])
        );
        // Legs with other gateways are untouched.
        let numbered = Target::Forward(vec![leg(3, "198.51.100.2")]);
        assert!(!peers.applies(&numbered));
        assert_eq!(peers.resolve(&numbered), numbered);

        // A second, different link-local gateway on the interface: which
        // one the kernel uses for the route is not known, so neither.
        assert!(peers.kernel_object(17, Some(&gateway(3, "fe80::1"))));
        assert_eq!(peers.peer(3), None);
        assert!(peers.kernel_object(17, None));
        assert_eq!(
            peers.peer(3),
            Some("fe80::cc70:72ff:fe58:d".parse().unwrap())
        );
        // The object changes interface, then goes.
        assert!(peers.kernel_object(16, Some(&gateway(4, "fe80::cc70:72ff:fe58:d"))));
        assert_eq!(peers.peer(3), None);
        assert_eq!(
            peers.peer(4),
            Some("fe80::cc70:72ff:fe58:d".parse().unwrap())
        );
        assert!(peers.kernel_object(16, None));
        assert_eq!(peers.peer(4), None);
        assert!(!peers.applies(&inline));
    }

    #[test]
    fn only_the_169_254_0_1_gateway_is_zebras_rfc_5549_encoding() {
        assert!(names_ipv4_ll(&Target::Forward(vec![leg(3, "169.254.0.1")])));
        assert!(!names_ipv4_ll(&Target::Forward(vec![leg(
            3,
            "169.254.0.2"
        )])));
        assert!(!names_ipv4_ll(&Target::Kernel));
    }

    /// The RIB with FPM as its source, as the daemon runs it.
    mod rib {
        use ipnet::IpNet;

        use super::*;
        use crate::{
            change::{Change, Kind, NextHops, Op, Route, RouteKey},
            fast_maps::PrefixHashMap,
            programmer::LinkInfo,
            rib::{FibSink, Rib, RibEntry, Source},
        };

        #[derive(Default)]
        struct Sink {
            upserts: Vec<(IpNet, Target)>,
            entries: PrefixHashMap<RibEntry>,
        }

        impl FibSink for Sink {
            fn entries(&self) -> &PrefixHashMap<RibEntry> {
                &self.entries
            }
            fn entries_mut(&mut self) -> &mut PrefixHashMap<RibEntry> {
                &mut self.entries
            }
            fn upsert(&mut self, prefix: IpNet, target: &Target) {
                self.upserts.push((prefix, target.clone()));
            }
            fn remove(&mut self, _: IpNet) {}
            fn set_link(&mut self, _: u32, _: Option<LinkInfo>) {}
            fn set_neighbour(&mut self, _: u32, _: IpAddr, _: Option<[u8; 6]>) {}
        }

        fn inline_route(prefix: &str, legs: Vec<Leg>) -> Change {
            Change::Route(
                Op::Upsert,
                Route {
                    key: RouteKey {
                        table: 254,
                        prefix: prefix.parse().unwrap(),
                        metric: 20,
                    },
                    protocol: 186,
                    kind: Kind::Unicast,
                    next: NextHops::Inline(legs),
                },
            )
        }

        #[test]
        fn zebras_inline_rfc_5549_route_follows_the_kernels_link_local_peer() {
            let mut rib = Rib::new(Source::Fpm, vec![254]);
            let mut sink = Sink::default();
            let prefix: IpNet = "203.0.113.192/26".parse().unwrap();
            let peer = "fe80::cc70:72ff:fe58:d";
            rib.apply_batch(
                Source::Fpm,
                [inline_route(
                    "203.0.113.192/26",
                    vec![leg(3, "169.254.0.1")],
                )],
                &mut sink,
            );
            assert_eq!(
                sink.upserts.pop(),
                Some((prefix, Target::Forward(vec![leg(3, "169.254.0.1")])))
            );
            // The kernel's nexthop object for the same route (zebra gives
            // the kernel objects even without `fpm use-next-hop-groups`).
            rib.apply_batch(
                Source::Kernel,
                [Change::Nexthop(Op::Upsert, 16, Some(gateway(3, peer)))],
                &mut sink,
            );
            let through_peer = Target::Forward(vec![leg(3, peer)]);
            assert_eq!(sink.upserts.pop(), Some((prefix, through_peer.clone())));
            assert_eq!(rib.desired(&sink), vec![(prefix, through_peer.clone())]);
            // A route arriving once the peer is known resolves at once.
            rib.apply_batch(
                Source::Fpm,
                [inline_route("198.51.100.0/24", vec![leg(3, "169.254.0.1")])],
                &mut sink,
            );
            assert_eq!(
                sink.upserts.pop(),
                Some(("198.51.100.0/24".parse().unwrap(), through_peer))
            );
            // The object goes: the legs are zebra's again.
            sink.upserts.clear();
            rib.apply_batch(
                Source::Kernel,
                [Change::Nexthop(Op::Remove, 16, None)],
                &mut sink,
            );
            sink.upserts.sort_by_key(|(p, _)| *p);
            assert_eq!(
                sink.upserts,
                vec![
                    (
                        "198.51.100.0/24".parse().unwrap(),
                        Target::Forward(vec![leg(3, "169.254.0.1")])
                    ),
                    (prefix, Target::Forward(vec![leg(3, "169.254.0.1")])),
                ]
            );
        }
    }
}
