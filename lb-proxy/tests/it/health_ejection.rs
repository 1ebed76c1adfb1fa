//! Outlier ejection (passive health) on loopback: consecutive dial failures
//! eject an endpoint for a back-off, it returns when the back-off has passed,
//! and the panic rule never ejects the last endpoints of a port.
//!
//! The timing itself (thresholds, doubling, cap, expiry) is tested with time
//! as a parameter in `lb-core/src/health.rs`; here real sockets and short
//! real durations show the data plane obeys it.

use std::net::SocketAddr;
use std::time::Duration;

use lb_core::ProxySettings;

use crate::support::*;

fn ejecting(failures: u32, base: Duration) -> ProxySettings {
    ProxySettings {
        outlier_consecutive_failures: failures,
        outlier_base_ejection: base,
        ..settings()
    }
}

fn view_of(plane: &lb_proxy::DataPlane, addr: SocketAddr) -> lb_proxy::ops::views::EndpointView {
    let list = lb_proxy::ops::views::endpoints_view(&plane.table().load());
    list.items
        .iter()
        .flat_map(|i| i.endpoints.iter())
        .find(|e| e.ip == addr.ip().to_string() && e.port == addr.port())
        .cloned()
        .expect("endpoint in the view")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_dial_failures_eject_an_endpoint_until_its_back_off_passes() {
    let good = http_backend("127.0.245.1", "good");
    let dead = closed_port("127.0.245.2");
    let vip = vip();
    let base = Duration::from_secs(2);
    let plane = start(
        ejecting(2, base),
        vec![service("web", vip, &[good.addr, dead])],
    )
    .await;
    for _ in 0..20 {
        assert_eq!(
            try_fetch(vip).await.unwrap(),
            "good",
            "failover hides the dead endpoint"
        );
        if is_ejected(&plane, vip, dead) {
            break;
        }
    }
    assert!(
        is_ejected(&plane, vip, dead),
        "ejected after 2 failures in a row"
    );
    let view = view_of(&plane, dead);
    assert_eq!(view.state, "ejected");
    assert!(
        view.reason
            .starts_with("ejected after consecutive dial failures"),
        "{}",
        view.reason
    );
    assert!(
        view.ready,
        "ejection is not readiness: the endpoint stays ready"
    );

    let errors = connect_errors(&plane, vip, dead);
    for _ in 0..10 {
        assert_eq!(try_fetch(vip).await.unwrap(), "good");
    }
    assert_eq!(
        connect_errors(&plane, vip, dead),
        errors,
        "an ejected endpoint gets no new connections"
    );

    let revived = http_backend(dead, "revived");
    assert!(
        eventually(base + WAIT, || !is_ejected(&plane, vip, dead)).await,
        "the ejection runs out"
    );
    let mut seen = false;
    for _ in 0..20 {
        if try_fetch(vip).await.unwrap() == "revived" {
            seen = true;
            break;
        }
    }
    assert!(seen, "back in rotation after the back-off");
    assert!(revived.accepted() > 0);
    assert_eq!(view_of(&plane, dead).state, "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_failing_dials_none_is_ejected_and_traffic_still_tries_them() {
    let dead = [
        closed_port("127.0.245.3"),
        closed_port("127.0.245.4"),
        closed_port("127.0.245.5"),
    ];
    let vip = vip();
    let plane = start(
        ejecting(1, Duration::from_secs(30)),
        vec![service("web", vip, &dead)],
    )
    .await;
    for _ in 0..4 {
        assert!(
            try_fetch(vip).await.map_or(true, |b| b.is_empty()),
            "every dial fails"
        );
    }
    for addr in dead {
        assert!(
            !is_ejected(&plane, vip, addr),
            "the panic rule: none is ejected"
        );
        let view = view_of(&plane, addr);
        assert_eq!(view.state, "ready");
    }
    let before: Vec<u64> = dead
        .iter()
        .map(|a| connect_errors(&plane, vip, *a))
        .collect();
    for _ in 0..3 {
        let _ = try_fetch(vip).await;
    }
    for (addr, before) in dead.iter().zip(before) {
        assert!(
            connect_errors(&plane, vip, *addr) > before,
            "traffic still tries {addr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_can_be_switched_off() {
    let good = http_backend("127.0.245.6", "good");
    let dead = closed_port("127.0.245.7");
    let vip = vip();
    let plane = start(
        ejecting(0, Duration::from_secs(30)),
        vec![service("web", vip, &[good.addr, dead])],
    )
    .await;
    for _ in 0..10 {
        assert_eq!(try_fetch(vip).await.unwrap(), "good");
    }
    assert!(connect_errors(&plane, vip, dead) >= 3);
    assert!(!is_ejected(&plane, vip, dead));
}
