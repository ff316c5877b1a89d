//! The FPM listener: zebra connects to us.
//!
//! One session at a time (a second connection is closed at once and
//! counted). Before a byte is read, the peer must be allowed: a loopback
//! peer by the user owning its socket (`fpm.allowed_users`, asked of the
//! kernel through sock_diag, see [`super::fpm_peer`]), any other peer by
//! its address (`fpm.allow`). A refused connection is closed, counted by
//! reason, and logged at most once per [`REFUSAL_LOG_EVERY`] per reason.
//!
//! A session is then read frame by frame ([`FrameReader`]) under two
//! bounds: the first complete frame must come within `fpm.idle_timeout_ms`
//! of the connect, and a frame that has begun must complete within
//! `fpm.frame_timeout_ms`. zebra sends no keepalives, so a session quiet
//! after its first frame is fine (nothing changed); one that never sends a
//! frame, or stalls in the middle of one, is dropped.
//!
//! What the session's frames mean is the caller's.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use super::fpm_peer::{peer_socket, Admission, Decision, RateLimit, Refusal};
pub use pf_control::fpm::Expiry;
use pf_control::{
    controller::Input,
    fpm::{FpmCodec, Frame, FrameError},
};

/// At most one log line per reason of refusal in this period; the next
/// one says how many were held back.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
pub struct ListenerStats {
    pub sessions: AtomicU64,
    pub refused_busy: AtomicU64,
    /// Peers whose address is not allowed.
    pub refused_peer: AtomicU64,
    /// Loopback peers whose socket's owner is not an allowed user (or
    /// could not be established).
    pub refused_user: AtomicU64,
    pub connected: AtomicBool,
}

impl ListenerStats {
    pub fn refused(&self, why: Refusal) -> &AtomicU64 {
        match why {
            Refusal::Address => &self.refused_peer,
            Refusal::User => &self.refused_user,
            Refusal::Busy => &self.refused_busy,
        }
    }
}

/// Rate-limited refusal lines, one limiter per reason.
struct RefusalLog {
    limits: [RateLimit; 3],
}

impl RefusalLog {
    fn new() -> Self {
        Self {
            limits: Refusal::ALL.map(|_| RateLimit::new(REFUSAL_LOG_EVERY)),
        }
    }

    fn refused(&mut self, peer: SocketAddr, why: Refusal, detail: &str) {
        let at = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        if let Some(held_back) = self.limits[at].check(Instant::now()) {
            tracing::warn!(
                %peer,
                reason = why.label(),
                held_back,
                "FPM connection refused: {detail} (at most one such line per {} s; {held_back} refused meanwhile without a line)",
                REFUSAL_LOG_EVERY.as_secs()
            );
        }
    }
}

/// Accepts sessions forever, running `session` for one admitted peer at a
/// time.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    admission: Admission,
    stats: Arc<ListenerStats>,
    mut session: F,
) -> std::io::Result<()>
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let busy = Arc::new(AtomicBool::new(false));
    let mut log = RefusalLog::new();
    loop {
        let (stream, peer) = listener.accept().await?;
        let local = stream.local_addr()?;
        // Before any byte is read: who is it?
        let uid = match admission.decide(peer.ip(), || peer_socket(peer, local)) {
            Decision::Admit { uid } => uid,
            Decision::Refuse { why, detail } => {
                stats.refused(why).fetch_add(1, Ordering::Relaxed);
                log.refused(peer, why, &detail);
                continue;
            }
        };
        if busy.swap(true, Ordering::AcqRel) {
            stats.refused_busy.fetch_add(1, Ordering::Relaxed);
            log.refused(peer, Refusal::Busy, "a session is already open");
            continue;
        }
        stats.sessions.fetch_add(1, Ordering::Relaxed);
        stats.connected.store(true, Ordering::Relaxed);
        match uid {
            Some(uid) => tracing::info!(%peer, uid, "FPM session open"),
            None => tracing::info!(%peer, "FPM session open"),
        }
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

/// The two bounds on a session's reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// From the connect to the first complete frame.
    pub idle: Duration,
    /// From a frame's first byte to its last.
    pub frame: Duration,
}

/// The deadlines of a session's reads, with the time passed in.
///
/// Time the caller spends with a frame (the daemon applying it, or a full
/// queue towards it) is not the peer's: a partial frame's clock restarts
/// when the reader is called again.
#[derive(Debug, Clone)]
pub struct ReadClock {
    limits: ReadLimits,
    connected: Instant,
    seen_frame: bool,
    partial_since: Option<Instant>,
}

impl ReadClock {
    pub fn new(limits: ReadLimits, connected: Instant) -> Self {
        Self {
            limits,
            connected,
            seen_frame: false,
            partial_since: None,
        }
    }

    /// Bytes arrived; `buffered`: some are waiting for the rest of a frame.
    pub fn bytes(&mut self, now: Instant, buffered: bool) {
        if !buffered {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
    }

    /// A complete frame went to the caller.
    pub fn frame(&mut self) {
        self.seen_frame = true;
    }

    /// The caller is back for more; `buffered`: part of the next frame is
    /// already here.
    pub fn resumed(&mut self, now: Instant, buffered: bool) {
        self.partial_since = buffered.then_some(now);
    }

    /// When the session must have made progress by, and which bound that is.
    pub fn deadline(&self) -> Option<(Instant, Expiry)> {
        let idle = (!self.seen_frame).then(|| (self.connected + self.limits.idle, Expiry::Idle));
        let partial = self
            .partial_since
            .map(|at| (at + self.limits.frame, Expiry::PartialFrame));
        match (idle, partial) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// What a session tells the daemon.
pub enum SessionFeed {
    /// A session opened; replies to zebra go through the sender.
    Connected(SocketAddr, mpsc::Sender<Vec<u8>>),
    /// Its frames (decoded on the session's task, beside the control loop)
    /// and its end, for the controller.
    Input(Input),
}

/// Reply frames queued for zebra before more are dropped.
const OFFLOAD_QUEUE: usize = 256;

/// Serves zebra's sessions on `listener` (see [`serve`]), each feeding
/// `feed` until it ends.
pub async fn serve_sessions(
    listener: TcpListener,
    admission: Admission,
    stats: Arc<ListenerStats>,
    limits: ReadLimits,
    offload_replies: bool,
    feed: mpsc::Sender<SessionFeed>,
) -> std::io::Result<()> {
    serve(listener, admission, stats, move |stream, peer| {
        let feed = feed.clone();
        async move {
            // Dropping the write half would half-close the session, and
            // zebra treats that as a disconnect: it lives as long as the
            // session, in the writer when replies are on.
            let (read, mut write) = stream.into_split();
            let (replies_tx, mut replies_rx) = mpsc::channel::<Vec<u8>>(OFFLOAD_QUEUE);
            let _idle_write = if offload_replies {
                tokio::spawn(async move {
                    while let Some(bytes) = replies_rx.recv().await {
                        if write.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                });
                None
            } else {
                Some(write)
            };
            let _ = feed.send(SessionFeed::Connected(peer, replies_tx)).await;
            let mut frames = FrameReader::new(read, limits);
            let end = loop {
                match frames.next().await {
                    Ok(frame) => {
                        let input = Input::FpmFrame(pf_wire::decode_frame(&frame));
                        if feed.send(SessionFeed::Input(input)).await.is_err() {
                            return;
                        }
                    }
                    Err(end) => break end,
                }
            };
            let last = match end {
                SessionEnd::Closed => None,
                SessionEnd::Failed(error) => Some(Input::FpmFailed(error)),
                SessionEnd::TimedOut(expiry) => Some(Input::FpmTimedOut(expiry)),
            };
            for input in last.into_iter().chain([Input::FpmClosed]) {
                let _ = feed.send(SessionFeed::Input(input)).await;
            }
        }
    })
    .await
}

/// How a session's stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The peer closed between frames.
    Closed,
    /// A malformed frame, a read error, or the stream ending mid-frame.
    Failed(FrameError),
    /// A bound of [`ReadLimits`] ran out.
    TimedOut(Expiry),
}

/// Reads whole FPM frames from a session under [`ReadLimits`].
pub struct FrameReader<R> {
    read: R,
    buffer: BytesMut,
    clock: ReadClock,
    /// The last call returned a frame.
    returned: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(read: R, limits: ReadLimits) -> Self {
        Self {
            read,
            buffer: BytesMut::with_capacity(16 * 1024),
            clock: ReadClock::new(limits, Instant::now()),
            returned: false,
        }
    }

    /// The next whole frame, or how the session ended.
    pub async fn next(&mut self) -> Result<Frame, SessionEnd> {
        if std::mem::take(&mut self.returned) {
            self.clock.resumed(Instant::now(), !self.buffer.is_empty());
        }
        loop {
            match FpmCodec.decode(&mut self.buffer) {
                Ok(Some(frame)) => {
                    self.clock.frame();
                    self.returned = true;
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(error) => return Err(SessionEnd::Failed(error)),
            }
            self.buffer.reserve(16 * 1024);
            let read = self.read.read_buf(&mut self.buffer);
            let result = match self.clock.deadline() {
                Some((at, expiry)) => {
                    match tokio::time::timeout_at(tokio::time::Instant::from_std(at), read).await {
                        Ok(result) => result,
                        Err(_) => return Err(SessionEnd::TimedOut(expiry)),
                    }
                }
                None => read.await,
            };
            match result {
                Ok(0) if self.buffer.is_empty() => return Err(SessionEnd::Closed),
                Ok(0) => {
                    return Err(SessionEnd::Failed(FrameError::Io(format!(
                        "the stream ended {} bytes into a frame",
                        self.buffer.len()
                    ))))
                }
                Ok(_) => self.clock.bytes(Instant::now(), !self.buffer.is_empty()),
                Err(error) => return Err(SessionEnd::Failed(error.into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::source::fpm_peer::AllowedUsers;
    use pf_control::fpm::frame;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn message(len: u32) -> Vec<u8> {
        let mut m = len.to_ne_bytes().to_vec();
        m.resize(len as usize, 7);
        m
    }

    fn admitting(uids: &[u32]) -> Admission {
        Admission {
            listen: "127.0.0.1:0".parse().unwrap(),
            allow: vec![],
            users: AllowedUsers {
                uids: uids.to_vec(),
                missing: vec![],
            },
        }
    }

    fn my_uid() -> u32 {
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    }

    /// A listener running `serve` whose sessions read until the peer
    /// closes; counts the sessions it ran.
    async fn listen(admission: Admission) -> (SocketAddr, Arc<ListenerStats>, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ListenerStats::default());
        let ran = Arc::new(AtomicU64::new(0));
        let (server_stats, server_ran) = (stats.clone(), ran.clone());
        tokio::spawn(serve(
            listener,
            admission,
            server_stats,
            move |mut stream, _| {
                server_ran.fetch_add(1, Ordering::Relaxed);
                async move {
                    let mut buf = [0u8; 16];
                    while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
                }
            },
        ));
        (addr, stats, ran)
    }

    async fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn a_second_session_is_refused_while_the_first_is_open() {
        let (addr, stats, _) = listen(admitting(&[my_uid()])).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(b"x").await.unwrap();
        tokio::time::sleep(ms(50)).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_by_server(&mut second).await,
            "the second connection is closed"
        );
        assert_eq!(stats.refused_busy.load(Ordering::Relaxed), 1);
        drop(first);
        tokio::time::sleep(ms(50)).await;
        let _third = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(ms(50)).await;
        assert_eq!(
            stats.sessions.load(Ordering::Relaxed),
            2,
            "a new session once the first is gone"
        );
    }

    #[tokio::test]
    async fn a_loopback_peer_of_a_user_not_allowed_is_closed_unread_and_counted() {
        let other = my_uid().wrapping_add(1);
        let (addr, stats, ran) = listen(admitting(&[other])).await;
        for _ in 0..3 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let _ = stream.write_all(&frame(&[&message(16)])).await;
            assert!(closed_by_server(&mut stream).await);
        }
        assert_eq!(stats.refused_user.load(Ordering::Relaxed), 3);
        assert_eq!(stats.sessions.load(Ordering::Relaxed), 0);
        assert_eq!(ran.load(Ordering::Relaxed), 0, "no session ever ran");
        // And the busy slot was never taken: an allowed user gets in.
        let (addr, stats, ran) = listen(admitting(&[other, my_uid()])).await;
        let _stream = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(ms(100)).await;
        assert_eq!(stats.sessions.load(Ordering::Relaxed), 1);
        assert_eq!(ran.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_idle_bound_holds_only_until_the_first_frame_and_a_partial_frame_has_its_own() {
        let t0 = Instant::now();
        let limits = ReadLimits {
            idle: ms(10_000),
            frame: ms(5_000),
        };
        let mut clock = ReadClock::new(limits, t0);
        assert_eq!(clock.deadline(), Some((t0 + ms(10_000), Expiry::Idle)));
        // One byte a second: the frame's first byte sets its deadline, and
        // later bytes do not move it.
        clock.bytes(t0 + ms(1_000), true);
        clock.bytes(t0 + ms(2_000), true);
        assert_eq!(
            clock.deadline(),
            Some((t0 + ms(6_000), Expiry::PartialFrame))
        );
        // A first byte late in the idle period: the idle bound comes first.
        let mut late = ReadClock::new(limits, t0);
        late.bytes(t0 + ms(8_000), true);
        assert_eq!(late.deadline(), Some((t0 + ms(10_000), Expiry::Idle)));
        // After a frame, a quiet session has no deadline at all.
        clock.frame();
        clock.resumed(t0 + ms(3_000), false);
        assert_eq!(clock.deadline(), None);
        // The rest of a frame that was buffered while the caller was busy
        // is timed from when the caller came back.
        clock.frame();
        clock.resumed(t0 + ms(60_000), true);
        assert_eq!(
            clock.deadline(),
            Some((t0 + ms(65_000), Expiry::PartialFrame))
        );
        clock.bytes(t0 + ms(61_000), false);
        assert_eq!(clock.deadline(), None);
    }

    fn reader_with(
        idle: u64,
        frame: u64,
    ) -> (
        FrameReader<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        (
            FrameReader::new(
                ours,
                ReadLimits {
                    idle: ms(idle),
                    frame: ms(frame),
                },
            ),
            theirs,
        )
    }

    #[tokio::test]
    async fn a_silent_session_times_out_idle() {
        let (mut reader, _peer) = reader_with(150, 5_000);
        let started = Instant::now();
        assert_eq!(reader.next().await, Err(SessionEnd::TimedOut(Expiry::Idle)));
        assert!(started.elapsed() >= ms(150));
    }

    #[tokio::test]
    async fn a_session_quiet_after_its_first_frame_is_kept() {
        let (mut reader, mut peer) = reader_with(100, 100);
        peer.write_all(&frame(&[&message(20)])).await.unwrap();
        assert!(reader.next().await.is_ok());
        assert!(
            tokio::time::timeout(ms(400), reader.next()).await.is_err(),
            "still waiting, not timed out"
        );
    }

    #[tokio::test]
    async fn a_frame_trickled_a_byte_at_a_time_times_out_partial() {
        let (mut reader, mut peer) = reader_with(10_000, 200);
        let bytes = frame(&[&message(40)]);
        let trickle = tokio::spawn(async move {
            for b in bytes {
                if peer.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(ms(40)).await;
            }
        });
        assert_eq!(
            reader.next().await,
            Err(SessionEnd::TimedOut(Expiry::PartialFrame))
        );
        trickle.abort();
    }

    #[tokio::test]
    async fn a_stream_cut_mid_frame_fails_and_a_clean_close_does_not() {
        let (mut reader, mut peer) = reader_with(1_000, 1_000);
        let bytes = frame(&[&message(40)]);
        peer.write_all(&bytes[..10]).await.unwrap();
        drop(peer);
        assert!(matches!(
            reader.next().await,
            Err(SessionEnd::Failed(FrameError::Io(_)))
        ));
        let (mut reader, mut peer) = reader_with(1_000, 1_000);
        peer.write_all(&bytes).await.unwrap();
        drop(peer);
        assert!(reader.next().await.is_ok());
        assert_eq!(reader.next().await, Err(SessionEnd::Closed));
    }

    #[tokio::test]
    async fn time_the_caller_spends_with_a_frame_is_not_held_against_the_next() {
        let (mut reader, mut peer) = reader_with(1_000, 150);
        let (a, b) = (frame(&[&message(20)]), frame(&[&message(40)]));
        let mut first = a.clone();
        first.extend_from_slice(&b[..10]);
        peer.write_all(&first).await.unwrap();
        assert!(reader.next().await.is_ok());
        // The daemon is busy for longer than the frame bound...
        tokio::time::sleep(ms(300)).await;
        // ...and the rest of the frame follows soon after it is back.
        let rest = b[10..].to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(ms(50)).await;
            peer.write_all(&rest).await.unwrap();
            tokio::time::sleep(ms(1_000)).await;
        });
        assert!(reader.next().await.is_ok());
    }
}
