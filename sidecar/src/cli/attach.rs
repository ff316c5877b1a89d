//! `attach` and `detach`.

use std::path::Path;

use anyhow::{bail, Context};
use aya::programs::{links::FdLink, XdpMode};
use pf_common::{config::CFG_F_DRY_RUN, Config, Mode};

use super::{ifindex, link_pin};
use crate::datapath::{pins, Capacities, Datapath};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic.
    Auto,
    Native,
    Generic,
}

pub struct AttachOptions<'a> {
    pub interfaces: &'a [String],
    pub attach_mode: AttachMode,
    pub mode: Mode,
    pub dry_run: bool,
    pub pin_dir: &'a Path,
    pub capacities: Capacities,
}

/// Loads (or adopts) the pinned datapath, attaches `fast_path` to each
/// interface with a pinned link, and makes each a redirect target. Returns
/// the mode each interface got.
pub fn attach(options: &AttachOptions<'_>) -> anyhow::Result<Vec<(String, &'static str)>> {
    for ifname in options.interfaces {
        if link_pin(options.pin_dir, ifname).exists() {
            bail!(
                "{ifname} is already attached (pinned link in {}); detach it first",
                options.pin_dir.display()
            );
        }
    }
    let (mut datapath, _generation) = Datapath::load_current(&options.capacities, options.pin_dir)
        .with_context(|| {
            format!(
                "loading the datapath pinned in {}",
                options.pin_dir.display()
            )
        })?;
    datapath.maps.set_config(&Config {
        mode: options.mode as u32,
        flags: if options.dry_run { CFG_F_DRY_RUN } else { 0 },
        ..Default::default()
    })?;
    let mut attached = Vec::new();
    for ifname in options.interfaces {
        let index = ifindex(ifname)?;
        let how = attach_and_pin(
            datapath.fast_path()?,
            ifname,
            options.attach_mode,
            options.pin_dir,
        )?;
        datapath.maps.add_tx_port(index)?;
        attached.push((ifname.clone(), how));
    }
    Ok(attached)
}

/// Attaches `program` to `ifname` (native first for `Auto`) with a bpf_link
/// pinned under `pin_dir`, so it outlives this process. Returns the mode.
pub fn attach_and_pin(
    program: &mut aya::programs::Xdp,
    ifname: &str,
    mode: AttachMode,
    pin_dir: &Path,
) -> anyhow::Result<&'static str> {
    let tries: &[(XdpMode, &'static str)] = match mode {
        AttachMode::Auto => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "generic")],
        AttachMode::Native => &[(XdpMode::Driver, "native")],
        AttachMode::Generic => &[(XdpMode::Skb, "generic")],
    };
    let mut errors = Vec::new();
    for (xdp_mode, label) in tries {
        match program.attach(ifname, *xdp_mode) {
            Ok(link_id) => {
                let link = program.take_link(link_id)?;
                let fd_link = FdLink::try_from(link).with_context(|| {
                    format!(
                        "{ifname}: this kernel attached without a bpf_link, which cannot be pinned"
                    )
                })?;
                fd_link
                    .pin(link_pin(pin_dir, ifname))
                    .with_context(|| format!("pinning the link of {ifname}"))?;
                return Ok(label);
            }
            Err(err) => errors.push(format!("{label}: {err}")),
        }
    }
    bail!("attaching to {ifname} failed: {}", errors.join("; "))
}

/// Detaches the named interfaces (their pinned links), or with `all`, every
/// link and then every pin, which unloads the datapath.
pub fn detach(pin_dir: &Path, interfaces: &[String], all: bool) -> anyhow::Result<Vec<String>> {
    let mut detached = Vec::new();
    let targets: Vec<String> = if all {
        pins::linked_interfaces(pin_dir)
    } else {
        interfaces.to_vec()
    };
    for ifname in targets {
        let path = link_pin(pin_dir, &ifname);
        std::fs::remove_file(&path)
            .with_context(|| format!("{ifname} is not attached ({} missing)", path.display()))?;
        detached.push(ifname);
    }
    if all && pin_dir.exists() {
        std::fs::remove_dir_all(pin_dir)
            .with_context(|| format!("removing {}", pin_dir.display()))?;
    }
    Ok(detached)
}
