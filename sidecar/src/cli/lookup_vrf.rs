//! `lookup --vrf <name> <ip>`: what the datapath does with an address for
//! frames that arrive in a VRF. The route cache holds the main table, so
//! the answer is the kernel's table of the VRF, reached by `bpf_fib_lookup`
//! from the VRF's ports, provided `INGRESS` marks each of them; this checks
//! that it does.

use std::{net::IpAddr, path::Path};

use anyhow::{bail, Context};
use pf_control::{
    fast_maps::FastMap,
    programmer::{vrf_ports, LinkInfo},
};
use serde::Serialize;

use crate::{
    cli::{
        diff::ingress_text,
        lookup::{interface_text, kernel_route_get, kernel_text, KernelAnswer},
    },
    pinned_maps::{interface_name, PinnedMaps},
    source::kernel,
};

/// A port whose frames can arrive in the VRF: enslaved to it, the
/// physical parent of a VLAN enslaved to it, or a member of a bond or
/// bridge that is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrfPort {
    pub ifindex: u32,
    pub interface: Option<String>,
    /// `fast_path` runs on it (a pinned link of this daemon's).
    pub attached: bool,
    /// The `INGRESS` bits the kernel's VRF membership calls for.
    pub expected: u32,
    /// The `INGRESS` bits the maps hold (`None`: beyond the map, or a
    /// generation without one).
    pub flags: Option<u32>,
    pub datapath: String,
}

#[derive(Debug, Serialize)]
pub struct VrfLookup {
    pub address: IpAddr,
    pub vrf: String,
    pub vrf_ifindex: u32,
    pub table: u32,
    pub ports: Vec<VrfPort>,
    /// `ip route get <address> vrf <name>`.
    pub kernel: KernelAnswer,
    /// Every port of the VRF is marked so that the datapath never answers
    /// its frames from the route cache.
    pub agree: bool,
    pub note: String,
}

/// The kernel's links, through the daemon's decoder.
fn kernel_links() -> anyhow::Result<FastMap<u32, LinkInfo>> {
    let mut links = FastMap::default();
    kernel::dump_all(&mut |message| {
        if let Ok(pf_wire::Decoded::Change(pf_control::change::Change::Link(
            _,
            ifindex,
            Some(link),
        ))) = pf_wire::decode(message)
        {
            links.insert(ifindex, link);
        }
    })
    .context("dumping the kernel's links over netlink")?;
    Ok(links)
}

pub fn run(pin_dir: &Path, address: IpAddr, vrf: &str) -> anyhow::Result<VrfLookup> {
    let pinned = PinnedMaps::open(pin_dir)?;
    let vrf_ifindex = crate::attach::ifindex(vrf)?;
    let links = kernel_links()?;
    let Some(table) = links.get(&vrf_ifindex).and_then(|l| l.vrf_table) else {
        bail!("{vrf} is not a VRF device");
    };
    let mut ports = Vec::new();
    let mut members: Vec<(u32, u32)> = vrf_ports(&links, vrf_ifindex).into_iter().collect();
    members.sort_unstable();
    for (ifindex, expected) in members {
        let attached = pinned
            .links
            .iter()
            .any(|l| l.ifindex == ifindex && Some(l.prog_id) == pinned.fast_path_id);
        let flags = pinned.ingress(ifindex)?;
        let datapath = match flags {
            Some(flags) => ingress_text(flags),
            None => {
                "unknown: beyond INGRESS (its frames go to the kernel) or no INGRESS map".to_owned()
            }
        };
        ports.push(VrfPort {
            ifindex,
            interface: interface_name(ifindex),
            attached,
            expected,
            flags,
            datapath,
        });
    }
    let kernel = kernel_route_get(address, Some(vrf_ifindex))?;
    let wrong: Vec<String> = ports
        .iter()
        .filter(|p| p.attached && p.flags.is_some_and(|f| f != p.expected))
        .map(|p| interface_text(p.interface.as_deref(), p.ifindex))
        .collect();
    let (agree, note) = if !wrong.is_empty() {
        (
            false,
            format!(
                "INGRESS marks {} otherwise than the kernel's VRF membership: the datapath may answer its frames from the wrong table",
                wrong.join(", ")
            ),
        )
    } else if !ports.iter().any(|p| p.attached) {
        (
            true,
            "fast_path runs on none of its ports: the kernel routes all of its frames".to_owned(),
        )
    } else {
        (
            true,
            format!("frames from its ports never meet the route cache: a port in the VRF is answered by bpf_fib_lookup in table {table}, which is the kernel's answer; a port the datapath cannot place (a VLAN in another VRF than its own, a member of a bond or bridge) goes to the kernel"),
        )
    };
    Ok(VrfLookup {
        address,
        vrf: vrf.to_owned(),
        vrf_ifindex,
        table,
        ports,
        kernel,
        agree,
        note,
    })
}

pub fn render(lookup: &VrfLookup) -> String {
    let mut out = format!(
        "address   {}\nvrf       {} (table {})\n",
        lookup.address,
        interface_text(Some(&lookup.vrf), lookup.vrf_ifindex),
        lookup.table
    );
    if lookup.ports.is_empty() {
        out.push_str("ports     none enslaved\n");
    }
    for port in &lookup.ports {
        out.push_str(&format!(
            "  port    {} {}: {}\n",
            interface_text(port.interface.as_deref(), port.ifindex),
            if port.attached {
                "attached"
            } else {
                "not attached"
            },
            port.datapath
        ));
    }
    out.push_str(&format!("kernel    {}\n", kernel_text(&lookup.kernel)));
    out.push_str(&format!(
        "agree     {} ({})\n",
        if lookup.agree { "yes" } else { "NO" },
        lookup.note
    ));
    out
}
