//! The `lb-proxy` binary as an operator runs it: one-shot commands
//! (`check`, `get`, `put`, ...) and `lb-proxy run` as a child process,
//! started with [`Run`] and watched through its admin API, its log and its
//! exit code. A running proxy is killed when dropped.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::client::{http_get, sample};
use super::wait::eventually_blocking;

/// How long `lb-proxy run` may take to answer `/healthz`.
const UP: Duration = Duration::from_secs(20);

/// The binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lb-proxy")
}

/// `lb-proxy ARGS`, run to its end.
pub fn lb<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(bin())
        .args(args)
        .output()
        .expect("lb-proxy runs")
}

/// `lb-proxy check --config FILE` on a file holding `text`.
pub fn check(text: &str) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, text).expect("write config");
    lb([OsString::from("check"), "--config".into(), path.into()])
}

/// The lines of `text`, each without the `FILE:LINE:COLUMN: ` that starts
/// an error located in its file: the error as `check_str` words it.
pub fn unlocated(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let Some((head, rest)) = l.split_once(": ") else {
                return l.to_string();
            };
            let mut parts = head.rsplitn(3, ':');
            let numbers = parts.next().is_some_and(|c| c.parse::<u32>().is_ok())
                && parts.next().is_some_and(|c| c.parse::<u32>().is_ok())
                && parts.next().is_some();
            if numbers {
                rest.to_string()
            } else {
                l.to_string()
            }
        })
        .collect()
}

/// What a command printed, stdout then stderr.
pub fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `lb-proxy run --config FILE`, to be started: its arguments, environment,
/// and the admin address that says it is up. The log (stderr, `RUST_LOG`
/// `info` unless set) goes to a file the test can read.
#[derive(Debug)]
pub struct Run {
    config: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    admin: Option<SocketAddr>,
    wrapper: Vec<OsString>,
    dir: tempfile::TempDir,
}

impl Run {
    /// Runs with the file at `config`.
    pub fn file(config: &Path) -> Run {
        Run {
            config: config.to_path_buf(),
            args: Vec::new(),
            env: vec![("RUST_LOG".into(), "info".into())],
            admin: None,
            wrapper: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Runs with a file holding `text`, in a directory of its own.
    pub fn text(text: &str) -> Run {
        let mut run = Run::file(Path::new(""));
        run.config = run.dir.path().join("lb.toml");
        std::fs::write(&run.config, text).expect("write config");
        run
    }

    /// One more argument after `--config FILE`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Run {
        self.args.push(arg.into());
        self
    }

    /// One more environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Run {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Where the admin API listens: [`Run::start`] waits for its `/healthz`.
    pub fn admin(mut self, addr: SocketAddr) -> Run {
        self.admin = Some(addr);
        self
    }

    /// Runs the binary under `wrapper` (`ip netns exec NS`), which must exec
    /// it, so signals reach lb-proxy.
    pub fn under(mut self, wrapper: &[&str]) -> Run {
        self.wrapper = wrapper.iter().map(OsString::from).collect();
        self
    }

    /// Starts the process without waiting for it.
    pub fn spawn(self) -> Result<Running> {
        let log = self.dir.path().join("lb-proxy.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(bin());
                cmd
            }
            None => Command::new(bin()),
        };
        // Each run its own node lock directory, so tests that share a
        // node name run side by side; a test of the lock sets its own.
        if !self.env.iter().any(|(k, _)| k == "LB_RUNTIME_DIR") {
            cmd.env("LB_RUNTIME_DIR", self.dir.path());
        }
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out);
        let child = cmd.spawn().context("spawn lb-proxy")?;
        Ok(Running {
            child,
            admin: self.admin,
            config: self.config,
            log,
            _dir: self.dir,
        })
    }

    /// Starts the process and waits until its admin API answers `/healthz`.
    pub fn start(self) -> Result<Running> {
        let mut running = self.spawn()?;
        running.wait_up()?;
        Ok(running)
    }
}

/// A running `lb-proxy run`, killed when dropped.
#[derive(Debug)]
pub struct Running {
    child: Child,
    admin: Option<SocketAddr>,
    config: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    /// The file it serves.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Where its admin API listens.
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("started with an admin address")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (20 s at most) until `/healthz` answers 200.
    pub fn wait_up(&mut self) -> Result<()> {
        let admin = self.admin();
        if !eventually_blocking(UP, || matches!(http_get(admin, "/healthz"), Ok((200, _)))) {
            let _ = self.child.kill();
            bail!("lb-proxy did not come up: {}", self.logs());
        }
        Ok(())
    }

    /// Sends `sig` (`HUP`, `TERM`, ...).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig}");
    }

    /// Waits for the exit for at most `limit`; its exit code (-1 for a
    /// signal), or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut code = None;
        eventually_blocking(limit, || match self.child.try_wait() {
            Ok(Some(status)) => {
                code = Some(status.code().unwrap_or(-1));
                true
            }
            _ => false,
        });
        code
    }

    /// Kills it and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (for at most `limit`) until its log has a line containing
    /// `needle`.
    pub fn logged(&self, needle: &str, limit: Duration) -> bool {
        eventually_blocking(limit, || self.logs().contains(needle))
    }

    /// `/readyz`'s status and body (0 when it does not answer).
    pub fn readyz(&self) -> (u16, String) {
        http_get(self.admin(), "/readyz").unwrap_or((0, String::new()))
    }

    /// The value of the `/metrics` sample `series` (name and labels).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = http_get(self.admin(), "/metrics").ok()?;
        sample(&body, series)
    }

    /// `/api/v1/services`.
    pub fn services(&self) -> serde_json::Value {
        let (_, body) = http_get(self.admin(), "/api/v1/services").expect("services");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Service `name` from `/api/v1/services`, if listed.
    pub fn service(&self, name: &str) -> Option<serde_json::Value> {
        self.services()["items"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    }

    /// Service `name` once `/api/v1/services` lists it (10 s at most).
    pub fn wait_service(&self, name: &str) -> Option<serde_json::Value> {
        let mut found = None;
        eventually_blocking(Duration::from_secs(10), || {
            found = self.service(name);
            found.is_some()
        });
        found
    }

    /// Node port `i` of service `name` once it has one (10 s at most).
    pub fn node_port(&self, name: &str, i: usize) -> Option<u64> {
        let mut port = None;
        eventually_blocking(Duration::from_secs(10), || {
            port = self
                .service(name)
                .and_then(|s| s["ports"][i]["node_port"].as_u64());
            port.is_some()
        });
        port
    }

    /// The endpoints of service `name` from `/api/v1/endpoints`.
    pub fn endpoints(&self, name: &str) -> Vec<serde_json::Value> {
        let Ok((_, body)) = http_get(self.admin(), "/api/v1/endpoints") else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["items"]
            .as_array()
            .and_then(|items| items.iter().find(|s| s["name"] == name))
            .and_then(|s| s["endpoints"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}
