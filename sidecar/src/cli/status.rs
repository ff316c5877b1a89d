//! `status`: what the pinned datapath is doing, read from the pins.

use std::path::Path;

use anyhow::Context;
use aya::maps::{Array, Map, MapData, PerCpuArray};
use pf_common::{config::CFG_F_DRY_RUN, maps as names, Config, Counter, Mode};

use crate::datapath::pins;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Status {
    pub pin_dir: String,
    pub mode: &'static str,
    pub dry_run: bool,
    pub attached: Vec<String>,
    pub counters: Vec<CounterValue>,
}

#[derive(Debug, Serialize)]
pub struct CounterValue {
    pub name: &'static str,
    pub value: u64,
}

fn open(pin_dir: &Path, name: &str) -> anyhow::Result<MapData> {
    let path = pin_dir.join(name);
    MapData::from_pin(&path).with_context(|| {
        format!(
            "opening pinned map {} (is the datapath attached?)",
            path.display()
        )
    })
}

pub fn read(pin_dir: &Path) -> anyhow::Result<Status> {
    let generation = pins::current_generation(pin_dir).with_context(|| {
        format!(
            "no datapath is pinned in {} (is it attached?)",
            pin_dir.display()
        )
    })?;
    let attached = pins::linked_interfaces(pin_dir);
    let pin_dir = generation.as_path();
    let counters: PerCpuArray<_, u64> =
        Map::PerCpuArray(open(pin_dir, names::COUNTERS)?).try_into()?;
    let config: Array<_, Config> = Map::Array(open(pin_dir, names::CONFIG)?).try_into()?;
    let config = config.get(&0, 0)?;
    let mut values = Vec::new();
    for counter in Counter::ALL {
        let per_cpu = counters.get(&(*counter as u32), 0)?;
        values.push(CounterValue {
            name: counter.name(),
            value: per_cpu.iter().sum(),
        });
    }
    Ok(Status {
        pin_dir: generation.display().to_string(),
        mode: Mode::from_u32(config.mode)
            .map(Mode::name)
            .unwrap_or("unknown"),
        dry_run: config.flags & CFG_F_DRY_RUN != 0,
        attached,
        counters: values,
    })
}

pub fn render(status: &Status) -> String {
    let mut out = String::new();
    out.push_str(&format!("pin directory  {}\n", status.pin_dir));
    out.push_str(&format!(
        "mode           {}{}\n",
        status.mode,
        if status.dry_run { " (dry-run)" } else { "" }
    ));
    out.push_str(&format!("attached       {}\n", status.attached.join(", ")));
    out.push_str("counters (non-zero)\n");
    for c in status.counters.iter().filter(|c| c.value != 0) {
        out.push_str(&format!("  {:<26} {:>12}\n", c.name, c.value));
    }
    out
}
