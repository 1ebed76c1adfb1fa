//! The App in-process, started from a file the test writes: what the binary
//! runs, with the test holding the handle (reload, data plane, shutdown) and
//! reading the admin API.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;

use lb_proxy::app::{App, AppOptions};
use tokio::sync::RwLockReadGuard;

use super::addr::{free_port, fresh_ip};
use super::client::{http_get_async, sample};
use super::config::base_toml;
use super::{init_tracing, process};

/// A running App and the file it serves; derefs to the [`App`]. Holds
/// [`process::shared`] (an App runs a file watcher thread).
#[derive(Debug)]
pub struct TestApp {
    /// The App.
    pub app: App,
    /// The file it serves.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    _shared: RwLockReadGuard<'static, ()>,
}

impl TestApp {
    /// Starts an App from [`base_toml`] (an admin listener on a fresh
    /// address) followed by `services`.
    pub async fn start(services: &str) -> TestApp {
        let ip = fresh_ip();
        let admin = SocketAddr::new(ip, free_port(ip));
        TestApp::from_text(&(base_toml(admin) + services)).await
    }

    /// Starts an App from `text`, the whole file.
    pub async fn from_text(text: &str) -> TestApp {
        TestApp::try_from_text(text)
            .await
            .unwrap_or_else(|e| panic!("the App starts: {e}"))
    }

    /// Starts an App from `text`, or says why it cannot.
    pub async fn try_from_text(text: &str) -> Result<TestApp, lb_proxy::Error> {
        init_tracing();
        let shared = process::shared().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, text).expect("write config");
        let app = App::start(AppOptions::new(path.clone())).await?;
        Ok(TestApp {
            app,
            path,
            _dir: dir,
            _shared: shared,
        })
    }

    /// Where the admin API listens.
    pub fn admin(&self) -> SocketAddr {
        self.app.admin_addr().expect("the admin API is enabled")
    }

    /// Rewrites the file as [`base_toml`] (same admin address) followed by
    /// `services`, and reloads; whether the new file was applied.
    pub async fn rewrite(&self, services: &str) -> bool {
        self.rewrite_file(&(base_toml(self.admin()) + services))
            .await
    }

    /// Rewrites the whole file with `text` and reloads; whether it was
    /// applied.
    pub async fn rewrite_file(&self, text: &str) -> bool {
        std::fs::write(&self.path, text).expect("write config");
        self.app.reload(true).await
    }

    /// GET `path` on the admin API: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get_async(self.admin(), path).await
    }

    /// GET `path` as JSON (200 expected).
    pub async fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// The value of the `/metrics` sample `series` (name and labels).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.get("/metrics").await.1, series)
    }
}

impl Deref for TestApp {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}
