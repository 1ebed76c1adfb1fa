//! The forwarding engines side by side: the key byte-stream behaviours of the
//! data plane (an exact 4 MiB echo, half-close, resets passed on both ways,
//! the idle timeout, counting while running) run once under the copy loop and
//! once under splice, and the splice counter proves which engine carried the
//! bytes: > 0 under splice, exactly 0 under copy. The whole `dataplane` suite
//! runs under each engine too (its `copy`, `splice` and `auto` modules).
//!
//! Every test here holds [`process::shared`] (splice borrows pipes from a
//! process-wide pool); the one that reads the pool's gauge runs
//! [`process::alone`], so the gauge is its alone.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use lb_core::stats::read;
use lb_core::ProxySettings;
use lb_proxy::dataplane::forward::ForwardEngine as Engine;
use lb_proxy::DataPlane;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::process;
use crate::support::*;

async fn start_engine(
    engine: Engine,
    settings: ProxySettings,
    backend: SocketAddr,
) -> (DataPlane, SocketAddr) {
    let vip = vip();
    let plane = Mode::engine(engine)
        .start(settings, vec![service("engine", vip, &[backend])])
        .await;
    assert_eq!(plane.engine(), engine);
    (plane, vip)
}

/// Checks the splice counter against the engine that ran.
fn assert_engine_carried(plane: &DataPlane, engine: Engine) {
    match engine {
        Engine::Copy => assert_eq!(plane.spliced_bytes(), 0, "the copy engine never splices"),
        Engine::Splice => assert!(
            plane.spliced_bytes() > 0,
            "the splice engine really spliced"
        ),
        // Small exchanges go through the read buffer; echoes_four_mib_exactly
        // checks that bulk is spliced.
        Engine::Auto => {}
    }
}

async fn echoes_four_mib_exactly(engine: Engine, backend_ip: &str) {
    use rand::{RngCore, SeedableRng};
    let backend = echo_backend(backend_ip);
    let (plane, vip) = start_engine(engine, settings(), backend.addr).await;
    let mut payload = vec![0u8; 4 << 20];
    rand::rngs::StdRng::seed_from_u64(8).fill_bytes(&mut payload);
    let expected = Sha256::digest(&payload);
    let stream = TcpStream::connect(vip).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut hasher = Sha256::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            got += n;
        }
    })
    .await
    .expect("the echo within the bound");
    writer.await.unwrap();
    assert_eq!(got, 4 << 20);
    assert_eq!(hasher.finalize(), expected);
    let stats = endpoint_stats(&plane, vip, backend.addr);
    assert!(eventually(WAIT, || read(&stats.active) == 0).await);
    assert_eq!(read(&stats.bytes_rx), 4 << 20);
    assert_eq!(read(&stats.bytes_tx), 4 << 20);
    match engine {
        Engine::Copy => assert_eq!(plane.spliced_bytes(), 0),
        Engine::Splice => assert_eq!(plane.spliced_bytes(), 8 << 20, "every byte spliced"),
        Engine::Auto => assert!(
            plane.spliced_bytes() > 0 && plane.spliced_bytes() < 8 << 20,
            "bursts start with a read and go on with splice: {} bytes spliced",
            plane.spliced_bytes()
        ),
    }
}

async fn half_close_passes_the_fin_and_the_answer_flows(engine: Engine, backend_ip: &str) {
    let backend = read_to_eof_backend(backend_ip, "got:");
    let (plane, vip) = start_engine(engine, settings(), backend.addr).await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    client.write_all(b"hello world").await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, client.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "got:11");
    assert_engine_carried(&plane, engine);
}

async fn backend_reset_reaches_the_client(engine: Engine, backend_ip: &str) {
    let backend = reset_backend(backend_ip);
    let (plane, vip) = start_engine(engine, settings(), backend.addr).await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let end = read_until_closed(&mut client, WAIT).await;
    assert_eq!(end.expect_err("reset").kind(), ErrorKind::ConnectionReset);
    assert_engine_carried(&plane, engine);
}

async fn client_reset_reaches_the_backend(engine: Engine, backend_ip: &str) {
    let (backend, mut accepted) = capture_backend(backend_ip);
    let (plane, vip) = start_engine(engine, settings(), backend.addr).await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let mut server = tokio::time::timeout(WAIT, accepted.recv())
        .await
        .unwrap()
        .unwrap();
    let mut byte = [0u8; 1];
    server.read_exact(&mut byte).await.unwrap();
    reset(client);
    let end = read_until_closed(&mut server, WAIT).await;
    assert_eq!(end.expect_err("reset").kind(), ErrorKind::ConnectionReset);
    assert_engine_carried(&plane, engine);
}

async fn idle_timeout_closes_a_silent_connection(engine: Engine, backend_ip: &str) {
    let backend = echo_backend(backend_ip);
    let settings = ProxySettings {
        tcp_idle_timeout: Some(Duration::from_millis(300)),
        ..settings()
    };
    let (plane, vip) = start_engine(engine, settings, backend.addr).await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    for i in 0..6 {
        echo(&mut client, format!("ping {i}").as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quiet = Instant::now();
    let end = read_until_closed(&mut client, WAIT).await;
    assert!(matches!(end, Ok(0)) || end.is_err());
    assert!(quiet.elapsed() >= Duration::from_millis(150));
    assert_engine_carried(&plane, engine);
}

/// Idle connections hold no pipe: pipes are borrowed only while bytes are
/// in flight, and counting happens while the connection runs.
async fn idle_connections_hold_no_pipes_and_bytes_count_while_running(
    engine: Engine,
    backend_ip: &str,
) {
    let backend = echo_backend(backend_ip);
    let (plane, vip) = start_engine(engine, settings(), backend.addr).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut client = TcpStream::connect(vip).await.unwrap();
        echo(&mut client, format!("hello {i:02}").as_bytes()).await;
        clients.push(client);
    }
    let stats = endpoint_stats(&plane, vip, backend.addr);
    assert!(eventually(WAIT, || read(&stats.bytes_tx) == 20 * 8).await);
    assert_eq!(read(&stats.bytes_rx), 20 * 8);
    assert_eq!(read(&stats.active), 20);
    #[cfg(target_os = "linux")]
    assert!(
        eventually(
            WAIT,
            || lb_proxy::dataplane::forward::splice::pipes_borrowed() == 0
        )
        .await,
        "20 idle connections hold {} pipes",
        lb_proxy::dataplane::forward::splice::pipes_borrowed()
    );
    assert_engine_carried(&plane, engine);
}

macro_rules! under_every_engine {
    ($($lock:ident $name:ident($copy_ip:literal, $splice_ip:literal, $auto_ip:literal);)*) => {
        mod copy {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let _process = process::$lock().await;
                    super::$name(Engine::Copy, $copy_ip).await;
                }
            )*
        }
        mod splice {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let _process = process::$lock().await;
                    super::$name(Engine::Splice, $splice_ip).await;
                }
            )*
        }
        mod auto {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let _process = process::$lock().await;
                    super::$name(Engine::Auto, $auto_ip).await;
                }
            )*
        }
    };
}

// `shared` or `alone`: the process lock each test holds.
under_every_engine! {
    shared echoes_four_mib_exactly("127.0.248.1", "127.0.248.2", "127.0.248.13");
    shared half_close_passes_the_fin_and_the_answer_flows("127.0.248.3", "127.0.248.4", "127.0.248.14");
    shared backend_reset_reaches_the_client("127.0.248.5", "127.0.248.6", "127.0.248.15");
    shared client_reset_reaches_the_backend("127.0.248.7", "127.0.248.8", "127.0.248.16");
    shared idle_timeout_closes_a_silent_connection("127.0.248.9", "127.0.248.10", "127.0.248.17");
    alone idle_connections_hold_no_pipes_and_bytes_count_while_running("127.0.248.11", "127.0.248.12", "127.0.248.18");
}

#[test]
fn the_engine_is_chosen_by_name() {
    assert_eq!("copy".parse(), Ok(Engine::Copy));
    assert_eq!(" Splice ".parse(), Ok(Engine::Splice));
    assert_eq!("auto".parse(), Ok(Engine::Auto));
    assert!("sendfile".parse::<Engine>().is_err());
    assert_eq!(Engine::default(), Engine::Auto);
}
