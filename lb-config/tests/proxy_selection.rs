//! Which services lb serves and which get pool addresses, as kube-proxy
//! and MetalLB decide: the `service.kubernetes.io/service-proxy-name` and
//! `service.kubernetes.io/headless` labels against `[node]
//! service_proxy_name`, and `load_balancer_class` against `[node]
//! load_balancer_class`; each through the TOML file and a manifest.

mod support;

use lb_config::Config;
use support::{config, errors, memory_loader};

const HEAD: &str =
    "[cluster]\nservice_cidr = \"127.96.0.0/24\"\nnode_port_range = \"30000-30099\"\n\
[[ip_pools]]\nname = \"lb-ip-pool\"\naddresses = [\"127.0.124.10-127.0.124.19\"]\n";

/// A TOML service `name` with `extra` fields and one port 80.
fn svc(name: &str, extra: &str) -> String {
    format!("[[services]]\nname = \"{name}\"\n{extra}\nports = [{{ port = 80 }}]\n")
}

fn names(specs: &[lb_core::ServiceSpec]) -> Vec<&str> {
    specs.iter().map(|s| s.key.name.as_str()).collect()
}

fn served(c: &Config) -> Vec<&str> {
    c.services.iter().map(|s| s.key.name.as_str()).collect()
}

const PROXY_LABELLED: &str =
    "labels = { \"service.kubernetes.io/service-proxy-name\" = \"other-proxy\" }";
const HEADLESS_LABELLED: &str = "labels = { \"service.kubernetes.io/headless\" = \"\" }";

#[test]
fn without_a_proxy_name_services_labelled_for_a_proxy_or_headless_are_not_served() {
    let text = format!(
        "{HEAD}{}{}{}",
        svc("mine", "labels = { app = \"web\" }"),
        svc("theirs", &format!("type = \"NodePort\"\n{PROXY_LABELLED}")),
        svc("headless-label", HEADLESS_LABELLED),
    );
    let c = config(&text);
    assert_eq!(served(&c), ["mine"]);
    assert_eq!(names(&c.not_proxied), ["theirs", "headless-label"]);
    // The API server keeps their allocations whoever proxies them.
    let theirs = &c.not_proxied[0];
    assert!(theirs.cluster_ip.ip().is_some());
    assert!(theirs.ports[0].node_port.is_some());
}

#[test]
fn with_a_proxy_name_only_services_carrying_that_value_are_served() {
    let text = format!(
        "{HEAD}[node]\nservice_proxy_name = \"other-proxy\"\n{}{}{}{}",
        svc("unlabelled", ""),
        svc("ours", PROXY_LABELLED),
        svc(
            "someone-else",
            "labels = { \"service.kubernetes.io/service-proxy-name\" = \"x\" }"
        ),
        svc(
            "ours-but-headless",
            "labels = { \"service.kubernetes.io/service-proxy-name\" = \"other-proxy\", \"service.kubernetes.io/headless\" = \"\" }"
        ),
    );
    let c = config(&text);
    assert_eq!(served(&c), ["ours"]);
    assert_eq!(
        names(&c.not_proxied),
        ["unlabelled", "someone-else", "ours-but-headless"]
    );
}

#[test]
fn labels_and_the_proxy_name_are_validated_as_kubernetes_labels() {
    let lines = errors(&format!(
        "{HEAD}[node]\nservice_proxy_name = \"bad value!\"\n{}",
        svc("web", "labels = { \"-bad\" = \"ok\", good = \"not ok!\" }")
    ));
    let has = |prefix: &str, part: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(prefix) && l.contains(part))
    };
    assert!(
        has(
            "node.service_proxy_name: Invalid value: \"bad value!\": ",
            "a valid label must be an empty string or consist of alphanumeric characters"
        ),
        "{lines:#?}"
    );
    assert!(
        has(
            "services[web].labels: Invalid value: \"-bad\": ",
            "name part must consist of alphanumeric characters"
        ),
        "{lines:#?}"
    );
    assert!(
        has(
            "services[web].labels: Invalid value: \"not ok!\": ",
            "a valid label must be an empty string"
        ),
        "{lines:#?}"
    );
}

#[test]
fn a_load_balancer_of_another_class_is_pending_but_its_cluster_ip_and_node_ports_serve() {
    let text = format!(
        "{HEAD}{}{}",
        svc("classless", "type = \"LoadBalancer\""),
        svc(
            "other",
            "type = \"LoadBalancer\"\nload_balancer_class = \"example.com/other\""
        ),
    );
    let c = config(&text);
    assert_eq!(served(&c), ["classless", "other"]);
    assert_eq!(c.services[0].load_balancer_ips.len(), 1);
    let other = &c.services[1];
    assert!(other.load_balancer_ips.is_empty());
    assert!(other.cluster_ip.ip().is_some());
    assert!(other.ports[0].node_port.is_some());
    let pending: Vec<(&str, &str)> = c
        .pending_addresses
        .iter()
        .map(|p| (p.reason, p.message.as_str()))
        .collect();
    assert_eq!(
        pending,
        [(
            "AllocationFailed",
            "Failed to allocate IP for \"default/other\": loadBalancerClass \"example.com/other\" is not this node's (node.load_balancer_class: none)"
        )]
    );

    // With a node class, only services of that class get addresses (as
    // MetalLB's `--lb-class`): the classless one waits.
    let c = config(&format!(
        "{HEAD}[node]\nload_balancer_class = \"example.com/other\"\n{}{}",
        svc("classless", "type = \"LoadBalancer\""),
        svc(
            "other",
            "type = \"LoadBalancer\"\nload_balancer_class = \"example.com/other\""
        ),
    ));
    assert!(c.services[0].load_balancer_ips.is_empty());
    assert_eq!(c.services[1].load_balancer_ips.len(), 1);
    assert_eq!(
        c.pending_addresses[0].message,
        "Failed to allocate IP for \"default/classless\": loadBalancerClass none is not this node's (node.load_balancer_class: \"example.com/other\")"
    );
}

#[test]
fn a_class_is_a_qualified_name_and_only_for_load_balancers() {
    assert_eq!(
        errors(&format!(
            "{HEAD}{}",
            svc("web", "type = \"NodePort\"\nload_balancer_class = \"example.com/lb\"")
        )),
        ["services[web].load_balancer_class: Forbidden: may only be used when `type` is 'LoadBalancer'"]
    );
    let lines = errors(&format!(
        "{HEAD}[node]\nload_balancer_class = \"a/b/c\"\n{}",
        svc(
            "web",
            "type = \"LoadBalancer\"\nload_balancer_class = \"bad class\""
        )
    ));
    assert!(
        lines.iter().any(|l| l.starts_with(
            "services[web].load_balancer_class: Invalid value: \"bad class\": name part must consist of"
        )),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "node.load_balancer_class: Invalid value: \"a/b/c\": a qualified name must consist of"
        )),
        "{lines:#?}"
    );
}

#[test]
fn a_load_balancers_class_may_not_change_while_it_stays_a_load_balancer() {
    let class = |c: &str| svc("web", &format!("type = \"LoadBalancer\"\n{c}"));
    let mut loader = memory_loader();
    loader.load_str(&format!("{HEAD}{}", class(""))).unwrap();
    let before = loader.allocations();
    let changed = format!(
        "{HEAD}{}",
        class("load_balancer_class = \"example.com/lb\"")
    );
    assert_eq!(
        loader.load_str(&changed).unwrap_err().lines(),
        ["services[web].load_balancer_class: Invalid value: \"example.com/lb\": may not change once set"]
    );
    assert_eq!(
        loader.allocations(),
        before,
        "a failed load changes nothing"
    );
    // Through another type the class may change: Kubernetes checks only a
    // LoadBalancer that stays one.
    loader
        .load_str(&format!("{HEAD}{}", svc("web", "type = \"NodePort\"")))
        .unwrap();
    loader.load_str(&changed).unwrap();
    // Removing it is a change too; a nil class reads "null", as Kubernetes prints it.
    assert_eq!(
        loader
            .load_str(&format!("{HEAD}{}", class("")))
            .unwrap_err()
            .lines(),
        ["services[web].load_balancer_class: Invalid value: \"null\": may not change once set"]
    );
}

#[cfg(feature = "manifests")]
mod manifests {
    use super::*;
    use lb_config::manifests::load_str;
    use lb_config::parse_str;
    use lb_config::source::{load_merged, DesiredState};

    fn load(file: &str, yaml: &str) -> Result<Config, Vec<String>> {
        let file = DesiredState {
            file: Some(parse_str(&format!("{HEAD}{file}")).unwrap()),
            ..DesiredState::default()
        };
        let state = load_str(yaml, "k8s.yaml").map_err(|e| e.lines())?;
        load_merged(&mut memory_loader(), vec![file, state]).map_err(|e| e.lines())
    }

    const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: mine}
spec: {type: LoadBalancer, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata:
  name: theirs
  labels: {service.kubernetes.io/service-proxy-name: other-proxy}
spec: {type: NodePort, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: classy}
spec: {type: LoadBalancer, loadBalancerClass: example.com/other, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: outside}
spec: {type: LoadBalancer, loadBalancerIP: 127.0.99.1, ports: [{port: 80}]}
";

    #[test]
    fn manifest_labels_and_classes_select_as_in_the_file() {
        let c = load("", SERVICES).unwrap();
        assert_eq!(served(&c), ["mine", "classy", "outside"]);
        assert_eq!(names(&c.not_proxied), ["theirs"]);
        let pending: Vec<&str> = c
            .pending_addresses
            .iter()
            .map(|p| p.message.as_str())
            .collect();
        assert_eq!(
            pending,
            [
                "Failed to allocate IP for \"default/classy\": loadBalancerClass \"example.com/other\" is not this node's (node.load_balancer_class: none)",
                "Failed to allocate IP for \"default/outside\": \"127.0.99.1\" is not allowed in config",
            ]
        );
        // As the other proxy: only `theirs`.
        let c = load("[node]\nservice_proxy_name = \"other-proxy\"\n", SERVICES).unwrap();
        assert_eq!(served(&c), ["theirs"]);
    }

    #[test]
    fn a_manifest_class_on_another_type_is_forbidden() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: ClusterIP, loadBalancerClass: example.com/lb, ports: [{port: 80}]}\n";
        assert_eq!(
            load("", yaml).unwrap_err(),
            ["services[web].load_balancer_class: Forbidden: may only be used when `type` is 'LoadBalancer'"]
        );
    }

    #[test]
    fn a_manifest_class_may_not_change_on_a_running_load_balancer() {
        let service = |class: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n\
                 spec: {{type: LoadBalancer, loadBalancerClass: {class}, ports: [{{port: 80}}]}}\n"
            )
        };
        let load = |loader: &mut lb_config::Loader, yaml: &str| {
            let file = DesiredState {
                file: Some(parse_str(HEAD).unwrap()),
                ..DesiredState::default()
            };
            let state = load_str(yaml, "k8s.yaml").map_err(|e| e.lines())?;
            load_merged(loader, vec![file, state]).map_err(|e| e.lines())
        };
        let mut loader = memory_loader();
        load(&mut loader, &service("example.com/a")).unwrap();
        let refused = load(&mut loader, &service("example.com/b")).unwrap_err();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].ends_with(
                "load_balancer_class: Invalid value: \"example.com/b\": may not change once set"
            ),
            "{refused:?}"
        );
    }
}
