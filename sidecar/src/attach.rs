//! `attach` and `detach`.

use std::path::Path;

use anyhow::{bail, Context};
use aya::programs::{links::FdLink, ProgramError, XdpError, XdpMode};
use pf_common::{config::CFG_F_DRY_RUN, Config, Mode};

use crate::{
    datapath::{pins, tx_ports, Capacities, Datapath},
    kernel_probe::{self, Kernel},
};

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
    if let Some(holder) = pins::lock_held(options.pin_dir)
        .with_context(|| format!("checking {}", options.pin_dir.display()))?
    {
        bail!(
            "refused: `pf-sidecar run`{} manages {}; add the interfaces to general.interfaces and reload it (SIGHUP, systemctl reload pf-sidecar)",
            holder_text(holder),
            options.pin_dir.display()
        );
    }
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
    let kernel = Kernel::running();
    for ifname in options.interfaces {
        let index = ifindex(ifname)?;
        let how = match attach_and_pin(
            datapath.fast_path()?,
            ifname,
            options.attach_mode,
            options.pin_dir,
        ) {
            Ok(how) => how,
            Err(err)
                if options.attach_mode != AttachMode::Native
                    && datapath.maps.tx_ports.value_size() == tx_ports::DEVMAP_VAL_SIZE
                    && kernel.refuses_generic_with_devmap_programs() =>
            {
                return Err(err.context(format!(
                    "TX_PORTS pinned in {} has 8-byte values (made by an older pf-sidecar), which Linux 5.8 to 5.13 refuse in generic mode: `pf-sidecar detach --all`, then attach again",
                    options.pin_dir.display()
                )));
            }
            Err(err) => return Err(err),
        };
        datapath.maps.add_tx_port(index)?;
        if let Some(warning) = kernel_probe::link::veth_redirect_warning(ifname, &kernel) {
            eprintln!("pf-sidecar: warning: {warning}");
        }
        attached.push((ifname.clone(), how));
    }
    Ok(attached)
}

impl AttachMode {
    /// `general.xdp_mode` of the configuration (`auto`, `native`, `generic`).
    pub fn from_config(value: &str) -> Self {
        match value {
            "native" => Self::Native,
            "generic" => Self::Generic,
            _ => Self::Auto,
        }
    }

    /// The modes to try, in order, with their names.
    pub fn tries(self) -> &'static [(XdpMode, &'static str)] {
        match self {
            Self::Auto => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "generic")],
            Self::Native => &[(XdpMode::Driver, "native")],
            Self::Generic => &[(XdpMode::Skb, "generic")],
        }
    }
}

/// The errno behind a failed attach, if there is one.
pub fn attach_errno(error: &ProgramError) -> Option<i32> {
    match error {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        ProgramError::XdpError(XdpError::NetlinkError(e)) => e.raw_os_error(),
        ProgramError::UnknownInterface { .. } => Some(libc::ENODEV),
        _ => None,
    }
}

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Why one mode did not attach.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AttachError {
    pub message: String,
    /// The kernel's errno, when the kernel refused.
    pub errno: Option<i32>,
}

/// Attaches `program` to `ifname` in one mode, exactly as `run` and
/// `attach` do: through a bpf_link, which is what makes the attachment
/// pinnable. The link detaches when dropped unless it is pinned. A kernel
/// without XDP links (before 5.9) is refused, and anything aya attached by
/// netlink instead is taken off again. A generic-mode refusal that a known
/// kernel limit explains says so, with the fix.
pub fn try_attach(
    program: &mut aya::programs::Xdp,
    ifname: &str,
    mode: XdpMode,
) -> Result<FdLink, AttachError> {
    let link_id = program.attach(ifname, mode).map_err(|err| {
        let errno = attach_errno(&err);
        let explained = errno
            .filter(|_| mode == XdpMode::Skb)
            .map(std::io::Error::from_raw_os_error)
            .and_then(|e| kernel_probe::explain_generic_refusal(&Kernel::running(), &e, None));
        // aya's netlink errors do not print the errno.
        let mut message = err.to_string();
        if let Some(code) = errno.filter(|_| !message.contains("os error")) {
            message = format!("{message} ({})", std::io::Error::from_raw_os_error(code));
        }
        if let Some(why) = explained {
            message = format!("{message}: {why}");
        }
        AttachError { message, errno }
    })?;
    let link = program.take_link(link_id).map_err(|err| AttachError {
        message: err.to_string(),
        errno: None,
    })?;
    FdLink::try_from(link).map_err(|_| {
        let flags = if mode == XdpMode::Skb {
            XDP_FLAGS_SKB_MODE
        } else {
            XDP_FLAGS_DRV_MODE
        };
        if let Ok(index) = ifindex(ifname) {
            let _ = kernel_probe::link::detach_xdp(index, flags);
        }
        AttachError {
            message: format!(
                "this kernel ({}) attaches XDP programs without a bpf_link (Linux 5.9 and later have them), and pf-sidecar needs one to pin the attachment",
                Kernel::running().release
            ),
            errno: None,
        }
    })
}

/// Attaches `program` to `ifname` (native first for `Auto`) with a bpf_link
/// pinned under `pin_dir`, so it outlives this process. Returns the mode.
pub fn attach_and_pin(
    program: &mut aya::programs::Xdp,
    ifname: &str,
    mode: AttachMode,
    pin_dir: &Path,
) -> anyhow::Result<&'static str> {
    let mut errors = Vec::new();
    for (xdp_mode, label) in mode.tries() {
        match try_attach(program, ifname, *xdp_mode) {
            Ok(fd_link) => {
                fd_link
                    .pin(link_pin(pin_dir, ifname))
                    .with_context(|| format!("pinning the link of {ifname}"))?;
                return Ok(label);
            }
            Err(err) => errors.push(format!("{label}: {err:#}")),
        }
    }
    bail!("attaching to {ifname} failed: {}", errors.join("; "))
}

fn holder_text(holder: Option<u32>) -> String {
    holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// What [`detach`] did.
#[derive(Debug, Default)]
pub struct Detached {
    pub interfaces: Vec<String>,
    /// With `all`: the pin directory was removed. It stays (emptied) while
    /// a daemon holds it.
    pub removed_dir: bool,
    /// The pid of the running daemon a forced detach went past.
    pub daemon: Option<Option<u32>>,
}

/// Detaches the named interfaces (their pinned links), or with `all`, every
/// link and then every pin, which unloads the datapath. While a daemon
/// holds the pin directory this is refused unless `force`: the daemon then
/// notices, logs it and reports the interfaces as not attached, and the
/// directory itself stays (emptied, for `all`) until it stops.
pub fn detach(
    pin_dir: &Path,
    interfaces: &[String],
    all: bool,
    force: bool,
) -> anyhow::Result<Detached> {
    let daemon =
        pins::lock_held(pin_dir).with_context(|| format!("checking {}", pin_dir.display()))?;
    if let (Some(holder), false) = (daemon, force) {
        bail!(
            "refused: `pf-sidecar run`{} holds {}. Stop it first (systemctl stop pf-sidecar; add --detach-on-exit to roll back as it stops), or remove the interfaces from general.interfaces and reload it (SIGHUP). `--force` detaches anyway: the daemon logs it, reports the interfaces as not attached and does not attach them again until a reload or a restart",
            holder_text(holder),
            pin_dir.display()
        );
    }
    // Without a daemon, hold the lock so none starts half-way through.
    let _lock = match daemon {
        None if pin_dir.exists() => Some(pins::PinLock::acquire(pin_dir)?),
        _ => None,
    };
    let mut detached = Detached {
        daemon,
        ..Default::default()
    };
    let targets: Vec<String> = if all {
        pins::linked_interfaces(pin_dir)
    } else {
        interfaces.to_vec()
    };
    for ifname in targets {
        let path = link_pin(pin_dir, &ifname);
        std::fs::remove_file(&path)
            .with_context(|| format!("{ifname} is not attached ({} missing)", path.display()))?;
        detached.interfaces.push(ifname);
    }
    if all && pin_dir.exists() {
        if daemon.is_some() {
            for generation in pins::generations(pin_dir) {
                let dir = pins::generation_dir(pin_dir, generation);
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
        } else {
            std::fs::remove_dir_all(pin_dir)
                .with_context(|| format!("removing {}", pin_dir.display()))?;
            detached.removed_dir = true;
        }
    }
    Ok(detached)
}

/// Where the XDP link of `ifname` is pinned.
pub fn link_pin(pin_dir: &std::path::Path, ifname: &str) -> std::path::PathBuf {
    pin_dir.join(format!("link_{ifname}"))
}

/// The index of `ifname` in this network namespace.
pub fn ifindex(ifname: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        anyhow::bail!("no interface named {ifname} in this network namespace");
    }
    Ok(index)
}
