//! `[[pods]]` and their readiness probes, as written.

#[allow(unused_imports)] // what the derives and doc links of the types below use
use super::*;

/// `[[pods]]`: a backend instance.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["name", "ip"])))]
pub struct RawPod {
    /// Pod name (DNS-1123 subdomain).
    pub name: String,
    /// Namespace; default `default`.
    pub namespace: Option<String>,
    /// Pod address (its `status.podIP`): where connections to it go.
    pub ip: String,
    /// Node it runs on; file default: this node.
    pub node: Option<String>,
    /// Zone it runs in (a label value); default: `node.zone` when the pod
    /// runs on this node, else none. What an EndpointSlice's `zone` says.
    pub zone: Option<String>,
    /// Hostname, for DNS of headless services.
    pub hostname: Option<String>,
    /// Labels that service selectors match.
    pub labels: BTreeMap<String, String>,
    /// Container ports (named ports are what `target_port` names).
    pub ports: Vec<RawContainerPort>,
    /// Relative share of new connections; default 1, 0 = drain.
    pub weight: Option<i64>,
    /// Static readiness when there is no probe; default true: a pod in the
    /// file is what it says. (A manifest Pod's is its `Ready` condition, and
    /// false while it has none, as the EndpointSlice controller reads it.)
    pub ready: Option<bool>,
    /// The pod is shutting down; default false.
    pub terminating: Option<bool>,
    /// Readiness probe, as in Kubernetes.
    pub readiness_probe: Option<RawProbe>,
}

/// One container port of a pod.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["container_port"])))]
pub struct RawContainerPort {
    /// Port name (IANA_SVC_NAME), what a service's `target_port` may name.
    pub name: Option<String>,
    /// Port number on the pod.
    pub container_port: i64,
    /// `TCP` (default) or `UDP`.
    pub protocol: Option<String>,
}

/// A readiness probe: one of `tcp_socket`, `http_get`, `exec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawProbe {
    /// Connect to a port.
    pub tcp_socket: Option<RawTcpSocketAction>,
    /// Send an HTTP GET.
    pub http_get: Option<RawHttpGetAction>,
    /// Run a command.
    pub exec: Option<RawExecAction>,
    /// Seconds after the pod appears before the first probe; default 0.
    pub initial_delay_seconds: Option<i64>,
    /// Seconds between probes; default 10.
    pub period_seconds: Option<i64>,
    /// Seconds before a probe counts as failed; default 1.
    pub timeout_seconds: Option<i64>,
    /// Successes in a row that make the pod ready; default 1.
    pub success_threshold: Option<i64>,
    /// Failures in a row that make the pod not ready; default 3.
    pub failure_threshold: Option<i64>,
}

/// `tcp_socket` probe action.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawTcpSocketAction {
    /// Port number or container port name.
    pub port: IntOrString,
    /// `"v1"` or `"v2"`: the probe's connection starts with a `LOCAL`
    /// PROXY header (v1: `PROXY UNKNOWN`), for an endpoint that expects one
    /// (its service's `proxy_protocol`); omitted: none, since a probe is
    /// not a client.
    #[serde(default)]
    pub proxy_protocol: Option<String>,
}

/// `http_get` probe action.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawHttpGetAction {
    /// Request path; default `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Port number or container port name.
    pub port: IntOrString,
    /// `"v1"` or `"v2"`: the request is preceded by a `LOCAL` PROXY header,
    /// as for `tcp_socket`; omitted: none.
    #[serde(default)]
    pub proxy_protocol: Option<String>,
}

/// `exec` probe action: the command runs on this node as lb-proxy's user
/// (not in a container), with no shell, its standard streams closed, in a
/// process group of its own. It passes on exit 0. When the probe ends (the
/// command exits or `timeout_seconds` passes) the whole group is killed
/// (`SIGKILL`), so nothing the command forked outlives it; the same when its
/// pod goes or lb-proxy stops. From the manifests it needs
/// `[source.manifests] allow_exec_probes = true`, from etcd `[source.etcd]
/// allow_exec_probes = true`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawExecAction {
    /// Program and arguments (`["sh", "-c", "..."]` for a shell).
    pub command: Vec<String>,
}
