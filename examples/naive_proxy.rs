//! The naive proxy of the comparison benchmark (`benches/compare/run.py`,
//! target `naive`): what a few lines of tokio do with no load balancing at
//! all. Each `LISTEN=UPSTREAM` argument accepts on LISTEN and copies every
//! connection both ways to UPSTREAM with `copy_bidirectional`. lb does more
//! per connection (a pick, counters, failover, timeouts); this is the floor
//! it is measured against, so a new connection through lb should cost no
//! more than one through this.
//!
//! ```text
//! cargo build --release -p lb-examples --example naive_proxy
//! target/release/examples/naive_proxy 127.0.55.1:80=127.0.50.1:8080
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut forwards = tokio::task::JoinSet::new();
    for arg in std::env::args().skip(1) {
        let (listen, upstream) = arg
            .split_once('=')
            .with_context(|| format!("{arg}: expected LISTEN=UPSTREAM"))?;
        let upstream: SocketAddr = upstream
            .parse()
            .with_context(|| format!("{upstream}: not an address"))?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind {listen}"))?;
        forwards.spawn(forward(listener, upstream));
    }
    anyhow::ensure!(
        !forwards.is_empty(),
        "usage: naive_proxy LISTEN=UPSTREAM..."
    );
    while forwards.join_next().await.is_some() {}
    Ok(())
}

/// Accepts forever; each connection is copied to `upstream` on its own task.
async fn forward(listener: TcpListener, upstream: SocketAddr) {
    loop {
        let mut client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors, most likely: let some close.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            if let Ok(mut server) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}
