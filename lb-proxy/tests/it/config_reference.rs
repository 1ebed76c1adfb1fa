//! The file's reference as a newcomer meets it: `docs/lb.schema.json` and
//! `docs/configuration.md` are what the code generates (a stale copy fails;
//! `LB_UPDATE_DOCS=1` rewrites them), `lb-proxy config schema` prints the
//! same schema, the annotated example validates against lb and the schema,
//! and `lb-proxy config dump` writes a file that loads to the same services.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::bin::{combined, lb};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example() -> PathBuf {
    repo().join("examples/complete.toml")
}

/// Compares `path` with `generated`; with `LB_UPDATE_DOCS=1`, writes it.
fn up_to_date(path: &Path, generated: &str) {
    if std::env::var("LB_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(path, generated).expect("write the generated doc");
        return;
    }
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} is stale: regenerate it with `LB_UPDATE_DOCS=1 cargo test -p lb-proxy --test it config_reference::`",
        path.display()
    );
}

fn reference() -> String {
    let example = std::fs::read_to_string(example()).expect("read examples/complete.toml");
    lb_config::schema::reference::reference(&lb_config::schema::schema(), &example)
}

#[test]
fn the_schema_in_docs_is_the_one_the_code_generates() {
    up_to_date(
        &repo().join("docs/lb.schema.json"),
        &lb_config::schema::schema_text(),
    );
}

#[test]
fn the_configuration_reference_is_the_one_the_code_generates() {
    up_to_date(&repo().join("docs/configuration.md"), &reference());
}

#[test]
fn the_reference_names_every_key_of_the_file_and_no_other() {
    let doc = reference();
    let schema = lb_config::schema::schema();
    let top = schema["properties"].as_object().expect("root properties");
    let listed: Vec<&str> = lb_config::schema::reference::TOP_LEVEL.to_vec();
    let mut keys: Vec<&str> = top.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "TOP_LEVEL must list every table of RawConfig");
    for (name, definition) in schema["definitions"].as_object().expect("definitions") {
        for key in definition["properties"].as_object().into_iter().flatten() {
            let row = format!("| `{}` |", key.0);
            assert!(doc.contains(&row), "{name}.{} has no row", key.0);
        }
    }
    // Every row is a key of some table of the schema.
    let all_keys: Vec<String> = schema["definitions"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(_, d)| d["properties"].as_object().into_iter().flatten())
        .map(|(k, _)| k.clone())
        .chain(top.keys().cloned())
        .collect();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let key = line[3..].split('`').next().unwrap_or("");
        assert!(
            all_keys.iter().any(|k| k == key),
            "{key} is no key of the file"
        );
    }
    // The bounds are numbers, not Rust names.
    assert!(!doc.contains("MAX_"), "a bound left as a Rust name");
    assert!(
        doc.contains("`[250, 500, 1000, 2000]`"),
        "connect_timeouts_ms' default"
    );
}

#[test]
fn config_schema_prints_the_schema_of_docs() {
    let out = lb(["config", "schema"]);
    assert!(out.status.success(), "{}", combined(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let docs = std::fs::read_to_string(repo().join("docs/lb.schema.json")).expect("docs schema");
    let docs: Value = serde_json::from_str(&docs).expect("JSON");
    assert!(
        printed == docs,
        "config schema differs from docs/lb.schema.json"
    );
    assert_eq!(
        printed["$schema"],
        "http://json-schema.org/draft-07/schema#"
    );
}

#[test]
fn the_complete_example_is_valid_and_matches_the_schema() {
    let out = lb([OsString::from("check"), "--config".into(), example().into()]);
    assert!(out.status.success(), "{}", combined(&out));
    let text = std::fs::read_to_string(example()).expect("example");
    let value: Value = toml::from_str::<toml::Value>(&text)
        .map(|t| serde_json::to_value(t).expect("JSON"))
        .expect("TOML");
    let schema = lb_config::schema::schema();
    let errors = schema_check::errors(&schema, &schema, &value, "");
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn the_schema_refuses_unknown_keys_wrong_types_missing_names_and_long_lists() {
    let schema = lb_config::schema::schema();
    let check = |toml_text: &str| {
        let value = serde_json::to_value(toml::from_str::<toml::Value>(toml_text).expect("TOML"))
            .expect("JSON");
        schema_check::errors(&schema, &schema, &value, "")
    };
    assert!(check("[proxy]\nmax_connections = 5\n").is_empty());
    assert!(!check("[proxy]\nmax_conections = 5\n").is_empty());
    assert!(!check("[proxy]\nmax_connections = \"5\"\n").is_empty());
    assert!(!check("[[services]]\nports = [{ port = 80 }]\n").is_empty());
    assert!(
        check("[[services]]\nname = \"a\"\nports = [{ port = 80, target_port = \"http\" }]\n")
            .is_empty()
    );
    assert!(
        !check("[[services]]\nname = \"a\"\nports = [{ port = 80, target_port = true }]\n")
            .is_empty()
    );
    let many = vec!["250"; 17].join(", ");
    assert!(!check(&format!("[proxy]\nconnect_timeouts_ms = [{many}]\n")).is_empty());
}

/// The part of JSON Schema draft 7 that lb's schema uses, checked
/// structurally (`type`, `properties`, `additionalProperties`, `required`,
/// `items`, `maxItems`, `oneOf`, `allOf`, `$ref`): enough to show that the
/// example and the schema agree without a validator crate.
mod schema_check {
    use serde_json::Value;

    pub(super) fn errors(root: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let target = root
                .pointer(r.trim_start_matches('#'))
                .expect("a $ref that resolves");
            out.extend(errors(root, target, value, at));
        }
        for s in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(errors(root, s, value, at));
        }
        if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
            let matching = alternatives
                .iter()
                .filter(|s| errors(root, s, value, at).is_empty())
                .count();
            if matching != 1 {
                out.push(format!("{at}: matches {matching} of oneOf"));
            }
        }
        if let Some(t) = schema.get("type").and_then(Value::as_str) {
            let ok = match t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "boolean" => value.is_boolean(),
                _ => true,
            };
            if !ok {
                out.push(format!("{at}: not of type {t}: {value}"));
                return out;
            }
        }
        if let (Some(max), Some(items)) = (schema.get("maxItems"), value.as_array()) {
            if items.len() as u64 > max.as_u64().unwrap_or(u64::MAX) {
                out.push(format!("{at}: more than {max} items"));
            }
        }
        if let (Some(item), Some(items)) = (schema.get("items"), value.as_array()) {
            for (i, v) in items.iter().enumerate() {
                out.extend(errors(root, item, v, &format!("{at}[{i}]")));
            }
        }
        if let Some(map) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !map.contains_key(r.as_str().unwrap_or("")) {
                    out.push(format!("{at}: {r} is required"));
                }
            }
            for (k, v) in map {
                let path = format!("{at}.{k}");
                match (
                    properties.and_then(|p| p.get(k)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => out.extend(errors(root, s, v, &path)),
                    (None, Some(Value::Bool(false))) => out.push(format!("{path}: unknown key")),
                    (None, Some(s @ Value::Object(_))) => out.extend(errors(root, s, v, &path)),
                    _ => {}
                }
            }
        }
        out
    }
}

/// `lb-proxy config dump` of `config` (and `extra` arguments), as text.
fn dump(config: &Path, extra: &[OsString]) -> String {
    let mut args = vec![
        OsString::from("config"),
        "dump".into(),
        "--config".into(),
        config.into(),
    ];
    args.extend(extra.iter().cloned());
    let out = lb(args);
    assert!(out.status.success(), "{}", combined(&out));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Drops the dump's header comments (they name the input files).
fn body(dump: &str) -> String {
    dump.lines()
        .skip_while(|l| l.starts_with('#') || l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn config_dump_writes_a_file_that_loads_to_the_same_services() {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifests = repo().join("examples/manifests");
    // The allocations a running proxy would have saved: the dump starts
    // from them, as `check --state-file` does.
    let state = dir.path().join("state.json");
    let config = manifests.join("node.toml");
    let first = lb_proxy::cli::check(&config, Some(&manifests), None).expect("valid example");
    let store = lb_config::FileStore::new(&state);
    let mut loader = lb_config::Loader::new(Box::new(store));
    let states = vec![
        lb_config::source::Source::desired(&lb_config::source::FileSource::new(&config))
            .expect("file"),
        lb_config::source::Source::desired(&lb_config::manifests::ManifestSource::new(&manifests))
            .expect("manifests"),
    ];
    lb_config::source::load_merged(&mut loader, states).expect("loads, saving its allocations");
    let extra = [
        OsString::from("--manifests"),
        manifests.clone().into(),
        "--state-file".into(),
        state.clone().into(),
    ];
    let text = dump(&config, &extra);
    assert!(text.starts_with("# lb-proxy config dump of "), "{text}");
    // Defaults filled in, allocations written.
    for line in [
        "half_close_timeout = \"1m\"",
        "udp_max_flows = 16384",
        "domain = \"cluster.local\"",
        "listen = \"127.0.0.1:10249\"",
        "access = false",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    let dumped = dir.path().join("dump.toml");
    std::fs::write(&dumped, &text).expect("write the dump");
    let out = lb([
        OsString::from("check"),
        "--config".into(),
        dumped.clone().into(),
    ]);
    assert!(out.status.success(), "{}", combined(&out));
    // Alone (no manifests, no state file) it loads to the same services,
    // with the same cluster IPs, node ports and LoadBalancer addresses.
    let again = lb_proxy::cli::check(&dumped, None, None).expect("the dump is valid");
    let key = |c: &lb_config::Config| {
        let mut s = c.services.clone();
        s.sort_by(|a, b| a.key.cmp(&b.key));
        s
    };
    let with_state = lb_proxy::cli::check(&config, Some(&manifests), Some(&state)).expect("valid");
    assert_eq!(key(&again), key(&with_state));
    assert_eq!(key(&with_state).len(), key(&first).len());
    // And its dump is itself: nothing left to fill in or allocate.
    assert_eq!(body(&dump(&dumped, &[])), body(&text));
}

#[test]
fn config_dump_of_an_invalid_file_prints_its_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, "[proxy]\nmax_connections = -1\n").expect("write");
    let out = lb([
        OsString::from("config"),
        "dump".into(),
        "--config".into(),
        path.into(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", combined(&out));
    assert!(
        combined(&out).contains("proxy.max_connections"),
        "{}",
        combined(&out)
    );
}
