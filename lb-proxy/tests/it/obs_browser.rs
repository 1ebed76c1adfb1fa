//! The status page in a real browser: headless Chromium driven over
//! WebDriver (chromedriver) loads the admin listener's `/`, shows the
//! services of the test config, and an endpoint whose backend the test kills
//! turns not ready on the page within a few seconds, without a reload. It
//! checks every column of the traffic and endpoint tables (peaks against
//! the limit, dial errors, resets, failovers, rejected by reason, the last
//! check, time in state, sparklines, `8081/TCP` for an unnamed port). The
//! test writes a screenshot to `target/status.png` and prints its path.
//!
//! Skipped (with a message) only where `chromium` or `chromedriver` is not
//! installed (`apt-get install chromium chromium-driver`; `.ci/run` does).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::app::TestApp;
use crate::support::config::service_toml;
use crate::support::tools::which;
use crate::support::*;

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Driver {
    fn start(chromedriver: &Path) -> Driver {
        let port = free_port("127.0.0.1");
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let driver = Driver { child, url };
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(mut r) = agent().get(&format!("{}/status", driver.url)).call() {
                if r.body_mut()
                    .read_to_string()
                    .is_ok_and(|b| b.contains("ready"))
                {
                    return driver;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("chromedriver did not answer within {WAIT:?}");
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let mut response = match (method, body) {
            ("POST", Some(b)) => agent()
                .post(&url)
                .header("content-type", "application/json")
                .send(b.to_string().as_bytes())
                .expect("webdriver answers"),
            ("DELETE", _) => agent().delete(&url).call().expect("webdriver answers"),
            _ => agent().get(&url).call().expect("webdriver answers"),
        };
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .expect("webdriver body");
        serde_json::from_str(&text).expect("webdriver JSON")
    }
}

/// Standard base64 (the WebDriver screenshot encoding), no crate needed.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = s.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, d) in chunk.iter().enumerate() {
            n |= u32::from(*d) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

fn probed_service(name: &str, vip: std::net::IpAddr, port: u16, pod: SocketAddr) -> String {
    format!(
        r#"
[[pods]]
name = "{name}-1"
ip = "{ip}"
labels = {{ app = "{name}" }}
ports = [{{ name = "http", container_port = {pp}, protocol = "TCP" }}]
[pods.readiness_probe]
tcp_socket = {{ port = "http" }}
period_seconds = 1
timeout_seconds = 1
failure_threshold = 1

[[services]]
name = "{name}"
cluster_ip = "{vip}"
selector = {{ app = "{name}" }}
[[services.ports]]
name = "http"
port = {port}
target_port = "http"
"#,
        ip = pod.ip(),
        pp = pod.port()
    )
}

/// The RATE cell of every endpoint row the page shows now.
const RATES_JS: &str = "return [...document.querySelectorAll('#endpoints tr[data-endpoint]')]\
    .map(r => r.lastElementChild.textContent).join('|');";

/// The cells of the row of `#table` whose data attribute `attr` is
/// `value` (the first such row), joined by `|`.
fn row_js(table: &str, attr: &str, value: &str) -> String {
    format!(
        "const r = [...document.querySelectorAll('#{table} tr')].find(r => r.getAttribute('{attr}') === '{value}'); \
         return r ? [...r.children].map(c => c.textContent).join('|') : '';"
    )
}

/// A service with one unnamed port over an endpoint that resets and one
/// that refuses (nothing listens there).
fn flaky_service(
    vip: std::net::IpAddr,
    resetting: SocketAddr,
    refusing: std::net::IpAddr,
) -> String {
    format!(
        "[[services]]\nname = \"flaky\"\ncluster_ip = \"{vip}\"\nports = [{{ port = 8081 }}]\n\
         [[endpoints]]\nname = \"flaky\"\n[[endpoints.subsets]]\n\
         addresses = [{{ ip = \"{}\" }}, {{ ip = \"{refusing}\" }}]\nports = [{{ port = {} }}]\n",
        resetting.ip(),
        resetting.port()
    )
}

/// The `data-endpoint=state` pairs the page shows now.
const STATES_JS: &str = "return [...document.querySelectorAll('#endpoints tr[data-endpoint]')]\
    .map(r => r.dataset.endpoint + '=' + r.dataset.state).join(' ');";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_services_and_an_endpoint_turning_not_ready() {
    let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        // CI installs both: there a missing browser is a failure, not a skip.
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true and no chromium/chromedriver: the status page browser test cannot run"
        );
        eprintln!(
            "SKIPPED: the status page browser test needs chromium and chromedriver \
             (Debian: apt-get install chromium chromium-driver)"
        );
        return;
    };
    let web_backend = echo_backend(fresh_ip());
    let web = web_backend.addr;
    let api_backend = echo_backend(fresh_ip());
    let api = api_backend.addr;
    let resetter = reset_backend(fresh_ip());
    let refusing = fresh_ip();
    let (vip1, vip2, vip3) = (fresh_ip(), fresh_ip(), fresh_ip());
    let config = probed_service("web", vip1, 8080, web)
        + &service_toml("api", vip2, 9090, &[api], "session_affinity = \"ClientIP\"")
        + &flaky_service(vip3, resetter.addr, refusing);
    // At most two connections per service port, so a third is rejected.
    let admin_ip = fresh_ip();
    let admin_addr = SocketAddr::new(admin_ip, free_port(admin_ip));
    let text = crate::support::config::base_toml(admin_addr)
        .replace("[proxy]\n", "[proxy]\nmax_connections = 2\n")
        + &config;
    let proxy = TestApp::from_text(&text).await;
    // A little traffic, so the byte columns are not all zero.
    let ready = eventually_async(WAIT, || async {
        let (_, body) = proxy.get("/api/v1/endpoints").await;
        body.contains("\"state\": \"ready\"") && !body.contains("not_ready")
    })
    .await;
    assert!(ready, "the probed pod becomes ready");
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect((vip2, 9090))
            .await
            .expect("connect");
        echo(&mut c, &[b'x'; 2048]).await;
    }
    // Those three close in the proxy a moment after the client drops them;
    // until then they count against max_connections.
    let closed = eventually_async(WAIT, || async {
        proxy
            .metric("lb_active_connections{namespace=\"default\",service=\"api\",port=\"tcp\",protocol=\"TCP\"}")
            .await
            == Some(0.0)
    })
    .await;
    assert!(closed, "the first connections close in the proxy");
    // Two held open and a third over the limit; dial errors, failovers and
    // resets on the flaky service.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect((vip2, 9090))
            .await
            .expect("connect");
        echo(&mut c, b"hold").await;
        held.push(c);
    }
    // Reset at once: the reset may already be there when the connect returns.
    if let Ok(mut over) = tokio::net::TcpStream::connect((vip2, 9090)).await {
        let _ = read_until_closed(&mut over, Duration::from_secs(5)).await;
    }
    for _ in 0..4 {
        let mut c = tokio::net::TcpStream::connect((vip3, 8081))
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut c, b"x")
            .await
            .expect("write");
        let _ = read_until_closed(&mut c, Duration::from_secs(5)).await;
    }
    let api_row = row_js("traffic", "data-port", "tcp/TCP");
    let flaky_total = "const r = [...document.querySelectorAll('#traffic tr.total')]\
        .find(r => r.dataset.service === 'flaky'); \
        return r ? [...r.children].map(c => c.textContent).join('|') : '';";
    let api_spark = "const r = [...document.querySelectorAll('#traffic tr.total')]\
        .find(r => r.dataset.service === 'api'); \
        const s = r && r.querySelector('td[data-spark=connections] svg'); \
        return s ? s.dataset.points : '';";
    let refusing_row = row_js(
        "endpoints",
        "data-endpoint",
        &format!("{refusing}:{}", resetter.addr.port()),
    );
    let resetting_row = row_js("endpoints", "data-endpoint", &resetter.addr.to_string());
    let web_row = row_js("endpoints", "data-endpoint", &web.to_string());
    // A reload that fails validation shows up among the events.
    std::fs::write(&proxy.path, "[[services]]\nname = \"Bad_Name\"\n").expect("write");
    assert!(!proxy.app.reload(true).await);

    let url = format!("http://{}/", proxy.admin());
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("status.png");
    let web_addr = web.to_string();
    let profile = tempfile::tempdir().expect("profile dir");
    let profile_dir = profile.path().to_path_buf();

    // The browser part is blocking WebDriver calls; the backend is killed
    // from the runtime when the page has shown it ready.
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let killer = tokio::spawn(async move {
        let _ = tokio::task::spawn_blocking(move || kill_rx.recv()).await;
        web_backend.kill().await;
    });
    let result = tokio::task::spawn_blocking(move || {
        let driver = Driver::start(&chromedriver);
        let session = driver.call(
            "POST",
            "/session",
            Some(
                json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-component-update",
                         "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                         "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile_dir.display())]}}}}),
            ),
        );
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
            .to_string();
        let s = |p: &str| format!("/session/{id}{p}");
        driver.call("POST", &s("/url"), Some(json!({"url": url})));
        let script = |js: &str| -> String {
            let v = driver.call(
                "POST",
                &s("/execute/sync"),
                Some(json!({"script": js, "args": []})),
            );
            v["value"].as_str().unwrap_or_default().to_string()
        };
        let wait_for = |what: &str, f: &dyn Fn(&str) -> bool, js: &str| -> String {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let got = script(js);
                if f(&got) {
                    return got;
                }
                assert!(Instant::now() < deadline, "{what}: page shows {got:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        let services = wait_for(
            "services listed",
            &|t| t.contains("web") && t.contains("api"),
            "return document.querySelector('#services tbody').innerText;",
        );
        let pid = std::process::id();
        wait_for(
            "the process in the header",
            &|t| {
                t.contains("node node-1")
                    && t.contains(&format!("pid {pid}"))
                    && t.contains("started")
            },
            "return document.getElementById('process').innerText;",
        );
        wait_for(
            "the failed reload among the events",
            &|t| t.contains("ReloadFailed") && t.contains("node/node-1"),
            "return document.getElementById('events').innerText;",
        );
        wait_for(
            "endpoint ready",
            &|t| t.contains(&format!("{web_addr}=ready")),
            STATES_JS,
        );
        // Traffic: service, port, active, peak, limit, conns, dial errors,
        // resets, failovers, rejected (+ why), conn/s, bytes/s.
        let api_cells = wait_for(
            "the api port's traffic",
            &|t| t.split('|').nth(9).is_some_and(|r| r.starts_with('1')),
            &api_row,
        );
        let api_cells: Vec<&str> = api_cells.split('|').collect();
        assert_eq!(
            &api_cells[..6],
            ["api", "tcp/TCP", "2", "2", "2", "6"],
            "{api_cells:?}"
        );
        assert_eq!(api_cells[9], "1limit 1", "{api_cells:?}");
        let flaky_cells = wait_for(
            "the flaky service's totals",
            &|t| t.split('|').nth(7).is_some_and(|r| r != "0"),
            flaky_total,
        );
        let flaky_cells: Vec<&str> = flaky_cells.split('|').collect();
        assert_eq!(&flaky_cells[..2], ["flaky", "total"], "{flaky_cells:?}");
        assert_eq!(
            flaky_cells[4], "2",
            "limit per port times ports: {flaky_cells:?}"
        );
        assert_eq!(flaky_cells[5], "4", "conns: {flaky_cells:?}");
        assert_ne!(flaky_cells[6], "0", "dial errors: {flaky_cells:?}");
        assert_eq!(flaky_cells[7], "4", "resets: {flaky_cells:?}");
        assert!(
            flaky_cells[8].parse::<u64>().is_ok(),
            "failovers: {flaky_cells:?}"
        );
        let points = wait_for(
            "a sparkline with a point",
            &|t| t.parse::<u32>().is_ok_and(|n| n >= 1),
            api_spark,
        );
        // Endpoints: service, endpoint, port, node, state, in state, last
        // check, weight, active, peak, conns, dial errors, resets,
        // failovers, rx, tx, rate.
        let refusing_cells = script(&refusing_row);
        let refusing_cells: Vec<&str> = refusing_cells.split('|').collect();
        assert_eq!(refusing_cells[2], "8081/TCP", "{refusing_cells:?}");
        assert_ne!(refusing_cells[11], "0", "dial errors: {refusing_cells:?}");
        assert!(
            refusing_cells[13].parse::<u64>().is_ok(),
            "{refusing_cells:?}"
        );
        let resetting_cells = script(&resetting_row);
        let resetting_cells: Vec<&str> = resetting_cells.split('|').collect();
        // Sequential connections, but one may still be closing on the
        // proxy's side when the next comes.
        assert!(
            resetting_cells[9].parse::<u64>().is_ok_and(|n| n >= 1),
            "peak: {resetting_cells:?}"
        );
        assert!(
            resetting_cells[12].parse::<u64>().is_ok(),
            "resets: {resetting_cells:?}"
        );
        let web_cells = wait_for(
            "the web endpoint's last check",
            &|t| {
                t.split('|')
                    .nth(6)
                    .is_some_and(|c| c.starts_with("L4OK in "))
            },
            &web_row,
        );
        let web_cells: Vec<&str> = web_cells.split('|').collect();
        assert_eq!(web_cells[2], "http/TCP", "{web_cells:?}");
        assert!(web_cells[5].ends_with('s'), "in state: {web_cells:?}");
        let _ = kill_tx.send(());
        let killed_at = Instant::now();
        let states = wait_for(
            "endpoint not ready after its backend died",
            &|t| t.contains(&format!("{web_addr}=not_ready")),
            STATES_JS,
        );
        let took = killed_at.elapsed();
        wait_for(
            "the web endpoint's failed check",
            &|t| {
                t.split('|')
                    .nth(6)
                    .is_some_and(|c| c.starts_with("L4CON in "))
            },
            &web_row,
        );
        let draw_ms = script("return String(window.lbDrawMs);");
        // Once a second poll has drawn every rate, take the picture.
        wait_for(
            "byte rates drawn",
            &|t| !t.is_empty() && t.split('|').all(|rate| rate.ends_with("/s")),
            RATES_JS,
        );
        let png = driver.call("GET", &s("/screenshot"), None);
        let bytes = base64_decode(png["value"].as_str().unwrap_or_default());
        driver.call("DELETE", &s(""), None);
        (services, states, took, bytes, points, draw_ms)
    })
    .await;
    let _ = killer.await;
    let (services, states, took, png, points, draw_ms) = result.expect("the browser part ran");
    drop(held);
    assert!(services.contains("ClusterIP"), "{services}");
    assert!(states.contains(&format!("{api}=ready")), "{states}");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::create_dir_all(shot.parent().expect("target dir")).expect("target dir");
    std::fs::write(&shot, &png).expect("write the screenshot");
    println!(
        "status page screenshot: {} (not ready shown {:.1}s after the kill, \
         {points} sparkline points, last draw {draw_ms} ms)",
        shot.canonicalize().unwrap_or(shot.clone()).display(),
        took.as_secs_f64()
    );
    proxy.app.shutdown().await;
}
