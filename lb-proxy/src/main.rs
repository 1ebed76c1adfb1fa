//! `lb-proxy`: runs the lb data plane from a TOML file, checks files, and
//! shows the live tables. Thin glue: clap, tracing, signals; the work is in
//! the library (`lb_proxy::app`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand, ValueEnum};
use lb_proxy::admin::{GetKind, OutputFormat};
use lb_proxy::app::{App, AppError, AppOptions, SourceOptions};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

/// A userspace L4 load balancer with Kubernetes Service semantics.
#[derive(Debug, Parser)]
#[command(name = "lb-proxy", version, about, long_about = None)]
struct Cli {
    /// The TOML config file (runs the proxy when no subcommand is given).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Keep cluster IP and node port allocations in this file across restarts.
    #[arg(long, global = true, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// Kubernetes manifests (a YAML file or a directory of .yaml/.yml files),
    /// merged with the file's objects (run, check) and watched like it.
    #[arg(long, global = true, value_name = "PATH")]
    manifests: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy until SIGTERM/SIGINT (the default).
    Run,
    /// Validate the config file; print every error, one per line; exit 1 if invalid.
    Check,
    /// Print the running proxy's services or endpoints, like `kubectl get svc,ep`.
    Get {
        /// services (svc) or endpoints (ep).
        #[arg(value_enum)]
        kind: GetKind,
        /// table (default) or json (exactly the admin API's JSON).
        #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// The admin API address (HOST:PORT); default: `admin.listen` of --config.
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
    },
    /// Write objects to the etcd source (needs [source.etcd]; not supported yet).
    Put {
        /// File with [[services]], [[pods]], [[endpoints]], [[ip_pools]] tables.
        #[arg(short = 'f', value_name = "FILE")]
        file: PathBuf,
    },
    /// Delete an object from the etcd source (needs [source.etcd]; not supported yet).
    Delete {
        /// services, pods, endpoints or ip_pools.
        kind: String,
        /// NAMESPACE/NAME (ip_pools: NAME).
        name: String,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // hickory-server logs every DNS question at info; that is a query log,
        // not an operator's log.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => check(cli.config.as_deref(), cli.manifests.as_deref()),
        Some(Command::Get {
            kind,
            output,
            admin,
        }) => get(kind, output, admin, cli.config.as_deref()),
        Some(Command::Put { .. }) | Some(Command::Delete { .. }) => {
            eprintln!("error: put and delete write to an etcd source ([source.etcd]), which is not supported yet");
            ExitCode::from(1)
        }
        Some(Command::Run) | None => {
            let Some(config) = cli.config else {
                eprintln!("error: --config FILE is required");
                return ExitCode::from(2);
            };
            init_logging(cli.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            runtime.block_on(run(
                AppOptions {
                    config,
                    state_file: cli.state_file,
                },
                SourceOptions {
                    manifests: cli.manifests,
                },
            ))
        }
    }
}

fn check(config: Option<&Path>, manifests: Option<&Path>) -> ExitCode {
    let Some(path) = config else {
        eprintln!("error: --config FILE is required");
        return ExitCode::from(2);
    };
    match lb_proxy::sources::check(path, manifests) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: valid ({} services)",
                path.display(),
                config.services.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(1)
        }
    }
}

fn get(
    kind: GetKind,
    output: OutputFormat,
    admin: Option<String>,
    config: Option<&Path>,
) -> ExitCode {
    let admin = match (admin, config) {
        (Some(a), _) => a,
        (None, Some(path)) => match lb_config::check_file(path) {
            Ok(c) => match c.admin_listen {
                Some(a) => a.to_string(),
                None => {
                    eprintln!(
                        "error: {} disables the admin API (admin.listen = \"\")",
                        path.display()
                    );
                    return ExitCode::from(1);
                }
            },
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::from(1);
            }
        },
        (None, None) => lb_config::config::DEFAULT_ADMIN_LISTEN.to_string(),
    };
    match lb_proxy::admin::get_command(&admin, kind, output, SystemTime::now()) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(options: AppOptions, source_options: SourceOptions) -> ExitCode {
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            eprintln!("error: cannot install signal handlers");
            return ExitCode::from(1);
        }
    };
    let manifests = source_options.manifests.clone();
    let app = match App::start_with(options.clone(), source_options).await {
        Ok(app) => app,
        Err(AppError::Config(errors)) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let mut changes =
        match lb_config::watch_file(options.config.clone(), Duration::from_millis(150)) {
            Ok(rx) => Some(rx),
            Err(e) => {
                warn!(
                    "not watching {}: {e}; reload with SIGHUP",
                    options.config.display()
                );
                None
            }
        };
    let mut manifest_changes =
        manifests.and_then(|path| {
            match lb_config::manifests::watch_manifests(path.clone(), Duration::from_millis(150)) {
                Ok(rx) => Some(rx),
                Err(e) => {
                    warn!("not watching {}: {e}; reload with SIGHUP", path.display());
                    None
                }
            }
        });
    loop {
        tokio::select! {
            Some(()) = async {
                match manifest_changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                app.reload(false).await;
            }
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                app.reload(true).await;
            }
            Some(()) = async {
                match changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                app.reload(false).await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!(
        open = app.dataplane().active_connections(),
        "draining: listeners closed, waiting for open connections"
    );
    tokio::select! {
        _ = app.shutdown() => {
            info!("drained; exiting");
            ExitCode::SUCCESS
        }
        _ = term.recv() => {
            warn!("second signal: exiting at once");
            ExitCode::from(130)
        }
        _ = int.recv() => {
            warn!("second signal: exiting at once");
            ExitCode::from(130)
        }
    }
}
