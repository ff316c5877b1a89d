//! Rate-limited warnings: a repeated WARN or ERROR line (a refused
//! connection retried every few seconds, a write refused for each prefix of
//! a full table) is printed at most [`BURST`] times per [`WINDOW`] from one
//! place in the code; what is held back is counted and reported in one
//! line ("N more like ... suppressed") when its window ends.
//!
//! It is a per-layer filter on the log output, so it covers every module
//! without each call site keeping its own limiter. INFO and below pass
//! untouched.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use tracing::{callsite::Identifier, field::Field, Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// Lines printed per call site and window.
pub const BURST: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The target of the summary lines, which are never held back.
pub const SUMMARY_TARGET: &str = "pf_sidecar::log_limit";

struct Window {
    started: Instant,
    printed: u32,
    held: u64,
    /// The last held line's message and where it comes from.
    example: String,
}

#[derive(Default)]
struct Inner {
    windows: Mutex<HashMap<Identifier, Window>>,
}

/// The filter; [`RateLimit::install`] also makes [`report_suppressed`] work.
#[derive(Clone)]
pub struct RateLimit {
    inner: Arc<Inner>,
    burst: u32,
    window: Duration,
}

static INSTALLED: OnceLock<RateLimit> = OnceLock::new();

impl RateLimit {
    pub fn new(burst: u32, window: Duration) -> Self {
        Self {
            inner: Arc::default(),
            burst,
            window,
        }
    }

    /// The process's limiter ([`BURST`] per [`WINDOW`]).
    pub fn install() -> Self {
        INSTALLED.get_or_init(|| Self::new(BURST, WINDOW)).clone()
    }

    /// Lines held back in windows that have ended: (count, example), and
    /// those windows are forgotten.
    pub fn take_suppressed(&self, now: Instant) -> Vec<(u64, String)> {
        let mut windows = self.inner.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut ended = Vec::new();
        windows.retain(|_, w| {
            if now.duration_since(w.started) < self.window {
                return true;
            }
            if w.held > 0 {
                ended.push((w.held, std::mem::take(&mut w.example)));
            }
            false
        });
        ended
    }

    fn allow(&self, event: &Event<'_>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || meta.target() == SUMMARY_TARGET {
            return true;
        }
        let now = Instant::now();
        let mut windows = self.inner.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.entry(meta.callsite()).or_insert(Window {
            started: now,
            printed: 0,
            held: 0,
            example: String::new(),
        });
        if now.duration_since(window.started) >= self.window && window.held == 0 {
            // A quiet window ended: start a new one.
            window.started = now;
            window.printed = 0;
        }
        if window.printed < self.burst {
            window.printed += 1;
            return true;
        }
        window.held += 1;
        window.example = describe(meta, event);
        false
    }
}

/// "message (file:line)" of an event.
fn describe(meta: &Metadata<'_>, event: &Event<'_>) -> String {
    struct Message(String);
    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, "{value:?}");
            }
        }
    }
    let mut message = Message(String::new());
    event.record(&mut message);
    let mut text = message.0;
    if text.len() > 200 {
        let mut end = 200;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    format!(
        "{text} ({}:{})",
        meta.file().unwrap_or("?"),
        meta.line().unwrap_or(0)
    )
}

impl<S> Filter<S> for RateLimit {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        self.allow(event)
    }
}

/// Logs one line per call site whose window ended with lines held back.
/// The daemon calls it on every heartbeat.
pub fn report_suppressed() {
    let Some(limit) = INSTALLED.get() else {
        return;
    };
    for (count, example) in limit.take_suppressed(Instant::now()) {
        tracing::warn!(
            target: SUMMARY_TARGET,
            count,
            "{count} more lines like this were suppressed in the last {} s: {example}",
            limit.window.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::{layer::SubscriberExt, Layer};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_repeated_warning_is_printed_a_few_times_then_counted() {
        let buffer = Buffer::default();
        let limit = RateLimit::new(3, Duration::from_millis(200));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .with_filter(limit.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            for peer in 0..20 {
                tracing::warn!(peer, "FPM connection refused");
                tracing::info!(peer, "an info line is never held back");
            }
            tracing::error!("another place in the code has its own budget");
            std::thread::sleep(Duration::from_millis(250));
            let held = limit.take_suppressed(Instant::now());
            assert_eq!(held.len(), 1, "{held:?}");
            assert_eq!(held[0].0, 17);
            assert!(
                held[0].1.starts_with("FPM connection refused (")
                    && held[0].1.contains("log_limit.rs:"),
                "{held:?}"
            );
            // A new window prints again.
            tracing::warn!(peer = 99, "FPM connection refused");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("FPM connection refused").count(), 4, "{text}");
        assert_eq!(text.matches("never held back").count(), 20);
        assert!(text.contains("its own budget"));
    }
}
