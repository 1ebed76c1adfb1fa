//! What `lb-proxy get` prints for a [`GetRequest`]: the admin API's lists,
//! narrowed to the namespace, the names and the labels asked, printed as
//! kubectl prints them (tables, `-o json|yaml|name`, "No resources found",
//! `Error from server (NotFound)`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::request::{GetKind, GetRequest, OutputFormat};
use super::{fetch, url, AdminError};
use crate::control::events::{Event, EventList};
use crate::ops::views::{
    self, ConnectionList, EndpointsList, PodList, ServiceList, Table, TableOptions, SERVICES_PATH,
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

/// One object kept for printing.
struct Kept {
    kind: GetKind,
    /// What `-o name` prints after `kind/`.
    object_name: String,
    value: Value,
}

/// Turns the answers in `bodies` into what `lb-proxy get` prints (`admin`
/// only names the source in errors); `get -w` calls it for each changed
/// answer.
pub fn render(
    admin: &str,
    request: &GetRequest,
    bodies: &Bodies,
    now: SystemTime,
) -> Result<GetOutput, AdminError> {
    let parse = |path: &'static str| -> Result<Value, AdminError> {
        let body = bodies.0.get(path).map_or("{}", String::as_str);
        serde_json::from_str(body).map_err(|source| AdminError::Json {
            url: url(admin, path),
            source,
        })
    };
    let service_labels = match bodies.0.get(SERVICES_PATH) {
        Some(_) => labels_by_name(&parse(SERVICES_PATH)?),
        None => BTreeMap::new(),
    };
    let mut out = GetOutput {
        success: true,
        ..GetOutput::default()
    };
    let mut kept: Vec<Kept> = Vec::new();
    let mut tables: Vec<String> = Vec::new();
    for (kind, names) in &request.targets {
        let list = parse(kind.path())?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let mut chosen: Vec<(Identity, Value)> = Vec::new();
        for item in items {
            let id = identity(*kind, &item, &service_labels);
            let in_namespace = request
                .namespace
                .as_deref()
                .is_none_or(|ns| id.namespace == ns);
            if in_namespace && request.selector.matches(&id.labels) {
                chosen.push((id, item));
            }
        }
        if !names.is_empty() {
            let mut named = Vec::new();
            for name in names {
                let before = named.len();
                named.extend(chosen.iter().filter(|(id, _)| &id.name == name).cloned());
                if named.len() == before {
                    out.success = false;
                    out.stderr.push_str(&format!(
                        "Error from server (NotFound): {} \"{name}\" not found\n",
                        kind.resource()
                    ));
                }
            }
            chosen = named;
        }
        if chosen.is_empty() {
            continue;
        }
        let values: Vec<Value> = chosen.iter().map(|(_, v)| v.clone()).collect();
        match request.output {
            OutputFormat::Table | OutputFormat::Wide => {
                if *kind == GetKind::Services {
                    out.stderr.push_str(&bind_warnings(&chosen));
                }
                let wide = request.output == OutputFormat::Wide;
                let mut narrowed = list.clone();
                narrowed["items"] = Value::Array(values);
                let table =
                    table(*kind, narrowed, now, wide).map_err(|source| AdminError::Json {
                        url: url(admin, kind.path()),
                        source,
                    })?;
                tables.push(table.render(&TableOptions {
                    namespace_column: request.namespace.is_none(),
                    kind_prefix: request.several_kinds().then(|| kind.prefix()),
                    headers: !request.no_headers,
                }));
            }
            OutputFormat::Json | OutputFormat::Yaml | OutputFormat::Name => {
                kept.extend(chosen.into_iter().map(|(id, value)| Kept {
                    kind: *kind,
                    object_name: id.object_name,
                    value,
                }));
            }
        }
    }
    match request.output {
        OutputFormat::Table | OutputFormat::Wide => {
            // kubectl parts kinds with an empty line, unless headerless.
            let separator = if request.no_headers { "" } else { "\n" };
            out.stdout = tables.join(separator);
        }
        OutputFormat::Name => {
            for k in &kept {
                out.stdout
                    .push_str(&format!("{}/{}\n", k.kind.prefix(), k.object_name));
            }
        }
        OutputFormat::Json | OutputFormat::Yaml => {
            let single = request.targets.len() == 1
                && request.targets[0].1.len() == 1
                && kept.len() == 1
                && request.targets[0].0 != GetKind::Connections;
            let document = if single {
                kept.pop().map(object).unwrap_or_default()
            } else {
                list_of(kept.into_iter().map(object).collect())
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

/// A frontend that cannot be bound serves no one, and kubectl's table has
/// no column for it: one `Warning:` line on stderr per such frontend, as
/// kubectl prints the API server's warnings.
fn bind_warnings(chosen: &[(Identity, Value)]) -> String {
    let mut out = String::new();
    for (id, service) in chosen {
        for e in service["bind_errors"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "Warning: service {}/{}: cannot listen on {}/{}: {}\n",
                id.namespace,
                id.name,
                text(&e["address"]),
                text(&e["protocol"]),
                text(&e["error"])
            ));
        }
    }
    out
}

/// Where an object is and what it is called, for the filters.
#[derive(Debug, Clone)]
struct Identity {
    namespace: String,
    /// What a NAME argument matches.
    name: String,
    /// What `-o name` prints after `kind/` (the name, but a connection's id).
    object_name: String,
    labels: BTreeMap<String, String>,
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

/// Each service's labels by (namespace, name).
fn labels_by_name(services: &Value) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    services["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|s| {
                    (
                        (text(&s["namespace"]), text(&s["name"])),
                        labels_of(&s["labels"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn identity(
    kind: GetKind,
    item: &Value,
    service_labels: &BTreeMap<(String, String), BTreeMap<String, String>>,
) -> Identity {
    let namespace = text(&item["namespace"]);
    let name = text(&item["name"]);
    match kind {
        GetKind::Services | GetKind::Pods => Identity {
            labels: labels_of(&item["labels"]),
            object_name: name.clone(),
            namespace,
            name,
        },
        GetKind::Endpoints => Identity {
            labels: service_labels
                .get(&(namespace.clone(), name.clone()))
                .cloned()
                .unwrap_or_default(),
            object_name: name.clone(),
            namespace,
            name,
        },
        GetKind::Connections => Identity {
            name: text(&item["service"]),
            object_name: text(&item["id"]),
            namespace,
            labels: BTreeMap::new(),
        },
        GetKind::Events => match serde_json::from_value::<Event>(item.clone()) {
            Ok(e) => {
                let name = views::event_name(&e);
                Identity {
                    namespace: views::event_namespace(&e).to_string(),
                    object_name: name.clone(),
                    name,
                    labels: BTreeMap::new(),
                }
            }
            Err(_) => Identity {
                namespace: String::new(),
                name: String::new(),
                object_name: String::new(),
                labels: BTreeMap::new(),
            },
        },
    }
}

fn typed<T: DeserializeOwned>(list: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(list)
}

/// The table of `kind` for the narrowed `list`.
fn table(
    kind: GetKind,
    list: Value,
    now: SystemTime,
    wide: bool,
) -> Result<Table, serde_json::Error> {
    Ok(match kind {
        GetKind::Services => views::services_table(&typed::<ServiceList>(list)?, now, wide),
        GetKind::Endpoints if wide => {
            views::endpoints_wide_table(&typed::<EndpointsList>(list)?, now)
        }
        GetKind::Endpoints => views::endpoints_table(&typed::<EndpointsList>(list)?, now),
        GetKind::Pods => views::pods_table(&typed::<PodList>(list)?, now, wide),
        GetKind::Connections => views::connections_table(&typed::<ConnectionList>(list)?, wide),
        GetKind::Events => views::events_table(&typed::<EventList>(list)?, now, wide),
    })
}

/// An item of the admin API as a kubectl object: `apiVersion` and `kind`
/// first, then its fields.
fn object(k: Kept) -> Value {
    let mut m = Map::new();
    m.insert("apiVersion".into(), Value::String("v1".into()));
    m.insert("kind".into(), Value::String(k.kind.kind().into()));
    if let Value::Object(fields) = k.value {
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
