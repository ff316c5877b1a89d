//! The event stream: ZeroMQ PUB, one two-frame message per event (the
//! topic, then the event as JSON), for `pf-sidecar watch` and any other
//! subscriber. Publishing never blocks the daemon: events go through a
//! bounded queue, and what does not fit is counted and dropped.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use tokio::sync::mpsc;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

pub use pf_control::events::{Event, TOPICS};

/// Events queued for the publisher before new ones are dropped.
const QUEUE: usize = 4096;

/// The daemon's handle: cheap to call, never blocks.
#[derive(Clone)]
pub struct Publisher {
    queue: Option<mpsc::Sender<Event>>,
    pub dropped: Arc<AtomicU64>,
}

impl Publisher {
    /// A publisher that publishes nothing (events are off).
    pub fn off() -> Self {
        Self {
            queue: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    pub fn publish(&self, event: Event) {
        if let Some(queue) = &self.queue {
            if queue.try_send(event).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Binds the PUB socket on `endpoint` and starts publishing.
    pub async fn bind(endpoint: &str) -> anyhow::Result<Self> {
        if let Some(path) = endpoint.strip_prefix("ipc://") {
            let _ = std::fs::remove_file(path);
            if let Some(dir) = std::path::Path::new(path).parent() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let mut socket = zeromq::PubSocket::new();
        socket
            .bind(endpoint)
            .await
            .map_err(|e| anyhow::anyhow!("binding the event stream on {endpoint}: {e}"))?;
        if let Some(path) = endpoint.strip_prefix("ipc://") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let mut message = ZmqMessage::from(event.topic().to_string());
                message.push_back(serde_json::to_vec(&event).unwrap_or_default().into());
                if let Err(err) = socket.send(message).await {
                    tracing::warn!(%err, "publishing an event failed");
                }
            }
        });
        Ok(Self {
            queue: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }
}

/// Subscribes to `endpoint` and calls `each` with every event until it
/// returns false.
pub async fn subscribe(
    endpoint: &str,
    topics: &[String],
    mut each: impl FnMut(Event) -> bool,
) -> anyhow::Result<()> {
    let mut socket = zeromq::SubSocket::new();
    socket
        .connect(endpoint)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the event stream at {endpoint}: {e}"))?;
    if topics.is_empty() {
        socket.subscribe("").await?;
    }
    for topic in topics {
        socket.subscribe(topic).await?;
    }
    loop {
        let message = socket.recv().await?;
        let Some(body) = message.get(1) else {
            continue;
        };
        let Ok(event) = serde_json::from_slice::<Event>(body) else {
            continue;
        };
        if !each(event) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json_with_their_topic_as_tag() {
        let event = Event::Route {
            prefix: "192.0.2.0/24".parse().unwrap(),
            op: "upsert".into(),
            action: "nexthop 3".into(),
            deferred: false,
        };
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.starts_with("{\"event\":\"route\""), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
        assert_eq!(event.topic(), "route");
        let stale = Event::Stale {
            source: "fpm".into(),
            active: true,
            prefixes: 30,
            detail: "zebra gone for 30 s".into(),
        };
        let json = serde_json::to_string(&stale).unwrap();
        assert!(json.starts_with("{\"event\":\"stale\""), "{json}");
        assert_eq!(stale.topic(), "stale");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), stale);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (tx, _rx) = mpsc::channel(1);
        let publisher = Publisher {
            queue: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        for _ in 0..3 {
            publisher.publish(Event::Drift {
                detail: "test".into(),
                entries: 1,
            });
        }
        assert_eq!(publisher.dropped.load(Ordering::Relaxed), 2);
    }
}
