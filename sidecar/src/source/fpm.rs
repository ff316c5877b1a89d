//! The FPM listener: zebra connects to us.
//!
//! One session at a time (a second connection is closed at once and
//! counted), loopback only unless the configuration names allowed peers,
//! and every other peer refused and counted. The session itself (framing,
//! decoding, applying) is the caller's; this module only decides who may
//! talk.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
pub struct ListenerStats {
    pub sessions: AtomicU64,
    pub refused_busy: AtomicU64,
    pub refused_peer: AtomicU64,
    pub connected: AtomicBool,
}

/// Whether `peer` may open an FPM session.
pub fn peer_allowed(listen: &SocketAddr, allow: &[IpAddr], peer: &IpAddr) -> bool {
    if allow.is_empty() {
        // The configuration refuses a non-loopback listener without an
        // allow-list; this keeps the rule even if that check is bypassed.
        return listen.ip().is_loopback() && peer.is_loopback();
    }
    allow.contains(peer)
}

/// Accepts sessions forever, running `session` for one peer at a time.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    allow: Vec<IpAddr>,
    stats: Arc<ListenerStats>,
    mut session: F,
) -> std::io::Result<()>
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listen = listener.local_addr()?;
    let busy = Arc::new(AtomicBool::new(false));
    loop {
        let (stream, peer) = listener.accept().await?;
        if !peer_allowed(&listen, &allow, &peer.ip()) {
            stats.refused_peer.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "FPM connection refused: peer not allowed");
            continue;
        }
        if busy.swap(true, Ordering::AcqRel) {
            stats.refused_busy.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "FPM connection refused: a session is already open");
            continue;
        }
        stats.sessions.fetch_add(1, Ordering::Relaxed);
        stats.connected.store(true, Ordering::Relaxed);
        tracing::info!(%peer, "FPM session open");
        let run = session(stream, peer);
        let busy = busy.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            run.await;
            stats.connected.store(false, Ordering::Relaxed);
            busy.store(false, Ordering::Release);
            tracing::info!(%peer, "FPM session closed");
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn a_loopback_listener_takes_only_loopback_peers_and_an_allow_list_is_exact() {
        let lo: SocketAddr = "127.0.0.1:2620".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:2620".parse().unwrap();
        assert!(peer_allowed(&lo, &[], &"127.0.0.1".parse().unwrap()));
        assert!(!peer_allowed(&any, &[], &"192.0.2.1".parse().unwrap()));
        let allow = ["192.0.2.1".parse().unwrap()];
        assert!(peer_allowed(&any, &allow, &"192.0.2.1".parse().unwrap()));
        assert!(!peer_allowed(&any, &allow, &"192.0.2.2".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_second_session_is_refused_while_the_first_is_open() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ListenerStats::default());
        let server_stats = stats.clone();
        tokio::spawn(serve(
            listener,
            vec![],
            server_stats,
            |mut stream, _| async move {
                let mut buf = [0u8; 16];
                while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
            },
        ));
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(closed.unwrap(), 0, "the second connection is closed");
        assert_eq!(stats.refused_busy.load(Ordering::Relaxed), 1);
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _third = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            stats.sessions.load(Ordering::Relaxed),
            2,
            "a new session once the first is gone"
        );
    }
}
