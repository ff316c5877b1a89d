//! The `pf-sidecar` command.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};
use pf_common::Mode;
use pf_sidecar::{
    attach::{self, AttachMode, AttachOptions},
    cli::{diff, exit, feasibility, lookup, lookup_vrf, status, watch, DEFAULT_PIN_DIR},
    config::{Config, Overrides},
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
    /// (default: /sys/fs/bpf/pf-sidecar, or general.pin_dir for `run`)
    #[arg(long, global = true, env = "PF_SIDECAR_PIN_DIR")]
    pin_dir: Option<PathBuf>,
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
    /// Run the daemon in the foreground: follow the kernel and FRR's FPM
    /// stream and keep the maps equal to the router's forwarding state.
    Run {
        /// Configuration file (default: /etc/pf-sidecar/pf-sidecar.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log level, overriding the configuration.
        #[arg(long)]
        log_level: Option<String>,
        /// Log lines as text, or as one JSON object each.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// On SIGTERM or SIGINT, also detach every interface and remove the
        /// pins (by default the datapath stays pinned and forwarding).
        #[arg(long)]
        detach_on_exit: bool,
    },
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
        /// Configuration file, for general.pin_dir (default:
        /// /etc/pf-sidecar/pf-sidecar.toml if present; --pin-dir wins).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Detach interfaces; with --all, also remove every pin. Refused while
    /// `pf-sidecar run` holds the pin directory, unless --force.
    Detach {
        interfaces: Vec<String>,
        #[arg(long, conflicts_with = "interfaces")]
        all: bool,
        /// Detach even though a daemon runs: it logs it and reports the
        /// interfaces as not attached (and not live, for --all), and does
        /// not attach them again until a reload or a restart.
        #[arg(long)]
        force: bool,
        /// Configuration file, for general.pin_dir (default:
        /// /etc/pf-sidecar/pf-sidecar.toml if present; --pin-dir wins).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check that this host can run the datapath: kernel, JIT, BPF
    /// features, the datapath loaded as `run` loads it, and a trial attach
    /// (native and generic) per interface. Exits 0 when the datapath can
    /// run, 1 when it cannot.
    Feasibility {
        /// Interfaces to check (default: general.interfaces of the
        /// configuration).
        interfaces: Vec<String>,
        /// Configuration file, for the interfaces, capacities, XDP mode and
        /// pin directory (default: /etc/pf-sidecar/pf-sidecar.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// What the maps do with an address, what the kernel says, and whether they agree.
    Lookup {
        address: std::net::IpAddr,
        #[arg(long)]
        json: bool,
        /// The VRF device whose ports the frames arrive on: the answer is
        /// its table's (by bpf_fib_lookup, never the route cache), and each
        /// of its ports is checked to be marked so in INGRESS.
        #[arg(long)]
        vrf: Option<String>,
        /// Configuration file, for general.pin_dir (default:
        /// /etc/pf-sidecar/pf-sidecar.toml if present; --pin-dir wins).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Compare the pinned maps, per prefix and per nexthop, with the kernel
    /// FIB or FRR's RIB. Exits 0 in sync, 1 on drift, 2 when it could not
    /// compare.
    Diff {
        /// What the maps should agree with.
        #[arg(long, value_enum, default_value = "kernel")]
        against: diff::Against,
        /// Configuration file, for the route tables and the pin directory
        /// (default: /etc/pf-sidecar/pf-sidecar.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The pathspace of the FRR instance to ask (`vtysh -N`; default:
        /// frr.pathspace of the configuration).
        #[arg(long)]
        frr_pathspace: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the daemon's events (routes, nexthops, neighbours, resyncs,
    /// drift, fail-safe) as they come.
    Watch {
        /// Configuration file, for events.endpoint.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The event endpoint, overriding the configuration.
        #[arg(long)]
        endpoint: Option<String>,
        /// Only these topics.
        #[arg(long = "topic", value_parser = clap::builder::PossibleValuesParser::new(pf_sidecar::events::TOPICS))]
        topics: Vec<String>,
        /// Exit after this many events.
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Write the manual pages (pf-sidecar.1 and one per command) and the
    /// bash, zsh and fish completions into DIR (for packaging).
    #[command(hide = true)]
    Generate { dir: PathBuf },
    /// Show the mode, attachments and counters of the pinned datapath.
    Status {
        #[arg(long)]
        json: bool,
        /// Read the counters twice this far apart to give each a rate (0,
        /// the default: read once, no rates).
        #[arg(long, default_value_t = 0)]
        rate_interval_ms: u64,
        /// Configuration file, for general.pin_dir (default:
        /// /etc/pf-sidecar/pf-sidecar.toml if present; --pin-dir wins).
        #[arg(long)]
        config: Option<PathBuf>,
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
    if let Command::Generate { dir } = &cli.command {
        generate(dir)?;
        return Ok(exit::OK);
    }
    if !matches!(cli.command, Command::Run { .. }) {
        // A command whose output is cut short (`| head`) ends quietly, as
        // other tools do; the daemon keeps ignoring SIGPIPE for its sockets.
        // SAFETY: restoring a signal's default disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // The pin directory of the verbs that read or change the pins:
    // --pin-dir, else general.pin_dir of the configuration.
    let pins = |config: Option<PathBuf>| -> Option<PathBuf> {
        match (&cli.pin_dir, config) {
            (Some(pin_dir), _) => Some(pin_dir.clone()),
            (None, None) if !Path::new(pf_sidecar::config::DEFAULT_PATH).exists() => {
                Some(PathBuf::from(DEFAULT_PIN_DIR))
            }
            (None, config) => load_config_with_pin_dir(config.as_deref(), None)
                .map(|loaded| loaded.general.pin_dir),
        }
    };
    match cli.command {
        Command::Run {
            config,
            log_level,
            log_format,
            detach_on_exit,
        } => run_daemon(cli.pin_dir, config, log_level, log_format, detach_on_exit),
        Command::Attach {
            interfaces,
            xdp_mode,
            mode,
            dry_run,
            config,
        } => match pins(config) {
            Some(pin_dir) => attach_interfaces(&pin_dir, &interfaces, xdp_mode, mode, dry_run),
            None => Ok(exit::ERROR),
        },
        Command::Detach {
            interfaces,
            all,
            force,
            config,
        } => match pins(config) {
            Some(pin_dir) => detach_interfaces(&pin_dir, &interfaces, all, force),
            None => Ok(exit::ERROR),
        },
        Command::Feasibility {
            interfaces,
            config,
            json,
        } => check_feasibility(cli.pin_dir, interfaces, config, json),
        Command::Lookup {
            address,
            json,
            vrf,
            config,
        } => match (pins(config), vrf) {
            (Some(pin_dir), None) => look_up(&pin_dir, address, json),
            (Some(pin_dir), Some(vrf)) => look_up_in_vrf(&pin_dir, address, &vrf, json),
            (None, _) => Ok(exit::ERROR),
        },
        Command::Diff {
            against,
            config,
            frr_pathspace,
            json,
        } => diff_maps(cli.pin_dir, against, config, frr_pathspace, json),
        Command::Watch {
            config,
            endpoint,
            topics,
            count,
            json,
        } => watch_events(config, endpoint, topics, count, json),
        Command::Generate { .. } => unreachable!("handled before the namespace is entered"),
        Command::Status {
            json,
            rate_interval_ms,
            config,
        } => match pins(config) {
            Some(pin_dir) => show_status(&pin_dir, json, rate_interval_ms),
            None => Ok(exit::ERROR),
        },
    }
}

/// Manual pages and shell completions, generated from the command line's
/// own definition so they never disagree with `--help`.
fn generate(dir: &Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let command = Cli::command();
    clap_mangen::generate_to(command.clone(), &man)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut command.clone(), "pf-sidecar", &completions)?;
    }
    Ok(())
}

/// The configuration, or `None` once the error is printed (the command
/// then exits with [`exit::ERROR`]).
fn load_config(path: Option<&Path>, overrides: &Overrides) -> Option<Config> {
    match Config::load(path, overrides) {
        Ok(loaded) => Some(loaded),
        Err(err) => {
            eprintln!("pf-sidecar: configuration error: {err}");
            None
        }
    }
}

/// The configuration with `--pin-dir` over it (the verbs that log nothing).
fn load_config_with_pin_dir(path: Option<&Path>, pin_dir: Option<PathBuf>) -> Option<Config> {
    let overrides = Overrides {
        pin_dir,
        log_level: None,
    };
    load_config(path, &overrides)
}

/// How the daemon's log lines look.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// One line of text per event (colours only on a terminal).
    Text,
    /// One JSON object per event, for log shippers.
    Json,
}

fn init_logging(log_level: &str, format: LogFormat) {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};
    let lines = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => lines.json().with_ansi(false).boxed(),
    };
    tracing_subscriber::registry()
        // The ZeroMQ library logs every subscriber's connect and disconnect
        // at INFO: only its warnings belong in the daemon's log.
        .with(tracing_subscriber::EnvFilter::new(format!(
            "{log_level},zeromq=warn"
        )))
        // WARN and ERROR lines repeated from one place are rate-limited.
        .with(lines.with_filter(pf_sidecar::log_limit::RateLimit::install()))
        .init();
}

/// `run`: the daemon in the foreground until SIGTERM or SIGINT.
fn run_daemon(
    pin_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    log_level: Option<String>,
    log_format: LogFormat,
    detach_on_exit: bool,
) -> anyhow::Result<u8> {
    let overrides = Overrides { pin_dir, log_level };
    let Some(loaded) = load_config(config.as_deref(), &overrides) else {
        return Ok(exit::ERROR);
    };
    init_logging(&loaded.general.log_level, log_format);
    let pin_dir = loaded.general.pin_dir.clone();
    pf_sidecar::daemon::run(loaded, config)?;
    if detach_on_exit {
        for ifname in attach::detach(&pin_dir, &[], true, false)?.interfaces {
            tracing::info!(%ifname, "detached on exit");
        }
    }
    Ok(exit::OK)
}

fn attach_interfaces(
    pin_dir: &Path,
    interfaces: &[String],
    xdp_mode: AttachMode,
    mode: DatapathMode,
    dry_run: bool,
) -> anyhow::Result<u8> {
    let attached = attach::attach(&AttachOptions {
        interfaces,
        attach_mode: xdp_mode,
        mode: mode.into(),
        dry_run,
        pin_dir,
        capacities: Capacities::default(),
    })?;
    for (ifname, how) in attached {
        println!("attached fast_path to {ifname} ({how})");
    }
    Ok(exit::OK)
}

fn detach_interfaces(
    pin_dir: &Path,
    interfaces: &[String],
    all: bool,
    force: bool,
) -> anyhow::Result<u8> {
    if !all && interfaces.is_empty() {
        anyhow::bail!("name the interfaces to detach, or pass --all");
    }
    let detached = attach::detach(pin_dir, interfaces, all, force)?;
    for ifname in &detached.interfaces {
        println!("detached {ifname}");
    }
    if let Some(pid) = detached.daemon {
        println!(
            "forced past the running daemon{}: it reports this and does not attach again until a reload or a restart",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        );
    }
    if detached.removed_dir {
        println!("removed {}", pin_dir.display());
    } else if all && detached.daemon.is_some() {
        println!(
            "emptied {} (the daemon holds the directory until it stops)",
            pin_dir.display()
        );
    }
    Ok(exit::OK)
}

/// Where the configuration came from, for the feasibility report.
fn config_source(config: Option<&Path>) -> String {
    match config {
        Some(path) => path.display().to_string(),
        None if Path::new(pf_sidecar::config::DEFAULT_PATH).exists() => {
            pf_sidecar::config::DEFAULT_PATH.to_string()
        }
        None => "built-in defaults".to_string(),
    }
}

fn check_feasibility(
    pin_dir: Option<PathBuf>,
    interfaces: Vec<String>,
    config: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<u8> {
    let Some(loaded) = load_config_with_pin_dir(config.as_deref(), pin_dir) else {
        return Ok(exit::ERROR);
    };
    let options = feasibility::Options {
        interfaces: if interfaces.is_empty() {
            loaded.general.interfaces.clone()
        } else {
            interfaces
        },
        pin_dir: loaded.general.pin_dir.clone(),
        capacities: loaded.capacity,
        xdp_mode: AttachMode::from_config(&loaded.general.xdp_mode),
        source: config_source(config.as_deref()),
        offload_replies: loaded.fpm.offload_replies,
    };
    let checks = feasibility::run(&options);
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print!("{}", feasibility::render(&checks));
    }
    if !feasibility::can_run(&checks) {
        return Ok(exit::DRIFT);
    }
    Ok(exit::OK)
}

fn look_up(pin_dir: &Path, address: std::net::IpAddr, json: bool) -> anyhow::Result<u8> {
    let result = lookup::run(pin_dir, address)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", lookup::render(&result));
    }
    if !result.agree {
        return Ok(exit::DRIFT);
    }
    Ok(exit::OK)
}

fn look_up_in_vrf(
    pin_dir: &Path,
    address: std::net::IpAddr,
    vrf: &str,
    json: bool,
) -> anyhow::Result<u8> {
    let result = lookup_vrf::run(pin_dir, address, vrf)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", lookup_vrf::render(&result));
    }
    Ok(if result.agree { exit::OK } else { exit::DRIFT })
}

fn diff_maps(
    pin_dir: Option<PathBuf>,
    against: diff::Against,
    config: Option<PathBuf>,
    frr_pathspace: Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let Some(loaded) = load_config_with_pin_dir(config.as_deref(), pin_dir) else {
        return Ok(exit::ERROR);
    };
    let outcome = diff::run(&diff::DiffOptions {
        pin_dir: Path::new(&loaded.general.pin_dir),
        against,
        tables: loaded.routes.tables.clone(),
        // --frr-pathspace, else frr.pathspace of the configuration.
        frr_pathspace: frr_pathspace
            .as_deref()
            .or(Some(loaded.frr.pathspace.as_str()).filter(|p| !p.is_empty())),
        progress: !json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", diff::render(&outcome));
    }
    if outcome.summary.stale() {
        return Ok(exit::ERROR);
    }
    if !outcome.summary.in_sync {
        return Ok(exit::DRIFT);
    }
    Ok(exit::OK)
}

fn watch_events(
    config: Option<PathBuf>,
    endpoint: Option<String>,
    topics: Vec<String>,
    count: u64,
    json: bool,
) -> anyhow::Result<u8> {
    let endpoint = match endpoint {
        Some(endpoint) => endpoint,
        None => match load_config(config.as_deref(), &Overrides::default()) {
            Some(loaded) => loaded.events.endpoint,
            None => return Ok(exit::ERROR),
        },
    };
    watch::run(&watch::WatchOptions {
        endpoint,
        topics,
        count,
        json,
    })?;
    Ok(exit::OK)
}

fn show_status(pin_dir: &Path, json: bool, rate_interval_ms: u64) -> anyhow::Result<u8> {
    let status = status::read(pin_dir, std::time::Duration::from_millis(rate_interval_ms))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status::render(&status));
    }
    Ok(exit::OK)
}
