//! What `lb-proxy get` prints for a [`GetRequest`]: the admin API's lists,
//! narrowed to the namespace, the names and the labels asked, printed as
//! kubectl prints them (tables, `-o json|yaml|name`, "No resources found",
//! `Error from server (NotFound)`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::request::{GetKind, GetRequest, OutputFormat};
use super::{fetch, url, AdminError};
use crate::control::events::{Event, EventList};
use crate::ops::views::{
    self, ConnectionList, ConnectionView, EndpointsList, EndpointsView, PodList, PodView,
    ServiceList, ServiceView, Table, TableOptions, SERVICES_PATH,
};

/// The admin API's answers a request needs, by path: what `-w` compares
/// from one poll to the next.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bodies(BTreeMap<&'static str, String>);

/// What `lb-proxy get` writes and how it exits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetOutput {
    /// The tables or documents, final newline included (print with `print!`).
    pub stdout: String,
    /// "No resources found ..." and the NotFound errors, one a line.
    pub stderr: String,
    /// False when a name asked was not found (kubectl exits 1).
    pub success: bool,
}

/// Asks the admin API at `admin` for every list `request` needs. Endpoints
/// filtered by labels need the services too: an Endpoints object carries
/// its Service's labels, as Kubernetes' endpoints controller copies them.
pub fn fetch_bodies(admin: &str, request: &GetRequest) -> Result<Bodies, AdminError> {
    let mut paths: Vec<&'static str> = request.targets.iter().map(|(k, _)| k.path()).collect();
    let labelled_endpoints = request
        .targets
        .iter()
        .any(|(k, _)| *k == GetKind::Endpoints);
    if labelled_endpoints && !request.selector.requirements().is_empty() {
        paths.push(SERVICES_PATH);
    }
    let mut bodies = BTreeMap::new();
    for path in paths {
        if !bodies.contains_key(path) {
            bodies.insert(path, fetch(admin, path)?);
        }
    }
    Ok(Bodies(bodies))
}

/// [`fetch_bodies`] then [`render`], with AGE relative to `now`.
pub fn get_command(
    admin: &str,
    request: &GetRequest,
    now: SystemTime,
) -> Result<GetOutput, AdminError> {
    render(admin, request, &fetch_bodies(admin, request)?, now)
}

/// Labels of an object that has none.
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// Each service's labels by (namespace, name): what `get endpoints -l`
/// matches, as an Endpoints object carries its Service's labels.
type ServiceLabels = BTreeMap<(String, String), BTreeMap<String, String>>;

/// Turns the answers in `bodies` into what `lb-proxy get` prints (`admin`
/// only names the source in errors); `get -w` calls it for each changed
/// answer.
///
/// Tables and `-o name` read each list straight into the view types of
/// [`crate::ops::views`] and move the objects kept: a 10,000-service list
/// is read once, not parsed as JSON values, copied and read again.
/// `-o json|yaml` print the API's objects as it sent them, so they go
/// through JSON values (every field, including ones this CLI does not
/// know).
pub fn render(
    admin: &str,
    request: &GetRequest,
    bodies: &Bodies,
    now: SystemTime,
) -> Result<GetOutput, AdminError> {
    let json_error = |path: &'static str| {
        move |source| AdminError::Json {
            url: url(admin, path),
            source,
        }
    };
    let labelled_endpoints = !request.selector.requirements().is_empty()
        && request
            .targets
            .iter()
            .any(|(k, _)| *k == GetKind::Endpoints);
    let service_labels = if labelled_endpoints {
        labels_by_name(bodies.body(SERVICES_PATH)).map_err(json_error(SERVICES_PATH))?
    } else {
        ServiceLabels::new()
    };
    let mut out = GetOutput {
        success: true,
        ..GetOutput::default()
    };
    let mut documents: Vec<Value> = Vec::new();
    let mut tables: Vec<String> = Vec::new();
    for (kind, names) in &request.targets {
        let body = bodies.body(kind.path());
        let pick = Pick {
            kind: *kind,
            request,
            names,
            service_labels: &service_labels,
        };
        let picked = match request.output {
            OutputFormat::Json | OutputFormat::Yaml => {
                let items = serde_json::from_str::<Items<Value>>(body)
                    .map_err(json_error(kind.path()))?
                    .items;
                let chosen = pick.choose(items, &mut out);
                documents.extend(chosen.into_iter().map(|v| object(*kind, v)));
                continue;
            }
            OutputFormat::Name | OutputFormat::Table | OutputFormat::Wide => match kind {
                GetKind::Services => pick.typed::<ServiceView>(body, now, &mut out),
                GetKind::Endpoints => pick.typed::<EndpointsView>(body, now, &mut out),
                GetKind::Pods => pick.typed::<PodView>(body, now, &mut out),
                GetKind::Connections => pick.typed::<ConnectionView>(body, now, &mut out),
                GetKind::Events => pick.typed::<Event>(body, now, &mut out),
            },
        };
        match picked.map_err(json_error(kind.path()))? {
            Picked::Nothing => {}
            Picked::Names(names) => out.stdout.push_str(&names),
            Picked::Table(table) => tables.push(table.render(&TableOptions {
                namespace_column: request.namespace.is_none(),
                kind_prefix: request.several_kinds().then(|| kind.prefix()),
                headers: !request.no_headers,
            })),
        }
    }
    match request.output {
        OutputFormat::Table | OutputFormat::Wide => {
            // kubectl parts kinds with an empty line, unless headerless.
            let separator = if request.no_headers { "" } else { "\n" };
            out.stdout = tables.join(separator);
        }
        OutputFormat::Name => {}
        OutputFormat::Json | OutputFormat::Yaml => {
            let single = request.targets.len() == 1
                && request.targets[0].1.len() == 1
                && documents.len() == 1
                && request.targets[0].0 != GetKind::Connections;
            let document = if single {
                documents.pop().unwrap_or_default()
            } else {
                list_of(documents)
            };
            out.stdout = encode(&document, request.output)?;
        }
    }
    let listing = matches!(
        request.output,
        OutputFormat::Table | OutputFormat::Wide | OutputFormat::Name
    );
    if listing && out.stdout.is_empty() && out.success {
        out.stderr.push_str(&match &request.namespace {
            Some(ns) => format!("No resources found in {ns} namespace.\n"),
            None => "No resources found\n".to_string(),
        });
    }
    Ok(out)
}

impl Bodies {
    /// The answer for `path`; an empty object when it was not asked.
    fn body(&self, path: &str) -> &str {
        self.0.get(path).map_or("{}", String::as_str)
    }
}

/// Any of the admin API's lists, read for its `items` alone (a list
/// without them is empty, as a Kubernetes list).
#[derive(Deserialize)]
struct Items<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

/// What one kind adds to the output.
enum Picked {
    /// No object kept: nothing printed for this kind.
    Nothing,
    /// `-o name`'s lines.
    Names(String),
    /// The kind's table, to print with the request's options.
    Table(Table),
}

/// One kind of a request and what picks its objects: the namespace, the
/// labels and the names asked.
struct Pick<'r> {
    kind: GetKind,
    request: &'r GetRequest,
    names: &'r [String],
    service_labels: &'r ServiceLabels,
}

impl Pick<'_> {
    /// The objects of `items` in the namespace and with the labels asked,
    /// in the API's order; when names were asked, those with each name in
    /// the order of the names (a name asked twice is listed twice), and a
    /// NotFound on `out` for a name that has none.
    fn choose<T: Identified>(&self, items: Vec<T>, out: &mut GetOutput) -> Vec<T> {
        let namespace = self.request.namespace.as_deref();
        let chosen: Vec<T> = items
            .into_iter()
            .filter(|item| {
                let id = item.identity(self.kind, self.service_labels);
                namespace.is_none_or(|ns| id.namespace == ns)
                    && self.request.selector.matches(&id.labels)
            })
            .collect();
        if self.names.is_empty() {
            return chosen;
        }
        let mut named = Vec::new();
        for name in self.names {
            let before = named.len();
            named.extend(
                chosen
                    .iter()
                    .filter(|item| item.identity(self.kind, self.service_labels).name == *name)
                    .cloned(),
            );
            if named.len() == before {
                out.success = false;
                out.stderr.push_str(&format!(
                    "Error from server (NotFound): {} \"{name}\" not found\n",
                    self.kind.resource()
                ));
            }
        }
        named
    }

    /// Reads `body` as a list of `T` and picks from it what a table or
    /// `-o name` prints.
    fn typed<T: Listed + DeserializeOwned>(
        &self,
        body: &str,
        now: SystemTime,
        out: &mut GetOutput,
    ) -> Result<Picked, serde_json::Error> {
        let items = serde_json::from_str::<Items<T>>(body)?.items;
        let chosen = self.choose(items, out);
        if chosen.is_empty() {
            return Ok(Picked::Nothing);
        }
        let output = self.request.output;
        if output == OutputFormat::Name {
            let mut names = String::new();
            for item in &chosen {
                let id = item.identity(self.kind, self.service_labels);
                names.push_str(&format!("{}/{}\n", self.kind.prefix(), id.object_name));
            }
            return Ok(Picked::Names(names));
        }
        out.stderr.push_str(&T::warnings(&chosen));
        Ok(Picked::Table(T::table(
            chosen,
            now,
            output == OutputFormat::Wide,
        )))
    }
}

/// Where an object is and what it is called, for the filters.
struct Identity<'a> {
    namespace: Cow<'a, str>,
    /// What a NAME argument matches.
    name: Cow<'a, str>,
    /// What `-o name` prints after `kind/` (the name, but a connection's id).
    object_name: Cow<'a, str>,
    labels: Cow<'a, BTreeMap<String, String>>,
}

impl<'a> Identity<'a> {
    /// An object called `name` in `namespace`.
    fn named(namespace: &'a str, name: &'a str, labels: &'a BTreeMap<String, String>) -> Self {
        Identity {
            namespace: Cow::Borrowed(namespace),
            name: Cow::Borrowed(name),
            object_name: Cow::Borrowed(name),
            labels: Cow::Borrowed(labels),
        }
    }

    /// Endpoints called `name` in `namespace`, with their Service's labels.
    fn endpoints(namespace: &'a str, name: &'a str, service_labels: &'a ServiceLabels) -> Self {
        Identity::named(
            namespace,
            name,
            endpoints_labels(namespace, name, service_labels),
        )
    }

    /// An event, named as Kubernetes' recorder names it.
    fn event(e: &Event) -> Identity<'a> {
        let name = views::event_name(e);
        Identity {
            namespace: Cow::Owned(views::event_namespace(e).to_string()),
            object_name: Cow::Owned(name.clone()),
            name: Cow::Owned(name),
            labels: Cow::Borrowed(&NO_LABELS),
        }
    }
}

/// An object of a list `lb-proxy get` prints: where it is and what it is
/// called, for the filters and `-o name`.
trait Identified: Clone {
    /// Its identity as an object of `kind`.
    fn identity<'a>(&'a self, kind: GetKind, service_labels: &'a ServiceLabels) -> Identity<'a>;
}

/// An object of a view type, and how its kind is tabled.
trait Listed: Identified + DeserializeOwned {
    /// The kind's table of `items`.
    fn table(items: Vec<Self>, now: SystemTime, wide: bool) -> Table;

    /// What to say on stderr above the table.
    fn warnings(_items: &[Self]) -> String {
        String::new()
    }
}

impl Identified for ServiceView {
    fn identity<'a>(&'a self, _: GetKind, _: &'a ServiceLabels) -> Identity<'a> {
        Identity::named(&self.namespace, &self.name, &self.labels)
    }
}

impl Listed for ServiceView {
    fn table(items: Vec<Self>, now: SystemTime, wide: bool) -> Table {
        views::services_table(&ServiceList { items }, now, wide)
    }

    /// A frontend that cannot be bound serves no one, and kubectl's table
    /// has no column for it: one `Warning:` line per such frontend, as
    /// kubectl prints the API server's warnings.
    fn warnings(items: &[Self]) -> String {
        let mut out = String::new();
        for s in items {
            for e in &s.bind_errors {
                out.push_str(&format!(
                    "Warning: service {}/{}: cannot listen on {}/{}: {}\n",
                    s.namespace, s.name, e.address, e.protocol, e.error
                ));
            }
        }
        out
    }
}

impl Identified for EndpointsView {
    fn identity<'a>(&'a self, _: GetKind, service_labels: &'a ServiceLabels) -> Identity<'a> {
        Identity::endpoints(&self.namespace, &self.name, service_labels)
    }
}

impl Listed for EndpointsView {
    fn table(items: Vec<Self>, now: SystemTime, wide: bool) -> Table {
        let list = EndpointsList { items };
        if wide {
            views::endpoints_wide_table(&list, now)
        } else {
            views::endpoints_table(&list, now)
        }
    }
}

impl Identified for PodView {
    fn identity<'a>(&'a self, _: GetKind, _: &'a ServiceLabels) -> Identity<'a> {
        Identity::named(&self.namespace, &self.name, &self.labels)
    }
}

impl Listed for PodView {
    fn table(items: Vec<Self>, now: SystemTime, wide: bool) -> Table {
        views::pods_table(&PodList { items }, now, wide)
    }
}

impl Identified for ConnectionView {
    /// A connection's NAME is its service's; `-o name` prints its id.
    fn identity<'a>(&'a self, _: GetKind, _: &'a ServiceLabels) -> Identity<'a> {
        Identity {
            namespace: Cow::Borrowed(&self.namespace),
            name: Cow::Borrowed(&self.service),
            object_name: Cow::Owned(self.id.to_string()),
            labels: Cow::Borrowed(&NO_LABELS),
        }
    }
}

impl Listed for ConnectionView {
    fn table(items: Vec<Self>, _now: SystemTime, wide: bool) -> Table {
        let list = ConnectionList {
            items,
            continue_token: String::new(),
            total: 0,
        };
        views::connections_table(&list, wide)
    }
}

impl Identified for Event {
    fn identity<'a>(&'a self, _: GetKind, _: &'a ServiceLabels) -> Identity<'a> {
        Identity::event(self)
    }
}

impl Listed for Event {
    fn table(items: Vec<Self>, now: SystemTime, wide: bool) -> Table {
        views::events_table(&EventList { items }, now, wide)
    }
}

/// An object as `-o json|yaml` prints it: a JSON value, its identity read
/// from the fields the view types name (an event that is not one has an
/// empty identity).
impl Identified for Value {
    fn identity<'a>(&'a self, kind: GetKind, service_labels: &'a ServiceLabels) -> Identity<'a> {
        let field = |name: &str| match &self[name] {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(text(other)),
        };
        match kind {
            GetKind::Services | GetKind::Pods => {
                let name = field("name");
                Identity {
                    namespace: field("namespace"),
                    object_name: name.clone(),
                    name,
                    labels: Cow::Owned(labels_of(&self["labels"])),
                }
            }
            GetKind::Endpoints => {
                let (namespace, name) = (field("namespace"), field("name"));
                let labels = endpoints_labels(&namespace, &name, service_labels);
                Identity {
                    namespace,
                    object_name: name.clone(),
                    name,
                    labels: Cow::Borrowed(labels),
                }
            }
            GetKind::Connections => Identity {
                namespace: field("namespace"),
                name: field("service"),
                object_name: field("id"),
                labels: Cow::Borrowed(&NO_LABELS),
            },
            GetKind::Events => match Event::deserialize(self) {
                Ok(e) => Identity::event(&e),
                Err(_) => Identity::named("", "", &NO_LABELS),
            },
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default()
}

/// Each service's labels by (namespace, name), from the services list.
fn labels_by_name(services: &str) -> Result<ServiceLabels, serde_json::Error> {
    /// What of a service its labels need.
    #[derive(Deserialize)]
    struct Labelled {
        namespace: String,
        name: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }
    let items = serde_json::from_str::<Items<Labelled>>(services)?.items;
    Ok(items
        .into_iter()
        .map(|s| ((s.namespace, s.name), s.labels))
        .collect())
}

/// The labels of the Endpoints `namespace/name`: its Service's.
fn endpoints_labels<'a>(
    namespace: &str,
    name: &str,
    service_labels: &'a ServiceLabels,
) -> &'a BTreeMap<String, String> {
    if service_labels.is_empty() {
        return &NO_LABELS;
    }
    service_labels
        .get(&(namespace.to_string(), name.to_string()))
        .unwrap_or(&NO_LABELS)
}

/// An item of the admin API as a kubectl object: its fields with
/// `apiVersion` and `kind` set (over any field of the item by those
/// names). Keys come out sorted, as serde_json's map keeps them, not
/// `apiVersion` and `kind` first.
fn object(kind: GetKind, value: Value) -> Value {
    let mut m = Map::new();
    m.insert("apiVersion".into(), Value::String("v1".into()));
    m.insert("kind".into(), Value::String(kind.kind().into()));
    if let Value::Object(fields) = value {
        for (key, v) in fields {
            m.entry(key).or_insert(v);
        }
    }
    Value::Object(m)
}

/// kubectl's list of several objects: `kind: List`.
fn list_of(items: Vec<Value>) -> Value {
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), Value::String(String::new()));
    let mut m = Map::new();
    m.insert("apiVersion".into(), Value::String("v1".into()));
    m.insert("items".into(), Value::Array(items));
    m.insert("kind".into(), Value::String("List".into()));
    m.insert("metadata".into(), Value::Object(metadata));
    Value::Object(m)
}

/// `document` as `-o json` (indented by four, as kubectl) or `-o yaml`.
fn encode(document: &Value, output: OutputFormat) -> Result<String, AdminError> {
    let mut text = if output == OutputFormat::Yaml {
        serde_yaml_ng::to_string(document).map_err(|e| AdminError::Encode {
            format: "YAML",
            message: e.to_string(),
        })?
    } else {
        use serde::Serialize;
        let mut buf = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
        document
            .serialize(&mut ser)
            .map_err(|e| AdminError::Encode {
                format: "JSON",
                message: e.to_string(),
            })?;
        String::from_utf8_lossy(&buf).into_owned()
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;
    use crate::ops::views::{CONNECTIONS_PATH, ENDPOINTS_PATH};

    /// 2024-05-01T12:00:00Z, when every object below was created.
    const CREATED: u64 = 1_714_564_800;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(CREATED + 90)
    }

    /// A service as `/api/v1/services` shows it, with one TCP port, the
    /// labels given and a field this CLI does not know (a newer proxy's).
    fn service(namespace: &str, name: &str, cluster_ip: &str, labels: Value) -> Value {
        json!({
            "namespace": namespace,
            "name": name,
            "type": "ClusterIP",
            "cluster_ip": cluster_ip,
            "external_ips": [],
            "load_balancer_ingress": [],
            "ip_pool": "",
            "session_affinity": "None",
            "health_check_node_port": 0,
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "target_port": 8080, "node_port": 0}],
            "bind_errors": [],
            "created": "2024-05-01T12:00:00Z",
            "labels": labels,
            "zz_added_later": {"b": 1, "a": [true]},
        })
    }

    fn endpoints(namespace: &str, name: &str, ips: &[&str]) -> Value {
        let endpoints: Vec<Value> = ips
            .iter()
            .map(|ip| {
                json!({
                    "ip": ip, "port": 8080, "port_name": "http", "protocol": "TCP",
                    "node": "", "weight": 1, "ready": true, "serving": true,
                    "terminating": false, "active_connections": 0,
                })
            })
            .collect();
        json!({
            "namespace": namespace,
            "name": name,
            "endpoints": endpoints,
            "created": "2024-05-01T12:00:00Z",
        })
    }

    /// The API's answers: three services (one that cannot bind), their
    /// endpoints, two connections.
    fn bodies() -> Bodies {
        let mut web = service("default", "web", "127.96.0.10", json!({"app": "web"}));
        web["bind_errors"] = json!([{
            "address": "127.96.0.10:80", "protocol": "TCP", "error": "Address already in use (os error 98)",
        }]);
        let services = json!({"items": [
            service("data", "db", "127.96.0.20", json!({"app": "db"})),
            web,
            service("default", "api", "None", json!({})),
        ]});
        let endpoints = json!({"items": [
            endpoints("data", "db", &["127.0.245.1"]),
            endpoints("default", "web", &["127.0.244.1", "127.0.244.2"]),
            endpoints("default", "api", &[]),
        ]});
        let connection = |id: u64, client: &str| {
            json!({
                "id": id, "client": client, "frontend": "127.96.0.10:80",
                "namespace": "default", "service": "web", "port": "http", "protocol": "TCP",
                "endpoint": "127.0.244.1:8080", "pick_reason": "round_robin",
                "started": "2024-05-01T12:00:30Z", "age_seconds": 60, "bytes_rx": 5, "bytes_tx": 7,
            })
        };
        let connections = json!({"items": [connection(7, "127.0.0.1:40000"), connection(9, "127.0.0.1:40002")],
            "continue": "", "total": 2});
        Bodies(BTreeMap::from([
            (SERVICES_PATH, services.to_string()),
            (ENDPOINTS_PATH, endpoints.to_string()),
            (CONNECTIONS_PATH, connections.to_string()),
        ]))
    }

    fn get(args: &[&str], all: bool, selector: Option<&str>, output: OutputFormat) -> GetOutput {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let request = GetRequest::parse(&args, None, all, selector, output, false).unwrap();
        render("127.0.0.1:1", &request, &bodies(), now()).unwrap()
    }

    #[test]
    fn a_services_table_is_printed_with_a_warning_per_frontend_that_cannot_bind() {
        let out = get(&["services"], true, None, OutputFormat::Table);
        assert_eq!(
            out.stdout,
            "\
NAMESPACE   NAME   TYPE        CLUSTER-IP    EXTERNAL-IP   PORT(S)   AGE
data        db     ClusterIP   127.96.0.20   <none>        80/TCP    90s
default     web    ClusterIP   127.96.0.10   <none>        80/TCP    90s
default     api    ClusterIP   None          <none>        80/TCP    90s
"
        );
        assert_eq!(
            out.stderr,
            "Warning: service default/web: cannot listen on 127.96.0.10:80/TCP: \
             Address already in use (os error 98)\n"
        );
        assert!(out.success);
    }

    #[test]
    fn json_prints_the_objects_as_the_api_sent_them_unknown_fields_included() {
        let out = get(&["services", "api"], false, None, OutputFormat::Json);
        assert_eq!(
            out.stdout,
            r#"{
    "apiVersion": "v1",
    "bind_errors": [],
    "cluster_ip": "None",
    "created": "2024-05-01T12:00:00Z",
    "external_ips": [],
    "health_check_node_port": 0,
    "ip_pool": "",
    "kind": "Service",
    "labels": {},
    "load_balancer_ingress": [],
    "name": "api",
    "namespace": "default",
    "ports": [
        {
            "name": "http",
            "node_port": 0,
            "port": 80,
            "protocol": "TCP",
            "target_port": 8080
        }
    ],
    "session_affinity": "None",
    "type": "ClusterIP",
    "zz_added_later": {
        "a": [
            true
        ],
        "b": 1
    }
}
"#
        );
        let list = get(&["services"], false, Some("app"), OutputFormat::Json);
        let printed: Value = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(printed["kind"], "List");
        let names: Vec<&Value> = printed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &i["name"])
            .collect();
        assert_eq!(names, [&json!("web")]);
    }

    #[test]
    fn names_are_listed_in_the_order_asked_and_a_missing_one_is_not_found() {
        let out = get(
            &["svc", "api", "nope", "web"],
            false,
            None,
            OutputFormat::Name,
        );
        assert_eq!(out.stdout, "service/api\nservice/web\n");
        assert_eq!(
            out.stderr,
            "Error from server (NotFound): services \"nope\" not found\n"
        );
        assert!(!out.success);
        let out = get(&["svc", "web", "api"], false, None, OutputFormat::Table);
        assert_eq!(
            out.stdout,
            "\
NAME   TYPE        CLUSTER-IP    EXTERNAL-IP   PORT(S)   AGE
web    ClusterIP   127.96.0.10   <none>        80/TCP    90s
api    ClusterIP   None          <none>        80/TCP    90s
"
        );
    }

    #[test]
    fn endpoints_are_picked_by_their_services_labels() {
        for output in [OutputFormat::Table, OutputFormat::Json] {
            let out = get(&["endpoints"], true, Some("app in (db,web)"), output);
            let wanted = if output == OutputFormat::Table {
                "\
NAMESPACE   NAME   ENDPOINTS                           AGE
data        db     127.0.245.1:8080                    90s
default     web    127.0.244.1:8080,127.0.244.2:8080   90s
"
                .to_string()
            } else {
                let items: Vec<Value> = serde_json::from_str::<Value>(&out.stdout).unwrap()
                    ["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["name"].clone())
                    .collect();
                assert_eq!(items, [json!("db"), json!("web")]);
                out.stdout.clone()
            };
            assert_eq!(out.stdout, wanted);
        }
        let out = get(&["ep"], false, Some("!app"), OutputFormat::Name);
        assert_eq!(out.stdout, "endpoints/api\n");
    }

    #[test]
    fn connections_are_named_by_their_service_and_printed_by_id() {
        let out = get(&["connections", "web"], false, None, OutputFormat::Name);
        assert_eq!(out.stdout, "connection/7\nconnection/9\n");
        let out = get(&["svc,conn"], false, Some("app=web"), OutputFormat::Table);
        assert_eq!(
            out.stdout,
            "\
NAME          TYPE        CLUSTER-IP    EXTERNAL-IP   PORT(S)   AGE
service/web   ClusterIP   127.96.0.10   <none>        80/TCP    90s
"
        );
        let out = get(&["conn"], true, None, OutputFormat::Table);
        assert_eq!(
            out.stdout,
            "\
NAMESPACE   NAME   CLIENT            ENDPOINT           REASON        RX    TX    AGE
default     web    127.0.0.1:40000   127.0.244.1:8080   round_robin   5     7     60s
default     web    127.0.0.1:40002   127.0.244.1:8080   round_robin   5     7     60s
"
        );
    }

    #[test]
    fn nothing_kept_is_said_on_stderr() {
        let out = get(&["svc"], false, Some("app=none"), OutputFormat::Table);
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("", "No resources found in default namespace.\n")
        );
        let out = get(&["svc"], true, Some("app=none"), OutputFormat::Json);
        assert!(out.stderr.is_empty());
        assert!(out.stdout.contains("\"items\": []"));
    }
}
