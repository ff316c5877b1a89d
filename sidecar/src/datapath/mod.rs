//! Loading the XDP programs and owning their maps.

pub mod maps;
pub mod mmap;
pub mod pins;
pub mod route_writer;
pub mod sys;
pub mod test_run;
pub mod tx_ports;
pub mod verifier_log;

use std::{
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::ProgramArray,
    programs::{ProgramError, Xdp},
    Ebpf, EbpfLoader,
};
use pf_common::maps as names;

pub use maps::DatapathMaps;

/// Sizes of the maps whose capacity the operator chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacities {
    /// Second-level IPv4 groups: one per /24 that holds longer prefixes.
    pub tbl8_groups: u32,
    /// IPv6 routes the trie is sized for (nodes and leaves per route, see
    /// `pf_common::maps::V6_NODES_PER_ROUTE`).
    pub v6_routes: u32,
    pub nexthops: u32,
    pub ecmp_groups: u32,
    pub ports: u32,
}

impl Capacities {
    /// `V6_NODES` entries for `v6_routes` routes.
    pub fn v6_nodes(&self) -> u32 {
        self.v6_routes.saturating_mul(names::V6_NODES_PER_ROUTE)
    }

    /// `V6_LEAVES` elements (two leaves each) for `v6_routes` routes.
    pub fn v6_leaf_elements(&self) -> u32 {
        self.v6_routes.saturating_mul(names::V6_LEAVES_PER_ROUTE) / names::V6_LEAVES_PER_ELEMENT
    }
}

impl Default for Capacities {
    fn default() -> Self {
        Self {
            tbl8_groups: names::DEFAULT_TBL8_GROUPS,
            v6_routes: names::DEFAULT_V6_ROUTES,
            nexthops: names::DEFAULT_NEXTHOPS,
            ecmp_groups: names::DEFAULT_GROUPS,
            ports: names::DEFAULT_PORTS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pinning {name}: {source}")]
    Pin {
        name: &'static str,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("the object has no {0}")]
    Missing(&'static str),
    #[error(transparent)]
    V6Trie(#[from] pf_control::v6trie::V6TrieError),
    #[error("{0} is not an IPv6 prefix length")]
    PrefixLength(u8),
    #[error("map {name}: {source}")]
    Io {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The programs, in the order they are loaded.
pub const PROGRAMS: [&str; 3] = [
    names::PROG_FINALIZE,
    names::PROG_FAST_PATH,
    names::PROG_PASS,
];

/// A program the verifier accepted.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Bytes of machine code (0: it runs in the interpreter).
    pub jited_bytes: u32,
    /// Instructions the verifier processed, where the kernel says.
    pub instructions: Option<u32>,
}

/// A program the kernel refused.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The error, without the log.
    pub error: String,
    /// The last lines of the verifier log.
    pub log_tail: String,
}

impl Refused {
    fn of(error: ProgramError) -> Self {
        match error {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => Self {
                error: format!("BPF_PROG_LOAD: {io_error}"),
                log_tail: verifier_log::log_tail(
                    &verifier_log.to_string(),
                    verifier_log::LOG_TAIL_LINES,
                ),
            },
            other => Self {
                error: other.to_string(),
                log_tail: String::new(),
            },
        }
    }
}

/// What [`Datapath::trial_load`] found.
pub struct TrialLoad {
    /// The maps, created with the capacities asked for.
    pub maps: Result<(), String>,
    /// Each program's verdict, in [`PROGRAMS`] order (empty when the maps
    /// failed).
    pub programs: Vec<(&'static str, Result<Loaded, Refused>)>,
    /// The assembled datapath (tail-call slot filled, tables mapped).
    pub datapath: Result<Datapath, String>,
}

/// The loaded programs (`fast_path` tail-calls `finalize`) and their maps.
pub struct Datapath {
    pub programs: Programs,
    pub maps: DatapathMaps,
}

/// The programs of a loaded datapath.
pub struct Programs {
    ebpf: Ebpf,
}

impl Datapath {
    /// Loads both programs through the verifier, fills the tail-call slot
    /// and takes ownership of the maps. Nothing is attached.
    pub fn load(capacities: &Capacities) -> Result<Self, DatapathError> {
        Self::load_with_pins(capacities, None, &[])
    }

    /// Adopts the live generation under `pin_dir` (its maps keep their
    /// contents), or creates the first one. Returns the generation directory.
    pub fn load_current(
        capacities: &Capacities,
        pin_dir: &Path,
    ) -> Result<(Self, PathBuf), DatapathError> {
        let dir =
            pins::current_generation(pin_dir).unwrap_or_else(|| pins::generation_dir(pin_dir, 1));
        let adopt: Vec<(&'static str, PathBuf)> = names::ALL
            .iter()
            .map(|n| (*n, dir.join(n)))
            .filter(|(_, p)| p.exists())
            .collect();
        Ok((Self::load_with_pins(capacities, Some(&dir), &adopt)?, dir))
    }

    /// Creates the next generation under `pin_dir` with empty tables, while
    /// the live one keeps forwarding. Counters carry over when their layout
    /// is unchanged. Returns the new generation directory; nothing is
    /// attached to it yet.
    pub fn load_next_generation(
        capacities: &Capacities,
        pin_dir: &Path,
    ) -> Result<(Self, PathBuf), DatapathError> {
        let next = pins::generations(pin_dir).last().map_or(1, |g| g + 1);
        let dir = pins::generation_dir(pin_dir, next);
        let mut adopt = Vec::new();
        if let Some(live) = pins::current_generation(pin_dir) {
            let counters = live.join(names::COUNTERS);
            let same_layout = aya::maps::MapData::from_pin(&counters)
                .ok()
                .and_then(|m| m.info().ok())
                .is_some_and(|info| info.max_entries() == pf_common::counters::COUNTER_COUNT);
            if same_layout {
                adopt.push((names::COUNTERS, counters));
            }
        }
        Ok((Self::load_with_pins(capacities, Some(&dir), &adopt)?, dir))
    }

    /// Loads as [`Datapath::load`] does, but goes on past a program the
    /// verifier refuses, so each program gets its own verdict
    /// (`feasibility`). The datapath is there when everything loaded.
    pub fn trial_load(capacities: &Capacities) -> TrialLoad {
        let mut ebpf = match Self::create_maps(capacities, None, &[]) {
            Ok(ebpf) => ebpf,
            Err(e) => {
                return TrialLoad {
                    maps: Err(format!("{e:#}")),
                    programs: Vec::new(),
                    datapath: Err("the maps could not be created".into()),
                }
            }
        };
        let programs: Vec<(&'static str, Result<Loaded, Refused>)> = PROGRAMS
            .iter()
            .map(|&name| {
                let verdict = match xdp_mut(&mut ebpf, name) {
                    Err(e) => Err(Refused {
                        error: format!("{e:#}"),
                        log_tail: String::new(),
                    }),
                    Ok(program) => match program.load() {
                        Ok(()) => {
                            let info = program.info().ok();
                            Ok(Loaded {
                                jited_bytes: info.as_ref().map_or(0, |i| i.size_jitted()),
                                instructions: info.and_then(|i| i.verified_instruction_count()),
                            })
                        }
                        Err(source) => Err(Refused::of(source)),
                    },
                };
                (name, verdict)
            })
            .collect();
        let datapath = if programs.iter().all(|(_, v)| v.is_ok()) {
            Self::assemble(ebpf, None, &[]).map_err(|e| format!("{e:#}"))
        } else {
            Err("a program was refused".into())
        };
        TrialLoad {
            maps: Ok(()),
            programs,
            datapath,
        }
    }

    fn load_with_pins(
        capacities: &Capacities,
        pin_dir: Option<&Path>,
        adopt: &[(&'static str, PathBuf)],
    ) -> Result<Self, DatapathError> {
        let mut ebpf = Self::create_maps(capacities, pin_dir, adopt)?;
        for name in PROGRAMS {
            xdp_mut(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        Self::assemble(ebpf, pin_dir, adopt)
    }

    /// Creates (or adopts) the maps with the operator's capacities and
    /// relocates the programs against them; nothing is loaded yet.
    fn create_maps(
        capacities: &Capacities,
        pin_dir: Option<&Path>,
        adopt: &[(&'static str, PathBuf)],
    ) -> Result<Ebpf, DatapathError> {
        let mut loader = EbpfLoader::new();
        if let Some(dir) = pin_dir {
            // Root-only: the generation and the pin directory above it.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| DatapathError::Io {
                    name: "pin directory",
                    source,
                })?;
        }
        for (name, path) in adopt {
            loader.map_pin_path(name, path.as_path());
        }
        loader
            .map_max_entries(names::V4_TBL8, capacities.tbl8_groups)
            .map_max_entries(names::V6_NODES, capacities.v6_nodes())
            .map_max_entries(names::V6_LEAVES, capacities.v6_leaf_elements())
            .map_max_entries(names::NH_PTR, capacities.nexthops)
            .map_max_entries(names::NEXTHOPS, 2 * capacities.nexthops)
            .map_max_entries(names::NH_INFO, capacities.nexthops)
            .map_max_entries(names::GRP_PTR, capacities.ecmp_groups)
            .map_max_entries(names::GROUPS, 2 * capacities.ecmp_groups)
            .map_max_entries(names::PORTS, capacities.ports)
            .map_max_entries(names::TX_PORTS, capacities.ports);
        let ebpf = loader.load(crate::EBPF_OBJECT)?;
        let tx_ports_adopted = adopt.iter().any(|(name, _)| *name == names::TX_PORTS);
        tx_ports::narrow(&ebpf, tx_ports_adopted)?;
        Ok(ebpf)
    }

    /// With every program loaded: pins (for a generation), fills the
    /// tail-call slot and takes the maps.
    fn assemble(
        mut ebpf: Ebpf,
        pin_dir: Option<&Path>,
        adopt: &[(&'static str, PathBuf)],
    ) -> Result<Self, DatapathError> {
        if let Some(dir) = pin_dir {
            for name in names::ALL {
                let path = dir.join(name);
                if adopt.iter().any(|(n, p)| *n == name && *p == path) {
                    continue;
                }
                let map = ebpf.map(name).ok_or(DatapathError::Missing(name))?;
                map.pin(&path)
                    .map_err(|source| DatapathError::Pin { name, source })?;
            }
            for name in [names::PROG_FINALIZE, names::PROG_FAST_PATH] {
                let path = dir.join(format!("prog_{name}"));
                let _ = std::fs::remove_file(&path);
                xdp_mut(&mut ebpf, name)?
                    .pin(&path)
                    .map_err(|source| DatapathError::Pin { name, source })?;
            }
        }
        let finalize_fd = xdp_mut(&mut ebpf, names::PROG_FINALIZE)?
            .fd()
            .map_err(|source| DatapathError::Program {
                name: names::PROG_FINALIZE,
                source,
            })?
            .try_clone()
            .map_err(|source| DatapathError::Io {
                name: names::JUMP,
                source,
            })?;
        let mut jump = ProgramArray::try_from(
            ebpf.take_map(names::JUMP)
                .ok_or(DatapathError::Missing(names::JUMP))?,
        )
        .map_err(|source| DatapathError::Map {
            name: names::JUMP,
            source,
        })?;
        jump.set(names::FINALIZE_SLOT, &finalize_fd, 0)
            .map_err(|source| DatapathError::Map {
                name: names::JUMP,
                source,
            })?;
        let maps = DatapathMaps::take(&mut ebpf, jump)?;
        Ok(Self {
            programs: Programs { ebpf },
            maps,
        })
    }

    /// The entry program, for attaching or test runs.
    pub fn fast_path(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.programs.fast_path()
    }

    /// A program's fd, for `BPF_PROG_TEST_RUN`.
    pub fn program_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, DatapathError> {
        self.programs.program_fd(name)
    }

    /// See [`Programs::take_over`].
    pub fn take_over(
        &self,
        pin_dir: &Path,
        generation: &Path,
    ) -> Result<Vec<String>, DatapathError> {
        self.programs.take_over(pin_dir, generation)
    }
}

impl Programs {
    /// The entry program, for attaching or test runs.
    pub fn fast_path(&mut self) -> Result<&mut Xdp, DatapathError> {
        xdp_mut(&mut self.ebpf, names::PROG_FAST_PATH)
    }

    /// Makes this generation the live one: every pinned link under `pin_dir`
    /// is moved to this `fast_path` (one atomic update per interface), then
    /// the other generations are removed. Returns the interfaces moved.
    pub fn take_over(
        &self,
        pin_dir: &Path,
        generation: &Path,
    ) -> Result<Vec<String>, DatapathError> {
        let program = self.program_fd(names::PROG_FAST_PATH)?;
        let interfaces = pins::linked_interfaces(pin_dir);
        for ifname in &interfaces {
            pins::update_link(&pin_dir.join(format!("link_{ifname}")), program).map_err(
                |source| DatapathError::Io {
                    name: "XDP link",
                    source,
                },
            )?;
        }
        pins::retire_generations_except(pin_dir, generation).map_err(|source| {
            DatapathError::Io {
                name: "old generation",
                source,
            }
        })?;
        Ok(interfaces)
    }

    /// A program by name (`fast_path`, `finalize`, `xdp_pass`).
    pub fn program_mut(&mut self, name: &'static str) -> Result<&mut Xdp, DatapathError> {
        xdp_mut(&mut self.ebpf, name)
    }

    /// A program's fd, for `BPF_PROG_TEST_RUN`.
    pub fn program_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, DatapathError> {
        let program: &Xdp = self
            .ebpf
            .program(name)
            .ok_or(DatapathError::Missing(name))?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })?;
        Ok(program
            .fd()
            .map_err(|source| DatapathError::Program { name, source })?
            .as_fd())
    }
}

fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::Missing(name))?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}
