//! The daemon's interfaces over their life: attached when the generation
//! goes live, followed through removal and return (the kernel source's link
//! events and a poll on every heartbeat), re-attached when they come back,
//! added and removed on a reload, and reported as the kernel has them now.
//!
//! What the kernel says is the truth: an interface counts as attached when
//! its pinned link runs on a device with this daemon's `fast_path`. A link
//! removed from outside (`pf-sidecar detach --force`) is noticed, logged and
//! reported, and not re-attached (the operator asked for it; a reload or a
//! restart attaches it again). The pin directory emptied under the daemon
//! (`detach --all --force`) leaves it running but not live, and says so.
//!
//! [`StartGuard`] holds the pin directory's lock for the daemon's life and,
//! when the daemon stops, removes its generation unless a link runs it, and
//! the links a start that failed had made.

use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    attach::{attach_and_pin, link_pin, AttachMode},
    datapath::{
        pins::{self, PinLock},
        DatapathMaps, Programs,
    },
    redirect_errors::{self, RedirectFailures},
};

/// One configured interface as the kernel has it now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortState {
    pub interface: String,
    /// Its ifindex in the daemon's network namespace; none while it is gone.
    pub ifindex: Option<u32>,
    /// Its pinned link runs this daemon's `fast_path` on the device now.
    pub attached: bool,
    /// In words: attached (native), waiting to go live, gone, detached from
    /// outside, attach failed and why.
    pub condition: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    /// The generation is not live yet.
    Pending,
    Attached(&'static str),
    /// The interface does not exist now.
    Gone,
    /// Its link was removed by someone else; not re-attached.
    DetachedOutside,
    Failed(String),
}

struct Port {
    name: String,
    ifindex: Option<u32>,
    condition: Condition,
}

/// The configured interfaces, their links and their redirect failures.
pub struct Ports {
    pin_dir: PathBuf,
    generation: PathBuf,
    mode: AttachMode,
    ports: Vec<Port>,
    /// This daemon's `fast_path` program id.
    program_id: u32,
    live: bool,
    /// Set once the generation directory vanished under the daemon.
    removed_outside: bool,
    failures: Result<RedirectFailures, String>,
    /// Redirect failures counted under an earlier ifindex of an interface.
    carried: BTreeMap<String, u64>,
}

fn ifindex_of(name: &str) -> Option<u32> {
    crate::attach::ifindex(name).ok()
}

impl Ports {
    /// Resolves the interfaces (each must exist), makes each a redirect
    /// target and starts counting redirect failures.
    pub fn new(
        interfaces: &[String],
        mode: AttachMode,
        pin_dir: &Path,
        generation: &Path,
        programs: &Programs,
        maps: &mut DatapathMaps,
        capacity_ports: u32,
    ) -> anyhow::Result<Self> {
        let program_id = pins::program_id(programs.program_fd(pf_common::maps::PROG_FAST_PATH)?)?;
        let failures = RedirectFailures::start(capacity_ports);
        if let Err(reason) = &failures {
            tracing::warn!(%reason, "redirect failures are not counted");
        }
        let mut ports = Vec::new();
        for name in interfaces {
            let index = crate::attach::ifindex(name)?;
            maps.add_tx_port(index)?;
            if let Ok(failures) = &failures {
                failures.watch(index)?;
            }
            ports.push(Port {
                name: name.clone(),
                ifindex: Some(index),
                condition: Condition::Pending,
            });
        }
        if ports.is_empty() {
            tracing::warn!("general.interfaces is empty: fast_path is attached nowhere; the daemon only keeps the maps");
        }
        Ok(Self {
            pin_dir: pin_dir.to_path_buf(),
            generation: generation.to_path_buf(),
            mode,
            ports,
            program_id,
            live: false,
            removed_outside: false,
            failures,
            carried: BTreeMap::new(),
        })
    }

    /// Makes this generation the live one: every pinned link is moved to it
    /// (a link whose interface is gone is removed instead), each configured
    /// interface without a link gets one, older generations go. Returns the
    /// links it created.
    pub fn go_live(&mut self, programs: &mut Programs) -> anyhow::Result<Vec<String>> {
        use anyhow::Context;
        let fast_path = programs
            .program_fd(pf_common::maps::PROG_FAST_PATH)?
            .try_clone_to_owned()?;
        for link in pins::links(&self.pin_dir)? {
            let path = link_pin(&self.pin_dir, &link.ifname);
            if !link.attached() {
                tracing::warn!(ifname = %link.ifname, "the pinned link runs on nothing (its interface was removed); removing it");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            pins::update_link(&path, fast_path.as_fd())
                .with_context(|| format!("moving {} to the new generation", link.ifname))?;
            if let Some(port) = self.ports.iter_mut().find(|p| p.name == link.ifname) {
                port.condition = Condition::Attached("moved");
            }
        }
        let mut created = Vec::new();
        for i in 0..self.ports.len() {
            if link_pin(&self.pin_dir, &self.ports[i].name).exists() {
                continue;
            }
            if self.ports[i].ifindex.is_none() {
                self.ports[i].condition = Condition::Gone;
                continue;
            }
            self.attach(i, programs)?;
            created.push(self.ports[i].name.clone());
        }
        pins::retire_generations_except(&self.pin_dir, &self.generation)?;
        self.live = true;
        tracing::info!(generation = %self.generation.display(), "this generation is live");
        Ok(created)
    }

    /// Attaches port `i` (it has no link), saying so in the log.
    fn attach(&mut self, i: usize, programs: &mut Programs) -> anyhow::Result<()> {
        let name = self.ports[i].name.clone();
        // Before the attach, so the start-up after it stays as short.
        if let Some(warning) = crate::kernel_probe::link::veth_redirect_warning(
            &name,
            &crate::kernel_probe::Kernel::running(),
        ) {
            tracing::warn!(ifname = %name, "{warning}");
        }
        let how = attach_and_pin(programs.fast_path()?, &name, self.mode, &self.pin_dir)?;
        tracing::info!(ifname = %name, how, "attached");
        self.ports[i].condition = Condition::Attached(how);
        Ok(())
    }

    /// Looks at every interface again (after link events, and on every
    /// heartbeat): logs a removal or a return and re-attaches on return,
    /// notices a link removed from outside and a generation removed under
    /// the daemon.
    pub fn poll(&mut self, programs: &mut Programs, maps: &mut DatapathMaps) {
        if self.live && !self.removed_outside && !self.generation.exists() {
            self.removed_outside = true;
            tracing::error!(
                pin_dir = %self.pin_dir.display(),
                "this daemon's generation was removed from outside (pf-sidecar detach --all --force?): nothing runs its maps, it is not live; restart it to attach again"
            );
        }
        for i in 0..self.ports.len() {
            self.poll_port(i, programs, maps);
        }
    }

    fn poll_port(&mut self, i: usize, programs: &mut Programs, maps: &mut DatapathMaps) {
        let name = self.ports[i].name.clone();
        let before = self.ports[i].ifindex;
        let now = ifindex_of(&name);
        if before != now {
            if let (Some(old), Ok(failures)) = (before, &self.failures) {
                *self.carried.entry(name.clone()).or_default() += failures.unwatch(old);
            }
            if let Some(new) = now {
                if let Ok(failures) = &self.failures {
                    let _ = failures.watch(new);
                }
                if let Err(err) = maps.add_tx_port(new) {
                    tracing::error!(ifname = %name, %err, "making the interface a redirect target failed");
                }
            }
            self.ports[i].ifindex = now;
        }
        let link = pins::link_at(&link_pin(&self.pin_dir, &name), &name).ok();
        match (&self.ports[i].condition, now) {
            (Condition::Pending, None) => {
                tracing::warn!(ifname = %name, "the interface was removed before this generation went live; it is attached when it returns");
                self.ports[i].condition = Condition::Gone;
            }
            (Condition::Pending, Some(_)) => {}
            (Condition::Attached(_), None) => {
                tracing::warn!(ifname = %name, ifindex = before.unwrap_or(0), "the interface was removed: fast_path runs on nothing there; it is re-attached when the interface returns");
                self.ports[i].condition = Condition::Gone;
            }
            (Condition::Attached(_), Some(index)) => match link {
                None if !self.removed_outside => {
                    tracing::warn!(ifname = %name, "its link was removed from outside (pf-sidecar detach --force?): fast_path no longer runs on it and it is not re-attached; a reload (SIGHUP) or a restart attaches it again");
                    self.ports[i].condition = Condition::DetachedOutside;
                }
                None => self.ports[i].condition = Condition::DetachedOutside,
                Some(link) if link.ifindex != index => {
                    // Deleted and created again between two looks.
                    tracing::warn!(ifname = %name, ifindex = index, "the interface was replaced; attaching fast_path to the new one");
                    self.reattach(i, programs);
                }
                Some(_) => {}
            },
            (Condition::Gone | Condition::Failed(_), Some(index)) if self.live => {
                tracing::info!(ifname = %name, ifindex = index, "the interface is back; attaching fast_path again");
                self.reattach(i, programs);
            }
            (Condition::Gone, Some(_)) => self.ports[i].condition = Condition::Pending,
            _ => {}
        }
    }

    /// Removes a stale link pin and attaches anew.
    fn reattach(&mut self, i: usize, programs: &mut Programs) {
        let path = link_pin(&self.pin_dir, &self.ports[i].name);
        let _ = std::fs::remove_file(&path);
        if let Err(err) = self.attach(i, programs) {
            tracing::error!(ifname = %self.ports[i].name, err = format!("{err:#}"), "attaching failed");
            self.ports[i].condition = Condition::Failed(format!("{err:#}"));
        }
    }

    /// Applies a reloaded `general.interfaces`: new interfaces are attached
    /// (or attached when they appear), removed ones detached and no longer
    /// redirect targets; an interface detached from outside is attached
    /// again.
    pub fn apply(&mut self, wanted: &[String], programs: &mut Programs, maps: &mut DatapathMaps) {
        let mut kept = Vec::new();
        for port in std::mem::take(&mut self.ports) {
            if wanted.contains(&port.name) {
                kept.push(port);
                continue;
            }
            let path = link_pin(&self.pin_dir, &port.name);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(ifname = %port.name, "removed from general.interfaces: detached")
                }
                Err(_) => {
                    tracing::info!(ifname = %port.name, "removed from general.interfaces (it had no link)")
                }
            }
            if let Some(index) = port.ifindex {
                if let Err(err) = maps.tx_ports.remove(index) {
                    tracing::error!(ifname = %port.name, %err, "removing the redirect target failed");
                }
                if let Ok(failures) = &self.failures {
                    failures.unwatch(index);
                }
            }
            self.carried.remove(&port.name);
        }
        self.ports = kept;
        for name in wanted {
            if let Some(i) = self.ports.iter().position(|p| &p.name == name) {
                if self.ports[i].condition == Condition::DetachedOutside && self.live {
                    tracing::info!(ifname = %name, "attaching again on reload");
                    self.reattach(i, programs);
                }
                continue;
            }
            let ifindex = ifindex_of(name);
            self.ports.push(Port {
                name: name.clone(),
                ifindex,
                condition: Condition::Pending,
            });
            let i = self.ports.len() - 1;
            let Some(index) = ifindex else {
                tracing::warn!(ifname = %name, "added to general.interfaces but there is no such interface now; it is attached when it appears");
                self.ports[i].condition = Condition::Gone;
                continue;
            };
            if let Err(err) = maps.add_tx_port(index) {
                tracing::error!(ifname = %name, %err, "making the interface a redirect target failed");
            }
            if let Ok(failures) = &self.failures {
                let _ = failures.watch(index);
            }
            if self.live {
                tracing::info!(ifname = %name, "added to general.interfaces");
                self.reattach(i, programs);
            }
        }
    }

    /// The daemon's maps carry traffic: it went live, its generation is
    /// still there, and at least one link runs its `fast_path` on a device.
    pub fn live(&self) -> bool {
        self.live
            && !self.removed_outside
            && pins::links(&self.pin_dir).is_ok_and(|links| {
                links
                    .iter()
                    .any(|l| l.attached() && l.prog_id == self.program_id)
            })
    }

    /// Each configured interface as the kernel has it now.
    pub fn states(&self) -> Vec<PortState> {
        self.ports
            .iter()
            .map(|port| {
                let link = pins::link_at(&link_pin(&self.pin_dir, &port.name), &port.name).ok();
                let attached = link.as_ref().is_some_and(|l| {
                    l.attached() && l.prog_id == self.program_id && Some(l.ifindex) == port.ifindex
                });
                let condition = match (&port.condition, &link) {
                    (Condition::Attached(how), _) if attached => format!("attached ({how})"),
                    (Condition::Attached(_), Some(l)) if l.prog_id != self.program_id => {
                        format!("its link runs another program (id {})", l.prog_id)
                    }
                    (Condition::Pending, _) => "waiting for this generation to go live".into(),
                    (Condition::Gone, _) => {
                        "the interface is gone; attached when it returns".into()
                    }
                    (Condition::DetachedOutside, _) => {
                        "detached from outside; a reload or a restart attaches it again".into()
                    }
                    (Condition::Failed(why), _) => format!("attach failed: {why}"),
                    (Condition::Attached(_), _) => "not attached".into(),
                };
                PortState {
                    interface: port.name.clone(),
                    ifindex: port.ifindex,
                    attached,
                    condition,
                }
            })
            .collect()
    }

    /// Redirect failures per interface.
    pub fn redirect_failures(&self) -> redirect_errors::Report {
        let interfaces: Vec<(String, Option<u32>)> = self
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.ifindex))
            .collect();
        redirect_errors::report(&self.failures, &interfaces, &self.carried)
    }
}

/// Holds the pin directory's lock while the daemon runs; when dropped,
/// removes the links a start that did not complete had made, and the
/// daemon's generation unless a link runs it (never a live generation).
pub struct StartGuard {
    pin_dir: PathBuf,
    generation: Option<PathBuf>,
    program_id: Option<u32>,
    created: Vec<String>,
    started: bool,
    _lock: PinLock,
}

impl StartGuard {
    /// Takes the pin directory's lock, or says who holds it.
    pub fn lock(pin_dir: &Path) -> Result<Self, pins::LockError> {
        Ok(Self {
            pin_dir: pin_dir.to_path_buf(),
            generation: None,
            program_id: None,
            created: Vec::new(),
            started: false,
            _lock: PinLock::acquire(pin_dir)?,
        })
    }

    /// The generation this start pinned, and its `fast_path` id.
    pub fn pinned(&mut self, generation: &Path, programs: &Programs) {
        self.generation = Some(generation.to_path_buf());
        self.program_id = programs
            .program_fd(pf_common::maps::PROG_FAST_PATH)
            .ok()
            .and_then(|fd| pins::program_id(fd).ok());
    }

    /// Links this start made.
    pub fn created(&mut self, links: Vec<String>) {
        self.created.extend(links);
    }

    /// The start is complete: from now on the links stay when it stops.
    pub fn started(&mut self) {
        self.started = true;
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if !self.started {
            for ifname in &self.created {
                if std::fs::remove_file(link_pin(&self.pin_dir, ifname)).is_ok() {
                    tracing::info!(%ifname, "the start failed: detached what it had attached");
                }
            }
        }
        if let (Some(generation), Some(id)) = (&self.generation, self.program_id) {
            let runs = pins::links(&self.pin_dir)
                .map(|links| links.iter().any(|l| l.prog_id == id))
                .unwrap_or(true);
            if !runs && generation.exists() {
                match std::fs::remove_dir_all(generation) {
                    Ok(()) => {
                        tracing::info!(generation = %generation.display(), "removed this daemon's generation: no link runs it")
                    }
                    Err(err) => {
                        tracing::error!(generation = %generation.display(), %err, "removing this daemon's unused generation failed")
                    }
                }
            }
        }
        // Emptied from outside (detach --all --force): nothing left to keep.
        let _ = std::fs::remove_dir(&self.pin_dir);
    }
}
