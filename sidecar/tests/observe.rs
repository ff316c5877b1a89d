//! The daemon seen from outside: `watch` receives its events over ZeroMQ,
//! and the Prometheus endpoint is scraped and parsed by an independent
//! parser.

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{lab::Lab, require_root};
use pf_common::Counter;
use support::{Daemon, SIDECAR};

fn scrape(lab: &Lab, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: pf-sidecar\r\n\r\n");
    lab.router.enter(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = TcpStream::connect("127.0.0.1:9469") {
                stream.write_all(request.as_bytes()).unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).unwrap();
                return response;
            }
            assert!(
                Instant::now() < deadline,
                "the metrics endpoint never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

#[test]
fn watch_receives_route_neighbour_and_nexthop_events_and_metrics_scrape_and_parse() {
    require_root!();
    let lab = Lab::new("obs");
    let socket = std::env::temp_dir().join(format!("pf-test-events-{}.sock", std::process::id()));
    let endpoint = format!("ipc://{}", socket.display());
    let daemon = Daemon::start_with(
        SIDECAR,
        &lab,
        &format!("[routes]\nfrom = \"kernel\"\n[events]\nendpoint = \"{endpoint}\"\n"),
        "obs",
    );

    // Metrics once the daemon has synced.
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let response = scrape(&lab, "/metrics");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        if body.contains("pf_sidecar_kernel_synced 1") {
            assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "never synced: {response}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid exposition text");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    let defaults = pf_sidecar::config::Config::load(None, &Default::default()).unwrap();
    for counter in Counter::ALL {
        assert!(
            value(
                "pf_sidecar_datapath_packets_total",
                Some(("counter", counter.name()))
            )
            .is_some(),
            "{} is not exported",
            counter.name()
        );
    }
    assert_eq!(
        value("pf_sidecar_table_capacity", Some(("table", "nexthops"))),
        Some(defaults.capacity.nexthops as f64),
        "{body}"
    );
    assert_eq!(value("pf_sidecar_fail_safe_active", None), Some(0.0));
    assert_eq!(
        value("pf_sidecar_fpm_connected", None),
        Some(0.0),
        "routes come from the kernel here"
    );
    assert!(value("pf_sidecar_kernel_resyncs_total", None).unwrap() >= 1.0);
    assert!(
        scrape.docs.contains_key("pf_sidecar_routes"),
        "HELP text is exported"
    );
    assert!(scrape_status(&lab, "/other").starts_with("HTTP/1.1 404"));

    // Events: watch subscribes, then the router's state changes.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_pf-sidecar"))
        .args([
            "--netns",
            &lab.router.name,
            "watch",
            "--endpoint",
            &endpoint,
            "--json",
            "--count",
            "50",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // A subscriber misses what is published before it has joined.
    std::thread::sleep(Duration::from_millis(500));
    lab.router
        .ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2"]);
    lab.router.ip(&[
        "neigh",
        "replace",
        "198.51.100.2",
        "lladdr",
        "02:00:00:00:0b:02",
        "dev",
        "r1",
    ]);
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = |seen: &[serde_json::Value]| {
        let route = seen.iter().any(|e| {
            e["event"] == "route" && e["prefix"] == "203.0.113.0/24" && e["op"] == "upsert"
        });
        let neighbour = seen.iter().any(|e| {
            e["event"] == "neighbour"
                && e["ip"] == "198.51.100.2"
                && e["mac"] == "02:00:00:00:0b:02"
        });
        let nexthop = seen.iter().any(|e| {
            e["event"] == "nexthop" && e["gateway"] == "198.51.100.2" && e["resolved"] == true
        });
        route && neighbour && nexthop
    };
    while !wanted(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "watch did not show the events; it printed {seen:#?}\n{}",
            daemon.log()
        );
        if let Ok(line) = lines_rx.recv_timeout(left) {
            seen.push(serde_json::from_str(&line).expect("watch --json prints JSON lines"));
        }
    }
    assert!(
        seen.iter()
            .all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z'))),
        "every event carries the time it arrived: {seen:#?}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
    // The subscriber is gone. ZeroMQ logs that at INFO; the daemon's log
    // (at info) must not carry it. An event makes the publisher notice.
    lab.router
        .ip(&["route", "add", "198.51.100.128/25", "via", "198.51.100.2"]);
    std::thread::sleep(Duration::from_secs(1));
    let log = daemon.log();
    assert!(
        !log.contains("Client disconnected"),
        "ZeroMQ's INFO noise reached the log:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a log that is not a terminal carries no colour codes:\n{log}"
    );
    let _ = std::fs::remove_file(&socket);
}

fn scrape_status(lab: &Lab, path: &str) -> String {
    scrape(lab, path)
}
