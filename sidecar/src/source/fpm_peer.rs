//! Who may open an FPM session: the peer's address, and for a loopback
//! peer the user that owns its socket.
//!
//! Over loopback anyone on the router can connect, so the address says
//! nothing. The kernel knows who owns the other end: `sock_diag` answers
//! an exact query for the peer's TCP socket (its addresses and ports) with
//! the socket's uid (`inet_diag_msg.idiag_uid`). Only uids in
//! `fpm.allowed_users` (FRR's `frr` user and root by default) are admitted.
//! The answer must describe an established socket: a peer that closed has
//! a time-wait socket, which the kernel reports as uid 0.
//!
//! For a peer beyond loopback no uid can be known; `fpm.allow` lists the
//! addresses admitted.

use std::{
    ffi::CString,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, TCP_ESTABLISHED},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};

/// `fpm.allowed_users` resolved to uids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedUsers {
    /// Sorted, without duplicates.
    pub uids: Vec<u32>,
    /// Names that name no user on this system (left out).
    pub missing: Vec<String>,
}

impl AllowedUsers {
    pub fn contains(&self, uid: u32) -> bool {
        self.uids.binary_search(&uid).is_ok()
    }
}

/// Resolves `fpm.allowed_users`: each entry a user name, looked up with
/// `lookup` (the system's user database in the daemon, [`uid_of_user`]),
/// or a uid written in digits. A name that resolves to nothing is simply
/// absent (a router without FRR has no `frr` user).
pub fn resolve_users(
    entries: &[String],
    lookup: impl Fn(&str) -> Option<u32>,
) -> Result<AllowedUsers, String> {
    let mut allowed = AllowedUsers::default();
    for entry in entries {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("an empty user name".into());
        }
        if entry.bytes().all(|b| b.is_ascii_digit()) {
            let uid = entry
                .parse()
                .map_err(|_| format!("uid {entry} is out of range"))?;
            allowed.uids.push(uid);
        } else {
            match lookup(entry) {
                Some(uid) => allowed.uids.push(uid),
                // uid 0 is root whatever the database says (a minimal
                // system may have no /etc/passwd at all).
                None if entry == "root" => allowed.uids.push(0),
                None => allowed.missing.push(entry.to_owned()),
            }
        }
    }
    allowed.uids.sort_unstable();
    allowed.uids.dedup();
    Ok(allowed)
}

/// The uid of user `name` in the system's user database (`getpwnam_r`).
pub fn uid_of_user(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    let mut buffer = vec![0u8; 4096];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids).
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and the buffer's
        // length is passed with it.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buffer.len() < 1 << 20 {
            buffer.resize(buffer.len() * 2, 0);
            continue;
        }
        return (rc == 0 && !result.is_null()).then_some(entry.pw_uid);
    }
}

/// What the kernel says about the peer's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSocket {
    pub uid: u32,
    /// The TCP state (1 is established).
    pub state: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error("sock_diag: {0}")]
    Io(String),
    #[error("sock_diag found no such socket (errno {0})")]
    NotFound(i32),
    #[error("sock_diag answered something unexpected: {0}")]
    Unexpected(String),
}

/// The `sock_diag` request for the socket at the other end of a TCP
/// connection from `peer` to `local`: its source is `peer`, its
/// destination `local`. An IPv4 peer seen through an IPv6 listener
/// (`::ffff:a.b.c.d`) is asked for as IPv4, where the kernel keeps it.
pub fn diag_request(peer: SocketAddr, local: SocketAddr, sequence: u32) -> Vec<u8> {
    let (source, destination) = (peer.ip().to_canonical(), local.ip().to_canonical());
    let family = if source.is_ipv4() { AF_INET } else { AF_INET6 };
    let (source, destination) = match (source, destination) {
        (IpAddr::V4(s), IpAddr::V6(d)) => {
            (IpAddr::V4(s), d.to_ipv4().map_or(IpAddr::V6(d), IpAddr::V4))
        }
        (IpAddr::V6(s), IpAddr::V4(d)) => (IpAddr::V6(s), IpAddr::V6(d.to_ipv6_mapped())),
        pair => pair,
    };
    let request = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::all(),
        socket_id: SocketId {
            source_port: peer.port(),
            destination_port: local.port(),
            source_address: source,
            destination_address: destination,
            interface_id: 0,
            // INET_DIAG_NOCOOKIE: find the socket by its addresses alone.
            cookie: [0xff; 8],
        },
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = sequence;
    let mut message = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Reads the kernel's answer to [`diag_request`].
pub fn parse_diag_reply(bytes: &[u8], sequence: u32) -> Result<PeerSocket, OwnerError> {
    let message = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
        .map_err(|e| OwnerError::Unexpected(e.to_string()))?;
    if message.header.sequence_number != sequence {
        return Err(OwnerError::Unexpected(format!(
            "sequence {} for request {sequence}",
            message.header.sequence_number
        )));
    }
    match message.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => Ok(PeerSocket {
            uid: response.header.uid,
            state: response.header.state,
        }),
        NetlinkPayload::Error(error) => {
            Err(OwnerError::NotFound(error.code.map_or(0, |c| -c.get())))
        }
        other => Err(OwnerError::Unexpected(format!("{other:?}"))),
    }
}

/// Asks the kernel (in the caller's network namespace) who owns the socket
/// at the other end of the connection from `peer` to `local`.
pub fn peer_socket(peer: SocketAddr, local: SocketAddr) -> Result<PeerSocket, OwnerError> {
    use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};
    use std::os::fd::AsRawFd;

    let io = |e: std::io::Error| OwnerError::Io(e.to_string());
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(io)?;
    socket.bind_auto().map_err(io)?;
    socket.connect(&NetlinkAddr::new(0, 0)).map_err(io)?;
    // The kernel answers at once; a bound keeps a kernel oddity from ever
    // holding the listener.
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: a valid socket and a timeval of the size passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let sequence = 1;
    socket
        .send(&diag_request(peer, local, sequence), 0)
        .map_err(io)?;
    let mut buffer = vec![0u8; 8192];
    let len = socket.recv(&mut &mut buffer[..], 0).map_err(io)?;
    parse_diag_reply(&buffer[..len], sequence)
}

/// Why a connection was refused. The label names the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The peer's address is not allowed.
    Address,
    /// A loopback peer whose socket's owner is not an allowed user, or
    /// whose owner could not be established.
    User,
    /// A session is already open.
    Busy,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::Address, Refusal::User, Refusal::Busy];

    pub const fn label(self) -> &'static str {
        match self {
            Refusal::Address => "address",
            Refusal::User => "user",
            Refusal::Busy => "busy",
        }
    }
}

/// Who may connect: the listener's rules.
#[derive(Debug, Clone)]
pub struct Admission {
    pub listen: SocketAddr,
    /// `fpm.allow`: addresses of peers beyond loopback.
    pub allow: Vec<IpAddr>,
    pub users: AllowedUsers,
}

/// The listener's decision about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; the uid when the peer is on loopback.
    Admit {
        uid: Option<u32>,
    },
    Refuse {
        why: Refusal,
        detail: String,
    },
}

impl Admission {
    /// Decides about a connection from `peer`; `owner` asks the kernel
    /// about the peer's socket and is called for loopback peers only.
    pub fn decide(
        &self,
        peer: IpAddr,
        owner: impl FnOnce() -> Result<PeerSocket, OwnerError>,
    ) -> Decision {
        let peer = peer.to_canonical();
        if peer.is_loopback() {
            // A loopback peer is on this machine: its user decides, with or
            // without an allow-list of addresses.
            if !self.listen.ip().to_canonical().is_loopback()
                && !self.allow.iter().any(|a| a.to_canonical() == peer)
                && !self.allow.is_empty()
            {
                return Decision::Refuse {
                    why: Refusal::Address,
                    detail: "loopback is not in fpm.allow".into(),
                };
            }
            return match owner() {
                Ok(socket) if socket.state != TCP_ESTABLISHED => Decision::Refuse {
                    why: Refusal::User,
                    detail: format!(
                        "the peer's socket is in TCP state {}, not established, so its owner is unknown",
                        socket.state
                    ),
                },
                Ok(socket) if self.users.contains(socket.uid) => Decision::Admit {
                    uid: Some(socket.uid),
                },
                Ok(socket) => Decision::Refuse {
                    why: Refusal::User,
                    detail: format!("uid {} is not in fpm.allowed_users", socket.uid),
                },
                Err(error) => Decision::Refuse {
                    why: Refusal::User,
                    detail: format!("the owner of the peer's socket is unknown: {error}"),
                },
            };
        }
        if self.allow.is_empty() {
            // The configuration refuses a non-loopback listener without an
            // allow-list; this keeps the rule even if that check is bypassed.
            return Decision::Refuse {
                why: Refusal::Address,
                detail: "not loopback and fpm.allow is empty".into(),
            };
        }
        if self.allow.iter().any(|a| a.to_canonical() == peer) {
            Decision::Admit { uid: None }
        } else {
            Decision::Refuse {
                why: Refusal::Address,
                detail: "not in fpm.allow".into(),
            }
        }
    }
}

/// At most one log line per `every`; the next line says how many were
/// held back meanwhile.
#[derive(Debug, Clone)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(held back since the last line)` when a line may be written now.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_sock_diag::inet::{InetResponse, InetResponseHeader};

    use super::*;

    fn users(uids: &[u32]) -> AllowedUsers {
        AllowedUsers {
            uids: uids.to_vec(),
            missing: vec![],
        }
    }

    #[test]
    fn names_resolve_uids_are_taken_as_given_and_a_missing_name_is_absent() {
        let lookup = |name: &str| match name {
            "root" => Some(0),
            "frr" => Some(104),
            _ => None,
        };
        let specs: Vec<String> = ["frr", "root", "1001", " 2000 ", "nosuchuser", "0"]
            .map(String::from)
            .to_vec();
        let allowed = resolve_users(&specs, lookup).unwrap();
        assert_eq!(allowed.uids, vec![0, 104, 1001, 2000]);
        assert_eq!(allowed.missing, vec!["nosuchuser".to_string()]);
        assert!(allowed.contains(104) && !allowed.contains(65534));
        let no_database = resolve_users(&["root".into(), "frr".into()], |_| None).unwrap();
        assert_eq!(no_database.uids, vec![0], "root without /etc/passwd");
        assert_eq!(no_database.missing, vec!["frr".to_string()]);
        assert!(resolve_users(&[String::new()], lookup).is_err());
        assert!(resolve_users(&["99999999999".to_string()], lookup).is_err());
    }

    #[test]
    fn the_system_user_database_knows_root_and_not_a_made_up_name() {
        assert_eq!(uid_of_user("root"), Some(0));
        assert_eq!(uid_of_user("pf-sidecar-no-such-user"), None);
        assert_eq!(uid_of_user("nul\0byte"), None);
    }

    #[test]
    fn the_request_asks_for_the_peer_socket_by_its_exact_addresses() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let local: SocketAddr = "127.0.0.2:2620".parse().unwrap();
        let bytes = diag_request(peer, local, 7);
        // nlmsghdr (16) + inet_diag_req_v2 (56)
        assert_eq!(bytes.len(), 72);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 72);
        assert_eq!(
            u16::from_ne_bytes(bytes[4..6].try_into().unwrap()),
            20,
            "SOCK_DIAG_BY_FAMILY"
        );
        assert_eq!(
            u16::from_ne_bytes(bytes[6..8].try_into().unwrap()),
            NLM_F_REQUEST,
            "one socket, not a dump"
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        let req = &bytes[16..];
        assert_eq!(
            (req[0], req[1]),
            (libc::AF_INET as u8, libc::IPPROTO_TCP as u8)
        );
        assert_eq!(
            &req[8..10],
            &40000u16.to_be_bytes(),
            "source port: the peer's"
        );
        assert_eq!(
            &req[10..12],
            &2620u16.to_be_bytes(),
            "destination port: ours"
        );
        assert_eq!(&req[12..16], &[127, 0, 0, 1]);
        assert_eq!(&req[28..32], &[127, 0, 0, 2]);
        assert_eq!(&req[48..56], &[0xff; 8], "INET_DIAG_NOCOOKIE");
    }

    #[test]
    fn a_mapped_ipv4_peer_is_asked_for_as_ipv4_and_ipv6_as_ipv6() {
        let peer: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        let local: SocketAddr = "[::ffff:127.0.0.1]:2620".parse().unwrap();
        let bytes = diag_request(peer, local, 1);
        assert_eq!(bytes[16], libc::AF_INET as u8);
        assert_eq!(&bytes[16 + 12..16 + 16], &[127, 0, 0, 1]);
        let v6 = diag_request(
            "[::1]:40000".parse().unwrap(),
            "[::1]:2620".parse().unwrap(),
            1,
        );
        assert_eq!(v6[16], libc::AF_INET6 as u8);
        assert_eq!(v6[16 + 12 + 15], 1);
    }

    fn reply(uid: u32, state: u8, sequence: u32) -> Vec<u8> {
        let mut socket_id = SocketId::new_v4();
        socket_id.source_port = 40000;
        let response = InetResponse {
            header: InetResponseHeader {
                family: AF_INET,
                state,
                timer: None,
                socket_id,
                recv_queue: 0,
                send_queue: 0,
                uid,
                inode: 1,
            },
            nlas: Default::default(),
        };
        let mut header = NetlinkHeader::default();
        header.sequence_number = sequence;
        let mut message = NetlinkMessage::new(
            header,
            SockDiagMessage::InetResponse(Box::new(response)).into(),
        );
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    #[test]
    fn the_reply_gives_the_uid_and_state_and_an_error_is_not_found() {
        assert_eq!(
            parse_diag_reply(&reply(104, TCP_ESTABLISHED, 3), 3),
            Ok(PeerSocket {
                uid: 104,
                state: TCP_ESTABLISHED
            })
        );
        assert!(matches!(
            parse_diag_reply(&reply(104, TCP_ESTABLISHED, 3), 4),
            Err(OwnerError::Unexpected(_))
        ));
        // NLMSG_ERROR carrying -ENOENT, as the kernel answers for no socket.
        let mut error = Vec::new();
        error.extend_from_slice(&36u32.to_ne_bytes());
        error.extend_from_slice(&2u16.to_ne_bytes());
        error.extend_from_slice(&0u16.to_ne_bytes());
        error.extend_from_slice(&5u32.to_ne_bytes());
        error.extend_from_slice(&0u32.to_ne_bytes());
        error.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        error.extend_from_slice(&[0; 16]);
        assert_eq!(
            parse_diag_reply(&error, 5),
            Err(OwnerError::NotFound(libc::ENOENT))
        );
        assert!(parse_diag_reply(&[1, 2, 3], 5).is_err());
    }

    #[test]
    fn the_kernel_names_the_owner_of_a_real_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let socket = peer_socket(peer, listener.local_addr().unwrap()).unwrap();
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        assert_eq!(
            socket,
            PeerSocket {
                uid,
                state: TCP_ESTABLISHED
            }
        );
        // A port nobody uses is no socket.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(matches!(
            peer_socket(nobody, listener.local_addr().unwrap()),
            Err(OwnerError::NotFound(_))
        ));
    }

    #[test]
    fn loopback_peers_are_decided_by_their_user_and_others_by_their_address() {
        let loopback = Admission {
            listen: "127.0.0.1:2620".parse().unwrap(),
            allow: vec![],
            users: users(&[0, 104]),
        };
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let established = |uid| {
            move || {
                Ok(PeerSocket {
                    uid,
                    state: TCP_ESTABLISHED,
                })
            }
        };
        assert_eq!(
            loopback.decide(lo, established(104)),
            Decision::Admit { uid: Some(104) }
        );
        assert!(matches!(
            loopback.decide(lo, established(65534)),
            Decision::Refuse {
                why: Refusal::User,
                ..
            }
        ));
        // A closed peer's time-wait socket reports uid 0: never trusted.
        let time_wait = || Ok(PeerSocket { uid: 0, state: 6 });
        assert!(matches!(
            loopback.decide(lo, time_wait),
            Decision::Refuse {
                why: Refusal::User,
                ..
            }
        ));
        assert!(matches!(
            loopback.decide(lo, || Err(OwnerError::NotFound(2))),
            Decision::Refuse {
                why: Refusal::User,
                ..
            }
        ));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            loopback.decide(mapped, established(0)),
            Decision::Admit { uid: Some(0) }
        );

        let wide = Admission {
            listen: "0.0.0.0:2620".parse().unwrap(),
            allow: vec!["192.0.2.1".parse().unwrap()],
            users: users(&[0]),
        };
        let never = || -> Result<PeerSocket, OwnerError> { panic!("no uid for a remote peer") };
        assert_eq!(
            wide.decide("192.0.2.1".parse().unwrap(), never),
            Decision::Admit { uid: None }
        );
        assert_eq!(
            wide.decide("::ffff:192.0.2.1".parse().unwrap(), never),
            Decision::Admit { uid: None }
        );
        assert!(matches!(
            wide.decide("192.0.2.2".parse().unwrap(), never),
            Decision::Refuse {
                why: Refusal::Address,
                ..
            }
        ));
        // Loopback through a wide listener with an allow-list that leaves
        // loopback out: refused by address before anyone is asked.
        assert!(matches!(
            wide.decide(lo, never),
            Decision::Refuse {
                why: Refusal::Address,
                ..
            }
        ));
        let wide_with_lo = Admission {
            allow: vec!["192.0.2.1".parse().unwrap(), lo],
            ..wide
        };
        assert!(matches!(
            wide_with_lo.decide(lo, established(65534)),
            Decision::Refuse {
                why: Refusal::User,
                ..
            }
        ));
    }

    #[test]
    fn a_rate_limited_line_goes_out_once_per_period_with_the_count_held_back() {
        let start = Instant::now();
        let mut limit = RateLimit::new(Duration::from_secs(10));
        assert_eq!(limit.check(start), Some(0));
        for s in 1..5 {
            assert_eq!(limit.check(start + Duration::from_secs(s)), None);
        }
        assert_eq!(limit.check(start + Duration::from_secs(10)), Some(4));
        assert_eq!(limit.check(start + Duration::from_secs(11)), None);
        assert_eq!(limit.check(start + Duration::from_secs(25)), Some(1));
    }
}
