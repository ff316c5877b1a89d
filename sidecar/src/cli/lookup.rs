//! `lookup <ip>`: what the maps do with an address, the programmed prefix
//! they answer it from (the daemon's, over its query socket), what the
//! kernel says, and whether they agree.

use std::{net::IpAddr, path::Path};

use anyhow::{bail, Context};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde::Serialize;

use crate::{
    pinned_maps::{interface_name, Answer, PinnedMaps},
    query::{self, RouteMatch},
};

/// The kernel's answer (`ip route get`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelAnswer {
    pub kind: String,
    pub ifindex: Option<u32>,
    /// The egress interface's name in this namespace.
    pub interface: Option<String>,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Serialize)]
pub struct Lookup {
    pub address: IpAddr,
    /// The generation whose maps were read: the one the links run.
    pub generation: String,
    /// How it was found (`links`, or `newest` when no link is pinned), and
    /// anything to know about it.
    pub generation_source: crate::datapath::pins::LiveSource,
    pub generation_notes: Vec<String>,
    pub maps: Answer,
    /// The programmed prefix the maps answer from, as the daemon says (the
    /// maps hold actions per address, not prefixes).
    pub route: Option<RouteMatch>,
    /// Why `route` is missing: no daemon answered.
    pub route_note: Option<String>,
    pub kernel: KernelAnswer,
    pub agree: bool,
    pub note: String,
}

/// `ip route get <address>`, or with `oif` a VRF device's ifindex, `ip route
/// get <address> vrf <name>` (the lookup in the VRF's table).
pub fn kernel_route_get(address: IpAddr, oif: Option<u32>) -> anyhow::Result<KernelAnswer> {
    let mut message = RouteMessage::default();
    message.header.address_family = if address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    message.header.destination_prefix_length = if address.is_ipv4() { 32 } else { 128 };
    message
        .attributes
        .push(RouteAttribute::Destination(match address {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        }));
    if let Some(oif) = oif {
        message.attributes.push(RouteAttribute::Oif(oif));
    }
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut packet = NetlinkMessage::new(header, RouteNetlinkMessage::GetRoute(message).into());
    packet.finalize();
    let mut request = vec![0; packet.buffer_len()];
    packet.serialize(&mut request);

    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&request, 0)?;
    let mut buffer = vec![0; 65536];
    let len = socket.recv(&mut &mut buffer[..], 0)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buffer[..len])
        .context("decoding the kernel's answer")?;
    let route = match reply.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => route,
        NetlinkPayload::Error(e) => {
            let code = e.code.map(|c| -c.get()).unwrap_or(0);
            let kind = match code {
                libc::ENETUNREACH => "unreachable (no route)".to_string(),
                libc::EHOSTUNREACH => "unreachable".to_string(),
                libc::EACCES => "prohibit".to_string(),
                libc::EINVAL => "blackhole".to_string(),
                other => format!("error {other}"),
            };
            return Ok(KernelAnswer {
                kind,
                ifindex: None,
                interface: None,
                gateway: None,
            });
        }
        other => bail!("unexpected kernel answer: {other:?}"),
    };
    let mut answer = KernelAnswer {
        kind: format!("{:?}", route.header.kind),
        ifindex: None,
        interface: None,
        gateway: None,
    };
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Oif(i) => answer.ifindex = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => answer.gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => {
                answer.gateway = Some(IpAddr::V6(*a))
            }
            RouteAttribute::Via(RouteVia::Inet6(a)) => answer.gateway = Some(IpAddr::V6(*a)),
            _ => {}
        }
    }
    if route.header.kind == RouteType::Local {
        answer.kind = "Local".into();
    }
    answer.interface = answer.ifindex.and_then(interface_name);
    Ok(answer)
}

pub fn run(pin_dir: &Path, address: IpAddr) -> anyhow::Result<Lookup> {
    let pinned = PinnedMaps::open(pin_dir)?;
    let maps = pinned.answer(address)?;
    let (route, route_note) = match query::route_for(pin_dir, address) {
        Ok(route) => (Some(route), None),
        Err(error) => (None, Some(format!("{error:#}"))),
    };
    let kernel = kernel_route_get(address, None)?;
    let (agree, note) = match pf_common::special::passed_before_lookup(address) {
        // The maps are never consulted: whatever they hold does not matter.
        Some(counter) => (
            true,
            format!(
                "fast_path passes it to the kernel before any lookup: {}",
                counter.name()
            ),
        ),
        None => compare(&maps, &kernel),
    };
    Ok(Lookup {
        address,
        generation: pinned.generation.display().to_string(),
        generation_source: pinned.source,
        generation_notes: pinned.notes,
        maps,
        route,
        route_note,
        kernel,
        agree,
        note,
    })
}

/// Agreement rules: a forwarding answer agrees when the kernel's egress and
/// gateway are one of the legs (the kernel picks one leg of a multipath
/// route per flow); `Miss`/`Fib` always agree (the datapath asks the kernel);
/// blackhole, unreachable, prohibit and local must match the kernel's kind.
fn compare(maps: &Answer, kernel: &KernelAnswer) -> (bool, String) {
    match maps.kind.as_str() {
        "Miss" | "Fib" => (
            true,
            "the datapath asks bpf_fib_lookup, which is the kernel's answer".into(),
        ),
        "Nexthop" | "Group" => {
            let hit = maps
                .legs
                .iter()
                .any(|l| Some(l.ifindex) == kernel.ifindex && l.gateway == kernel.gateway);
            let note = if hit {
                "the kernel's egress is one of the legs"
            } else {
                "the kernel's egress is not among the legs"
            };
            (hit, note.into())
        }
        "Blackhole" => (
            kernel.kind.contains("blackhole") || kernel.kind == "BlackHole",
            String::new(),
        ),
        "Unreachable" => (
            kernel.kind.starts_with("unreachable") || kernel.kind == "Unreachable",
            String::new(),
        ),
        "Prohibit" => (
            kernel.kind.contains("prohibit") || kernel.kind == "Prohibit",
            String::new(),
        ),
        "Local" => (kernel.kind == "Local", String::new()),
        other => (false, format!("the maps hold an invalid action ({other})")),
    }
}

/// The programmed prefix line: what the daemon answered, or why nothing.
fn route_text(lookup: &Lookup) -> String {
    match (&lookup.route, &lookup.route_note) {
        (Some(route), _) => match (&route.prefix, &route.action) {
            (Some(prefix), action) => format!(
                "{prefix} ({}{}, from {})",
                action.as_deref().unwrap_or("?"),
                if route.deferred {
                    "; deferred, left to the kernel"
                } else {
                    ""
                },
                pf_control::controller::source_name(route.route_source)
            ),
            (None, _) => "none programmed: the datapath asks bpf_fib_lookup".to_string(),
        },
        (None, Some(note)) => format!("unknown: {note}"),
        (None, None) => "unknown".to_string(),
    }
}

/// `eth0 (ifindex 3)`, or the ifindex alone when it has no name here.
pub fn interface_text(name: Option<&str>, ifindex: u32) -> String {
    match name {
        Some(name) => format!("{name} (ifindex {ifindex})"),
        None => format!("ifindex {ifindex}"),
    }
}

/// The kernel's answer, in the words of `render`.
pub fn kernel_text(kernel: &KernelAnswer) -> String {
    format!(
        "{}{}{}",
        kernel.kind,
        kernel.ifindex.map_or(String::new(), |i| format!(
            " out {}",
            interface_text(kernel.interface.as_deref(), i)
        )),
        kernel
            .gateway
            .map_or(String::new(), |g| format!(" via {g}")),
    )
}

pub fn render(lookup: &Lookup) -> String {
    let mut out = format!(
        "address   {}\nmaps      {}: {} (generation {}{})\n",
        lookup.address,
        lookup.maps.kind,
        lookup.maps.action,
        lookup.generation,
        match lookup.generation_source {
            crate::datapath::pins::LiveSource::Links => ", the one the links run",
            crate::datapath::pins::LiveSource::Newest => ", the newest: no link is pinned",
        }
    );
    for note in &lookup.generation_notes {
        out.push_str(&format!("note      {note}\n"));
    }
    out.push_str(&format!("prefix    {}\n", route_text(lookup)));
    let multipath = lookup.maps.legs.len() > 1;
    for leg in &lookup.maps.legs {
        out.push_str(&format!(
            "  leg     out {}{}{} nexthop {} {} dmac {} smac {}{}{}\n",
            interface_text(leg.interface.as_deref(), leg.ifindex),
            leg.gateway
                .map_or(" on-link".to_string(), |g| format!(" via {g}")),
            if multipath {
                format!(" weight {}/256", leg.weight)
            } else {
                String::new()
            },
            leg.nexthop_id,
            if leg.resolved {
                "resolved"
            } else {
                "UNRESOLVED"
            },
            leg.dmac,
            leg.smac,
            if leg.tx_ifindex != leg.ifindex {
                format!(
                    " tx {}",
                    interface_text(leg.tx_interface.as_deref(), leg.tx_ifindex)
                )
            } else {
                String::new()
            },
            if leg.vlan_id != 0 {
                format!(" vlan {}", leg.vlan_id)
            } else {
                String::new()
            },
        ));
    }
    out.push_str(&format!("kernel    {}\n", kernel_text(&lookup.kernel)));
    out.push_str(&format!(
        "agree     {}{}\n",
        if lookup.agree { "yes" } else { "NO" },
        if lookup.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", lookup.note)
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{datapath::pins::LiveSource, pinned_maps::LegAnswer};

    fn leg(ifindex: u32, gateway: Option<&str>, weight: u32) -> LegAnswer {
        LegAnswer {
            ifindex,
            interface: Some(format!("r{ifindex}")),
            gateway: gateway.map(|g| g.parse().unwrap()),
            weight,
            nexthop_id: 2 + ifindex,
            resolved: true,
            dmac: "02:00:00:00:00:01".into(),
            smac: "02:00:00:00:00:02".into(),
            tx_ifindex: ifindex,
            tx_interface: Some(format!("r{ifindex}")),
            vlan_id: 0,
        }
    }

    fn lookup(address: &str, maps: Answer, route: Option<RouteMatch>, note: &str) -> Lookup {
        Lookup {
            address: address.parse().unwrap(),
            generation: "/sys/fs/bpf/pf/gen-1".into(),
            generation_source: LiveSource::Links,
            generation_notes: vec![],
            maps,
            route_note: route.is_none().then(|| "no daemon answered".to_string()),
            route,
            kernel: KernelAnswer {
                kind: "Unicast".into(),
                ifindex: Some(1),
                interface: Some("r1".into()),
                gateway: Some("198.51.100.2".parse().unwrap()),
            },
            agree: true,
            note: note.into(),
        }
    }

    #[test]
    fn a_single_nexthop_reads_without_a_weight_and_names_its_interface_and_prefix() {
        let maps = Answer {
            kind: "Nexthop".into(),
            action: "nexthop 3".into(),
            action_raw: 0x2000_0003,
            legs: vec![leg(1, Some("198.51.100.2"), 1)],
        };
        let route = RouteMatch {
            address: "203.0.113.10".parse().unwrap(),
            route_source: pf_control::rib::Source::Fpm,
            prefix: Some("203.0.113.0/24".parse().unwrap()),
            action: Some("nexthop 3".into()),
            deferred: false,
        };
        let text = render(&lookup("203.0.113.10", maps, Some(route), ""));
        assert_eq!(
            text,
            "address   203.0.113.10\n\
             maps      Nexthop: nexthop 3 (generation /sys/fs/bpf/pf/gen-1, the one the links run)\n\
             prefix    203.0.113.0/24 (nexthop 3, from fpm)\n  \
             leg     out r1 (ifindex 1) via 198.51.100.2 nexthop 3 resolved dmac 02:00:00:00:00:01 smac 02:00:00:00:00:02\n\
             kernel    Unicast out r1 (ifindex 1) via 198.51.100.2\n\
             agree     yes\n"
        );
    }

    #[test]
    fn legs_show_weights_only_when_there_are_several_and_on_link_without_a_gateway() {
        let maps = Answer {
            kind: "Group".into(),
            action: "group 1".into(),
            action_raw: 0x4000_0001,
            legs: vec![leg(1, Some("198.51.100.2"), 128), leg(2, None, 128)],
        };
        let text = render(&lookup("203.0.113.10", maps, None, ""));
        assert!(
            text.contains("out r1 (ifindex 1) via 198.51.100.2 weight 128/256 nexthop 3"),
            "{text}"
        );
        assert!(
            text.contains("out r2 (ifindex 2) on-link weight 128/256 nexthop 4"),
            "{text}"
        );
        assert!(
            text.contains("prefix    unknown: no daemon answered\n"),
            "{text}"
        );
        assert!(!text.contains(" - "), "{text}");
    }

    #[test]
    fn json_carries_the_action_decoded_beside_the_raw_value() {
        let maps = Answer {
            kind: "Blackhole".into(),
            action: "blackhole".into(),
            action_raw: 0x6000_0000,
            legs: vec![],
        };
        let json = serde_json::to_value(lookup("192.0.2.1", maps, None, "")).unwrap();
        assert_eq!(json["maps"]["action"], "blackhole");
        assert_eq!(json["maps"]["action_raw"], 0x6000_0000u32);
        assert!(json["route"].is_null());
    }
}
