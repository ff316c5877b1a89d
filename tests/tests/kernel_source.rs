//! The kernel source dumps a namespace's state and follows its changes.

use std::time::Duration;

use integration_tests::{netns::NetNs, require_root};
use pf_control::change::{Change, Op};
use pf_sidecar::source::kernel::{self, KernelConfig, KernelItem};

async fn next(rx: &mut tokio::sync::mpsc::Receiver<KernelItem>) -> KernelItem {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("feed stalled")
        .expect("source alive")
}

#[test]
fn the_kernel_source_dumps_then_follows_route_and_neighbour_changes() {
    require_root!();
    let ns = NetNs::new("ksrc");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "v0"]);
    ns.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.2"]);
    ns.enter(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            // The source thread is spawned from this thread, so it inherits the namespace.
            let _thread = kernel::spawn(KernelConfig::default(), tx);
            assert!(matches!(
                next(&mut rx).await,
                KernelItem::ResyncStart { .. }
            ));
            let mut dumped_routes = 0;
            loop {
                match next(&mut rx).await {
                    KernelItem::Change(Change::Route(Op::Upsert, _)) => dumped_routes += 1,
                    KernelItem::Change(_) => {}
                    KernelItem::ResyncDone => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(
                dumped_routes >= 2,
                "the dump carries the connected and the static route"
            );

            let ip = |args: &[&str]| {
                let out = std::process::Command::new("ip")
                    .args(args)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            ip(&["route", "del", "198.51.100.0/24"]);
            ip(&[
                "neigh",
                "add",
                "192.0.2.9",
                "lladdr",
                "02:00:00:00:00:09",
                "dev",
                "v0",
            ]);
            let mut seen = (false, false);
            while seen != (true, true) {
                match next(&mut rx).await {
                    KernelItem::Change(Change::Route(Op::Remove, route))
                        if route.key.prefix.to_string() == "198.51.100.0/24" =>
                    {
                        seen.0 = true
                    }
                    KernelItem::Change(Change::Neighbour(_, address, Some(_)))
                        if address.to_string() == "192.0.2.9" =>
                    {
                        seen.1 = true
                    }
                    KernelItem::Undecodable => panic!("the kernel sent an undecodable message"),
                    _ => {}
                }
            }
        });
    });
}
