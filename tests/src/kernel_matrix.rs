//! The kernel matrix: stock Debian kernels booted under qemu, each running
//! the static `pf-sidecar` (scripts/kernel-matrix/). This module reads a
//! guest's console and judges it; it never boots anything itself.
//!
//! The guest prints `PFM|<step>|<exit code>|<detail>` per step and frames
//! command output with `PFM-BEGIN|<step>` / `PFM-END|<step>`
//! (scripts/kernel-matrix/guest-init.sh).

use std::collections::BTreeMap;

use serde_json::Value;

/// One guest's console, split into steps.
#[derive(Debug, Default)]
pub struct Console {
    /// Exit code and detail per step, in the order they were printed.
    pub steps: Vec<(String, i32, String)>,
    /// Framed output per step.
    pub blocks: BTreeMap<String, String>,
    /// The guest printed its last line (it did not hang or die).
    pub done: bool,
}

impl Console {
    pub fn parse(text: &str) -> Self {
        let mut console = Self::default();
        let mut open: Option<(String, String)> = None;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if let Some((step, body)) = open.as_mut() {
                if line == format!("PFM-END|{step}") {
                    let (step, body) = open.take().expect("open block");
                    console.blocks.insert(step, body);
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
                continue;
            }
            if let Some(step) = line.strip_prefix("PFM-BEGIN|") {
                open = Some((step.to_owned(), String::new()));
            } else if line == "PFM-DONE" {
                console.done = true;
            } else if let Some(rest) = line.strip_prefix("PFM|") {
                let mut fields = rest.splitn(3, '|');
                let step = fields.next().unwrap_or_default().to_owned();
                let code = fields.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
                let detail = fields.next().unwrap_or_default().to_owned();
                console.steps.push((step, code, detail));
            }
        }
        console
    }

    /// The exit code of the last `step`, if it ran.
    pub fn code(&self, step: &str) -> Option<i32> {
        self.steps
            .iter()
            .rev()
            .find(|(s, ..)| s == step)
            .map(|(_, code, _)| *code)
    }

    pub fn detail(&self, step: &str) -> Option<&str> {
        self.steps
            .iter()
            .rev()
            .find(|(s, ..)| s == step)
            .map(|(.., detail)| detail.as_str())
    }

    pub fn block(&self, step: &str) -> &str {
        self.blocks.get(step).map(String::as_str).unwrap_or("")
    }

    /// The kernel release the guest booted.
    pub fn release(&self) -> String {
        self.detail("boot")
            .and_then(|d| d.split(' ').find_map(|kv| kv.strip_prefix("release=")))
            .unwrap_or("?")
            .to_owned()
    }

    fn json(&self, step: &str) -> Option<Value> {
        serde_json::from_str(self.block(step)).ok()
    }

    /// A feasibility check by name: (pass, value, detail).
    pub fn feasibility(&self, name: &str) -> Option<(bool, String, String)> {
        let checks = self.json("feasibility")?;
        let check = checks
            .as_array()?
            .iter()
            .find(|c| c["name"].as_str() == Some(name))?;
        Some((
            check["pass"].as_bool().unwrap_or(false),
            check["value"].as_str().unwrap_or_default().to_owned(),
            check["detail"].as_str().unwrap_or_default().to_owned(),
        ))
    }

    /// A datapath counter from `status --json` at `step`.
    pub fn counter(&self, step: &str, name: &str) -> Option<u64> {
        self.json(step)?["counters"]
            .as_array()?
            .iter()
            .find(|c| c["name"].as_str() == Some(name))?["value"]
            .as_u64()
    }
}

/// What a guest must show, one row each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub what: &'static str,
    pub pass: bool,
    pub verdict: String,
}

impl Row {
    fn new(what: &'static str, pass: bool, verdict: impl Into<String>) -> Self {
        Self {
            what,
            pass,
            verdict: verdict.into(),
        }
    }
}

pub const PROGRAMS: [&str; 3] = ["fast_path", "finalize", "xdp_pass"];
pub const MIX_PROBE: &str = "jit: tail calls mixed with bpf-to-bpf calls";
/// Pings per family in the forwarding step.
pub const PINGS: u64 = 20;

/// Judges one guest. `control_must_fail`: the deliberately bad control (a
/// tail call plus a real bpf-to-bpf call) must be rejected on this kernel.
pub fn judge(console: &Console, control_must_fail: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    rows.extend(end_marker_row(console));
    let verifier = verifier_row(console);
    let all_loaded = verifier.pass;
    rows.push(verifier);
    let run = native_attach_row(console);
    let run_ok = run.pass;
    rows.push(run);
    let generic = generic_attach_row(console);
    let generic_ok = generic.pass;
    rows.push(generic);
    rows.push(datapath_cases_row(console));
    rows.extend(forwarding_rows(console));
    rows.extend(vlan_rows(console));
    rows.extend(qinq_rows(console));
    rows.extend(rewrite_rows(console));
    rows.extend(wire_rows(console));
    rows.push(mtu_row(console));
    rows.extend(vrf_rows(console));
    rows.extend(bond_rows(console));
    rows.push(control_row(console, control_must_fail));
    rows.push(feasibility_row(console, all_loaded, run_ok, generic_ok));
    rows
}

/// A failing row when the guest hung or died before its last line.
fn end_marker_row(console: &Console) -> Option<Row> {
    (!console.done).then(|| {
        Row::new(
            "guest ran to the end",
            false,
            format!(
                "no end marker (qemu exit {:?}, {})",
                console.code("guest"),
                console.detail("guest").unwrap_or("")
            ),
        )
    })
}

/// The verifier accepted every program in `PROGRAMS`.
fn verifier_row(console: &Console) -> Row {
    let loads: Vec<(String, bool, String)> = PROGRAMS
        .iter()
        .map(|p| {
            let found = console.feasibility(&format!("datapath: program {p}"));
            match found {
                Some((pass, _, detail)) => (p.to_string(), pass, detail),
                None => (p.to_string(), false, "not reported".to_owned()),
            }
        })
        .collect();
    let all_loaded = loads.iter().all(|(_, pass, _)| *pass);
    Row::new(
        "verifier: fast_path, finalize, xdp_pass",
        all_loaded,
        if all_loaded {
            "accepted".to_owned()
        } else {
            loads
                .iter()
                .filter(|(_, pass, _)| !pass)
                .map(|(p, _, d)| format!("{p} rejected: {}", tail(d, 6)))
                .collect::<Vec<_>>()
                .join("; ")
        },
    )
}

/// `run` loaded the datapath and attached it natively to the veths.
fn native_attach_row(console: &Console) -> Row {
    let run_ok = console.code("run") == Some(0);
    Row::new(
        "run: load and attach native (veth)",
        run_ok,
        if run_ok {
            "attached".to_owned()
        } else {
            format!(
                "not attached; daemon log:\n{}",
                tail(console.block("run-log"), 12)
            )
        },
    )
}

fn generic_attach_row(console: &Console) -> Row {
    let generic = console.code("attach-generic");
    let generic_ok = generic == Some(0);
    Row::new(
        "attach generic (skb)",
        generic_ok,
        if generic_ok {
            "attached".to_owned()
        } else {
            format!("refused: {}", tail(console.block("attach-generic"), 4))
        },
    )
}

/// The datapath test cases passed; otherwise the summary and the failures.
fn datapath_cases_row(console: &Console) -> Row {
    let summary = console
        .block("datapath")
        .lines()
        .rev()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or("no test result")
        .to_owned();
    let cases_ok = console.code("datapath") == Some(0) && summary.starts_with("test result: ok");
    Row::new(
        "datapath cases (BPF_PROG_TEST_RUN)",
        cases_ok,
        if cases_ok {
            summary.trim_start_matches("test result: ").to_owned()
        } else {
            let failed: Vec<&str> = console
                .block("datapath")
                .lines()
                .filter(|l| l.ends_with("FAILED") && l.starts_with("test "))
                .collect();
            format!("{summary}\n{}", failed.join("\n"))
        },
    )
}

/// Every ping of both families answered, and the fast path (not the
/// kernel) forwarded them.
fn forwarding_rows(console: &Console) -> [Row; 3] {
    let cache_before = console.counter("status-before", "redirect_cache");
    let cache_after = console.counter("status-after", "redirect_cache");
    let redirected = match (cache_before, cache_after) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => 0,
    };
    let ping_row = |what: &'static str, step: &str| {
        let (sent, received) = ping_counts(console.block(step));
        let ok = console.code(step) == Some(0) && sent == PINGS && received == PINGS;
        Row::new(what, ok, format!("{received}/{sent} replies"))
    };
    // Each echo request of both families is a cache hit at the router.
    let fast = redirected >= 2 * PINGS;
    [
        ping_row("forward IPv4 frames (ping)", "ping4"),
        ping_row("forward IPv6 frames (ping)", "ping6"),
        Row::new(
            "forwarded by the fast path",
            fast,
            format!(
                "redirect_cache +{redirected} (at least {} expected)",
                2 * PINGS
            ),
        ),
    ]
}

/// 802.1Q: pings over VLAN 100 both ways. The requests are cache hits
/// tagged on the way out; the tagged replies go to the client's connected
/// subnet, which the datapath leaves to `bpf_fib_lookup` (a redirect
/// untagged out of rt0). The server's VLAN device saw them arrive and
/// leave.
fn vlan_rows(console: &Console) -> [Row; 3] {
    tagged_rows(
        console,
        "vlan",
        [
            "802.1Q: forward IPv4 over VLAN 100 (ping)",
            "802.1Q: forward IPv6 over VLAN 100 (ping)",
            "802.1Q: tagged out by the fast path, replies forwarded by it",
        ],
        RequestCounter::RedirectCache,
    )
}

/// 802.1ad: the same over outer tag 200 (0x88a8) and inner 300 (0x8100).
/// The fast path takes both tags off the replies. A nexthop carries one
/// tag, so requests that need two leave to the kernel (`pass_devmap_miss`:
/// the egress is the outer VLAN device, not a port), which tags them.
fn qinq_rows(console: &Console) -> [Row; 3] {
    tagged_rows(
        console,
        "qinq",
        [
            "802.1ad: forward IPv4 over 200/300 (ping)",
            "802.1ad: forward IPv6 over 200/300 (ping)",
            "802.1ad: replies forwarded by the fast path, requests tagged by the kernel",
        ],
        RequestCounter::PassDevmapMiss,
    )
}

/// The change of a datapath counter between two `status` steps.
fn counted(console: &Console, before: &str, after: &str, name: &str) -> u64 {
    match (console.counter(before, name), console.counter(after, name)) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => 0,
    }
}

/// Tag rewrite on one parent: a client behind VLAN 400 of rt1 pings the
/// server behind VLAN 100 of rt1. Requests: cache hits, tag 400 off and
/// 100 on. Replies: to the client's subnet on `rt1.400`, which
/// `bpf_fib_lookup` answers with the VLAN device and `PORTS` turns into
/// rt1 with tag 400.
fn rewrite_rows(console: &Console) -> [Row; 2] {
    let (sent, received) = ping_counts(console.block("rewrite-ping4"));
    let pinged = console.code("rewrite-ping4") == Some(0) && sent == PINGS && received == PINGS;
    let out = counted(console, "rewrite-before", "rewrite-after", "redirect_cache");
    let back = counted(console, "rewrite-before", "rewrite-after", "redirect_fib");
    [
        Row::new(
            "tag rewrite: VLAN 400 in, VLAN 100 out on one port (ping)",
            pinged,
            format!("{received}/{sent} replies"),
        ),
        Row::new(
            "tag rewrite by the fast path both ways",
            out >= PINGS && back >= PINGS,
            format!(
                "requests: redirect_cache +{out}, replies (bpf_fib_lookup to a VLAN): redirect_fib +{back} (at least {PINGS} each)"
            ),
        ),
    ]
}

/// The frames `frame-capture` printed at `step`, as they were on the wire.
pub fn captured(output: &str) -> Vec<Vec<u8>> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("frame "))
        .filter_map(|hex| {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .collect()
}

/// The MAC address `ip -o link show` printed.
pub fn link_mac(output: &str) -> Option<[u8; 6]> {
    let text = output.split("link/ether ").nth(1)?.get(..17)?;
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate() {
        *mac.get_mut(i)? = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

/// An ICMP frame as the wire carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireIcmp {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// (TPID, VLAN id), outer first.
    pub tags: Vec<(u16, u16)>,
    pub src: std::net::Ipv4Addr,
    pub dst: std::net::Ipv4Addr,
    pub ttl: u8,
    pub icmp_type: u8,
    pub checksum_ok: bool,
}

pub fn wire_icmp(frame: &[u8]) -> Option<WireIcmp> {
    let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    let mut at = 12;
    let mut tags = Vec::new();
    while let Some(tpid @ (0x8100 | 0x88a8)) = be16(at) {
        tags.push((tpid, be16(at + 2)? & 0x0fff));
        at += 4;
    }
    if be16(at)? != 0x0800 {
        return None;
    }
    let ip = frame.get(at + 2..at + 22)?;
    if ip[0] != 0x45 || ip[9] != 1 {
        return None;
    }
    let sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    Some(WireIcmp {
        dst_mac: frame.get(0..6)?.try_into().ok()?,
        src_mac: frame.get(6..12)?.try_into().ok()?,
        tags,
        src: std::net::Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        ttl: ip[8],
        icmp_type: *frame.get(at + 22)?,
        checksum_ok: (folded & 0xffff) + (folded >> 16) == 0xffff,
    })
}

/// What the frames of one direction must look like on the wire.
struct OnTheWire<'a> {
    what: &'static str,
    step: &'a str,
    /// ICMP type (8 request, 0 reply), source and destination.
    icmp_type: u8,
    src: [u8; 4],
    dst: [u8; 4],
    tags: &'a [(u16, u16)],
    /// The steps whose `ip -o link show` names the source and destination MACs.
    src_mac: &'a str,
    dst_mac: &'a str,
    at_least: u64,
}

fn wire_row(console: &Console, expect: OnTheWire<'_>) -> Row {
    let frames: Vec<WireIcmp> = captured(console.block(expect.step))
        .iter()
        .filter_map(|f| wire_icmp(f))
        .filter(|f| {
            f.icmp_type == expect.icmp_type
                && f.src.octets() == expect.src
                && f.dst.octets() == expect.dst
        })
        .collect();
    let macs = (
        link_mac(console.block(expect.src_mac)),
        link_mac(console.block(expect.dst_mac)),
    );
    let wrong = frames.iter().find(|f| {
        f.tags != expect.tags
            || Some(f.src_mac) != macs.0
            || Some(f.dst_mac) != macs.1
            || f.ttl != 63
            || !f.checksum_ok
    });
    let hex = |m: Option<[u8; 6]>| {
        m.map_or("?".to_owned(), |m| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        })
    };
    let tags = |t: &[(u16, u16)]| {
        if t.is_empty() {
            "untagged".to_owned()
        } else {
            t.iter()
                .map(|(tpid, vid)| format!("{tpid:#06x}/{vid}"))
                .collect::<Vec<_>>()
                .join(" + ")
        }
    };
    let pass = frames.len() as u64 >= expect.at_least && wrong.is_none() && macs.0.is_some();
    Row::new(
        expect.what,
        pass,
        match wrong {
            Some(f) => format!(
                "a frame differs: {} {}→{} TTL {} checksum {} (expected {} {}→{} TTL 63)",
                tags(&f.tags),
                hex(Some(f.src_mac)),
                hex(Some(f.dst_mac)),
                f.ttl,
                if f.checksum_ok { "ok" } else { "BAD" },
                tags(expect.tags),
                hex(macs.0),
                hex(macs.1)
            ),
            None => format!(
                "{} frames (at least {}): {}, {}→{}, TTL 63, IPv4 checksum ok",
                frames.len(),
                expect.at_least,
                tags(expect.tags),
                hex(macs.0),
                hex(macs.1)
            ),
        },
    )
}

/// Frames checked byte by byte where they arrive (`frame-capture` on the
/// far end, the tags put back from the receiving kernel's metadata).
fn wire_rows(console: &Console) -> Vec<Row> {
    const CLIENT: [u8; 4] = [192, 0, 2, 3];
    const CLIENT_QINQ: [u8; 4] = [192, 0, 2, 4];
    const CLIENT_400: [u8; 4] = [203, 0, 113, 34];
    const SERVER_VLAN: [u8; 4] = [203, 0, 113, 200];
    const SERVER_QINQ: [u8; 4] = [203, 0, 113, 250];
    vec![
        wire_row(
            console,
            OnTheWire {
                what: "802.1Q on the wire: requests tagged 0x8100/100 by the fast path",
                step: "vlan-wire",
                icmp_type: 8,
                src: CLIENT,
                dst: SERVER_VLAN,
                tags: &[(0x8100, 100)],
                src_mac: "mac-rt1",
                dst_mac: "mac-sv0",
                at_least: PINGS,
            },
        ),
        wire_row(
            console,
            OnTheWire {
                what: "802.1Q on the wire: replies untagged toward the client",
                step: "vlan-wire-back",
                icmp_type: 0,
                src: SERVER_VLAN,
                dst: CLIENT,
                tags: &[],
                src_mac: "mac-rt0",
                dst_mac: "mac-cl0",
                at_least: PINGS,
            },
        ),
        wire_row(
            console,
            OnTheWire {
                what: "802.1ad on the wire: 0x88a8/200 outside 0x8100/300",
                step: "qinq-wire",
                icmp_type: 8,
                src: CLIENT_QINQ,
                dst: SERVER_QINQ,
                tags: &[(0x88a8, 200), (0x8100, 300)],
                src_mac: "mac-rt1",
                dst_mac: "mac-sv0",
                at_least: PINGS,
            },
        ),
        wire_row(
            console,
            OnTheWire {
                what: "tag rewrite on the wire: 400 in, 0x8100/100 out",
                step: "rewrite-wire",
                icmp_type: 8,
                src: CLIENT_400,
                dst: SERVER_VLAN,
                tags: &[(0x8100, 100)],
                src_mac: "mac-rt1",
                dst_mac: "mac-sv0",
                at_least: PINGS * 3 / 4,
            },
        ),
        wire_row(
            console,
            OnTheWire {
                what: "tag rewrite on the wire: replies 100 in, 0x8100/400 out",
                step: "rewrite-wire",
                icmp_type: 0,
                src: SERVER_VLAN,
                dst: CLIENT_400,
                tags: &[(0x8100, 400)],
                src_mac: "mac-rt1",
                dst_mac: "mac-sv0",
                at_least: PINGS * 3 / 4,
            },
        ),
    ]
}

/// A VLAN's MTU below its parent's: a packet that fits the parent but not
/// the VLAN is passed (`pass_mtu`) and the kernel handles it (an ICMP
/// "fragmentation needed" for the first, after which the sender fragments).
fn mtu_row(console: &Console) -> Row {
    let (sent, received) = ping_counts(console.block("mtu-ping4"));
    let passed = counted(console, "mtu-before", "mtu-after", "pass_mtu");
    Row::new(
        "VLAN MTU below the parent's: passed to the kernel",
        sent > 0 && received + 1 >= sent && passed >= 1,
        format!("{received}/{sent} replies, pass_mtu +{passed} (at least 1)"),
    )
}

/// VRF blue (table 10) routes the server's addresses to a second server
/// (s2) while the main table, which the route cache holds, routes them to
/// the first. Pings from a client in blue (behind rt2) are answered only if
/// table 10 routed them: both ways by `bpf_fib_lookup` in the VRF
/// (`fib_vrf`), with no cache hit at all. A client behind VLAN 500 of rt4,
/// the VLAN in blue and rt4 in the main table: rt4's frames go to the
/// kernel (`pass_vrf_kernel`), which routes them in blue.
fn vrf_rows(console: &Console) -> [Row; 7] {
    let ping = |step: &str| {
        let (sent, received) = ping_counts(console.block(step));
        (
            console.code(step) == Some(0) && sent == PINGS && received == PINGS,
            format!("{received}/{sent} replies"),
        )
    };
    let (v4, v4_detail) = ping("vrf-ping4");
    let (v6, v6_detail) = ping("vrf-ping6");
    let fib_vrf = counted(console, "vrf-before", "vrf-after", "fib_vrf");
    let redirect_fib = counted(console, "vrf-before", "vrf-after", "redirect_fib");
    let cache_hit = counted(console, "vrf-before", "vrf-after", "cache_hit");
    let (rx_before, _) = link_packets(console.block("vrf-link-before"));
    let (rx_after, _) = link_packets(console.block("vrf-link-after"));
    let at_s2 = match (rx_before, rx_after) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => 0,
    };
    let (vlan, vlan_detail) = ping("vrf-vlan-ping4");
    let to_kernel = counted(console, "vrf-after", "vrf-vlan-after", "pass_vrf_kernel");
    [
        Row::new(
            "VRF: forward IPv4 from a VRF port per the VRF's table (ping)",
            v4,
            v4_detail,
        ),
        Row::new(
            "VRF: forward IPv6 from a VRF port per the VRF's table (ping)",
            v6,
            v6_detail,
        ),
        Row::new(
            "VRF: by bpf_fib_lookup in the VRF, never the route cache",
            fib_vrf >= 4 * PINGS && redirect_fib >= 4 * PINGS && cache_hit == 0 && at_s2 >= 2 * PINGS,
            format!(
                "fib_vrf +{fib_vrf}, redirect_fib +{redirect_fib} (at least {} each), cache_hit +{cache_hit} (0 expected); the VRF's server received {at_s2} (at least {})",
                4 * PINGS,
                2 * PINGS
            ),
        ),
        Row::new(
            "VRF on a VLAN of a main-table port: to the kernel, routed per the VRF (ping)",
            vlan && to_kernel >= PINGS,
            format!("{vlan_detail}, pass_vrf_kernel +{to_kernel} (at least {PINGS})"),
        ),
        wire_row(
            console,
            OnTheWire {
                what: "VRF on the wire: requests from the VRF port reach the VRF's server",
                step: "vrf-wire",
                icmp_type: 8,
                src: [198, 51, 100, 130],
                dst: [203, 0, 113, 10],
                tags: &[],
                src_mac: "mac-rt3",
                dst_mac: "mac-sv3",
                at_least: PINGS,
            },
        ),
        cli_row(
            console,
            "vrf-lookup",
            "VRF: lookup --vrf answers from the VRF's table, its ports marked",
            &[
                "via 198.51.100.194",
                "rt2 (ifindex",
                "attached: in a VRF",
                "rt4 (ifindex",
                "attached: frames to the kernel",
                "agree     yes",
            ],
        ),
        cli_row(
            console,
            "vrf-diff",
            "VRF: diff checks its ports against INGRESS, in sync",
            &["3 ports in VRFs", "0 different", "in sync"],
        ),
    ]
}

/// An active-backup bond of two veths (5.15 and later: native XDP on the
/// bond): pings to a server behind it go in by a redirect into the bond
/// (cache hits) and come back through its members (the program runs in
/// each member), and keep going with the active member down. Before 5.15,
/// `feasibility` must say the bond takes no native XDP and why.
fn bond_rows(console: &Console) -> Vec<Row> {
    let feasibility = console.block("bond-feasibility");
    if !feasibility.is_empty() {
        let checks: Option<serde_json::Value> = serde_json::from_str(feasibility).ok();
        let native = checks.as_ref().and_then(|c| {
            c.as_array()?
                .iter()
                .find(|c| c["name"].as_str() == Some("interface rtbond: native attach"))
                .cloned()
        });
        let refused_with_reason = native.as_ref().is_some_and(|c| {
            c["pass"] == false && c["fix"].as_str().is_some_and(|f| f.contains("5.15"))
        });
        return vec![Row::new(
            "bond: before 5.15 no native XDP on a bond, and feasibility says why",
            refused_with_reason,
            native
                .map(|c| format!("{}; fix: {}", c["detail"], c["fix"]))
                .unwrap_or_else(|| format!("no native-attach check:\n{}", tail(feasibility, 8))),
        )];
    }
    let ping = |step: &str| {
        let (sent, received) = ping_counts(console.block(step));
        (sent, received, console.code(step) == Some(0))
    };
    let (sent, received, ok) = ping("bond-ping4");
    let into = counted(console, "bond-before", "bond-after", "redirect_cache");
    let back = counted(console, "bond-before", "bond-after", "redirect_fib");
    let (f_sent, f_received, _) = ping("bond-failover-ping4");
    let f_into = counted(
        console,
        "bond-after",
        "bond-failover-after",
        "redirect_cache",
    );
    let active = console
        .block("bond-state")
        .lines()
        .find(|l| l.starts_with("Currently Active Slave"))
        .unwrap_or("no active member reported")
        .to_owned();
    vec![
        Row::new(
            "bond: forward IPv4 through an active-backup bond (ping)",
            ok && sent == PINGS && received == PINGS,
            format!("{received}/{sent} replies"),
        ),
        Row::new(
            "bond: by the fast path both ways (into the bond, back from its member)",
            into >= PINGS && back >= PINGS,
            format!("requests: redirect_cache +{into}, replies: redirect_fib +{back} (at least {PINGS} each)"),
        ),
        wire_row(
            console,
            OnTheWire {
                what: "bond on the wire: requests from the bond's MAC to the server's",
                step: "bond-wire",
                icmp_type: 8,
                src: [192, 0, 2, 2],
                dst: [203, 0, 113, 241],
                tags: &[],
                src_mac: "mac-rtbond",
                dst_mac: "mac-sbond",
                at_least: PINGS,
            },
        ),
        Row::new(
            "bond: active member down, traffic continues by the fast path",
            f_sent == PINGS && f_received + 2 >= PINGS && f_into + 2 >= PINGS && active.contains("bdb"),
            format!("{f_received}/{f_sent} replies, redirect_cache +{f_into}; {active}"),
        ),
    ]
}

/// A command's exit code 0 and the phrases its output must hold.
fn cli_row(console: &Console, step: &str, what: &'static str, phrases: &[&str]) -> Row {
    let output = console.block(step);
    let missing: Vec<&str> = phrases
        .iter()
        .copied()
        .filter(|p| !output.contains(p))
        .collect();
    let ok = console.code(step) == Some(0) && missing.is_empty();
    Row::new(
        what,
        ok,
        if ok {
            tail(output, 1)
        } else {
            format!(
                "exit {:?}, missing {missing:?}:\n{}",
                console.code(step),
                tail(output, 12)
            )
        },
    )
}

/// The datapath counters the sub-interface rows read.
#[derive(Clone, Copy)]
enum RequestCounter {
    RedirectCache,
    PassDevmapMiss,
}

impl RequestCounter {
    fn name(self) -> &'static str {
        match self {
            RequestCounter::RedirectCache => "redirect_cache",
            RequestCounter::PassDevmapMiss => "pass_devmap_miss",
        }
    }
}

/// Pings over a sub-interface (`step`-ping4, -ping6) and what carried them:
/// the requests counted under `requests`, the replies under `redirect_fib`,
/// and the server's device (`step`-link-before/after) saw both.
fn tagged_rows(
    console: &Console,
    step: &str,
    names: [&'static str; 3],
    requests: RequestCounter,
) -> [Row; 3] {
    let delta = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => 0,
    };
    let (before, after) = (format!("{step}-before"), format!("{step}-after"));
    let out = counted(console, &before, &after, requests.name());
    let back = counted(console, &before, &after, "redirect_fib");
    let (rx_before, tx_before) = link_packets(console.block(&format!("{step}-link-before")));
    let (rx_after, tx_after) = link_packets(console.block(&format!("{step}-link-after")));
    let (rx, tx) = (delta(rx_before, rx_after), delta(tx_before, tx_after));
    let ping_row = |what: &'static str, family: &str| {
        let ping = format!("{step}-{family}");
        let (sent, received) = ping_counts(console.block(&ping));
        let ok = console.code(&ping) == Some(0) && sent == PINGS && received == PINGS;
        Row::new(what, ok, format!("{received}/{sent} replies"))
    };
    [
        ping_row(names[0], "ping4"),
        ping_row(names[1], "ping6"),
        Row::new(
            names[2],
            out >= 2 * PINGS && back >= 2 * PINGS && rx >= 2 * PINGS && tx >= 2 * PINGS,
            format!(
                "requests: {} +{out}, tagged replies: redirect_fib +{back} (at least {} each); the server's device received {rx}, sent {tx} (at least {} each)",
                requests.name(),
                2 * PINGS,
                2 * PINGS
            ),
        ),
    ]
}

/// (RX packets, TX packets) from `ip -s -s link show`.
pub fn link_packets(output: &str) -> (Option<u64>, Option<u64>) {
    let after = |label: &str| {
        let mut lines = output.lines();
        lines.find(|l| l.trim_start().starts_with(label))?;
        lines
            .next()?
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
    };
    (after("RX:"), after("TX:"))
}

/// The `MIX_PROBE` control: rejected where `control_must_fail`, reported
/// either way elsewhere.
fn control_row(console: &Console, control_must_fail: bool) -> Row {
    let control = console.feasibility(MIX_PROBE);
    let (control_ok, control_verdict) = match &control {
        Some((_, value, detail)) if value == "rejected" => (
            true,
            format!(
                "rejected: {}",
                tail(detail.split(". ").next().unwrap_or(""), 2)
            ),
        ),
        Some((_, value, _)) => (!control_must_fail, value.clone()),
        None => (false, "not reported".to_owned()),
    };
    Row::new(
        if control_must_fail {
            "bad control (tail call + bpf-to-bpf call) must be rejected"
        } else {
            "control: tail call + bpf-to-bpf call"
        },
        control_ok,
        control_verdict,
    )
}

/// Feasibility must predict what the real load and attaches did.
fn feasibility_row(console: &Console, all_loaded: bool, run_ok: bool, generic_ok: bool) -> Row {
    let mut disagreements = Vec::new();
    let mut predicted = |name: String, actual: bool| match console.feasibility(&name) {
        Some((pass, ..)) if pass == actual => {}
        Some((pass, ..)) => disagreements.push(format!("{name}: said {pass}, was {actual}")),
        None => disagreements.push(format!("{name}: not reported")),
    };
    predicted("interface rt0: native attach".to_owned(), run_ok);
    predicted("interface rt1: native attach".to_owned(), run_ok);
    predicted("interface rt0: generic attach".to_owned(), generic_ok);
    Row::new(
        "feasibility predicts load and attach",
        disagreements.is_empty() && all_loaded == run_ok,
        if disagreements.is_empty() {
            "agrees".to_owned()
        } else {
            disagreements.join("; ")
        },
    )
}

/// (transmitted, received) from a ping summary (iputils or busybox).
pub fn ping_counts(output: &str) -> (u64, u64) {
    let line = output
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default();
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (
        numbers.first().copied().unwrap_or(0),
        numbers.get(1).copied().unwrap_or(0),
    )
}

/// The last `n` non-empty lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// "5.10" from "5.10.0-32-arm64", "6.12" from "6.12.117+deb13-amd64".
pub fn series(release: &str) -> String {
    release.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The guests of the matrix, as SUITE/ARCH, read from
/// scripts/kernel-matrix/guests.sh (the one list the scripts use too).
pub fn guests(guests_sh: &str) -> Vec<(String, String)> {
    let start = guests_sh.find("GUESTS=(").map(|i| i + "GUESTS=(".len());
    let Some(start) = start else {
        return Vec::new();
    };
    let end = guests_sh[start..]
        .find(')')
        .map(|i| start + i)
        .unwrap_or(start);
    guests_sh[start..end]
        .split_whitespace()
        .filter_map(|g| g.split_once('/'))
        .map(|(s, a)| (s.to_owned(), a.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "noise\r\nPFM|boot|0|release=5.10.0-32-arm64 machine=aarch64 jit=1\n\
PFM-BEGIN|ping4\nPING x\n20 packets transmitted, 19 packets received, 5% packet loss\nPFM-END|ping4\n\
PFM|ping4|1|\nPFM-DONE\n";

    #[test]
    fn the_console_is_split_into_steps_and_blocks() {
        let console = Console::parse(CONSOLE);
        assert!(console.done);
        assert_eq!(console.release(), "5.10.0-32-arm64");
        assert_eq!(console.code("ping4"), Some(1));
        assert_eq!(ping_counts(console.block("ping4")), (20, 19));
        assert_eq!(console.code("run"), None);
    }

    #[test]
    fn a_guest_that_did_nothing_fails_every_row() {
        let rows = judge(&Console::parse(CONSOLE), true);
        assert!(rows.iter().all(|r| !r.pass), "{rows:#?}");
    }

    #[test]
    fn a_captured_frame_is_read_back_with_its_tags_macs_and_header() {
        let mut ip = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 63, 1, 0, 0, 192, 0, 2, 4, 203, 0, 113, 250,
        ];
        let sum: u32 = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        frame.extend_from_slice(&[0x88, 0xa8, 0x00, 0xc8, 0x81, 0x00, 0x01, 0x2c, 0x08, 0x00]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        let frames = captured(&format!("capturing on sv0\nframe {hex}\nframe zz\n"));
        assert_eq!(
            frames,
            vec![frame.clone()],
            "a line that is not hex is dropped"
        );
        let icmp = wire_icmp(&frames[0]).unwrap();
        assert_eq!(icmp.tags, vec![(0x88a8, 200), (0x8100, 300)]);
        assert_eq!((icmp.dst_mac[5], icmp.src_mac[5]), (2, 1));
        assert_eq!((icmp.ttl, icmp.icmp_type, icmp.checksum_ok), (63, 8, true));
        assert_eq!(icmp.dst, std::net::Ipv4Addr::new(203, 0, 113, 250));
        frame[14 + 8 + 8] = 62; // the TTL, without fixing the checksum
        assert!(!wire_icmp(&frame).unwrap().checksum_ok);
        assert_eq!(
            link_mac("3: sv0@if4: <UP> mtu 1500 qdisc noqueue\\    link/ether 02:ab:cd:00:00:01 brd ff:ff:ff:ff:ff:ff"),
            Some([2, 0xab, 0xcd, 0, 0, 1])
        );
    }

    #[test]
    fn link_counters_are_read_from_ip_s_s_link() {
        let shown = "7: sv0.100@sv0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500\n    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff\n    RX:  bytes packets errors dropped  missed   mcast\n          4312      42      0       0       0       0\n    RX errors:  length    crc   frame    fifo overrun\n                     0      0       0       0       0\n    TX:  bytes packets errors dropped carrier collsns\n          4100      41      0       0       0       0\n";
        assert_eq!(link_packets(shown), (Some(42), Some(41)));
        assert_eq!(link_packets(""), (None, None));
    }

    #[test]
    fn series_and_guests_are_read() {
        assert_eq!(series("6.12.117+deb13-amd64"), "6.12");
        assert_eq!(
            guests("X=1\nGUESTS=(\n  a/amd64 b/arm64\n)\n"),
            vec![
                ("a".to_owned(), "amd64".to_owned()),
                ("b".to_owned(), "arm64".to_owned())
            ]
        );
    }
}
