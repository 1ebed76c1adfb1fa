//! `lb-proxy run`'s life once started: signals, systemd notifications, the
//! drain, and the hand-over of the node to the next process: a restart (the
//! node lock let go as the drain starts) or a takeover (every listening
//! socket handed over on the control socket, see [`crate::handover`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use super::owner::{self, HandedLock, NodeLock};
use crate::app::{App, AppOptions};
use crate::handover::give::{self, ControlSocket};
use crate::handover::take::Offer;
use crate::handover::{Role, Sockets};

/// How `lb-proxy run` came to own its node.
#[derive(Debug)]
pub enum Ownership {
    /// It took the node lock: everything is bound anew.
    Fresh(NodeLock),
    /// `--takeover`: the running owner handed its sockets (and its lock)
    /// over; it serves on until this process says it serves.
    Takeover(Offer),
}

/// What `lb-proxy run` starts with.
#[derive(Debug)]
pub struct Start {
    /// The App's options (the handed-over sockets are added here).
    pub options: AppOptions,
    /// Where the node lock and the control socket live.
    pub runtime_dir: PathBuf,
    /// The node served.
    pub node: String,
    /// How the node is owned.
    pub ownership: Ownership,
}

/// The node lock while starting.
enum Lock {
    /// Ours already.
    Fresh(NodeLock),
    /// The previous owner's, ours once we serve.
    Handed(HandedLock),
}

/// Why the main loop ended.
enum Ending {
    /// SIGTERM or SIGINT: drain and let go of the node.
    Signal,
    /// A successor took every socket over: stop accepting, tell it, drain,
    /// exit.
    HandedOver(give::Successor),
}

/// `lb-proxy run` once the node is held (or handed over): starts the
/// [`App`] (trying again while the node's previous owner still closes its
/// admin and DNS ports), tells systemd it is ready, reloads on SIGHUP,
/// hands everything to a successor that asks on the control socket, and
/// drains on SIGTERM or SIGINT, letting go of the node as the drain starts;
/// a second signal exits at once (130).
pub async fn run(start: Start) -> ExitCode {
    let Start {
        mut options,
        runtime_dir,
        node,
        ownership,
    } = start;
    let (mut term, mut int, mut hup, mut usr2) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    ) {
        (Ok(t), Ok(i), Ok(h), Ok(u)) => (t, i, h, u),
        _ => {
            eprintln!("error: cannot install signal handlers");
            return ExitCode::from(1);
        }
    };
    // A lock handed over is checked before anything starts; it becomes
    // ours only once we serve.
    let (lock, offer) = match ownership {
        Ownership::Fresh(lock) => (Lock::Fresh(lock), None),
        Ownership::Takeover(offer) => {
            let checked = match offer.sockets().take_unaddressed(Role::NodeLock) {
                Some(fd) => HandedLock::check(fd, &runtime_dir, &node),
                None => Err(owner::OwnerError::NotTheLock {
                    path: runtime_dir.clone(),
                }),
            };
            match checked {
                Ok(lock) => (Lock::Handed(lock), Some(offer)),
                Err(e) => {
                    eprintln!("error: {e}");
                    return give_up(Some(offer), e.to_string()).await;
                }
            }
        }
    };
    options.sockets = offer
        .as_ref()
        .map_or_else(Sockets::new, |o| o.sockets().clone());
    let started = if offer.is_some() {
        App::start(options.clone()).await
    } else {
        // The previous owner of the node may still be closing its admin and
        // DNS listeners (they never share a port): a start that finds them
        // taken tries again until the takeover wait is over.
        let deadline = tokio::time::Instant::now() + owner::TAKEOVER_WAIT;
        loop {
            let started = App::start(options.clone()).await;
            match &started {
                Err(e) if still_closing(e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => break started,
            }
        }
    };
    let app = match started {
        Ok(app) => app,
        Err(crate::Error::Config(errors)) => {
            eprintln!("{errors}");
            return give_up(offer, format!("invalid config:\n{errors}")).await;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return give_up(offer, e.to_string()).await;
        }
    };
    let mut lock = match lock {
        Lock::Fresh(lock) => lock,
        Lock::Handed(handed) => match handed.take() {
            Ok(lock) => lock,
            Err(e) => {
                eprintln!("error: {e}");
                app.shutdown().await;
                return give_up(offer, e.to_string()).await;
            }
        },
    };
    lock.register(app.sockets());
    let control_path = owner::control_path(&runtime_dir, &node);
    let mut control = match ControlSocket::open(&control_path, app.sockets()) {
        Ok(c) => Some(c),
        Err(e) => {
            warn!(path = %control_path.display(), error = %e,
                "cannot open the control socket; `lb-proxy run --takeover` cannot take this process over");
            None
        }
    };
    match offer {
        Some(offer) => {
            let (from, received) = (offer.owner_pid, offer.received);
            match tokio::task::spawn_blocking(move || offer.commit()).await {
                Ok(Ok(pid)) => info!(
                    from = pid,
                    sockets = received,
                    "took over from lb-proxy pid {pid}; it drains its open connections"
                ),
                Ok(Err(e)) => warn!(from, "{e}; serving alone"),
                Err(e) => warn!(from, error = %e, "took over; serving alone"),
            }
            sd_notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
        }
        None => sd_notify("READY=1"),
    }
    // The config file and the manifests are watched by the control plane;
    // SIGHUP reads every source again even when nothing seems to have
    // changed.
    let mut successor: Option<tokio::process::Child> = None;
    let ending = loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                app.reload(true).await;
            }
            _ = term.recv() => break Ending::Signal,
            _ = int.recv() => break Ending::Signal,
            _ = usr2.recv() => {
                if control.is_none() {
                    warn!("SIGUSR2: no control socket, so no takeover; ignored");
                } else if successor.is_some() {
                    warn!("SIGUSR2: a new lb-proxy is starting already; ignored");
                } else {
                    successor = start_successor();
                }
            }
            status = reap(successor.as_mut()) => {
                successor = None;
                match status {
                    Ok(status) => warn!(%status, "the new lb-proxy exited; still serving"),
                    Err(e) => warn!(error = %e, "cannot wait for the new lb-proxy"),
                }
            }
            conn = accept(control.as_ref()) => match conn {
                Ok(conn) => match give::give(conn, app.sockets()).await {
                    Ok(successor) => {
                        info!(
                            successor = successor.pid,
                            version = %successor.version,
                            sockets = successor.sockets,
                            "handed every listening socket over to lb-proxy pid {}; draining",
                            successor.pid
                        );
                        break Ending::HandedOver(successor);
                    }
                    Err(e) => warn!("takeover failed: {e}; still serving"),
                },
                Err(e) => {
                    warn!(error = %e, "control socket failed; takeovers are off");
                    control = None;
                }
            },
        }
    };
    let draining = match ending {
        Ending::Signal => {
            sd_notify("STOPPING=1");
            // A draining process lets go of its node at once: the next
            // lb-proxy may start while this one finishes its connections.
            if let Some(control) = control.take() {
                control.close_and_remove();
            }
            lock.release();
            info!(
                open = app.dataplane().active_connections(),
                "draining: listeners closed, waiting for open connections"
            );
            futures_util::future::Either::Left(app.shutdown())
        }
        Ending::HandedOver(successor) => {
            // The successor holds the control socket, its file and the
            // lock now: ours close without removing or unlocking anything.
            drop(control.take());
            lock.hand_over();
            // Once nothing here accepts any more, the successor hears it.
            futures_util::future::Either::Right(app.hand_over(move || successor.confirm()))
        }
    };
    tokio::select! {
        _ = draining => {
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

/// SIGUSR2 (nginx's binary upgrade signal; systemd's `ExecReload=` in the
/// upgrade recipe): starts the program at the path this process was
/// started by (a new binary installed there is the one that runs), with
/// this process's arguments and `--takeover`; it takes every socket over
/// through the control socket, and this process then drains and exits. Its
/// output goes where ours goes; the caller reaps it if it fails.
fn start_successor() -> Option<tokio::process::Child> {
    let mut args = std::env::args_os();
    let Some(program) = args.next() else {
        warn!("SIGUSR2: cannot tell which program this is; no takeover");
        return None;
    };
    let args: Vec<_> = args.filter(|a| a != "--takeover").collect();
    let spawned = tokio::process::Command::new(&program)
        .args(&args)
        .arg("--takeover")
        .stdin(std::process::Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => {
            info!(
                program = %Path::new(&program).display(),
                pid = child.id(),
                "SIGUSR2: started a new lb-proxy to take over"
            );
            Some(child)
        }
        Err(e) => {
            warn!(
                program = %Path::new(&program).display(),
                error = %e,
                "SIGUSR2: cannot start a new lb-proxy; still serving"
            );
            None
        }
    }
}

/// The exit of a successor that failed before taking over (never, without
/// one).
async fn reap(
    successor: Option<&mut tokio::process::Child>,
) -> std::io::Result<std::process::ExitStatus> {
    match successor {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

/// The next successor on the control socket (never, without one).
async fn accept(control: Option<&ControlSocket>) -> std::io::Result<std::os::fd::OwnedFd> {
    match control {
        Some(c) => c.accept().await,
        None => std::future::pending().await,
    }
}

/// A start that failed: a takeover tells the running owner, which keeps
/// serving; exit 1.
async fn give_up(offer: Option<Offer>, reason: String) -> ExitCode {
    if let Some(offer) = offer {
        let pid = offer.owner_pid;
        let _ = tokio::task::spawn_blocking(move || offer.abort(&reason)).await;
        eprintln!("error: takeover abandoned; lb-proxy pid {pid} keeps serving");
    }
    ExitCode::from(1)
}

/// Whether a failed start found a port of its own (admin, DNS) in use,
/// as it is while the node's previous owner drains.
fn still_closing(error: &crate::Error) -> bool {
    match error {
        crate::Error::AdminBind { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
        #[cfg(feature = "dns")]
        crate::Error::Dns(crate::ops::dns::DnsError::Bind { source, .. }) => {
            source.kind() == std::io::ErrorKind::AddrInUse
        }
        _ => false,
    }
}

/// Tells systemd (`Type=notify`) about our state on `$NOTIFY_SOCKET`, as
/// sd_notify(3) does, with a plain datagram (no libsystemd). Without the
/// variable (not under systemd, or `Type=simple`) it does nothing; a failure
/// is logged, never fatal.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket (systemd's default for services).
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            socket.send_to(state.as_bytes(), Path::new(&path))?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        warn!("cannot notify systemd ({state}): {e}");
    }
}
