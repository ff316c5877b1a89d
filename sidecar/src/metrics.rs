//! Prometheus metrics: the text exposition format over plain HTTP.
//!
//! The daemon renders a page from its state and the datapath's counters on
//! each scrape ([`render`] is pure); [`serve`] answers `GET /metrics` and
//! nothing else, with bounded reads so a client cannot hold memory.

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use pf_common::Counter;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use crate::state::DaemonState;

/// One table's use against its capacity.
#[derive(Debug, Clone)]
pub struct TableUse {
    pub table: &'static str,
    pub used: u64,
    pub capacity: u64,
}

impl TableUse {
    pub fn new(table: &'static str, used: usize, capacity: u32) -> Self {
        Self {
            table,
            used: used as u64,
            capacity: capacity.into(),
        }
    }
}

/// What a scrape shows.
pub struct Snapshot<'a> {
    pub state: &'a DaemonState,
    pub counters: &'a [(Counter, u64)],
    pub tables: &'a [TableUse],
    pub fail_safe_active: bool,
    pub events_dropped: u64,
    /// Seconds since the daemon last wrote the heartbeat (none before the
    /// first: it beats once reconciled).
    pub heartbeat_age_s: Option<f64>,
    pub build: &'a BuildInfo,
}

/// What runs: the daemon's version and the kernel's release.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub version: &'static str,
    pub kernel: String,
}

impl BuildInfo {
    /// This binary on this kernel.
    pub fn current() -> Self {
        // SAFETY: uname fills the struct it is given.
        let mut name: libc::utsname = unsafe { std::mem::zeroed() };
        let kernel = if unsafe { libc::uname(&mut name) } == 0 {
            // SAFETY: uname NUL-terminates its fields.
            unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        } else {
            "unknown".into()
        };
        Self {
            version: env!("CARGO_PKG_VERSION"),
            kernel,
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{k}=\"{escaped}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    family(out, name, kind, help);
    sample(out, name, &[], value);
}

fn flag(value: bool) -> f64 {
    if value {
        1.0
    } else {
        0.0
    }
}

/// The exposition page.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut out = String::new();
    let d = s.state;
    family(
        &mut out,
        "pf_sidecar_build_info",
        "gauge",
        "Always 1: the daemon's version and the kernel it runs on.",
    );
    sample(
        &mut out,
        "pf_sidecar_build_info",
        &[("version", s.build.version), ("kernel", &s.build.kernel)],
        1.0,
    );
    if let Some(age) = s.heartbeat_age_s {
        single(
            &mut out,
            "pf_sidecar_heartbeat_age_seconds",
            "gauge",
            "Seconds since the daemon last wrote the datapath's heartbeat (the fail-safe engages past datapath.fail_safe_after_ms).",
            age,
        );
    }
    datapath_families(&mut out, s);
    programmed_route_families(&mut out, d);
    attachment_families(&mut out, s);
    route_outcome_families(&mut out, d);
    kernel_source_families(&mut out, d);
    fpm_session_families(&mut out, d);
    route_source_health_families(&mut out, d);
    control_activity_families(&mut out, s);
    out
}

/// What the datapath counted, and how full its tables are.
fn datapath_families(out: &mut String, s: &Snapshot<'_>) {
    family(
        out,
        "pf_sidecar_datapath_packets_total",
        "counter",
        "Packets by what the datapath did with them (docs/datapath.md explains each counter).",
    );
    for (counter, value) in s.counters {
        sample(
            out,
            "pf_sidecar_datapath_packets_total",
            &[("counter", counter.name())],
            *value as f64,
        );
    }
    family(
        out,
        "pf_sidecar_table_used",
        "gauge",
        "Entries in use per datapath table.",
    );
    for t in s.tables {
        sample(
            out,
            "pf_sidecar_table_used",
            &[("table", t.table)],
            t.used as f64,
        );
    }
    family(
        out,
        "pf_sidecar_table_capacity",
        "gauge",
        "Capacity of each datapath table.",
    );
    for t in s.tables {
        sample(
            out,
            "pf_sidecar_table_capacity",
            &[("table", t.table)],
            t.capacity as f64,
        );
    }
}

/// Routes in the maps, and routes a full table left to bpf_fib_lookup.
fn programmed_route_families(out: &mut String, d: &DaemonState) {
    family(
        out,
        "pf_sidecar_routes",
        "gauge",
        "Routes programmed, by family.",
    );
    sample(
        out,
        "pf_sidecar_routes",
        &[("family", "ipv4")],
        d.control.programmer.routes_v4 as f64,
    );
    sample(
        out,
        "pf_sidecar_routes",
        &[("family", "ipv6")],
        d.control.programmer.routes_v6 as f64,
    );
    family(
        out,
        "pf_sidecar_routes_deferred",
        "gauge",
        "Routes left to bpf_fib_lookup because a table is full, by family.",
    );
    sample(
        out,
        "pf_sidecar_routes_deferred",
        &[("family", "ipv4")],
        d.control.programmer.deferred_v4 as f64,
    );
    sample(
        out,
        "pf_sidecar_routes_deferred",
        &[("family", "ipv6")],
        d.control.programmer.deferred_v6 as f64,
    );
}

/// Whether the datapath runs, where, and what it loses after a redirect.
fn attachment_families(out: &mut String, s: &Snapshot<'_>) {
    let d = s.state;
    single(
        out,
        "pf_sidecar_fail_safe_active",
        "gauge",
        "1 while the datapath ignores the route cache (stale heartbeat).",
        flag(s.fail_safe_active),
    );
    single(
        out,
        "pf_sidecar_live",
        "gauge",
        "1 while the pinned links run this daemon's generation on a device (0 before it goes live, and after its links or pins were removed from outside).",
        flag(d.live),
    );
    family(
        out,
        "pf_sidecar_attached",
        "gauge",
        "1 while fast_path of this daemon runs on the configured interface (from the kernel's links).",
    );
    for port in &d.interfaces {
        sample(
            out,
            "pf_sidecar_attached",
            &[("interface", &port.interface)],
            flag(port.attached),
        );
    }
    single(
        out,
        "pf_sidecar_redirect_failures_counted",
        "gauge",
        "1 while frames lost after XDP_REDIRECT are counted (the xdp tracepoints are attached).",
        flag(d.redirect_failures.counting),
    );
    family(
        out,
        "pf_sidecar_redirect_failures_total",
        "counter",
        "Frames redirected out of an interface that the kernel then dropped (refused when queued, or dropped by the driver), since the daemon started.",
    );
    for (interface, frames) in &d.redirect_failures.per_interface {
        sample(
            out,
            "pf_sidecar_redirect_failures_total",
            &[("interface", interface)],
            *frames as f64,
        );
    }
}

/// Routes left to the kernel for a reason to act on, and the offload
/// replies zebra gets.
fn route_outcome_families(out: &mut String, d: &DaemonState) {
    family(
        out,
        "pf_sidecar_routes_left_to_kernel_total",
        "counter",
        "Routes left to bpf_fib_lookup for a reason the operator can act on (more than 64 ECMP legs, a full table), by reason.",
    );
    for (reason, count) in pf_control::left_to_kernel::counts(&d.control.programmer) {
        sample(
            out,
            "pf_sidecar_routes_left_to_kernel_total",
            &[("reason", reason)],
            count as f64,
        );
    }
    family(
        out,
        "pf_sidecar_offload_replies_total",
        "counter",
        "Offload replies to zebra (fpm.offload_replies), one per route and FPM frame: sent (handed to the session, whatever the flag), kernel (of those, RTM_F_OFFLOAD for a route the kernel forwards after XDP_PASS), failed (of those, RTM_F_OFFLOAD_FAILED: nothing forwards the route), dropped (not sent, zebra was not reading).",
    );
    for (result, value) in [
        ("sent", d.control.offload_replies_sent),
        ("kernel", d.control.offload_replies_kernel),
        ("failed", d.control.offload_replies_failed),
        ("dropped", d.control.offload_replies_dropped),
    ] {
        sample(
            out,
            "pf_sidecar_offload_replies_total",
            &[("result", result)],
            value as f64,
        );
    }
}

/// The kernel dump: applied yet, and how often it had to start over.
fn kernel_source_families(out: &mut String, d: &DaemonState) {
    single(
        out,
        "pf_sidecar_kernel_synced",
        "gauge",
        "1 once the kernel dump has been applied.",
        flag(d.control.kernel_synced),
    );
    single(
        out,
        "pf_sidecar_kernel_resyncs_total",
        "counter",
        "Full resyncs with the kernel (start, overruns).",
        d.control.kernel_resyncs as f64,
    );
}

/// Zebra's FPM session and the listener's guards around it.
fn fpm_session_families(out: &mut String, d: &DaemonState) {
    single(
        out,
        "pf_sidecar_fpm_connected",
        "gauge",
        "1 while zebra's FPM session is open.",
        flag(d.control.fpm_connected),
    );
    single(
        out,
        "pf_sidecar_fpm_replay_complete",
        "gauge",
        "1 once zebra's replay after the last connect has been swept.",
        flag(d.control.fpm_replay_complete),
    );
    single(
        out,
        "pf_sidecar_fpm_sessions_total",
        "counter",
        "FPM sessions accepted.",
        d.fpm_sessions as f64,
    );
    single(
        out,
        "pf_sidecar_fpm_refused_total",
        "counter",
        "FPM connections refused, all reasons (see pf_sidecar_fpm_sessions_refused_total).",
        d.fpm_refused as f64,
    );
    family(
        out,
        "pf_sidecar_fpm_sessions_refused_total",
        "counter",
        "FPM connections refused before a byte was read, by reason: address (peer not in fpm.allow), user (loopback peer whose socket owner is not in fpm.allowed_users), busy (a session is open).",
    );
    for (reason, value) in [
        ("address", d.fpm_refused_address),
        ("user", d.fpm_refused_user),
        ("busy", d.fpm_refused_busy),
    ] {
        sample(
            out,
            "pf_sidecar_fpm_sessions_refused_total",
            &[("reason", reason)],
            value as f64,
        );
    }
    family(
        out,
        "pf_sidecar_fpm_sessions_dropped_total",
        "counter",
        "FPM sessions dropped by the listener's bounds: idle (no complete frame within fpm.idle_timeout_ms), partial_frame (a frame not completed within fpm.frame_timeout_ms).",
    );
    for (reason, value) in [
        ("idle", d.control.fpm_dropped_idle),
        ("partial_frame", d.control.fpm_dropped_partial_frame),
    ] {
        sample(
            out,
            "pf_sidecar_fpm_sessions_dropped_total",
            &[("reason", reason)],
            value as f64,
        );
    }
}

/// Whether the route source is fresh enough to trust, and what it sent that
/// could not be read.
fn route_source_health_families(out: &mut String, d: &DaemonState) {
    single(
        out,
        "pf_sidecar_routes_stale",
        "gauge",
        "1 while the route source has been gone longer than routes.stale_after_ms and its routes are left to bpf_fib_lookup.",
        flag(d.control.routes_stale),
    );
    if let Some(ms) = d.control.route_source_down_ms {
        single(
            out,
            "pf_sidecar_route_source_down_seconds",
            "gauge",
            "Seconds since the route source went away (FPM session closed with no replay since, or the kernel source failing).",
            ms as f64 / 1000.0,
        );
    }
    single(
        out,
        "pf_sidecar_fpm_frame_errors_total",
        "counter",
        "Malformed FPM frames (each closed the session).",
        d.control.fpm_frame_errors as f64,
    );
    if let Some(age) = d.control.fpm_last_message_age_ms {
        single(
            out,
            "pf_sidecar_fpm_last_message_age_seconds",
            "gauge",
            "Seconds since the last FPM message.",
            age as f64 / 1000.0,
        );
    }
    single(
        out,
        "pf_sidecar_decode_errors_total",
        "counter",
        "Messages that could not be decoded (skipped).",
        d.control.decode_errors as f64,
    );
}

/// What the control plane did with the events, and what it could not pass on.
fn control_activity_families(out: &mut String, s: &Snapshot<'_>) {
    let d = s.state;
    single(
        out,
        "pf_sidecar_rib_events_total",
        "counter",
        "Decoded events applied to the RIB.",
        d.control.rib.events as f64,
    );
    single(
        out,
        "pf_sidecar_resync_swept_total",
        "counter",
        "Entries a resync found stale and removed.",
        d.control.rib.swept as f64,
    );
    single(
        out,
        "pf_sidecar_map_write_errors_total",
        "counter",
        "Map writes the kernel refused.",
        d.control.programmer.write_errors as f64,
    );
    single(
        out,
        "pf_sidecar_events_dropped_total",
        "counter",
        "Events not published because the queue was full.",
        s.events_dropped as f64,
    );
}

/// The longest request head read before answering.
const MAX_REQUEST: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listen`; each scrape asks the daemon's loop for
/// a fresh page through `pages`.
pub async fn serve(listener: TcpListener, pages: mpsc::Sender<oneshot::Sender<String>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let pages = pages.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut buffer = [0u8; 1024];
            let complete = tokio::time::timeout(READ_TIMEOUT, async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                true
            })
            .await
            .unwrap_or(false);
            if !complete {
                return;
            }
            let request_line = String::from_utf8_lossy(&head);
            let mut parts = request_line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, content_type, body) = if method != "GET" {
                (
                    "405 Method Not Allowed",
                    "text/plain",
                    "GET only\n".to_string(),
                )
            } else if path != "/metrics" {
                ("404 Not Found", "text/plain", "try /metrics\n".to_string())
            } else {
                let (tx, rx) = oneshot::channel();
                if pages.send(tx).await.is_err() {
                    return;
                }
                match rx.await {
                    Ok(page) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", page),
                    Err(_) => return,
                }
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Binds the metrics listener.
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_help_and_type_for_every_family_and_escapes_labels() {
        let mut state = DaemonState {
            control: pf_control::controller::ControlStatus {
                fpm_connected: true,
                fpm_last_message_age_ms: Some(1500),
                fpm_dropped_idle: 1,
                routes_stale: true,
                route_source_down_ms: Some(31_000),
                ..Default::default()
            },
            fpm_refused_user: 3,
            live: true,
            interfaces: vec![
                crate::ports::PortState {
                    interface: "eth0".into(),
                    ifindex: Some(2),
                    attached: true,
                    condition: "attached (native)".into(),
                },
                crate::ports::PortState {
                    interface: "eth1".into(),
                    ifindex: None,
                    attached: false,
                    condition: "the interface is gone".into(),
                },
            ],
            ..Default::default()
        };
        state.redirect_failures.counting = true;
        state
            .redirect_failures
            .per_interface
            .insert("eth1".into(), 7);
        state.control.programmer.unsupported_routes = 3;
        state.control.offload_replies_sent = 9;
        state.control.offload_replies_kernel = 4;
        state.control.offload_replies_failed = 1;
        state.control.offload_replies_dropped = 2;
        let page = render(&Snapshot {
            state: &state,
            counters: &[(Counter::RedirectCache, 42)],
            tables: &[TableUse {
                table: "nexthops \"ids\"",
                used: 3,
                capacity: 4096,
            }],
            fail_safe_active: false,
            events_dropped: 0,
            heartbeat_age_s: Some(0.25),
            build: &BuildInfo {
                version: "9.9.9",
                kernel: "6.1.0-test".into(),
            },
        });
        assert!(page.contains("pf_sidecar_build_info{version=\"9.9.9\",kernel=\"6.1.0-test\"} 1\n"));
        assert!(page.contains("pf_sidecar_heartbeat_age_seconds 0.25\n"));
        assert!(page.contains("pf_sidecar_datapath_packets_total{counter=\"redirect_cache\"} 42\n"));
        assert!(page.contains("pf_sidecar_table_used{table=\"nexthops \\\"ids\\\"\"} 3\n"));
        assert!(page.contains("pf_sidecar_fpm_connected 1\n"));
        assert!(page.contains("pf_sidecar_fpm_last_message_age_seconds 1.5\n"));
        assert!(page.contains("pf_sidecar_fpm_sessions_refused_total{reason=\"user\"} 3\n"));
        assert!(page.contains("pf_sidecar_fpm_sessions_refused_total{reason=\"busy\"} 0\n"));
        assert!(page.contains("pf_sidecar_fpm_sessions_dropped_total{reason=\"idle\"} 1\n"));
        assert!(page.contains("pf_sidecar_routes_stale 1\n"));
        assert!(page.contains("pf_sidecar_route_source_down_seconds 31\n"));
        assert!(page.contains("pf_sidecar_live 1\n"));
        assert!(page.contains("pf_sidecar_attached{interface=\"eth0\"} 1\n"));
        assert!(page.contains("pf_sidecar_attached{interface=\"eth1\"} 0\n"));
        assert!(page.contains("pf_sidecar_redirect_failures_total{interface=\"eth1\"} 7\n"));
        assert!(page
            .contains("pf_sidecar_routes_left_to_kernel_total{reason=\"ecmp_over_64_legs\"} 3\n"));
        assert!(
            page.contains("pf_sidecar_routes_left_to_kernel_total{reason=\"nexthops_full\"} 0\n")
        );
        for (result, value) in [("sent", 9), ("kernel", 4), ("failed", 1), ("dropped", 2)] {
            let line = format!("pf_sidecar_offload_replies_total{{result=\"{result}\"}} {value}\n");
            assert!(page.contains(&line), "{line}");
        }
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                page.contains(&format!("# TYPE {name} ")),
                "{name} has no TYPE line"
            );
        }
    }
}
