//! Links as rtnetlink and ethtool show them: kind, state, XDP programs, the
//! veth peer (found in its own network namespace when that has a name under
//! /run/netns or belongs to a process), and GRO.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp, XdpAttached},
    nsid::{NsidAttribute, NsidMessage},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::Kernel;

/// XDP programs on a link, per mode (program ids).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpPrograms {
    pub native: Option<u32>,
    pub generic: Option<u32>,
    pub offloaded: Option<u32>,
}

impl XdpPrograms {
    fn from_attributes(attrs: &[LinkXdp]) -> Self {
        let mut programs = Self::default();
        let mut single: Option<XdpAttached> = None;
        let mut single_id = None;
        for attr in attrs {
            match attr {
                LinkXdp::Attached(mode) => single = Some(*mode),
                LinkXdp::ProgId(id) if *id != 0 => single_id = Some(*id),
                LinkXdp::DrvProgId(id) if *id != 0 => programs.native = Some(*id),
                LinkXdp::SkbProgId(id) if *id != 0 => programs.generic = Some(*id),
                LinkXdp::HwProgId(id) if *id != 0 => programs.offloaded = Some(*id),
                _ => {}
            }
        }
        // Kernels report one attached mode as ATTACHED + PROG_ID.
        match (single, single_id) {
            (Some(XdpAttached::Driver), Some(id)) => programs.native = programs.native.or(Some(id)),
            (Some(XdpAttached::SocketBuffer), Some(id)) => {
                programs.generic = programs.generic.or(Some(id))
            }
            (Some(XdpAttached::Hardware), Some(id)) => {
                programs.offloaded = programs.offloaded.or(Some(id))
            }
            _ => {}
        }
        programs
    }

    pub fn any(&self) -> bool {
        self.native.is_some() || self.generic.is_some() || self.offloaded.is_some()
    }
}

/// One link as rtnetlink reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `veth`, `vlan`, `bond`, ... (`None` for plain devices).
    pub kind: Option<String>,
    /// IFF_UP.
    pub up: bool,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: the peer's namespace, when it is not this one.
    pub link_netnsid: Option<i32>,
    pub xdp: XdpPrograms,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Self {
        let mut link = Self {
            index: message.header.index,
            up: message.header.flags.contains(LinkFlags::Up),
            ..Default::default()
        };
        for attr in &message.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Link(index) => link.link = Some(*index),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
                LinkAttribute::Xdp(xdp) => link.xdp = XdpPrograms::from_attributes(xdp),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(match kind {
                                InfoKind::Veth => "veth".to_string(),
                                other => other.to_string(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

/// Sends one rtnetlink request and collects the replies (all of a dump,
/// or the single answer).
fn rtnl(request: RouteNetlinkMessage, dump: bool) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(request));
    packet.finalize();
    let mut bytes = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut bytes);
    socket.send(&bytes, 0)?;

    let mut replies = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let len = socket.recv(&mut &mut buffer[..], 0)?;
        for message in pf_control::netlink::split_netlink_messages(&buffer[..len]) {
            let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(message)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            match parsed.payload {
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                NetlinkPayload::Error(_) => return Ok(replies),
                NetlinkPayload::InnerMessage(inner) => {
                    replies.push(inner);
                    if !dump {
                        return Ok(replies);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The link with this ifindex in the calling thread's namespace.
pub fn link_by_index(index: u32) -> io::Result<Option<Link>> {
    let mut message = LinkMessage::default();
    message.header.index = index;
    match rtnl(RouteNetlinkMessage::GetLink(message), false) {
        Ok(replies) => Ok(replies.iter().find_map(|r| match r {
            RouteNetlinkMessage::NewLink(m) => Some(Link::from_message(m)),
            _ => None,
        })),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The link with this name in the calling thread's namespace.
pub fn link_by_name(name: &str) -> io::Result<Option<Link>> {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return Ok(None);
    };
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Ok(None);
    }
    link_by_index(index)
}

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union.
#[repr(C)]
struct IfReqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _rest: [u8; 16],
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GGRO: u32 = 0x2b;

/// Whether GRO is on (`ethtool -k NAME`'s generic-receive-offload), in the
/// calling thread's namespace.
pub fn gro_enabled(name: &str) -> io::Result<bool> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GGRO,
        data: 0,
    };
    let mut request = IfReqData {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _rest: [0; 16],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at a live
    // ethtool_value, as the ETHTOOL_GGRO command expects.
    let rc = unsafe {
        libc::ioctl(
            socket.as_raw_fd(),
            SIOCETHTOOL as _,
            &mut request as *mut IfReqData,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data != 0)
}

/// A veth peer and where it was found.
#[derive(Debug, Clone)]
pub struct Peer {
    pub link: Link,
    /// GRO on the peer; `None` if ethtool could not say.
    pub gro: Option<bool>,
    /// The namespace it lives in: `None` for this one, else a description
    /// (`netns lab-r`, `the namespace of pid 123`).
    pub namespace: Option<String>,
}

/// Whether a veth's peer takes the frames XDP redirects to the veth: a
/// veth hands them to its peer's NAPI context, which exists while the peer
/// is up and has an XDP program in native mode or, from Linux 5.13, GRO on.
/// Otherwise each frame is dropped, silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reception {
    pub receives: bool,
    /// `xdp`, `gro`, `none` or `down`.
    pub value: &'static str,
    /// Why, as the end of a sentence about the peer ("has GRO on").
    pub why: String,
}

impl Peer {
    pub fn reception(&self, kernel: &Kernel) -> Reception {
        let gro = self.gro == Some(true);
        let (receives, value, why) = if !self.link.up {
            (false, "down", "is down".to_string())
        } else if let Some(id) = self.link.xdp.native {
            (
                true,
                "xdp",
                format!("has an XDP program in native mode (id {id})"),
            )
        } else if gro && kernel.veth_gro_receives_redirects() {
            (true, "gro", "has GRO on".to_string())
        } else if gro {
            (
                false,
                "none",
                format!(
                    "has GRO on, which lets a veth receive redirected frames only from Linux 5.13 ({} here), and no XDP program in native mode",
                    kernel.version
                ),
            )
        } else {
            let generic = if self.link.xdp.generic.is_some() {
                " (its generic-mode program does not count)"
            } else {
                ""
            };
            (
                false,
                "none",
                format!("has neither an XDP program in native mode nor GRO{generic}"),
            )
        };
        Reception {
            receives,
            value,
            why,
        }
    }
}

/// For a veth whose peer verifiably cannot take redirected frames, a
/// warning that says so (for `run` and `attach`; `feasibility` says more).
pub fn veth_redirect_warning(ifname: &str, kernel: &Kernel) -> Option<String> {
    let link = link_by_name(ifname).ok()??;
    if !link.is_veth() {
        return None;
    }
    let PeerLookup::Found(peer) = veth_peer(&link).ok()? else {
        return None;
    };
    let reception = peer.reception(kernel);
    (!reception.receives).then(|| {
        format!(
            "{ifname} is a veth whose peer {} {}: frames fast_path redirects out of {ifname} from a port in native mode are dropped until the peer has an XDP program in native mode{}; see `pf-sidecar feasibility {ifname}`",
            peer.link.name,
            reception.why,
            if kernel.veth_gro_receives_redirects() {
                " or GRO on"
            } else {
                ""
            }
        )
    })
}

/// What the search for a veth's peer found.
#[derive(Debug, Clone)]
pub enum PeerLookup {
    Found(Peer),
    /// The peer lives in namespace `nsid`, which has no name under
    /// /run/netns and belongs to no process this one can see.
    Unreachable {
        nsid: i32,
        ifindex: u32,
    },
    /// The interface has no peer index (not a veth, or the peer is gone).
    None,
}

fn peer_state(index: u32, namespace: Option<String>) -> io::Result<Option<Peer>> {
    let Some(link) = link_by_index(index)? else {
        return Ok(None);
    };
    let gro = gro_enabled(&link.name).ok();
    Ok(Some(Peer {
        link,
        gro,
        namespace,
    }))
}

/// (device, inode) of a namespace file: equal for the same namespace.
fn ns_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Network namespaces this process can open, with a description each:
/// the named ones first, then those of processes. Each namespace once.
fn candidate_namespaces() -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut seen = std::collections::HashSet::new();
    if let Some(own) = ns_identity(Path::new("/proc/thread-self/ns/net")) {
        seen.insert(own);
    }
    let mut push = |path: PathBuf, what: String| {
        if let Some(id) = ns_identity(&path) {
            if seen.insert(id) {
                found.push((path, what));
            }
        }
    };
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            push(Path::new("/run/netns").join(&name), format!("netns {name}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        let mut pids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        for pid in pids {
            let what = if pid == 1 {
                "the initial namespace (pid 1)".to_string()
            } else {
                format!("the namespace of pid {pid}")
            };
            push(PathBuf::from(format!("/proc/{pid}/ns/net")), what);
        }
    }
    found
}

/// The nsid this namespace has given the namespace of `file`, if any.
fn nsid_of(file: &std::fs::File) -> io::Result<Option<i32>> {
    let mut message = NsidMessage::default();
    message
        .attributes
        .push(NsidAttribute::Fd(file.as_raw_fd() as u32));
    let replies = rtnl(RouteNetlinkMessage::GetNsId(message), false)?;
    Ok(replies.iter().find_map(|r| match r {
        RouteNetlinkMessage::NewNsId(m) => m.attributes.iter().find_map(|a| match a {
            NsidAttribute::Id(id) if *id >= 0 => Some(*id),
            _ => None,
        }),
        _ => None,
    }))
}

/// Runs `f` on a thread that has entered the namespace of `file`.
fn in_namespace<T: Send>(
    file: &std::fs::File,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on this thread only; it ends with the scope.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// Finds the peer of a veth: here, or in the namespace its nsid names.
pub fn veth_peer(link: &Link) -> io::Result<PeerLookup> {
    let Some(peer_index) = link.link.filter(|&i| i != 0) else {
        return Ok(PeerLookup::None);
    };
    let Some(nsid) = link.link_netnsid else {
        return Ok(match peer_state(peer_index, None)? {
            Some(peer) => PeerLookup::Found(peer),
            None => PeerLookup::None,
        });
    };
    for (path, what) in candidate_namespaces() {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        // A namespace that cannot say its nsid (one being torn down as a
        // process exits) is not the peer's: the peer holds its own alive.
        if nsid_of(&file).ok().flatten() != Some(nsid) {
            continue;
        }
        return Ok(
            match in_namespace(&file, || peer_state(peer_index, Some(what)))? {
                Some(peer) => PeerLookup::Found(peer),
                None => PeerLookup::None,
            },
        );
    }
    Ok(PeerLookup::Unreachable {
        nsid,
        ifindex: peer_index,
    })
}

/// Takes the XDP program of one mode (`XDP_FLAGS_*_MODE` in `flags`) off
/// `ifindex` over rtnetlink, as `ip link set dev X xdp off` does.
pub fn detach_xdp(ifindex: u32, flags: u32) -> io::Result<()> {
    let mut message = LinkMessage::default();
    message.header.index = ifindex;
    message.attributes.push(LinkAttribute::Xdp(vec![
        LinkXdp::Fd(-1),
        LinkXdp::Flags(flags),
    ]));
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::SetLink(message)),
    );
    packet.finalize();
    let mut bytes = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    let mut buffer = vec![0u8; 8192];
    let len = socket.recv(&mut &mut buffer[..], 0)?;
    for message in pf_control::netlink::split_netlink_messages(&buffer[..len]) {
        if let Ok(parsed) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(message) {
            if let NetlinkPayload::Error(e) = parsed.payload {
                if e.code.is_some() {
                    return Err(e.to_io());
                }
            }
        }
    }
    Ok(())
}
