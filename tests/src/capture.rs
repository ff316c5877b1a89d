//! Frames seen on an interface in a namespace, captured with an AF_PACKET
//! socket on a background thread for a bounded time.

use std::{
    fs::File,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::netns::NetNs;

#[derive(Debug, Clone)]
pub struct Frame {
    /// Sent by this host (PACKET_OUTGOING) rather than received.
    pub outgoing: bool,
    pub bytes: Vec<u8>,
}

pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Frame>>,
}

/// Moves the calling thread into the namespace at `path`.
fn enter_netns(path: &str) {
    let ns = File::open(path).expect("open netns");
    // SAFETY: setns on this thread only.
    assert_eq!(
        unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );
}

/// An AF_PACKET socket for every protocol, bound to `ifname`, with a short
/// receive timeout (so the capture loop can check its deadline and stop
/// flag) and a large receive buffer.
fn packet_socket(ifname: &str) -> libc::c_int {
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: plain socket calls on a fresh fd we own.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        assert!(ifindex > 0, "no interface {ifname}");
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        );
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex as i32;
        let rc = libc::bind(
            fd,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let size: i32 = 8 << 20;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            4,
        );
        fd
    }
}

/// Reads frames from `fd` until `deadline` or `stop`, keeping those `keep`
/// accepts, then closes `fd`.
fn receive_frames(
    fd: libc::c_int,
    deadline: Instant,
    stop: &AtomicBool,
    keep: impl Fn(&[u8]) -> bool,
) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut buffer = vec![0u8; 65536];
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        // SAFETY: recvfrom into our buffer and a zeroed sockaddr_ll.
        let (len, from) = unsafe {
            let mut from: libc::sockaddr_ll = std::mem::zeroed();
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let len = libc::recvfrom(
                fd,
                buffer.as_mut_ptr() as *mut libc::c_void,
                buffer.len(),
                0,
                &mut from as *mut _ as *mut libc::sockaddr,
                &mut from_len,
            );
            (len, from)
        };
        if len <= 0 {
            continue;
        }
        let bytes = &buffer[..len as usize];
        if keep(bytes) {
            frames.push(Frame {
                outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
                bytes: bytes.to_vec(),
            });
        }
    }
    // SAFETY: closing the fd this thread opened.
    unsafe { libc::close(fd) };
    frames
}

impl Capture {
    /// Captures on `ifname` in `ns` for at most `limit`, keeping the frames
    /// `keep` accepts. Returns once the socket is bound.
    pub fn start(
        ns: &NetNs,
        ifname: &str,
        limit: Duration,
        keep: impl Fn(&[u8]) -> bool + Send + 'static,
    ) -> Self {
        let path = format!("/run/netns/{}", ns.name);
        let ifname = ifname.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter_netns(&path);
            let fd = packet_socket(&ifname);
            ready_tx.send(()).unwrap();
            receive_frames(fd, Instant::now() + limit, &stop_flag, keep)
        });
        ready_rx.recv().expect("capture thread started");
        Self { stop, thread }
    }

    /// Stops capturing (after `settle`, for frames still in flight) and
    /// returns what was kept.
    pub fn finish(self, settle: Duration) -> Vec<Frame> {
        std::thread::sleep(settle);
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("capture thread")
    }
}
