//! `docs/configuration.md`, rendered from the [schema](super::schema): one
//! section per table, one row per key with its type, default and
//! description, then the annotated example. Generated, never written by
//! hand, so it names every key lb reads and no key it does not.

use serde_json::{Map, Value};

/// The top-level tables in the order a file usually has them (the order of
/// [`crate::raw::RawConfig`]'s fields).
pub const TOP_LEVEL: [&str; 11] = [
    "node",
    "cluster",
    "proxy",
    "admin",
    "log",
    "dns",
    "source",
    "ip_pools",
    "pods",
    "services",
    "endpoints",
];

const INTRO: &str = r#"# Configuration reference

<!-- Generated from the doc comments of lb-config/src/raw.rs (through the JSON
Schema, docs/lb.schema.json): edit those, then run
`LB_UPDATE_DOCS=1 cargo test -p lb-proxy --test it config_reference::`. A test
fails while this file differs from what the code generates. -->

lb-proxy reads one TOML file (`--config FILE`). Every table is optional: an
empty file is valid (a file of zero bytes is refused as a likely mistake;
write a comment). Objects can also come from Kubernetes manifests
(`--manifests PATH`) and from etcd (`[source.etcd]`); the settings tables come
from the file only.

- `lb-proxy check --config FILE` validates a file as `run` would (allocations
  included) and prints every error, one per line:
  `FILE:LINE:COLUMN: services[web].ports[0].port: Invalid value: 0: must be
  between 1 and 65535, inclusive`.
- `lb-proxy config dump --config FILE` prints the configuration in force:
  every setting with its default filled in, and the cluster IPs, node ports
  and LoadBalancer addresses as allocated.
- `lb-proxy config schema` prints the JSON Schema of the file, the same as
  [`lb.schema.json`](lb.schema.json). Editors that read JSON Schema for TOML
  ([taplo](https://taplo.tamasfe.dev/), and VS Code's Even Better TOML, which
  uses it) complete keys, show these descriptions and flag unknown keys and
  wrong types as you type when the file's first line is
  `#:schema ./lb.schema.json` (a path relative to the file, or a URL). Taplo
  can also map files to the schema in `.taplo.toml`:
  `[[rule]]` / `include = ["lb.toml"]` / `schema.path = "docs/lb.schema.json"`
  (see taplo's configuration docs).

Conventions:

- Keys are Kubernetes' field names in snake_case (`clusterIP` is
  `cluster_ip`), so a Service reads the same here as in its manifest.
- An unknown key is an error, never ignored (a typo would silently do
  nothing).
- Durations are strings: `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"1h 30m"`.
  Keys ending in `_ms` are integer milliseconds, `_seconds` integer seconds.
- Addresses are strings: `"10.96.0.10"`, `"127.0.0.1:10249"`,
  `"10.96.0.0/12"`.
- A key with no default listed defaults to "none" (absent), or is described
  in its row. Lists have the bounds given in their row (`at most N`).
- Errors name the key by its path: `services[NAME]` (or
  `services[NAMESPACE/NAME]`) for an object in a list, then its keys.
"#;

/// The reference: an introduction (the conventions), one section per table of `schema` (from
/// [`super::schema`]), and `example` (the annotated file,
/// `examples/complete.toml`) at the end.
pub fn reference(schema: &Value, example: &str) -> String {
    let mut out = String::from(INTRO);
    let mut sections = Vec::new();
    let empty = Map::new();
    let root = schema.as_object().unwrap_or(&empty);
    let properties = object(root.get("properties"));
    for key in TOP_LEVEL {
        if let Some(p) = properties.get(key) {
            walk(schema, key, p, &mut sections);
        }
    }
    out.push_str("\n## Tables\n\n");
    for s in &sections {
        out.push_str(&format!("- [`{}`](#{})\n", s.heading, anchor(&s.path)));
    }
    for s in &sections {
        out.push_str(&s.text);
    }
    out.push_str(
        "\n## A complete example\n\n\
         `examples/complete.toml`, loaded and validated by a test:\n\n```toml\n",
    );
    out.push_str(example);
    if !example.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("```\n");
    out
}

/// One table's section.
struct Section {
    path: String,
    heading: String,
    text: String,
}

fn object(value: Option<&Value>) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    value
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

/// The definition a property refers to (`$ref` or `allOf: [{$ref}]`), if any.
fn target<'s>(schema: &'s Value, property: &'s Value) -> Option<&'s Value> {
    let reference = property
        .get("$ref")
        .or_else(|| property.pointer("/allOf/0/$ref"))?
        .as_str()?;
    schema.pointer(reference.strip_prefix('#')?)
}

/// Whether `property` holds one table (`Some(false)`), a list of tables
/// (`Some(true)`), or a value (`None`), and the table's schema.
fn table<'s>(schema: &'s Value, property: &'s Value) -> Option<(bool, &'s Value)> {
    if let Some(t) = target(schema, property) {
        return t.get("properties").is_some().then_some((false, t));
    }
    let items = property.get("items")?;
    let t = target(schema, items)?;
    t.get("properties").is_some().then_some((true, t))
}

fn anchor(path: &str) -> String {
    path.replace('.', "-")
}

fn walk(schema: &Value, path: &str, property: &Value, sections: &mut Vec<Section>) {
    let Some((list, definition)) = table(schema, property) else {
        return;
    };
    let heading = if list {
        format!("[[{path}]]")
    } else {
        format!("[{path}]")
    };
    let mut text = format!("\n<a id=\"{}\"></a>\n\n### `{heading}`\n\n", anchor(path));
    let about = property
        .get("description")
        .or_else(|| definition.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !about.is_empty() {
        text.push_str(about);
        text.push_str("\n\n");
    }
    let required: Vec<&str> = definition
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    text.push_str("| Key | Type | Default | Description |\n|---|---|---|---|\n");
    let properties = object(definition.get("properties"));
    let mut nested = Vec::new();
    for (key, p) in properties {
        let child = format!("{path}.{key}");
        let kind = match table(schema, p) {
            Some((true, _)) => {
                nested.push((child.clone(), p));
                format!("tables: [`[[{child}]]`](#{})", anchor(&child))
            }
            Some((false, _)) => {
                nested.push((child.clone(), p));
                format!("table: [`[{child}]`](#{})", anchor(&child))
            }
            None => with_unit(key, type_name(schema, p)),
        };
        let default = if required.contains(&key.as_str()) {
            "required".to_string()
        } else {
            p.get("default")
                .map_or_else(|| "—".to_string(), |d| format!("`{}`", toml_value(d)))
        };
        let description = p
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .replace("\n\n", "<br><br>")
            .replace('|', "\\|");
        text.push_str(&format!(
            "| `{key}` | {kind} | {default} | {description} |\n"
        ));
    }
    sections.push(Section {
        path: path.to_string(),
        heading,
        text,
    });
    for (child, p) in nested {
        walk(schema, &child, p, sections);
    }
}

/// A value's type in words: `string`, `integer`, `array of strings`,
/// `integer or string`, `duration (string)`...
fn type_name(schema: &Value, p: &Value) -> String {
    if let Some(alternatives) = p
        .get("oneOf")
        .or_else(|| target(schema, p).and_then(|t| t.get("oneOf")))
        .and_then(Value::as_array)
    {
        let names: Vec<String> = alternatives.iter().map(|a| type_name(schema, a)).collect();
        return names.join(" or ");
    }
    let base = match p.get("type").and_then(Value::as_str) {
        Some("array") => {
            let items = p
                .get("items")
                .map_or("value".into(), |i| type_name(schema, i));
            let mut t = format!("array of {items}s");
            if let Some(max) = p.get("maxItems") {
                t.push_str(&format!(" (at most {max})"));
            }
            t
        }
        Some("object") => {
            let values = p
                .get("additionalProperties")
                .map_or("value".into(), |v| type_name(schema, v));
            format!("table of {values}s")
        }
        Some(t) => t.to_string(),
        None => "value".to_string(),
    };
    let is_duration = p
        .get("default")
        .and_then(Value::as_str)
        .is_some_and(|d| humantime::parse_duration(d).is_ok());
    if is_duration {
        "duration (string)".to_string()
    } else {
        base
    }
}

/// The unit a key's name states: `_ms` milliseconds, `_seconds` seconds.
fn with_unit(key: &str, kind: String) -> String {
    if key.ends_with("_ms") {
        format!("{kind}, milliseconds")
    } else if key.ends_with("_seconds") || key == "ttl" {
        format!("{kind}, seconds")
    } else {
        kind
    }
}

/// A default as TOML writes it.
fn toml_value(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}
