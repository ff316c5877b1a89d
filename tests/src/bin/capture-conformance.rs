//! Records the inputs of the Controller's conformance tests from a real
//! router: the lab's router namespace with real FRR (`PF_FRR` picks the
//! release) feeding a listener that plays zebra's FPM peer, and the
//! kernel's own dump of the same namespace through pf-sidecar's kernel
//! source.
//!
//! `capture-conformance DIR` writes, under `DIR/frr-<version>/`:
//! - `kernel-dump.bin`: the kernel's netlink messages (links, addresses,
//!   neighbours, routes, nexthop objects), as the daemon's dump reads them;
//! - `fpm-replay.bin`: zebra's stream after it connects (static, ECMP,
//!   blackhole and IPv6 routes), until it has been quiet for a while;
//! - `fpm-change.bin`: the stream after one route's next hop changes;
//! - `fpm-withdraw.bin`: the stream after the IPv6 route is removed;
//! - `fpm-reconnect-replay.bin`: zebra's replay after the session was
//!   closed under it (it reconnects by itself).
//!
//! Each FPM file is raw bytes as zebra wrote them (whole FPM frames).

use std::{
    io::Read,
    net::TcpListener,
    path::PathBuf,
    time::{Duration, Instant},
};

use integration_tests::{
    frr::{Frr, FrrConfig, Install},
    lab::Lab,
    require_root,
};
use pf_sidecar::source::kernel;

/// The stream is taken as complete after this long without a byte.
const QUIET: Duration = Duration::from_millis(1500);

fn read_until_quiet(stream: &mut std::net::TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(QUIET)).expect("read timeout");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if !bytes.is_empty() {
                    break;
                }
            }
            Err(e) => panic!("reading zebra's stream: {e}"),
        }
    }
    bytes
}

/// The kernel's dump, as the kernel source reads it at a (re)sync.
fn kernel_dump() -> Vec<u8> {
    let mut bytes = Vec::new();
    kernel::dump_all(&mut |message| bytes.extend_from_slice(message)).expect("kernel dump");
    bytes
}

fn main() {
    require_root!();
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: capture-conformance DIR"),
    );
    let install = Install::from_env();
    let (major, minor, patch) = install.version();
    let dir = out.join(format!("frr-{major}.{minor}.{patch}"));
    std::fs::create_dir_all(&dir).expect("create the output directory");

    let lab = Lab::new("capt");
    // Resolved neighbours for the next hops, as on a router carrying traffic.
    for target in [
        "198.51.100.2",
        "198.51.100.66",
        "2001:db8:2::2",
        "2001:db8:3::2",
    ] {
        lab.router.exec("ping", &["-c", "1", "-W", "2", target]);
    }
    let listener = lab
        .router
        .enter(|| TcpListener::bind("127.0.0.1:0").expect("bind the FPM listener"));
    let port = listener.local_addr().unwrap().port();
    let frr = Frr::start(
        &lab.router,
        &FrrConfig {
            fpm_port: Some(port),
            zebra: &[],
            staticd: Some(&[
                "ip route 203.0.113.0/25 198.51.100.2",
                "ip route 203.0.113.128/25 198.51.100.2",
                "ip route 203.0.113.128/25 198.51.100.66",
                "ip route 192.0.2.128/25 blackhole",
                "ipv6 route 2001:db8:ff::/48 2001:db8:2::2",
            ]),
            bgpd: None,
        },
    );
    let (mut stream, _) = listener.accept().expect("zebra connects");
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).expect("write a capture");
        eprintln!("{}: {} bytes", dir.join(name).display(), bytes.len());
    };
    write("fpm-replay.bin", &read_until_quiet(&mut stream));
    frr.configure(&[
        "no ip route 203.0.113.0/25 198.51.100.2",
        "ip route 203.0.113.0/25 198.51.100.66",
    ]);
    write("fpm-change.bin", &read_until_quiet(&mut stream));
    frr.configure(&["no ipv6 route 2001:db8:ff::/48 2001:db8:2::2"]);
    write("fpm-withdraw.bin", &read_until_quiet(&mut stream));
    // Closing the session makes zebra reconnect and replay what it has now.
    drop(stream);
    let (mut stream, _) = listener.accept().expect("zebra reconnects");
    write("fpm-reconnect-replay.bin", &read_until_quiet(&mut stream));
    write("kernel-dump.bin", &lab.router.enter(kernel_dump));
    std::fs::write(dir.join("VERSION"), format!("{}\n", install.describe())).unwrap();
}
