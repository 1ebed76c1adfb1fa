//! The JSON Schema of the TOML file, derived from [`crate::raw`] (feature
//! `schema`): what `lb-proxy config schema` prints and `docs/lb.schema.json`
//! holds, so an editor (taplo, Even Better TOML) completes and checks a file
//! against exactly what lb parses. The doc comments of `raw` are its
//! descriptions; [`mod@reference`] renders the same into `docs/configuration.md`.

pub mod reference;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use crate::raw::{self, RawConfig};

/// The bounds the doc comments name (`[`MAX_...`]`), with their values, so the
/// schema and the reference print numbers, not Rust names.
pub const LIMITS: &[(&str, usize)] = &[
    ("MAX_NODE_ADDRESSES", raw::MAX_NODE_ADDRESSES),
    (
        "MAX_ALLOWED_EXTERNAL_CIDRS",
        raw::MAX_ALLOWED_EXTERNAL_CIDRS,
    ),
    ("MAX_CONNECT_TIMEOUTS", raw::MAX_CONNECT_TIMEOUTS),
    ("MAX_ALLOWED_HOSTS", raw::MAX_ALLOWED_HOSTS),
    ("MAX_DNS_UPSTREAMS", raw::MAX_DNS_UPSTREAMS),
    ("MAX_SERVICE_PORTS", raw::MAX_SERVICE_PORTS),
    ("MAX_EXTERNAL_IPS", raw::MAX_EXTERNAL_IPS),
    ("MAX_SOURCE_RANGES", raw::MAX_SOURCE_RANGES),
    ("MAX_ZONE_HINTS", raw::MAX_ZONE_HINTS),
    ("MAX_POOL_ADDRESSES", raw::MAX_POOL_ADDRESSES),
];

/// The schema (JSON Schema draft 7, the newest taplo reads whole), with
/// descriptions from `raw`'s doc comments. TOML has no null: an optional
/// field is one that may be left out, so the `null` schemars gives every
/// `Option` is removed.
pub fn schema() -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    let mut value = generator.into_root_schema_for::<RawConfig>().to_value();
    tidy(&mut value);
    add_defaults(&mut value);
    if let Value::Object(root) = &mut value {
        root.insert("title".into(), "lb-proxy configuration file (TOML)".into());
    }
    value
}

/// The settings tables' defaults, as lb applies them: the settings in force
/// for an empty file (and for a `[dns]` that names only its required
/// `listen`), from [`crate::effective`]. `node.name` (this host's name) has
/// none to state.
fn add_defaults(schema: &mut Value) {
    let empty = RawConfig::default();
    let Ok(config) = crate::check_str("[dns]\nlisten = \"127.0.0.1:53\"\n") else {
        return;
    };
    let effective = crate::effective::effective(&empty, &config);
    let tables: [(&str, Value); 6] = [
        ("RawNode", to_value(&effective.node)),
        ("RawCluster", to_value(&effective.cluster)),
        ("RawProxy", to_value(&effective.proxy)),
        ("RawAdmin", to_value(&effective.admin)),
        ("RawLog", to_value(&effective.log)),
        ("RawDns", to_value(&effective.dns)),
    ];
    for (definition, defaults) in tables {
        let Value::Object(defaults) = defaults else {
            continue;
        };
        let Some(Value::Object(properties)) =
            schema.pointer_mut(&format!("/definitions/{definition}/properties"))
        else {
            continue;
        };
        for (key, default) in defaults {
            let required = (definition, key.as_str()) == ("RawDns", "listen");
            let host = (definition, key.as_str()) == ("RawNode", "name");
            if required || host || default.is_null() {
                continue;
            }
            if let Some(Value::Object(property)) = properties.get_mut(&key) {
                property.insert("default".into(), default);
            }
        }
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The schema as `lb-proxy config schema` prints it: pretty JSON, one
/// trailing newline.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// Removes the `null` alternatives of optional fields and defaults of
/// `null`, and rewrites descriptions for readers who have no rustdoc.
fn tidy(value: &mut Value) {
    match value {
        Value::Object(map) => {
            drop_null(map);
            ref_alone(map);
            if let Some(Value::String(d)) = map.get_mut("description") {
                *d = describe(d);
            }
            for v in map.values_mut() {
                tidy(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// A `$ref` with siblings (a description) as `allOf: [{$ref}]` plus the
/// siblings: draft 7 ignores the siblings of a `$ref`.
fn ref_alone(map: &mut Map<String, Value>) {
    if map.len() > 1 {
        if let Some(target) = map.remove("$ref") {
            let mut only = Map::new();
            only.insert("$ref".into(), target);
            map.insert("allOf".into(), Value::Array(vec![Value::Object(only)]));
        }
    }
}

fn drop_null(map: &mut Map<String, Value>) {
    // schemars' defaults are `Default::default()`'s (an empty name, port
    // 0), not lb's: the real ones are added by `add_defaults`.
    map.remove("default");
    if let Some(Value::Array(types)) = map.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            map.insert("type".into(), only);
        }
    }
    // `int64` and friends say nothing to a TOML editor.
    if map.get("type") == Some(&Value::String("integer".into())) {
        map.remove("format");
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(alts)) = map.get_mut(key) else {
            continue;
        };
        alts.retain(|a| a.get("type") != Some(&Value::String("null".into())));
        if alts.len() == 1 {
            let Some(Value::Object(only)) = alts.pop() else {
                continue;
            };
            map.remove(key);
            for (k, v) in only {
                map.entry(k).or_insert(v);
            }
        }
    }
}

/// A doc comment as a description: rustdoc links (`` [`X`] ``) become code,
/// a bound's name gets its value, and the lines of a paragraph join.
pub fn describe(doc: &str) -> String {
    let mut out = doc
        .split("\n\n")
        .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n");
    for (name, value) in LIMITS {
        out = out.replace(&format!("[`{name}`]"), &format!("{value}"));
    }
    // Links to the crate's own items: their names, as code.
    while let Some(start) = out.find("[`") {
        let Some(len) = out[start..].find("`]") else {
            break;
        };
        let inner = out[start + 2..start + len].to_string();
        let shown = inner.rsplit("::").next().unwrap_or(&inner).to_string();
        out.replace_range(start..start + len + 2, &format!("`{shown}`"));
    }
    out
}
