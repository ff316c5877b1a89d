//! The datapath's decision for a destination against the kernel's, for the
//! differential tests.

use std::{net::IpAddr, path::Path};

use pf_sidecar::{
    cli::lookup::{kernel_route_get, KernelAnswer},
    pinned_maps::{Answer, PinnedMaps},
};

use crate::netns::NetNs;

/// What the pinned maps and the router's kernel (`ip route get`) answer
/// for one destination.
pub struct Decision {
    pub destination: IpAddr,
    pub maps: Answer,
    pub kernel: KernelAnswer,
}

impl Decision {
    /// The datapath decides as the kernel does (or never looks it up).
    pub fn agrees(&self) -> bool {
        passed_before_lookup(self.destination) || agrees(&self.maps, &self.kernel)
    }
}

/// Both answers for every destination: the maps under `pin_dir`, the
/// kernel of `router`.
pub fn decide(pin_dir: &Path, router: &NetNs, destinations: &[IpAddr]) -> Vec<Decision> {
    let maps = PinnedMaps::open(pin_dir).expect("open the pinned maps");
    let answers: Vec<Answer> = destinations
        .iter()
        .map(|d| maps.answer(*d).expect("a map answer"))
        .collect();
    let kernel: Vec<KernelAnswer> = router.enter(|| {
        destinations
            .iter()
            .map(|d| kernel_route_get(*d, None).expect("ip route get"))
            .collect()
    });
    destinations
        .iter()
        .zip(answers)
        .zip(kernel)
        .map(|((destination, maps), kernel)| Decision {
            destination: *destination,
            maps,
            kernel,
        })
        .collect()
}

/// Destinations `fast_path` hands to the kernel before any lookup.
pub fn passed_before_lookup(address: IpAddr) -> bool {
    pf_common::special::passed_before_lookup(address).is_some()
}

/// Whether the datapath's decision for an address is the kernel's: the same
/// egress and gateway (one of the legs for a multipath route, as the kernel
/// picks one per flow), or both pass or drop the same way.
pub fn agrees(maps: &Answer, kernel: &KernelAnswer) -> bool {
    let kernel_kind = kernel.kind.as_str();
    match maps.kind.as_str() {
        "Nexthop" | "Group" => {
            kernel_kind == "Unicast"
                && maps
                    .legs
                    .iter()
                    .any(|l| Some(l.ifindex) == kernel.ifindex && l.gateway == kernel.gateway)
        }
        "Blackhole" => kernel_kind.contains("blackhole") || kernel_kind == "BlackHole",
        "Unreachable" => kernel_kind.starts_with("unreachable") || kernel_kind == "Unreachable",
        "Prohibit" => kernel_kind.contains("prohibit") || kernel_kind == "Prohibit",
        "Local" => kernel_kind == "Local",
        // No entry: the packet goes to bpf_fib_lookup. That is only right
        // where the kernel has no gatewayed route the maps should carry.
        "Miss" | "Fib" => {
            kernel_kind != "Local" && !(kernel_kind == "Unicast" && kernel.gateway.is_some())
        }
        _ => false,
    }
}

/// Whether the datapath decides as the routing table itself: `routes` is
/// `ip -j route show match <address>` (covering routes, longest first), and
/// its first route is the table's answer.
pub fn agrees_with_table(maps: &Answer, routes: &serde_json::Value) -> bool {
    let Some(route) = routes.as_array().and_then(|r| r.first()) else {
        return matches!(maps.kind.as_str(), "Miss" | "Fib");
    };
    let kind = route["type"].as_str().unwrap_or("unicast");
    match maps.kind.as_str() {
        "Nexthop" | "Group" if kind == "unicast" => {
            let mut table: Vec<IpAddr> = match route["nexthops"].as_array() {
                Some(legs) => legs
                    .iter()
                    .filter_map(|l| l["gateway"].as_str()?.parse().ok())
                    .collect(),
                None => route["gateway"]
                    .as_str()
                    .and_then(|g| g.parse().ok())
                    .into_iter()
                    .collect(),
            };
            let mut ours: Vec<IpAddr> = maps.legs.iter().filter_map(|l| l.gateway).collect();
            table.sort();
            ours.sort();
            !ours.is_empty() && ours == table
        }
        "Blackhole" => kind == "blackhole",
        "Unreachable" => kind == "unreachable",
        "Prohibit" => kind == "prohibit",
        "Miss" | "Fib" => {
            kind == "unicast" && route.get("gateway").is_none() && route.get("nexthops").is_none()
        }
        _ => false,
    }
}
