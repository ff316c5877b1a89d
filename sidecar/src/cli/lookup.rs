//! `lookup <ip>`: what the maps do with an address, what the kernel says,
//! and whether they agree.

use std::{net::IpAddr, path::Path};

use anyhow::{bail, Context};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde::Serialize;

use crate::pinned_maps::{interface_name, Answer, PinnedMaps};

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
    pub kernel: KernelAnswer,
    pub agree: bool,
    pub note: String,
}

pub fn kernel_route_get(address: IpAddr) -> anyhow::Result<KernelAnswer> {
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
    let kernel = kernel_route_get(address)?;
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

/// `eth0 (ifindex 3)`, or the ifindex alone when it has no name here.
fn interface_text(name: Option<&str>, ifindex: u32) -> String {
    match name {
        Some(name) => format!("{name} (ifindex {ifindex})"),
        None => format!("ifindex {ifindex}"),
    }
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
    let kernel = &lookup.kernel;
    out.push_str(&format!(
        "kernel    {}{}{}\n",
        kernel.kind,
        kernel.ifindex.map_or(String::new(), |i| format!(
            " out {}",
            interface_text(kernel.interface.as_deref(), i)
        )),
        kernel
            .gateway
            .map_or(String::new(), |g| format!(" via {g}")),
    ));
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
