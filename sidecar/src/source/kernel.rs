//! The kernel over rtnetlink: dump, then follow notifications.
//!
//! Runs on its own thread with blocking sockets and hands whole netlink
//! messages (bytes) to the daemon over a bounded channel. If the daemon falls
//! behind, the channel fills, the socket buffer fills, the kernel reports
//! ENOBUFS, and the source resynchronises:
//!
//! 1. open a new subscription socket (notifications from now on queue there),
//! 2. dump everything on a separate socket between `ResyncStart` and
//!    `ResyncDone` (the consumer marks and sweeps around it),
//! 3. then deliver the queued notifications, which are newer than or equal
//!    to the dump, in order.

use std::{io, thread, time::Duration};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::{
    address::AddressMessage, link::LinkMessage, neighbour::NeighbourMessage, route::RouteMessage,
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tokio::sync::mpsc;

use pf_control::netlink::split_netlink_messages;

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTNLGRP_NEXTHOP: u32 = 32;
const GROUPS: [u32; 7] = [
    RTNLGRP_LINK,
    RTNLGRP_NEIGH,
    RTNLGRP_IPV4_IFADDR,
    RTNLGRP_IPV4_ROUTE,
    RTNLGRP_IPV6_IFADDR,
    RTNLGRP_IPV6_ROUTE,
    RTNLGRP_NEXTHOP,
];

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// netlink-packet-route has no nexthop-object messages; the request is a
/// header plus an 8-byte `struct nhmsg` of zeros.
const RTM_GETNEXTHOP: u16 = 106;

#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// Receive buffer of the subscription socket (bytes).
    pub receive_buffer: usize,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            receive_buffer: 8 << 20,
        }
    }
}

pub use pf_control::controller::KernelItem;

/// Starts the source thread. It ends when the receiver is dropped.
pub fn spawn(config: KernelConfig, feed: mpsc::Sender<KernelItem>) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("kernel-source".into())
        .spawn(move || run(config, feed))
        .expect("spawn the kernel source thread")
}

fn run(config: KernelConfig, feed: mpsc::Sender<KernelItem>) {
    let mut reason = "start".to_string();
    loop {
        match follow(&config, &feed, &reason) {
            Ok(Stop::ReceiverGone) => return,
            Ok(Stop::Overrun) => reason = "ENOBUFS (notifications lost)".to_string(),
            Err(err) => {
                if feed
                    .blocking_send(KernelItem::Failed {
                        error: err.to_string(),
                    })
                    .is_err()
                {
                    return;
                }
                reason = format!("after error: {err}");
                thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

enum Stop {
    ReceiverGone,
    Overrun,
}

fn follow(
    config: &KernelConfig,
    feed: &mpsc::Sender<KernelItem>,
    reason: &str,
) -> io::Result<Stop> {
    let mut subscription = Socket::new(NETLINK_ROUTE)?;
    subscription.bind_auto()?;
    subscription.set_rx_buf_sz(config.receive_buffer)?;
    for group in GROUPS {
        subscription.add_membership(group)?;
    }

    let send = |item| feed.blocking_send(item).is_ok();
    if !send(KernelItem::ResyncStart {
        reason: reason.to_string(),
    }) {
        return Ok(Stop::ReceiverGone);
    }
    let mut gone = false;
    dump_all(&mut |message| {
        // Decoded here, on the source's thread, not in the control loop.
        if let Some(item) = pf_wire::kernel_item(message) {
            if !gone && !send(item) {
                gone = true;
            }
        }
    })?;
    if gone || !send(KernelItem::ResyncDone) {
        return Ok(Stop::ReceiverGone);
    }

    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let len = match subscription.recv(&mut &mut buffer[..], 0) {
            Ok(len) => len,
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Stop::Overrun),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        for message in split_netlink_messages(&buffer[..len]) {
            let Some(item) = pf_wire::kernel_item(message) else {
                continue;
            };
            if !send(item) {
                return Ok(Stop::ReceiverGone);
            }
        }
    }
}

fn request(message: RouteNetlinkMessage) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(header, message.into());
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

fn nexthop_dump_request() -> Vec<u8> {
    let len: u32 = 16 + 8;
    let mut bytes = Vec::with_capacity(len as usize);
    bytes.extend_from_slice(&len.to_ne_bytes());
    bytes.extend_from_slice(&RTM_GETNEXTHOP.to_ne_bytes());
    bytes.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    bytes.extend_from_slice(&[0; 8]); // sequence, port id
    bytes.extend_from_slice(&[0; 8]); // struct nhmsg
    bytes
}

/// Dumps links, addresses, neighbours, nexthop objects and routes, in the
/// order that lets each refer to the ones before it.
pub fn dump_all(sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let route = |family| {
        let mut message = RouteMessage::default();
        message.header.address_family = family;
        request(RouteNetlinkMessage::GetRoute(message))
    };
    let requests = [
        request(RouteNetlinkMessage::GetLink(LinkMessage::default())),
        request(RouteNetlinkMessage::GetAddress(AddressMessage::default())),
        request(RouteNetlinkMessage::GetNeighbour(
            NeighbourMessage::default(),
        )),
        nexthop_dump_request(),
        route(AddressFamily::Inet),
        route(AddressFamily::Inet6),
    ];
    let mut buffer = vec![0u8; 1 << 20];
    for (i, req) in requests.iter().enumerate() {
        socket.send(req, 0)?;
        'dump: loop {
            let len = socket.recv(&mut &mut buffer[..], 0)?;
            for message in split_netlink_messages(&buffer[..len]) {
                match u16::from_ne_bytes([message[4], message[5]]) {
                    NLMSG_DONE => break 'dump,
                    NLMSG_ERROR if message.len() >= 20 => {
                        let code = i32::from_ne_bytes([
                            message[16],
                            message[17],
                            message[18],
                            message[19],
                        ]);
                        if code == 0 {
                            break 'dump;
                        }
                        // Kernels without nexthop objects refuse that dump.
                        let is_nexthop_dump = i == 3;
                        if is_nexthop_dump && (code == -libc::EINVAL || code == -libc::EOPNOTSUPP) {
                            break 'dump;
                        }
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    _ => sink(message),
                }
            }
        }
    }
    Ok(())
}
