//! `lb-proxy run`'s life once started: signals, systemd notifications, the
//! drain, and the hand-over of the node to the next process.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use super::owner::{self, NodeLock};
use crate::app::{App, AppOptions};

/// `lb-proxy run` once the node is held: starts the [`App`] (trying again
/// while the node's previous owner still closes its admin and DNS ports),
/// tells systemd it is ready, reloads on SIGHUP, and drains on SIGTERM or
/// SIGINT, letting go of the node as the drain starts; a second signal exits
/// at once (130).
pub async fn run(options: AppOptions, mut lock: NodeLock) -> ExitCode {
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
    // The previous owner of the node may still be closing its admin and
    // DNS listeners (they never share a port): a start that finds them
    // taken tries again until the takeover wait is over.
    let deadline = tokio::time::Instant::now() + owner::TAKEOVER_WAIT;
    let started = loop {
        let started = App::start(options.clone()).await;
        match &started {
            Err(e) if still_closing(e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break started,
        }
    };
    let app = match started {
        Ok(app) => app,
        Err(crate::Error::Config(errors)) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    sd_notify("READY=1");
    // The config file and the manifests are watched by the control plane;
    // SIGHUP reads every source again even when nothing seems to have
    // changed.
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                app.reload(true).await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    sd_notify("STOPPING=1");
    // A draining process lets go of its node at once: the next lb-proxy
    // may start while this one finishes its connections.
    lock.release();
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
