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
