//! The command line: parse arguments, load the topology, drive the
//! observe -> plan -> apply loop once, print. Glue only; the work is in
//! `reconcile` and `datapath`.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::{
    config::{self, ConfigErrors, Topology},
    daemon,
    datapath::kernel::Kernel,
    probe::keyfile,
    reconcile::{self, render},
};

mod confirm;
mod log;
mod session;

use session::{Session, print_plan};

#[derive(Parser, Debug)]
#[command(
    name = "lvn",
    version = env!("LVN_VERSION"),
    about = "Lite Virtual Network: a declarative overlay on the kernel's own VXLAN"
)]
pub struct Cli {
    /// Topology file.
    #[arg(long, global = true, env = "LVN_CONFIG", default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// The node this machine acts as (default: the hostname).
    #[arg(long, global = true, env = "LVN_NODE")]
    node: Option<String>,
    /// Where the daemon keeps what it learned (read by `plan` too).
    #[arg(long, global = true, env = "LVN_STATE_DIR", default_value = daemon::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Where the daemon's status socket lives.
    #[arg(long, global = true, env = "LVN_RUN_DIR", default_value = daemon::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// This node's private key (auth = "keys").
    #[arg(long, global = true, env = "LVN_KEY_FILE", default_value = daemon::DEFAULT_KEY_FILE)]
    key_file: PathBuf,
    /// Log format on stderr: "human" or "json" (one object per line, for collectors).
    #[arg(long, global = true, env = "LVN_LOG_FORMAT", default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the topology file; print every error as FILE:LINE:COL: message.
    Check,
    /// Show what `apply` would change, changing nothing.
    Plan {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Exit 0 when there is nothing to change, 2 when there is.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Also print a diff of the rendered kernel state (always on a terminal).
        #[arg(long)]
        diff: bool,
    },
    /// Make the kernel match the topology, then verify.
    Apply {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Wait this long (e.g. 60s) for `lvn confirm` from another shell;
        /// without it, or on Ctrl-C, go back to the last good file (the
        /// one the last successful apply kept). Exit 0 confirmed, 1 not.
        #[arg(long, value_name = "DURATION", value_parser = parse_window)]
        confirm: Option<std::time::Duration>,
    },
    /// Keep what a waiting `lvn apply --confirm` applied (same --config,
    /// --node and --run-dir).
    Confirm,
    /// Remove everything lvn owns for this network.
    Down {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the topology file.
    Schema,
    /// Show what a change of the topology file does to every node (each
    /// node's plan, as `lvn plan` prints it, assuming OLD is applied
    /// everywhere). Needs no root, kernel or daemon.
    Diff {
        /// The file as it is now (e.g. from `git show origin/main:topology.toml`).
        old: PathBuf,
        /// The changed file.
        new: PathBuf,
        /// Machine-readable output.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// A table and per-node details to post on a pull request.
        #[arg(long)]
        markdown: bool,
        /// Exit 0 when no node changes, 2 when some do (1: a file is invalid).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Run the daemon: reconcile, keepalives, NAT discovery, expiry, live reload.
    Run {
        /// Re-read the kernel at least this often, for drift repair.
        #[arg(long, default_value = "30s", value_parser = parse_resync)]
        resync: std::time::Duration,
        /// Serve Prometheus/OpenMetrics text on ADDR (e.g. 127.0.0.1:9477), path /metrics.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Print configuration for other software, generated from the topology.
    Export {
        #[command(subcommand)]
        what: Export,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
    /// Ask the running daemon for its peers and their state. Works whatever
    /// the topology file holds (an invalid edit included): the daemon's
    /// socket is found in the run directory.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// The network whose daemon to ask, when several run here
        /// (default: the topology file's, else the only one running).
        #[arg(long)]
        network: Option<String>,
    },
    /// Write a new private key (mode 0600) and print its public key.
    Genkey { path: PathBuf },
    /// Print the public key of an existing private key file.
    Pubkey { path: PathBuf },
}

#[derive(Subcommand, Debug)]
enum Export {
    /// BIRD 2 configuration of a hub (--node): iBGP with every other hub
    /// over the overlay, carrying lvn's routes to each hub's live spokes.
    Bird,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A daemon says what it changes, learns, expires and reloads; a
    // one-shot command prints its own results and logs only problems.
    let level = if matches!(cli.command, Command::Run { .. }) {
        "info"
    } else {
        "warn"
    };
    let flush = init_logging(cli.log_format == "json", level, level == "info");
    let r = run(cli);
    // Every line logged is out before the last one.
    drop(flush);
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logging to stderr; with `threaded` (the daemon) through a thread of
/// its own (`log.rs`), stopped by dropping what this returns.
fn init_logging(json: bool, level: &str, threaded: bool) -> Option<log::Flush> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LVN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let (writer, flush) = match threaded.then(log::stderr).flatten() {
        Some((lines, flush)) => (BoxMakeWriter::new(lines), Some(flush)),
        None => (BoxMakeWriter::new(std::io::stderr), None),
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = if json {
        fmt.json().flatten_event(true).try_init()
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal()).try_init()
    };
    flush
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Genkey { path } => {
            let public = keyfile::write_new_key(&path)?;
            println!("{public}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Pubkey { path } => {
            let key = keyfile::load_private_key(&path)?;
            println!("{}", key.public());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "lvn", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { resync, metrics } => {
            let Some(ctx) = Session::load(&cli)? else {
                return Ok(ExitCode::from(1));
            };
            let opts = daemon::Options {
                config: cli.config.clone(),
                node: ctx.node.clone(),
                key_file: cli.key_file.clone(),
                state_dir: cli.state_dir.clone(),
                run_dir: cli.run_dir.clone(),
                resync,
                metrics,
            };
            runtime()?.block_on(daemon::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json, network } => {
            // The daemon answers for what runs, whatever the file holds now.
            let network =
                network.or_else(|| config::load(&cli.config).ok().map(|t| t.network.name));
            let path = match network {
                Some(n) => daemon::socket_path(&cli.run_dir, &n),
                None => daemon::find_socket(&cli.run_dir).map_err(anyhow::Error::msg)?,
            };
            let status = runtime()?
                .block_on(daemon::query(&path))
                .map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", daemon::table(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { what: Export::Bird } => {
            let Some(ctx) = Session::load(&cli)? else {
                return Ok(ExitCode::from(1));
            };
            let me = ctx.topo.node(&ctx.node)?;
            match reconcile::bird::bird_config(&ctx.topo, me) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Diff {
            old,
            new,
            json,
            markdown,
            detailed_exitcode,
        } => {
            // Both files are checked, and every error of both printed.
            let (o, n) = (load(&old), load(&new));
            let (Ok(o), Ok(n)) = (o, n) else {
                return Ok(ExitCode::from(1));
            };
            if let Some(node) = &cli.node
                && n.node(node).is_err()
                && o.node(node).is_err()
            {
                eprintln!("node '{node}' is in neither file");
                return Ok(ExitCode::from(1));
            }
            let d = reconcile::fleet::diff(&o, &n, cli.node.as_deref())?;
            let network = &n.network.name;
            if json {
                println!("{}", serde_json::to_string_pretty(&d.json(network))?);
            } else if markdown {
                print!("{}", d.markdown(network));
            } else {
                print!("{}", d.text());
            }
            Ok(if detailed_exitcode && !d.is_empty() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Schema => {
            print!("{}", config::schema_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let topo = match load(&cli.config) {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            if let Some(name) = &cli.node
                && let Err(e) = topo.node(name)
            {
                eprintln!("{e}");
                return Ok(ExitCode::from(1));
            }
            if topo.network.datapath == config::Datapath::Fou
                && let Err(e) =
                    runtime()?.block_on(crate::datapath::kernel::fou_support(topo.network.underlay))
            {
                eprintln!("warning: this machine cannot run it: {e}");
            }
            let plural =
                |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
            println!(
                "{}: ok ({}, {})",
                cli.config.display(),
                plural(topo.nodes.len(), "node"),
                plural(topo.hubs().count(), "hub")
            );
            leave_to_exit(topo);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            json,
            detailed_exitcode,
            diff,
        } => {
            let Some(ctx) = Session::load(&cli)? else {
                return Ok(ExitCode::from(1));
            };
            let code = runtime()?.block_on(async {
                let mut dp = Kernel::connect().context("opening netlink")?;
                let (desired, observed, plan) = ctx.plan(&mut dp, false).await?;
                if json {
                    let mut v = render::plan_json(&ctx.node, &ctx.topo.network.name, &plan);
                    if !desired.waiting.is_empty() {
                        v["waiting"] = serde_json::to_value(&desired.waiting)?;
                    }
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print_plan(&plan);
                    for w in &desired.waiting {
                        println!("waiting: {w}");
                    }
                    let tty = std::io::stdout().is_terminal();
                    if (tty || diff) && !plan.is_empty() {
                        println!();
                        print!(
                            "{}",
                            render::state_diff(&observed.state, &desired.state, tty)
                        );
                    }
                }
                let code = if detailed_exitcode && !plan.is_empty() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
                leave_to_exit((desired, observed, plan));
                Ok(code)
            });
            leave_to_exit(ctx);
            code
        }
        Command::Apply {
            json,
            confirm: Some(window),
        } => {
            let Some(ctx) = Session::load(&cli)? else {
                return Ok(ExitCode::from(1));
            };
            runtime()?.block_on(confirm::apply_confirmed(ctx, &cli.run_dir, window, json))
        }
        Command::Apply {
            json,
            confirm: None,
        }
        | Command::Down { json } => {
            let down = matches!(cli.command, Command::Down { .. });
            let Some(ctx) = Session::load(&cli)? else {
                return Ok(ExitCode::from(1));
            };
            runtime()?.block_on(ctx.apply(down, json))
        }
        Command::Confirm => {
            // The file may have changed since the apply: its network name
            // is all that is needed, even from a file that is otherwise
            // invalid.
            let text = std::fs::read_to_string(&cli.config)
                .with_context(|| format!("reading {}", cli.config.display()))?;
            let network = match config::parse(&cli.config, &text) {
                Ok(t) => t.network.name,
                Err(e) => daemon::network_name(&text).ok_or_else(|| anyhow::anyhow!("{e}"))?,
            };
            let node = match &cli.node {
                Some(n) => n.clone(),
                None => hostname()?,
            };
            runtime()?.block_on(confirm::confirm(&cli.run_dir, &network, &node))
        }
    }
}

/// Leave `value` to the end of the process instead of freeing it one
/// allocation at a time: a one-shot command is about to exit, which
/// returns the whole heap at once, and at 100k peers freeing the topology
/// and the desired and observed states took ~7 % of `lvn plan`.
fn leave_to_exit<T>(value: T) {
    std::mem::forget(value);
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Load and validate, printing every error; `Err(exit code)` if invalid.
fn load(path: &std::path::Path) -> Result<Topology, ExitCode> {
    load_text(path).map(|(t, _)| t)
}

/// [`load`], with the text that was parsed.
fn load_text(path: &std::path::Path) -> Result<(Topology, String), ExitCode> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!(
            "{}",
            config::ConfigError::io(path, format!("cannot read: {e}"))
        );
        ExitCode::from(1)
    })?;
    config::parse(path, &text)
        .map(|t| (t, text))
        .map_err(|e: ConfigErrors| {
            eprintln!("{e}");
            ExitCode::from(1)
        })
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    let v = s
        .parse::<i64>()
        .map(toml::Value::Integer)
        .unwrap_or_else(|_| toml::Value::String(s.to_string()));
    config::parse_duration(&v).ok_or_else(|| format!("'{s}' is not a duration like 30s or 500ms"))
}

/// `--confirm`: long enough to type `lvn confirm`, at most a day.
fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration_arg(s)?;
    let range = std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(24 * 3600);
    if range.contains(&d) {
        Ok(d)
    } else {
        Err(format!("'{s}' is out of range, expected 1s to 24h"))
    }
}

/// `--resync`, bounded: 0 would spin, and a huge value overflows the clock.
fn parse_resync(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration_arg(s)?;
    if (daemon::MIN_RESYNC..=daemon::MAX_RESYNC).contains(&d) {
        Ok(d)
    } else {
        Err(format!(
            "'{s}' is out of range, expected {:?} to {:?}",
            daemon::MIN_RESYNC,
            daemon::MAX_RESYNC
        ))
    }
}

fn hostname() -> Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the hostname (pass --node or set LVN_NODE)")?;
    Ok(h.trim().to_string())
}
