//! `lb-proxy`: runs the lb data plane from a TOML file, checks files, and
//! shows the live tables. Thin glue: clap, tracing, signals; the work is in
//! the library (`lb_proxy::app`).

mod allocator;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use lb_proxy::app::AppOptions;
use lb_proxy::cli::get::{GetRequest, OutputFormat};
use lb_proxy::cli::owner;
use lb_proxy::cli::serve::{Ownership, Start};
use lb_proxy::control::ProxyOverrides;
use lb_proxy::handover::HandoverError;

/// A userspace L4 load balancer with Kubernetes Service semantics.
#[derive(Debug, Parser)]
#[command(
    name = "lb-proxy",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("LB_BUILD_REVISION"), ")"),
    about,
    long_about = "lb-proxy serves Kubernetes-style Services (ClusterIP, NodePort, LoadBalancer, \
ExternalName) from a TOML file: it listens on every cluster IP, external IP, LoadBalancer \
address and node port of the file, and forwards each TCP connection or UDP flow to a ready \
endpoint (weighted round robin, ClientIP affinity, failover on dial errors).\n\n\
With no subcommand it runs the proxy (same as `run`). The admin API (admin.listen, default \
127.0.0.1:10249) serves /healthz, /readyz, /metrics, /api/v1/{services,endpoints,connections,\
config,events,pods} and a live status page at /.",
    after_help = "EXAMPLES:\n  \
lb-proxy --config /etc/lb/lb.toml                 run the proxy\n  \
lb-proxy check --config lb.toml                   validate a file\n  \
lb-proxy get svc --config lb.toml                 list services of the running proxy\n  \
lb-proxy get svc,ep -A -l app=web                 like kubectl: kinds, namespaces, selectors\n  \
lb-proxy get ep -o wide --admin 127.0.0.1:10249   endpoints with state and reason\n  \
lb-proxy get pods                                 pods and their readiness as lb sees it\n  \
lb-proxy get connections -w                       watch open connections\n  \
lb-proxy get events                               what happened (reloads, allocations, endpoints)\n  \
lb-proxy describe svc web --config lb.toml        one service, its conditions and events\n  \
lb-proxy config dump --config lb.toml             the config in force: defaults, allocations\n  \
lb-proxy config schema > lb.schema.json           the file's JSON Schema, for editors\n\n\
SIGNALS:\n  SIGHUP reloads the file (it is also watched); SIGTERM/SIGINT drain; a second one exits at once; \
SIGUSR2 starts the binary again with --takeover (a hot upgrade).\n\n\
ENVIRONMENT:\n  RUST_LOG      log filter (default info; lb_proxy=debug logs one event per connection; \
hickory_server stays at warn unless named: info,hickory_server=info logs each DNS question)\n  \
NOTIFY_SOCKET set by systemd for Type=notify: READY=1 is sent once the proxy serves\n  \
LB_FORWARD_ENGINE, LB_ACCEPT, LB_WORKERS  override [proxy] forward_engine, accept_mode, workers\n  \
LB_RUNTIME_DIR  where the node lock lives (as --runtime-dir)"
)]
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
    /// Where `run` keeps its node lock (one lb-proxy per [node] name):
    /// default /run/lb-proxy as root, else $XDG_RUNTIME_DIR/lb-proxy (also
    /// LB_RUNTIME_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// `run`: take over from the lb-proxy running for the same [node] name
    /// (and runtime directory): receive its listening sockets, serve on
    /// them, and let it drain and exit; no connection is refused. With none
    /// running, start as usual.
    #[arg(long, global = true)]
    takeover: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What `lb-proxy describe` describes.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DescribeKind {
    /// A service (also svc, services).
    #[value(alias = "svc", alias = "services")]
    Service,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy until SIGTERM/SIGINT (the default).
    #[command(
        long_about = "Loads --config, binds every frontend of its services, starts the admin API \
(and the DNS responder with [dns]) and serves until SIGTERM or SIGINT. The file is watched and \
reloaded on change (in-place writes, renames, ConfigMap symlink swaps) and on SIGHUP; a file \
that fails validation changes nothing (logged, counted in lb_config_reloads_total{result=\"failure\"}). \
On SIGTERM/SIGINT every service listener closes at once, open connections finish within \
proxy.drain_timeout, and the process exits 0; a second signal exits at once with 130.\n\n\
With --takeover, the lb-proxy already running for the same [node] name hands every \
listening socket (frontends, admin, DNS, health-check ports) over on its control socket \
(RUNTIME_DIR/NODE.sock); this process serves on them and the old one drains and exits 0, so \
no connection is refused. If this process cannot start, it exits 1 and the old one keeps \
serving. SIGUSR2 makes a running lb-proxy start its own program again with --takeover \
(a new binary installed at the same path is the one that runs).\n\n\
Under systemd with Type=notify, READY=1 is sent on $NOTIFY_SOCKET once the proxy serves, \
and STOPPING=1 when the drain starts; a takeover sends MAINPID= and READY=1 \
(NotifyAccess=all).",
        after_help = "EXAMPLES:\n  lb-proxy run --config lb.toml\n  \
RUST_LOG=lb_proxy=debug lb-proxy run --config lb.toml --log-format json\n  \
lb-proxy run --config lb.toml --state-file /var/lib/lb/state.json\n  \
lb-proxy run --config lb.toml --takeover      # replace the running one, refusing nothing"
    )]
    Run,
    /// Validate the config file; print every error, one per line; exit 1 if invalid.
    #[command(
        long_about = "Parses and validates --config as `run` would (including allocation of \
cluster IPs, node ports and LoadBalancer addresses) and prints every error, one per line, in \
Kubernetes' wording: services[NAME].ports[0].node_port: Invalid value: ... Exits 0 when the \
file is valid, 1 when it is not. Warnings are printed to stderr and do not fail the check. \
With --state-file, the allocations a running proxy saved there are read (never written), so a \
cluster IP or node port another service holds, or a changed cluster IP, is refused as the next \
reload would refuse it.",
        after_help = "EXAMPLES:\n  lb-proxy check --config lb.toml && systemctl reload lb-proxy\n  \
lb-proxy check --config lb.toml --state-file /var/lib/lb/state.json"
    )]
    Check,
    /// Print the running proxy's services, endpoints, pods, connections or events, like `kubectl get`.
    #[command(
        long_about = "Asks the running proxy's admin API (at --admin, else at admin.listen of \
--config, else 127.0.0.1:10249) and prints what it has as `kubectl get` does: the same \
arguments, columns and messages.\n\n  \
services (svc)     NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE (-o wide: SELECTOR, IP-POOL)\n  \
endpoints (ep)     NAME ENDPOINTS AGE (ready endpoints; -o wide: one row each with STATE, \
REASON, SINCE)\n  \
pods (po)          NAME READY STATUS RESTARTS AGE (READY as lb sees it: the readiness probe's \
verdict; -o wide: IP NODE NOMINATED NODE READINESS GATES)\n  \
connections (conn) NAME CLIENT ENDPOINT REASON RX TX AGE (lb's own kind: NAME is the service; \
REASON why this endpoint was picked: round_robin, affinity or failover; -o wide adds \
FRONTEND, PORT, STARTED)\n  \
events (ev)        LAST SEEN TYPE REASON OBJECT MESSAGE (oldest first; a repeated event is \
one row; node events are in namespace default)\n  \
all                pods and services\n\n\
TYPE may be a comma-separated list (svc,ep: each kind's table, names printed service/web). \
NAME (or TYPE/NAME) picks objects by name; a missing one is `Error from server (NotFound): \
services \"web\" not found` and exit 1. Objects are listed in namespace `default` unless \
-n says another; -A lists every namespace with a NAMESPACE column first. -l filters on \
labels with kubectl's selector syntax (a=b, a!=b, a in (x,y), a notin (x), a, !a). \
-o json|yaml print the object asked by name, else a `kind: List`; -o name prints \
service/web. An empty answer prints `No resources found in default namespace.` on \
stderr. -w keeps watching and prints again whenever the answer changes, until Ctrl-C.",
        after_help = "EXAMPLES:\n  lb-proxy get svc --config /etc/lb/lb.toml\n  \
lb-proxy get svc web -o yaml\n  \
lb-proxy get svc/web ep/web\n  \
lb-proxy get svc,ep -n prod -l 'app in (web,api),!canary'\n  \
lb-proxy get pods -A -o wide\n  \
lb-proxy get all -o name\n  \
lb-proxy get ep -o wide --admin 127.0.0.1:10249\n  \
lb-proxy get connections -A -o json | jq '.items[] | select(.pick_reason == \"failover\")'\n  \
lb-proxy get ep -w"
    )]
    Get {
        /// TYPE[,TYPE...] [NAME...] or TYPE/NAME...: services (svc), endpoints (ep), pods (po),
        /// connections (conn), events (ev), all.
        #[arg(required = true, value_name = "TYPE[,TYPE] [NAME] | TYPE/NAME")]
        args: Vec<String>,
        /// The namespace listed (default: default).
        #[arg(short = 'n', long, value_name = "NAMESPACE")]
        namespace: Option<String>,
        /// List every namespace (a NAMESPACE column first).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Label selector, kubectl's syntax: a=b, a!=b, 'a in (x,y)', 'a notin (x)', a, '!a'.
        #[arg(short = 'l', long, value_name = "SELECTOR")]
        selector: Option<String>,
        /// table (default), wide (more columns), json, yaml or name (service/web).
        #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Print tables without their header line.
        #[arg(long)]
        no_headers: bool,
        /// The admin API address (HOST:PORT); default: `admin.listen` of --config.
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
        /// Watch: print again whenever the answer changes (every second), until Ctrl-C.
        #[arg(short = 'w', long)]
        watch: bool,
        /// With -w: stop after printing this many times (0 = until Ctrl-C); for scripts and tests.
        #[arg(long, value_name = "N", default_value_t = 0, hide = true)]
        watch_limit: u32,
    },
    /// Show one service like `kubectl describe service`, with its conditions and events.
    #[command(
        long_about = "Prints one service as `kubectl describe service` does: Name, Namespace, \
Labels, Annotations, Selector, Type, IP Families, IP, IPs, External IPs, LoadBalancer Ingress, \
then Port, TargetPort, NodePort and Endpoints (ready ones) for each port, Session Affinity, \
External Traffic Policy, Internal Traffic Policy, HealthCheck NodePort, LoadBalancer Source \
Ranges; then its Conditions (LoadBalancerAssigned, FrontendsBound, EndpointsAvailable: \
status, reason, message) and its Events.\n\n\
With --admin HOST:PORT it asks the running proxy there. With --config FILE (and no --admin) \
it needs no running proxy: the service as the file (with --manifests and the allocations of \
--state-file, as `check` reads them) makes it, conditions from the file alone \
(FrontendsBound Unknown) and no events. With neither, it asks 127.0.0.1:10249.",
        after_help = "EXAMPLES:\n  lb-proxy describe service web --admin 127.0.0.1:10249\n  \
lb-proxy describe svc prod/api --config /etc/lb/lb.toml"
    )]
    Describe {
        /// service (svc, services): the kind described.
        #[arg(value_enum)]
        kind: DescribeKind,
        /// NAME (namespace default) or NAMESPACE/NAME.
        name: String,
        /// The admin API address (HOST:PORT) of the running proxy to ask.
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
    },
    /// Validate objects and write them to the etcd source of --config ([source.etcd]).
    #[command(
        long_about = "Reads -f FILE (the file's tables: [[services]], [[pods]], [[endpoints]], \
[[ip_pools]], or Kubernetes manifests in YAML), validates every object as `check` would, and \
writes each to the etcd source named by --config's [source.etcd], under \
<prefix>/<kind>/<namespace>/<name> (ip_pools: <prefix>/ip_pools/<name>). Nothing is written \
when an object is invalid: the errors are printed one per line, Kubernetes style. Every \
lb-proxy watching that prefix applies the change.",
        after_help = "EXAMPLES:\n  lb-proxy put -f web.toml --config /etc/lb/lb.toml\n  \
lb-proxy put -f deployment.yaml --config /etc/lb/lb.toml"
    )]
    Put {
        /// File with [[services]], [[pods]], [[endpoints]], [[ip_pools]] tables, or
        /// Kubernetes manifests (.yaml/.yml).
        #[arg(short = 'f', value_name = "FILE")]
        file: PathBuf,
    },
    /// The config file's JSON Schema (`schema`), or the config in force as TOML (`dump`).
    Config {
        #[command(subcommand)]
        action: lb_proxy::cli::config::ConfigCommand,
    },
    /// Delete an object from the etcd source of --config ([source.etcd]).
    #[command(
        long_about = "Deletes one object from the etcd source named by --config's \
[source.etcd]: KIND is services, pods, endpoints or ip_pools; NAME is NAMESPACE/NAME \
(ip_pools take a bare NAME). Every lb-proxy watching the prefix drops the object: a deleted service's listeners close and its metric series \
disappear.",
        after_help = "EXAMPLES:\n  lb-proxy delete services default/web --config /etc/lb/lb.toml\n  \
lb-proxy delete ip_pools lb-ip-pool --config /etc/lb/lb.toml"
    )]
    Delete {
        /// services, pods, endpoints or ip_pools.
        kind: String,
        /// NAMESPACE/NAME (ip_pools: NAME).
        name: String,
    },
    /// Print the shell completion script for bash, zsh or fish.
    #[command(after_help = "EXAMPLES:\n  \
lb-proxy completions bash > /usr/share/bash-completion/completions/lb-proxy\n  \
lb-proxy completions zsh > /usr/share/zsh/vendor-completions/_lb-proxy\n  \
lb-proxy completions fish > /usr/share/fish/vendor_completions.d/lb-proxy.fish")]
    Completions {
        /// bash, zsh or fish.
        #[arg(value_enum)]
        shell: lb_proxy::cli::docs::Shell,
    },
    /// Print the man page (roff).
    #[command(
        after_help = "EXAMPLES:\n  lb-proxy man > /usr/share/man/man1/lb-proxy.1\n  \
lb-proxy man | man -l -"
    )]
    Man,
}

/// Libraries whose info level is a per-request log, not an operator's log:
/// kept at warn whatever RUST_LOG says, unless RUST_LOG names them.
/// hickory-server logs two lines per DNS question at info.
const QUERY_LOGS: &[(&str, &str)] = &[("hickory_server", "hickory_server=warn")];

/// The log filter: RUST_LOG (default `info`; an invalid one is reported and
/// `info` used), plus [`QUERY_LOGS`] for each library RUST_LOG does not
/// name, so `RUST_LOG=info` (the systemd unit's) logs no line per DNS
/// question. `RUST_LOG=info,hickory_server=info` brings hickory-server's
/// query log back; `lb_proxy::ops::dns=debug` adds the responder's own.
fn log_filter() -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = if spec.trim().is_empty() {
        EnvFilter::new("info")
    } else {
        EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("lb-proxy: RUST_LOG={spec:?} is not a log filter ({e}); using info");
            EnvFilter::new("info")
        })
    };
    for (target, directive) in QUERY_LOGS {
        if !spec.contains(target) {
            if let Ok(directive) = directive.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

fn init_logging(format: LogFormat) {
    let filter = log_filter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .event_format(lb_proxy::cli::access_text::AccessText(
                tracing_subscriber::fmt::format(),
            ))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => check(
            cli.config.as_deref(),
            cli.manifests.as_deref(),
            cli.state_file.as_deref(),
        ),
        Some(Command::Get {
            args,
            namespace,
            all_namespaces,
            selector,
            output,
            no_headers,
            admin,
            watch,
            watch_limit,
        }) => {
            let request = GetRequest::parse(
                &args,
                namespace.as_deref(),
                all_namespaces,
                selector.as_deref(),
                output,
                no_headers,
            );
            match request {
                Ok(request) => lb_proxy::cli::get::command(
                    &request,
                    admin,
                    cli.config.as_deref(),
                    watch.then_some(watch_limit),
                ),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Describe {
            kind: DescribeKind::Service,
            name,
            admin,
        }) => describe(
            &name,
            admin,
            cli.config.as_deref(),
            cli.manifests.as_deref(),
            cli.state_file.as_deref(),
        ),
        Some(Command::Config { action }) => config_command(
            action,
            cli.config.as_deref(),
            cli.manifests.as_deref(),
            cli.state_file.as_deref(),
        ),
        Some(Command::Put { file }) => {
            let Some(config) = cli.config.as_deref() else {
                eprintln!("error: --config FILE (with [source.etcd]) is required");
                return ExitCode::from(2);
            };
            let Some(written) = one_shot(lb_proxy::cli::put(config, &file)) else {
                return ExitCode::from(1);
            };
            match written {
                Ok(keys) => {
                    for k in keys {
                        println!("{k} written");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Delete { kind, name }) => {
            let Some(config) = cli.config.as_deref() else {
                eprintln!("error: --config FILE (with [source.etcd]) is required");
                return ExitCode::from(2);
            };
            let Some(deleted) = one_shot(lb_proxy::cli::delete(config, &kind, &name)) else {
                return ExitCode::from(1);
            };
            match deleted {
                Ok(key) => {
                    println!("{key} deleted");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Completions { shell }) => printed(lb_proxy::cli::docs::completions(
            shell,
            Cli::command(),
            &mut std::io::stdout(),
        )),
        Some(Command::Man) => printed(lb_proxy::cli::docs::man(
            Cli::command(),
            &mut std::io::stdout(),
        )),
        Some(Command::Run) | None => {
            let Some(config) = cli.config else {
                eprintln!("error: --config FILE is required");
                return ExitCode::from(2);
            };
            init_logging(cli.log_format);
            let overrides = match overrides_from_env() {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            // Before anything binds: one lb-proxy per node (its service
            // listeners share ports through SO_REUSEPORT, so a second one
            // would otherwise take connections silently).
            let dir = cli
                .runtime_dir
                .or_else(|| {
                    std::env::var_os("LB_RUNTIME_DIR")
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                })
                .unwrap_or_else(owner::default_runtime_dir);
            let node = owner::node_name_of(&config);
            let mut ownership = None;
            if cli.takeover {
                // Ask the running owner of the node for its sockets; with
                // none running, this is a plain start.
                match lb_proxy::handover::take::request(&owner::control_path(&dir, &node)) {
                    Ok(offer) => ownership = Some(Ownership::Takeover(offer)),
                    Err(HandoverError::NoOwner { path, source }) => tracing::info!(
                        path = %path.display(),
                        error = %source,
                        "no running lb-proxy for node {node} to take over; starting anew"
                    ),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            let ownership = match ownership {
                Some(o) => o,
                None => match owner::NodeLock::acquire(&dir, &node, owner::TAKEOVER_WAIT) {
                    Ok(lock) => Ownership::Fresh(lock),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(1);
                    }
                },
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            runtime.block_on(lb_proxy::cli::serve::run(Start {
                options: AppOptions {
                    config,
                    state_file: cli.state_file,
                    manifests: cli.manifests,
                    overrides,
                    sockets: Default::default(),
                },
                runtime_dir: dir,
                node,
                ownership,
            }))
        }
    }
}

/// `LB_FORWARD_ENGINE`, `LB_ACCEPT` and `LB_WORKERS`: `[proxy]`
/// `forward_engine`, `accept_mode` and `workers` for this process, over the
/// file's (for benchmarks and A/B runs without editing the file). An unknown
/// value is an error naming the valid ones.
fn overrides_from_env() -> Result<ProxyOverrides, String> {
    fn var(name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }
    let mut overrides = ProxyOverrides::default();
    if let Some(v) = var("LB_FORWARD_ENGINE") {
        overrides.forward_engine = Some(v.parse().map_err(|e| format!("LB_FORWARD_ENGINE: {e}"))?);
    }
    if let Some(v) = var("LB_ACCEPT") {
        overrides.accept_mode = Some(v.parse().map_err(|e| format!("LB_ACCEPT: {e}"))?);
    }
    if let Some(v) = var("LB_WORKERS") {
        overrides.workers = Some(
            v.parse()
                .map_err(|_| format!("LB_WORKERS: {v:?} is not a number of threads"))?,
        );
    }
    Ok(overrides)
}

/// The exit code of a command that printed to stdout (`completions`, `man`).
fn printed(written: std::io::Result<()>) -> ExitCode {
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs a one-shot command (`put`, `delete`) on a runtime of its own, one
/// thread; `None` (reported) when the runtime cannot start.
fn one_shot<T>(command: impl std::future::Future<Output = T>) -> Option<T> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt.block_on(command)),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

fn check(config: Option<&Path>, manifests: Option<&Path>, state_file: Option<&Path>) -> ExitCode {
    let Some(path) = config else {
        eprintln!("error: --config FILE is required");
        return ExitCode::from(2);
    };
    match lb_proxy::cli::check(path, manifests, state_file) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            // A LoadBalancer service left without an address is not an
            // error (the rest serves): kubectl's `Warning REASON MESSAGE`.
            for p in &config.pending_addresses {
                eprintln!("warning: {} {}", p.reason, p.message);
            }
            let others = match config.not_proxied.len() {
                0 => String::new(),
                n => format!("; {n} left to another proxy"),
            };
            println!(
                "{}: valid ({} services{others})",
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

fn config_command(
    action: lb_proxy::cli::config::ConfigCommand,
    config: Option<&Path>,
    manifests: Option<&Path>,
    state_file: Option<&Path>,
) -> ExitCode {
    use lb_proxy::cli::config::{dump, schema, ConfigCommand};
    let path = match (action, config) {
        (ConfigCommand::Schema, _) => {
            print!("{}", schema());
            return ExitCode::SUCCESS;
        }
        (ConfigCommand::Dump, Some(path)) => path,
        (ConfigCommand::Dump, None) => {
            eprintln!("error: --config FILE is required");
            return ExitCode::from(2);
        }
    };
    match dump(path, manifests, state_file) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(1)
        }
    }
}

fn describe(
    name: &str,
    admin: Option<String>,
    config: Option<&Path>,
    manifests: Option<&Path>,
    state_file: Option<&Path>,
) -> ExitCode {
    use lb_proxy::cli::describe::{describe_from_admin, describe_from_config};
    let now = SystemTime::now();
    let described = match (admin, config) {
        (Some(admin), _) => describe_from_admin(&admin, name, now),
        (None, Some(config)) => describe_from_config(config, manifests, state_file, name, now),
        (None, None) => describe_from_admin(lb_config::config::DEFAULT_ADMIN_LISTEN, name, now),
    };
    match described {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
