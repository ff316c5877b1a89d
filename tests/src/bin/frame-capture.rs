//! `frame-capture <interface> <count> <timeout-ms> [icmp]`: the frames an
//! interface receives, as they were on the wire, one hex line each; with
//! `icmp`, only IPv4 ICMP frames (behind any tags) are printed and counted.
//!
//! The kernel-matrix guests run it on the far side of a link to check what
//! the fast path sent byte by byte. A receiving kernel moves a VLAN tag out
//! of the frame into metadata before packet sockets see it, so the tag is
//! put back from `PACKET_AUXDATA` (TPID and TCI), as tcpdump does. Frames
//! the interface sent are skipped. Stops after `count` frames or the
//! timeout, whichever comes first; exits 0 either way (the judge counts).

use std::{ffi::CString, mem::size_of, time::Instant};

const ETH_P_ALL: u16 = 0x0003;
const PACKET_OUTGOING: u8 = 4;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const SNAP: usize = 256;

/// Room for control messages, aligned as `cmsghdr` needs.
#[repr(C, align(8))]
struct Control([u8; 256]);

fn fail(what: &str) -> ! {
    eprintln!("frame-capture: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(2);
}

/// The frame with the tag from `aux` back in place after the MACs.
fn on_the_wire(frame: &[u8], aux: Option<&libc::tpacket_auxdata>) -> Vec<u8> {
    let Some(aux) = aux.filter(|a| a.tp_status & TP_STATUS_VLAN_VALID != 0) else {
        return frame.to_vec();
    };
    if frame.len() < 12 {
        return frame.to_vec();
    }
    let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
        aux.tp_vlan_tpid
    } else {
        0x8100
    };
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&tpid.to_be_bytes());
    out.extend_from_slice(&aux.tp_vlan_tci.to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}

/// IPv4 carrying ICMP, behind up to two VLAN tags.
fn is_ipv4_icmp(frame: &[u8]) -> bool {
    let mut at = 12;
    for _ in 0..2 {
        match frame.get(at..at + 2) {
            Some([0x81, 0x00]) | Some([0x88, 0xa8]) => at += 4,
            _ => break,
        }
    }
    frame.get(at..at + 2) == Some(&[0x08, 0x00]) && frame.get(at + 2 + 9) == Some(&1)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 && !(args.len() == 5 && args[4] == "icmp") {
        eprintln!("usage: frame-capture <interface> <count> <timeout-ms> [icmp]");
        std::process::exit(2);
    }
    let icmp_only = args.len() == 5;
    let (count, timeout_ms): (usize, u64) = match (args[2].parse(), args[3].parse()) {
        (Ok(c), Ok(t)) => (c, t),
        _ => {
            eprintln!("frame-capture: count and timeout are numbers");
            std::process::exit(2);
        }
    };
    let name = CString::new(args[1].as_str()).unwrap_or_else(|_| fail("interface name"));
    // SAFETY: plain libc calls on a socket this function owns; every buffer
    // passed is valid for the length given.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            fail("no such interface");
        }
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETH_P_ALL.to_be()),
        );
        if fd < 0 {
            fail("socket");
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = ifindex as i32;
        if libc::bind(
            fd,
            &addr as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            fail("bind");
        }
        let on: i32 = 1;
        if libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            &on as *const _ as *const libc::c_void,
            size_of::<i32>() as u32,
        ) != 0
        {
            fail("PACKET_AUXDATA");
        }
        // Ready: the caller starts its traffic after this line.
        println!("capturing on {}", args[1]);
        let start = Instant::now();
        let mut seen = 0;
        while seen < count {
            let left = timeout_ms.saturating_sub(start.elapsed().as_millis() as u64);
            if left == 0 {
                break;
            }
            let mut poll = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut poll, 1, left.min(i32::MAX as u64) as i32) <= 0 {
                continue;
            }
            let mut buf = [0u8; SNAP];
            let mut control = Control([0; 256]);
            let mut from: libc::sockaddr_ll = std::mem::zeroed();
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = &mut from as *mut _ as *mut libc::c_void;
            msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = control.0.len() as _;
            let len = libc::recvmsg(fd, &mut msg, libc::MSG_TRUNC);
            if len < 0 {
                fail("recvmsg");
            }
            if from.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            let mut aux = None;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_PACKET
                    && (*cmsg).cmsg_type == libc::PACKET_AUXDATA
                {
                    aux = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg) as *const libc::tpacket_auxdata
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            let captured = (len as usize).min(SNAP);
            let frame = on_the_wire(&buf[..captured], aux.as_ref());
            if icmp_only && !is_ipv4_icmp(&frame) {
                continue;
            }
            let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
            println!("frame {hex}");
            seen += 1;
        }
        libc::close(fd);
    }
}
