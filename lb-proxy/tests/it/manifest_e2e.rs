//! The walkthrough's Service and MetalLB manifests (examples/manifests, with
//! loopback addresses) through the binary: `check` accepts them, `run`
//! serves them as a cluster would, and an edit of a manifest is applied.
//!
//! The walkthrough's addresses are fixed by the manifests: pods at
//! 127.0.244.1-3:80 and 127.0.245.3:80, the node at 127.0.1.1 with node
//! ports from 30000, cluster IPs in 127.96.0.0/16 (on port 80). No other
//! test listens on port 80 there or allocates node ports on 127.0.1.1.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::bin::{lb, Run};
use crate::support::*;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests")
}

#[test]
fn check_accepts_the_walkthrough_manifests() {
    let out = lb([
        OsString::from("check"),
        "--config".into(),
        examples().join("node.toml").into(),
        "--manifests".into(),
        examples().into(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("valid (8 services)"), "{stdout}");
    assert!(
        stderr.contains("(Deployment nginx-deployment): skipped"),
        "{stderr}"
    );
}

#[test]
fn check_reports_a_wrong_type_with_its_document_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lb.toml"),
        "# no services; the manifests hold them\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("svc.yml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - port: [80]\n",
    )
    .unwrap();
    let out = lb([
        OsString::from("check"),
        "--config".into(),
        dir.path().join("lb.toml").into(),
        "--manifests".into(),
        dir.path().into(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "svc.yml:6:11: document 1 (Service web).spec.ports[0].port: expected an integer, found a sequence"
        ),
        "{stderr}"
    );
}

#[test]
fn run_serves_the_walkthrough_like_a_cluster() {
    // The three nginx pods answer 111, 222, 333 (as in the walkthrough), the
    // outside address of the selector-less Endpoints answers "outside".
    let _pods = [
        http_backend("127.0.244.1:80", "111"),
        http_backend("127.0.244.2:80", "222"),
        http_backend("127.0.244.3:80", "333"),
        http_backend("127.0.245.3:80", "outside"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port("127.0.9.9");
    let config = dir.path().join("node.toml");
    let node = std::fs::read_to_string(examples().join("node.toml")).unwrap();
    std::fs::write(
        &config,
        format!("{node}\n[admin]\nlisten = \"127.0.9.9:{admin_port}\"\n"),
    )
    .unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    for e in std::fs::read_dir(examples()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, manifests.join(p.file_name().unwrap())).unwrap();
        }
    }
    let proxy = Run::file(&config)
        .arg("--manifests")
        .arg(&manifests)
        .admin(sa(&format!("127.0.9.9:{admin_port}")))
        .start()
        .unwrap();

    // ClusterIP with the fixed address: every pod takes a share.
    let vip = sa("127.96.100.100:80");
    let seen = answers(vip, 12);
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["111", "222", "333"],
        "{}",
        proxy.logs()
    );
    // ClusterIP with an allocated address.
    let auto = proxy.service("nginx-service-auto").unwrap();
    let ip = auto["cluster_ip"].as_str().unwrap().to_string();
    assert!(ip.starts_with("127.96."), "{auto}");
    assert!(["111", "222", "333"].contains(&ask(sa(&format!("{ip}:80"))).unwrap().as_str()));
    // NodePort on the node address, fixed and allocated.
    assert!(["111", "222", "333"].contains(&ask(sa("127.0.1.1:30001")).unwrap().as_str()));
    let np = proxy.service("nginx-nodeport").unwrap();
    let port = np["ports"][0]["node_port"].as_u64().unwrap();
    assert!((30000..=32767).contains(&port), "{np}");
    assert!(
        ["111", "222", "333"].contains(&ask(sa(&format!("127.0.1.1:{port}"))).unwrap().as_str())
    );
    // Selector-less service: the hand-written Endpoints, outside address too.
    let ns = proxy.service("service-no-selector").unwrap();
    let ip = ns["cluster_ip"].as_str().unwrap().to_string();
    let seen = answers(sa(&format!("{ip}:80")), 12);
    assert!(seen.iter().all(|a| !a.starts_with("error")), "{seen:?}");
    assert!(seen.contains("outside"), "{seen:?}");
    // Headless and ExternalName exist without an address.
    let headless = proxy.service("nginx-headless").unwrap();
    assert_eq!(headless["cluster_ip"], "None", "{headless}");
    let ext = proxy.service("service-external-name").unwrap();
    assert_eq!(ext["type"], "ExternalName", "{ext}");
    // LoadBalancer with loadBalancerIP from the MetalLB pool.
    let lb = proxy.service("nginxlb").unwrap();
    assert_eq!(lb["load_balancer_ingress"][0], "127.0.122.111", "{lb}");
    assert!(["111", "222", "333"].contains(&ask(sa("127.0.122.111:80")).unwrap().as_str()));

    // A cluster IP may not change once set, as in Kubernetes: the edit is
    // refused and the address keeps serving.
    let path = manifests.join("10-clusterip.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let moved = text.replace("127.96.100.100", "127.96.100.101");
    std::fs::write(&path, &moved).unwrap();
    assert!(
        proxy.logged(
            "services[nginx-service].cluster_ip: Invalid value: []string{\"127.96.100.101\"}: may not change once set",
            Duration::from_secs(10)
        ),
        "{}",
        proxy.logs()
    );
    assert!(ask(vip).is_ok());
    // Moving it: remove it, reload, add it with the new address.
    std::fs::remove_file(&path).unwrap();
    assert!(
        eventually_blocking(Duration::from_secs(10), || ask(vip).is_err()),
        "{}",
        proxy.logs()
    );
    std::fs::write(&path, &moved).unwrap();
    assert!(
        eventually_blocking(Duration::from_secs(10), || ask(sa("127.96.100.101:80"))
            .is_ok()),
        "{}",
        proxy.logs()
    );
    // And a new file in the directory is picked up.
    std::fs::write(
        manifests.join("70-new.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: added}\nspec:\n  clusterIP: 127.96.100.102\n  selector: {app: nginx-deployment}\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    assert!(
        eventually_blocking(Duration::from_secs(10), || ask(sa("127.96.100.102:80"))
            .is_ok()),
        "{}",
        proxy.logs()
    );
}
