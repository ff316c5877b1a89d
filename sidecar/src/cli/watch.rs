//! `pf-sidecar watch`: prints the daemon's events as they come.

use crate::events::{subscribe, Event};

pub struct WatchOptions {
    pub endpoint: String,
    pub topics: Vec<String>,
    /// Stop after this many events (0: run until interrupted).
    pub count: u64,
    pub json: bool,
}

pub fn line(event: &Event) -> String {
    match event {
        Event::Route {
            prefix,
            op,
            action,
            deferred,
        } => format!(
            "route      {op:<6} {prefix} {action}{}",
            if *deferred {
                " (deferred: table full)"
            } else {
                ""
            }
        ),
        Event::Nexthop {
            id,
            ifindex,
            gateway,
            resolved,
            dmac,
        } => format!(
            "nexthop    {id} via {gateway} ifindex {ifindex} {}",
            if *resolved {
                format!("resolved {dmac}")
            } else {
                "unresolved".into()
            }
        ),
        Event::Neighbour { ifindex, ip, mac } => format!(
            "neighbour  {ip} ifindex {ifindex} {}",
            mac.as_deref().unwrap_or("gone or unusable")
        ),
        Event::Bulk { routes, nexthops } => {
            format!("bulk       {routes} route and {nexthops} nexthop changes (folded)")
        }
        Event::Resync { source, reason } => format!("resync     {source}: {reason}"),
        Event::ResyncDone { source, swept } => {
            format!("resync     {source} done, {swept} stale entries removed")
        }
        Event::Drift { detail, entries } => format!("DRIFT      {entries} entries: {detail}"),
        Event::FailSafe { active, detail } => format!(
            "fail-safe  {}: {detail}",
            if *active { "ACTIVE" } else { "inactive" }
        ),
        Event::Stale {
            source,
            active,
            prefixes,
            detail,
        } => format!(
            "stale      {source} {}: {prefixes} prefixes; {detail}",
            if *active { "STALE" } else { "trusted again" }
        ),
    }
}

pub fn run(options: &WatchOptions) -> anyhow::Result<()> {
    if options.endpoint.is_empty() {
        anyhow::bail!(
            "events are off: set events.endpoint in the configuration (or pass --endpoint)"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut seen = 0u64;
    runtime.block_on(subscribe(&options.endpoint, &options.topics, |event| {
        // When the event arrived here (events carry no time of their own).
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        if options.json {
            let mut value = serde_json::to_value(&event).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("time".into(), time.into());
            }
            println!("{value}");
        } else {
            println!("{time} {}", line(&event));
        }
        seen += 1;
        options.count == 0 || seen < options.count
    }))
}
