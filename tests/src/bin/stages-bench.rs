//! Where a full-table load's CPU time goes, stage by stage, in one process
//! and one run: decoding the rtnetlink messages, the RIB and programmer
//! writing real maps (IPv6 through the daemon's writer thread), and the raw
//! floor of the same map writes. `fpm-bench` measures the whole daemon end
//! to end; this one says which stage to look at.
//!
//! Run as root after `cargo build --release`: `make bench` runs it.

use std::time::{Duration, Instant};

use integration_tests::{
    full_table::{FullTable, IpV6Writes},
    synthetic::machine,
};
use pf_control::{
    change::Change,
    programmer::{Limits, Programmer},
    rib::{Rib, RibEntry, Source},
};
use pf_sidecar::datapath::{route_writer::RouteWriter, Datapath};
use pf_wire::{decode, Decoded};

/// Messages per batch, about what one 60 KB FPM frame carries.
const BATCH: usize = 1000;
const RUNS: usize = 3;

fn runs() -> usize {
    std::env::var("PF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(RUNS)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Figures {
    decode: Duration,
    rib_programmer_wall: Duration,
    rib_programmer_cpu: Duration,
    floor: Duration,
}

fn run(table: &FullTable, messages: &[Vec<u8>]) -> Figures {
    let started = Instant::now();
    let batches: Vec<Vec<Change>> = messages
        .chunks(BATCH)
        .map(|chunk| {
            chunk
                .iter()
                .filter_map(|m| match decode(m) {
                    Ok(Decoded::Change(e)) => Some(e),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let decode_took = started.elapsed();
    assert_eq!(
        batches.iter().map(Vec::len).sum::<usize>(),
        messages.len(),
        "every message decodes"
    );

    let caps = FullTable::capacities();
    let mut datapath = Datapath::load(&caps).unwrap();
    let (wall, cpu) = {
        let maps = RouteWriter::new(&mut datapath.maps).unwrap();
        let limits = Limits {
            nexthops: caps.nexthops,
            ecmp_groups: caps.ecmp_groups,
        };
        let mut programmer: Programmer<_, RibEntry> = Programmer::sharing_table(maps, limits);
        let mut rib = Rib::new(Source::Fpm, vec![254]);
        rib.begin_resync(Source::Fpm, &mut programmer);
        let (wall0, cpu0) = (Instant::now(), thread_cpu());
        for batch in batches {
            rib.apply_batch(Source::Fpm, batch, &mut programmer);
        }
        programmer.flush();
        let taken = (wall0.elapsed(), thread_cpu() - cpu0);
        assert_eq!(programmer.route_count(), table.routes());
        assert_eq!(programmer.stats.write_errors, 0);
        taken
    };
    drop(datapath);

    let floor = table.write_floor(IpV6Writes::OneByOne);
    Figures {
        decode: decode_took,
        rib_programmer_wall: wall,
        rib_programmer_cpu: cpu,
        floor,
    }
}

fn main() {
    assert!(integration_tests::is_root(), "run as root");
    println!("{}", machine());
    let table = FullTable::new();
    let mut messages = FullTable::nexthop_messages(1);
    messages.extend(table.route_messages());
    println!(
        "{} routes + {} nexthop objects, applied {BATCH} messages to a batch",
        table.routes(),
        messages.len() - table.routes()
    );
    let secs = |d: Duration| d.as_secs_f64();
    let ns_per_route = |d: Duration| d.as_nanos() as f64 / table.routes() as f64;
    println!("run | decode s | RIB+programmer wall s (main-thread CPU s) | floor s | RIB+programmer / floor");
    let mut all = Vec::new();
    for run_no in 1..=runs() {
        let f = run(&table, &messages);
        println!(
            "{run_no} | {:.2} ({:.0} ns/route) | {:.2} ({:.2}; {:.0} ns/route) | {:.2} | {:.2}",
            secs(f.decode),
            ns_per_route(f.decode),
            secs(f.rib_programmer_wall),
            secs(f.rib_programmer_cpu),
            ns_per_route(f.rib_programmer_cpu),
            secs(f.floor),
            secs(f.rib_programmer_wall) / secs(f.floor),
        );
        all.push(f);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let decode = median(all.iter().map(|f| f.decode).collect());
    let cpu = median(all.iter().map(|f| f.rib_programmer_cpu).collect());
    let wall = median(all.iter().map(|f| f.rib_programmer_wall).collect());
    let floor = median(all.iter().map(|f| f.floor).collect());
    println!(
        "median: decode {:.0} ns/route, RIB+programmer {:.0} ns/route of main-thread CPU ({:.2} s wall), floor {:.2} s",
        ns_per_route(decode),
        ns_per_route(cpu),
        secs(wall),
        secs(floor)
    );
}
