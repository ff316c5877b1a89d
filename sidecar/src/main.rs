//! The `pf-sidecar` command.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use pf_common::Mode;
use pf_sidecar::{
    cli::{
        attach::{self, AttachMode, AttachOptions},
        exit, feasibility, status, DEFAULT_PIN_DIR,
    },
    datapath::Capacities,
};

#[derive(Parser)]
#[command(
    name = "pf-sidecar",
    version,
    about = "XDP fast path for FRR and BIRD routers"
)]
struct Cli {
    /// bpffs directory holding the pinned maps, programs and links.
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR, env = "PF_SIDECAR_PIN_DIR")]
    pin_dir: PathBuf,
    /// Enter this network namespace (a name under /run/netns) first. Unlike
    /// `ip netns exec`, this keeps the host's /sys/fs/bpf visible.
    #[arg(long, global = true, env = "PF_SIDECAR_NETNS")]
    netns: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DatapathMode {
    #[value(name = "cache+fib")]
    CacheAndFib,
    FibOnly,
    CacheOnly,
}

impl From<DatapathMode> for Mode {
    fn from(mode: DatapathMode) -> Self {
        match mode {
            DatapathMode::CacheAndFib => Mode::CacheAndFib,
            DatapathMode::FibOnly => Mode::FibOnly,
            DatapathMode::CacheOnly => Mode::CacheOnly,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Load (or adopt) the pinned datapath and attach fast_path to interfaces.
    Attach {
        #[arg(required = true)]
        interfaces: Vec<String>,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: AttachMode,
        /// What fast_path does with a packet.
        #[arg(long, value_enum, default_value = "cache+fib")]
        mode: DatapathMode,
        /// Count what would happen, pass everything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Detach interfaces; with --all, also remove every pin.
    Detach {
        interfaces: Vec<String>,
        #[arg(long, conflicts_with = "interfaces")]
        all: bool,
    },
    /// Check that this host can run the datapath; trial-attach to interfaces.
    Feasibility {
        interfaces: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show the mode, attachments and counters of the pinned datapath.
    Status {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("pf-sidecar: error: {err:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Some(name) = &cli.netns {
        pf_sidecar::cli::enter_netns(name)?;
    }
    match cli.command {
        Command::Attach {
            interfaces,
            xdp_mode,
            mode,
            dry_run,
        } => {
            let attached = attach::attach(&AttachOptions {
                interfaces: &interfaces,
                attach_mode: xdp_mode,
                mode: mode.into(),
                dry_run,
                pin_dir: &cli.pin_dir,
                capacities: Capacities::default(),
            })?;
            for (ifname, how) in attached {
                println!("attached fast_path to {ifname} ({how})");
            }
        }
        Command::Detach { interfaces, all } => {
            if !all && interfaces.is_empty() {
                anyhow::bail!("name the interfaces to detach, or pass --all");
            }
            for ifname in attach::detach(&cli.pin_dir, &interfaces, all)? {
                println!("detached {ifname}");
            }
            if all {
                println!("removed {}", cli.pin_dir.display());
            }
        }
        Command::Feasibility { interfaces, json } => {
            let checks = feasibility::run(&interfaces, &cli.pin_dir);
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                print!("{}", feasibility::render(&checks));
            }
            if checks.iter().any(|c| !c.pass) {
                return Ok(exit::DRIFT);
            }
        }
        Command::Status { json } => {
            let status = status::read(&cli.pin_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status::render(&status));
            }
        }
    }
    Ok(exit::OK)
}
