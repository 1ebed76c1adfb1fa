//! The examples run as a user would run them: the quickstart's demo (in its
//! exit-after-demo form; feature `admin`) and the embedding example. They
//! are included from `examples/` by path (their `main` goes unused here), so
//! what the tests run is what a user reads.

#[cfg(feature = "admin")]
#[allow(dead_code)]
#[path = "../../../examples/quickstart.rs"]
mod quickstart;

#[allow(dead_code)]
#[path = "../../../examples/embedded.rs"]
mod embedded;

#[cfg(feature = "cli")]
#[allow(dead_code)]
#[path = "../../../examples/backends.rs"]
mod backends;

#[cfg(feature = "admin")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_demo_gets_answers_from_all_three_pods() -> anyhow::Result<()> {
    use std::collections::BTreeSet;
    // The demo runs an App, whose file watcher is a thread.
    let _shared = crate::support::process::shared().await;
    let demo = quickstart::demo().await?;
    for line in &demo.lines {
        println!("{line}");
    }
    let answered: BTreeSet<&str> = demo.answers.iter().map(String::as_str).collect();
    assert_eq!(answered, BTreeSet::from(["111", "222", "333"]));
    // Round robin through the cluster IP: six requests, each pod twice.
    let first: Vec<&str> = demo.answers[..6].iter().map(String::as_str).collect();
    for pod in ["111", "222", "333"] {
        assert_eq!(first.iter().filter(|a| **a == pod).count(), 2, "{first:?}");
    }
    // The sticky service: each client's four answers are the same pod.
    let sticky = &demo.answers[18..];
    for client in sticky.chunks(4) {
        assert!(client.iter().all(|a| *a == client[0]), "{client:?}");
    }
    demo.app.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_example_follows_its_own_service_discovery() -> anyhow::Result<()> {
    let seen = embedded::demo(std::future::pending()).await?;
    assert_eq!(seen, ["blue", "blue", "green", "green"]);
    Ok(())
}

#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_example_answers_at_every_loopback_endpoint_with_its_pod_name(
) -> anyhow::Result<()> {
    use crate::support::free_port;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let http = free_port("127.0.182.1");
    let dns = free_port("127.0.182.2");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("lb.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[admin]
listen = ""
[cluster]
service_cidr = "127.0.182.0/24"
[[pods]]
name = "web-1"
ip = "127.0.182.1"
labels = {{ app = "web" }}
ports = [{{ name = "http", container_port = {http} }}]
[[services]]
name = "web"
cluster_ip = "127.0.182.100"
selector = {{ app = "web" }}
ports = [{{ port = 80, target_port = "http" }}]
[[services]]
name = "dns"
cluster_ip = "127.0.182.101"
ports = [{{ name = "dns", port = 53, protocol = "UDP" }}]
[[endpoints]]
name = "dns"
[[endpoints.subsets]]
addresses = [{{ ip = "127.0.182.2" }}, {{ ip = "192.0.2.7" }}]
ports = [{{ name = "dns", port = {dns}, protocol = "UDP" }}]
"#
        ),
    )?;
    let wanted = backends::wanted(&path, None)?;
    let started = backends::start(wanted).await;
    let serving: Vec<String> = started
        .serving
        .iter()
        .map(|w| format!("{} {}/{}", w.name, w.addr, w.protocol))
        .collect();
    assert_eq!(
        serving,
        [
            format!("web-1 127.0.182.1:{http}/TCP"),
            format!("127.0.182.2:{dns} 127.0.182.2:{dns}/UDP"),
        ]
    );
    // 192.0.2.7 (TEST-NET-1) is not loopback: skipped, never bound.
    assert_eq!(started.skipped.len(), 1);
    assert!(started.skipped[0].1.contains("not a loopback address"));

    let mut conn = tokio::net::TcpStream::connect(("127.0.182.1", http)).await?;
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await?;
    assert!(
        reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("web-1\n"),
        "{reply}"
    );

    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    udp.send_to(b"hello", ("127.0.182.2", dns)).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), udp.recv(&mut buf)).await??;
    assert_eq!(&buf[..n], format!("127.0.182.2:{dns}").as_bytes());
    Ok(())
}
