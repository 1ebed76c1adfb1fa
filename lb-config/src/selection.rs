//! Which services this proxy serves and which LoadBalancer services this
//! node gives pool addresses to.
//!
//! Serving follows kube-proxy, whose informers list services with the
//! label selector `!service.kubernetes.io/service-proxy-name,
//! !service.kubernetes.io/headless` (cmd/kube-proxy/app/server.go): a
//! service carrying either label is left to another proxy, or to none.
//! `[node] service_proxy_name` turns lb into such another proxy: it then
//! serves only the services whose proxy-name label has that value (the
//! headless label still excludes).
//!
//! Addresses follow MetalLB's `--lb-class` (`filterByLoadBalancerClass`):
//! without a node class, services without a `load_balancer_class`; with
//! one, only services of that class. A service of another class is not
//! MetalLB's business at all (MetalLB records no event); lb leaves it
//! `<pending>` and says why in [`crate::Config::pending_addresses`].

use std::collections::BTreeMap;

/// kube-proxy's `apis.LabelServiceProxyName`: set on a service, another
/// proxy serves it.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";

/// Kubernetes' `v1.IsHeadlessService` label: kube-proxy's informers skip
/// every object carrying it (services included).
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// Whether this proxy serves a service with `labels`, given `[node]
/// service_proxy_name` (`proxy_name`, empty = kube-proxy's own rule).
pub(crate) fn is_ours(labels: &BTreeMap<String, String>, proxy_name: &str) -> bool {
    if labels.contains_key(LABEL_HEADLESS) {
        return false;
    }
    match labels.get(LABEL_SERVICE_PROXY_NAME) {
        None => proxy_name.is_empty(),
        Some(value) => !proxy_name.is_empty() && value == proxy_name,
    }
}

/// Why this node gives no address to a service of class `service`, or
/// `None` when the class is this node's (`node`): the `WHY` of its
/// `AllocationFailed` entry, naming both classes.
pub(crate) fn foreign_class(service: Option<&str>, node: Option<&str>) -> Option<String> {
    if service == node {
        return None;
    }
    let show = |c: Option<&str>| c.map_or_else(|| "none".to_string(), |c| format!("\"{c}\""));
    Some(format!(
        "loadBalancerClass {} is not this node's (node.load_balancer_class: {})",
        show(service),
        show(node)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_proxy_name_label_picks_the_proxy_and_the_headless_label_excludes() {
        assert!(is_ours(&labels(&[("app", "web")]), ""));
        assert!(!is_ours(&labels(&[(LABEL_SERVICE_PROXY_NAME, "")]), ""));
        assert!(!is_ours(&labels(&[(LABEL_SERVICE_PROXY_NAME, "x")]), ""));
        assert!(is_ours(&labels(&[(LABEL_SERVICE_PROXY_NAME, "lb")]), "lb"));
        assert!(!is_ours(&labels(&[(LABEL_SERVICE_PROXY_NAME, "x")]), "lb"));
        assert!(!is_ours(&labels(&[]), "lb"));
        assert!(!is_ours(&labels(&[(LABEL_HEADLESS, "")]), ""));
        assert!(!is_ours(
            &labels(&[(LABEL_HEADLESS, ""), (LABEL_SERVICE_PROXY_NAME, "lb")]),
            "lb"
        ));
    }

    #[test]
    fn a_class_is_ours_only_when_it_is_the_node_class() {
        assert_eq!(foreign_class(None, None), None);
        assert_eq!(foreign_class(Some("a.io/x"), Some("a.io/x")), None);
        assert_eq!(
            foreign_class(Some("a.io/x"), None).as_deref(),
            Some(
                "loadBalancerClass \"a.io/x\" is not this node's (node.load_balancer_class: none)"
            )
        );
        assert_eq!(
            foreign_class(None, Some("a.io/x")).as_deref(),
            Some(
                "loadBalancerClass none is not this node's (node.load_balancer_class: \"a.io/x\")"
            )
        );
    }
}
