//! `lb-proxy get` for people with kubectl habits: a name, `TYPE/NAME`,
//! `-n`/`-A`, `-l`, every `-o`, `--no-headers`, several kinds, short names,
//! kubectl's NotFound and "No resources found", and `get pods` with the
//! readiness lb's probes decide. Each habit is typed at the binary against
//! a running App.
//!
//! Addresses: pods at 127.0.188.x, cluster IPs from `fresh_ip`.

use std::process::Output;

use crate::support::app::TestApp;
use crate::support::bin::lb;
use crate::support::config::base_toml;
use crate::support::*;

/// Services `web` (app=web, tier=front) and `db` (app=db) in `default`,
/// `api` (app=api, canary=true) in `prod`, each with one pod; `web-1` has a
/// TCP readiness probe on `web_port` (127.0.188.11), failing at once.
fn fixture(web_port: u16) -> String {
    let admin_ip = fresh_ip();
    let admin = std::net::SocketAddr::new(admin_ip, free_port(admin_ip));
    let service = |ns: &str, name: &str, labels: &str, port: u16| {
        let v = vip();
        format!(
            "[[services]]\nnamespace = \"{ns}\"\nname = \"{name}\"\ncluster_ip = \"{}\"\n\
             labels = {{ {labels} }}\nselector = {{ app = \"{name}\" }}\n\
             ports = [{{ port = {}, target_port = {port} }}]\n",
            v.ip(),
            v.port()
        )
    };
    format!(
        "{}{}{}{}\
         [[pods]]\nname = \"web-1\"\nip = \"127.0.188.11\"\nnode = \"node-1\"\n\
         labels = {{ app = \"web\" }}\n\
         [pods.readiness_probe]\ntcp_socket = {{ port = {web_port} }}\nperiod_seconds = 1\n\
         failure_threshold = 1\n\
         [[pods]]\nname = \"db-1\"\nip = \"127.0.188.12\"\nlabels = {{ app = \"db\" }}\n\
         [[pods]]\nnamespace = \"prod\"\nname = \"api-1\"\nip = \"127.0.188.13\"\n\
         labels = {{ app = \"api\" }}\n",
        base_toml(admin),
        service(
            "default",
            "web",
            "app = \"web\", tier = \"front\"",
            web_port
        ),
        service("default", "db", "app = \"db\"", 5432),
        service("prod", "api", "app = \"api\", canary = \"true\"", 8080),
    )
}

/// The App of [`fixture`], with the backend its probed pod answers from.
async fn start() -> (TestApp, Backend) {
    let backend = echo_backend("127.0.188.11");
    let app = TestApp::from_text(&fixture(backend.addr.port())).await;
    (app, backend)
}

/// `lb-proxy get ARGS --admin ADMIN`, on a blocking thread.
async fn get(app: &TestApp, args: &[&str]) -> Output {
    let admin = app.admin().to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut argv = vec!["get".to_string()];
        argv.extend(args);
        argv.extend(["--admin".to_string(), admin]);
        lb(argv)
    })
    .await
    .expect("join")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first word of each line after the header.
fn names(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// A successful `get`'s stdout.
async fn ok(app: &TestApp, args: &[&str]) -> String {
    let out = get(app, args).await;
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_or_type_slash_name_prints_that_object_alone() {
    let (app, _backend) = start().await;
    for args in [&["svc", "web"][..], &["svc/web"], &["services", "web"]] {
        let text = ok(&app, args).await;
        assert!(text.starts_with("NAME "), "{args:?}: {text}");
        assert_eq!(names(&text), ["web"], "{args:?}: {text}");
    }
    let text = ok(&app, &["svc", "web", "db"]).await;
    assert_eq!(names(&text), ["web", "db"], "{text}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_name_is_kubectls_not_found_and_exits_1() {
    let (app, _backend) = start().await;
    let out = get(&app, &["svc", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error from server (NotFound): services \"nope\" not found\n"
    );
    assert_eq!(stdout(&out), "");
    // The ones found are printed all the same.
    let out = get(&app, &["ep", "web", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(names(&stdout(&out)), ["web"]);
    assert_eq!(
        stderr(&out),
        "Error from server (NotFound): endpoints \"nope\" not found\n"
    );
    // In another namespace, `web` is not there.
    let out = get(&app, &["svc", "web", "-n", "prod"]).await;
    assert_eq!(out.status.code(), Some(1));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_is_default_unless_n_or_all_namespaces() {
    let (app, _backend) = start().await;
    let text = ok(&app, &["svc"]).await;
    assert_eq!(names(&text), ["db", "web"], "{text}");
    for flag in ["-n", "--namespace"] {
        let text = ok(&app, &["svc", flag, "prod"]).await;
        assert_eq!(names(&text), ["api"], "{text}");
    }
    for flag in ["-A", "--all-namespaces"] {
        let text = ok(&app, &["svc", flag]).await;
        let header: Vec<&str> = text
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(header[..2], ["NAMESPACE", "NAME"], "{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().take(2).collect())
            .collect();
        assert_eq!(
            rows,
            [["default", "db"], ["default", "web"], ["prod", "api"]],
            "{text}"
        );
    }
    let out = get(&app, &["svc", "web", "-A"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: a resource cannot be retrieved by name across all namespaces\n"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_pick_objects_with_kubectls_syntax() {
    let (app, _backend) = start().await;
    for (selector, want) in [
        ("app=web", &["web"][..]),
        ("app==web", &["web"]),
        ("app!=web", &["api", "db"]),
        ("app in (web, db)", &["db", "web"]),
        ("app notin (web)", &["api", "db"]),
        ("tier", &["web"]),
        ("!canary", &["db", "web"]),
        ("app,!tier", &["api", "db"]),
    ] {
        let text = ok(&app, &["svc", "-A", "--no-headers", "-l", selector]).await;
        let mut got: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        got.sort();
        assert_eq!(got, want, "-l {selector}: {text}");
    }
    // Endpoints carry their service's labels, as in Kubernetes.
    let text = ok(&app, &["ep", "--selector", "tier=front"]).await;
    assert_eq!(names(&text), ["web"], "{text}");
    let text = ok(&app, &["po", "-l", "app=db"]).await;
    assert_eq!(names(&text), ["db-1"], "{text}");
    let out = get(&app, &["svc", "-l", "app in"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: unable to parse requirement: found '' expected: '('\n"
    );
    let out = get(&app, &["svc", "web", "-l", "app=web"]).await;
    assert_eq!(
        stderr(&out),
        "error: name cannot be provided when a selector is specified\n"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_formats_are_kubectls() {
    let (app, _backend) = start().await;
    // -o name
    assert_eq!(
        ok(&app, &["svc", "-o", "name"]).await,
        "service/db\nservice/web\n"
    );
    assert_eq!(
        ok(&app, &["ep", "web", "-o", "name"]).await,
        "endpoints/web\n"
    );
    assert_eq!(
        ok(&app, &["po", "-n", "prod", "-o", "name"]).await,
        "pod/api-1\n"
    );
    // -o json: one object by name, else a List.
    let one: serde_json::Value =
        serde_json::from_str(&ok(&app, &["svc", "web", "-o", "json"]).await).expect("JSON");
    assert_eq!(one["kind"], "Service");
    assert_eq!(one["apiVersion"], "v1");
    assert_eq!(one["name"], "web");
    assert_eq!(one["labels"]["tier"], "front");
    let list: serde_json::Value =
        serde_json::from_str(&ok(&app, &["svc", "-o", "json"]).await).expect("JSON");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["metadata"]["resourceVersion"], "");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    // -o yaml, laid out as kubectl lays out a List.
    let yaml = ok(&app, &["svc", "-o", "yaml"]).await;
    assert!(
        yaml.starts_with("apiVersion: v1\nitems:\n- apiVersion: v1\n  "),
        "{yaml}"
    );
    assert!(yaml.contains("\nkind: List\n"), "{yaml}");
    assert!(yaml.contains("  kind: Service\n"), "{yaml}");
    let yaml = ok(&app, &["svc/web", "-o", "yaml"]).await;
    assert!(yaml.starts_with("apiVersion: v1\n"), "{yaml}");
    assert!(yaml.contains("\nkind: Service\n"), "{yaml}");
    assert!(yaml.contains("\nname: web\n"), "{yaml}");
    // -o wide: kubectl's SELECTOR column (lb's IP-POOL after it).
    let wide = ok(&app, &["svc", "web", "-o", "wide"]).await;
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR",
            "IP-POOL"
        ]
    );
    assert!(wide.contains("   app=web   "), "{wide}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_headers_prints_the_rows_alone() {
    let (app, _backend) = start().await;
    let text = ok(&app, &["svc", "--no-headers"]).await;
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("db "), "{text}");
    let text = ok(&app, &["svc,po", "--no-headers"]).await;
    assert!(!text.contains("NAME"), "{text}");
    assert!(!text.contains("\n\n"), "{text}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_kinds_print_a_table_each_with_kind_slash_names() {
    let (app, _backend) = start().await;
    let text = ok(&app, &["svc,ep", "web"]).await;
    let tables: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(tables.len(), 2, "{text}");
    assert!(tables[0].starts_with("NAME "), "{text}");
    assert_eq!(names(tables[0]), ["service/web"], "{text}");
    assert!(tables[1].contains("ENDPOINTS"), "{text}");
    assert_eq!(names(tables[1]), ["endpoints/web"], "{text}");
    let text = ok(&app, &["all"]).await;
    let mut all: Vec<String> = text.split("\n\n").flat_map(names).collect();
    all.sort();
    assert_eq!(
        all,
        ["pod/db-1", "pod/web-1", "service/db", "service/web"],
        "{text}"
    );
    assert_eq!(
        ok(&app, &["svc/web", "po/db-1", "-o", "name"]).await,
        "service/web\npod/db-1\n"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_names_and_aliases_name_the_same_kinds() {
    let (app, _backend) = start().await;
    for (short, long, first_column) in [
        ("svc", "services", "NAME"),
        ("service", "services", "NAME"),
        ("ep", "endpoints", "NAME"),
        ("po", "pods", "NAME"),
        ("pod", "pods", "NAME"),
        ("ev", "events", "LAST"),
        ("event", "events", "LAST"),
    ] {
        // Events keep coming (the probe of web-1 fails, its service's
        // endpoints change): the two answers are compared once the list
        // held still between them.
        let mut same = None;
        for _ in 0..20 {
            let a = ok(&app, &[short, "-o", "name"]).await;
            let b = ok(&app, &[long, "-o", "name"]).await;
            if a == b {
                same = Some(a);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        assert!(same.is_some(), "{short} = {long}");
        let table = ok(&app, &[short]).await;
        assert!(table.starts_with(first_column), "{short}: {table}");
    }
    let out = get(&app, &["nodes"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: the server doesn't have a resource type \"nodes\"\n"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_answer_says_no_resources_found_on_stderr() {
    let (app, _backend) = start().await;
    let out = get(&app, &["svc", "-n", "empty"]).await;
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "No resources found in empty namespace.\n");
    let out = get(&app, &["svc,po", "-A", "-l", "app=none"]).await;
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "No resources found\n");
    let out = get(&app, &["conn"]).await;
    assert_eq!(stderr(&out), "No resources found in default namespace.\n");
    // -o json of nothing is an empty List, as kubectl's.
    let out = get(&app, &["svc", "-n", "empty", "-o", "json"]).await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"], serde_json::json!([]));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pods_shows_readiness_as_the_probe_decides() {
    let (app, backend) = start().await;
    let row = |text: &str, name: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let ready = eventually_async(WAIT, || async {
        row(&ok(&app, &["pods"]).await, "web-1")
            .get(1)
            .map(String::as_str)
            == Some("1/1")
    })
    .await;
    assert!(ready, "the probe passes: web-1 is 1/1");
    let text = ok(&app, &["pods", "-o", "wide"]).await;
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ]
    );
    let web = row(&text, "web-1");
    assert_eq!(web[1..4], ["1/1", "Running", "0"], "{text}");
    assert_eq!(web[5..7], ["127.0.188.11", "node-1"], "{text}");
    // Without a probe, a pod is as declared.
    assert_eq!(row(&text, "db-1")[1], "1/1", "{text}");

    backend.kill().await;
    let not_ready = eventually_async(WAIT, || async {
        row(&ok(&app, &["pods"]).await, "web-1")
            .get(1)
            .map(String::as_str)
            == Some("0/1")
    })
    .await;
    assert!(not_ready, "the probe fails: web-1 is 0/1");
    let pod: serde_json::Value =
        serde_json::from_str(&ok(&app, &["po", "web-1", "-o", "json"]).await).expect("JSON");
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["ready"], false);
    assert_eq!(pod["probed"], true);
    assert!(!pod["probe"].as_str().unwrap_or("").is_empty(), "{pod}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_events_follows_the_namespace_and_output_flags() {
    let (app, _backend) = start().await;
    let text = ok(&app, &["events"]).await;
    assert!(text.starts_with("LAST SEEN"), "{text}");
    assert!(text.contains("node/node-1"), "{text}");
    let text = ok(&app, &["ev", "-A"]).await;
    assert!(text.starts_with("NAMESPACE   LAST SEEN"), "{text}");
    assert!(
        text.lines().skip(1).all(|l| l.starts_with("default ")),
        "{text}"
    );
    let text = ok(&app, &["ev", "--no-headers"]).await;
    assert!(!text.contains("LAST SEEN"), "{text}");
    let out = get(&app, &["ev", "-n", "prod"]).await;
    assert_eq!(stderr(&out), "No resources found in prod namespace.\n");
    // An event's name is its object's, a dot and a hex stamp, as Kubernetes'.
    let names = ok(&app, &["ev", "-o", "name"]).await;
    assert!(
        names.lines().any(|l| l.starts_with("event/node-1.")),
        "{names}"
    );
    let first = names
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("event/");
    let one = ok(&app, &["ev", first, "-o", "json"]).await;
    let one: serde_json::Value = serde_json::from_str(&one).expect("JSON");
    assert_eq!(one["kind"], "Event");
    app.shutdown().await;
}

#[test]
fn manifest_pods_are_listed_with_their_ready_condition() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests");
    let config = lb_proxy::cli::check(&dir.join("node.toml"), Some(&dir), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let pods = lb_proxy::ops::views::pods_view(
        Some(&config),
        &Default::default(),
        None,
        std::time::SystemTime::now(),
    );
    let pod = pods
        .items
        .iter()
        .find(|p| p.name == "nginx-deployment-1")
        .expect("the manifest's pod");
    assert!(pod.ready);
    assert_eq!(pod.ip, "127.0.244.1");
    assert_eq!(pod.node, "node-1");
    assert_eq!(pod.labels["app"], "nginx-deployment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_that_cannot_bind_is_a_warning_under_get_services() {
    // Something else holds the external IP's port.
    let backend = echo_backend("127.0.188.31");
    let port = free_port("127.0.188.30");
    let blocker = std::net::TcpListener::bind(("127.0.188.30", port)).expect("bind the blocker");
    let admin_ip = fresh_ip();
    let admin = std::net::SocketAddr::new(admin_ip, free_port(admin_ip));
    let text = format!(
        "{}[[services]]\nname = \"blocked\"\ncluster_ip = \"{}\"\nexternal_ips = [\"127.0.188.30\"]\n\
         ports = [{{ port = {port} }}]\n\
         [[endpoints]]\nname = \"blocked\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"127.0.188.31\" }}]\n\
         ports = [{{ port = {} }}]\n",
        base_toml(admin),
        vip().ip(),
        backend.addr.port()
    );
    let app = TestApp::from_text(&text).await;
    let out = get(&app, &["svc", "blocked"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("blocked"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!(
            "Warning: service default/blocked: cannot listen on 127.0.188.30:{port}/TCP: "
        )) && stderr(&out).contains("in use"),
        "{}",
        stderr(&out)
    );
    drop(blocker);
    let bound = eventually_async(WAIT, || async {
        !stderr(&get(&app, &["svc", "blocked"]).await).contains("Warning")
    })
    .await;
    assert!(bound, "the warning goes once the port binds");
    app.shutdown().await;
}
