//! Every error that comes from a file says where: `FILE:LINE:COLUMN: path:
//! message`, for the TOML file (syntax, unknown keys, wrong types, and
//! validation errors of keys the file holds) and for manifests (YAML
//! syntax and wrong types, inside a `List` too, and validation errors of
//! the objects they hold); and a wrong type is said
//! in words (`expected an integer, found a string "x"`), not in Rust's.

use std::path::{Path, PathBuf};

use lb_config::manifests::load_path;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The error lines of `lb_config::check_file` on `text`, with the
/// temporary directory shown as `DIR`.
fn toml_errors(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "lb.toml", text);
    let errors = lb_config::check_file(&path).unwrap_err();
    let shown = dir.path().display().to_string();
    errors
        .lines()
        .iter()
        .map(|l| l.replace(&shown, "DIR"))
        .collect()
}

fn yaml_errors(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.yaml", text);
    let errors = load_path(&path).unwrap_err();
    let shown = dir.path().display().to_string();
    errors
        .lines()
        .iter()
        .map(|l| l.replace(&shown, "DIR"))
        .collect()
}

#[test]
fn a_wrong_type_in_the_toml_file_names_its_line_and_column_in_words() {
    assert_eq!(
        toml_errors("[proxy]\nmax_connections = \"x\"\n"),
        vec!["DIR/lb.toml:2:19: proxy.max_connections: expected an integer, found a string \"x\""]
    );
    assert_eq!(
        toml_errors("[[services]]\nname = \"web\"\npublish_not_ready_addresses = 1\n"),
        vec![
            "DIR/lb.toml:3:31: services[web].publish_not_ready_addresses: expected a boolean, found an integer 1"
        ]
    );
    assert_eq!(
        toml_errors("[node]\naddresses = \"127.0.0.1\"\n"),
        vec!["DIR/lb.toml:2:13: node.addresses: expected an array, found a string \"127.0.0.1\""]
    );
    assert_eq!(
        toml_errors("proxy = 5\n"),
        vec!["DIR/lb.toml:1:9: proxy: expected a table, found an integer 5"]
    );
}

#[test]
fn an_unknown_key_is_located_at_the_key_and_the_valid_keys_are_listed() {
    let lines = toml_errors("[proxy]\nworkers = 1\nmax_conections = 5\n");
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with(
            "DIR/lb.toml:3:18: proxy.max_conections: unknown field `max_conections`, expected one of"
        ),
        "{lines:?}"
    );
}

#[test]
fn a_toml_syntax_error_is_located_in_the_file() {
    assert_eq!(
        toml_errors("[node]\nname = \n"),
        vec!["DIR/lb.toml:2:8: TOML syntax: string values must be quoted, expected literal string"]
    );
}

#[test]
fn a_validation_error_is_located_at_the_key_it_names() {
    let lines = toml_errors(
        "[[services]]\nname = \"web\"\n\n[[services.ports]]\nport = 80\n\n[[services.ports]]\nname = \"b\"\nport = 0\n",
    );
    assert!(
        lines.contains(
            &"DIR/lb.toml:9:8: services[web].ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive".to_string()
        ),
        "{lines:?}"
    );
    // A key that is missing is located at its object.
    let lines = toml_errors("[dns]\nttl = 5\n");
    assert_eq!(lines, vec!["DIR/lb.toml:1:2: dns.listen: Required value: the IP:PORT to answer on (e.g. 127.0.0.1:5353)"]);
}

#[test]
fn check_str_has_no_file_to_name() {
    let errors = lb_config::check_str("[proxy]\nmax_connections = \"x\"\n").unwrap_err();
    assert_eq!(
        errors.lines(),
        vec!["proxy.max_connections: expected an integer, found a string \"x\""]
    );
    assert_eq!(errors.errors[0].location, None);
}

#[test]
fn a_wrong_type_in_a_manifest_names_its_line_column_and_document() {
    let text =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: x\n";
    assert_eq!(
        yaml_errors(text),
        vec![
            "DIR/m.yaml:7:11: document 1 (Service a).spec.ports[0].port: expected an integer, found a string \"x\""
        ]
    );
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports: {port: 80}\n";
    assert_eq!(
        yaml_errors(text),
        vec![
            "DIR/m.yaml:6:10: document 1 (Service a).spec.ports: expected a sequence, found a mapping"
        ]
    );
}

#[test]
fn a_wrong_type_inside_a_list_is_located_in_its_item() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: ok}\n  spec: {ports: [{port: 80}]}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n  spec:\n    containers:\n    - ports: [{containerPort: true}]\n";
    assert_eq!(
        yaml_errors(text),
        vec![
            "DIR/m.yaml:13:31: document 1.items[1] (Pod p).spec.containers[0].ports[0].containerPort: expected an integer, found a boolean true"
        ]
    );
}

#[test]
fn a_yaml_syntax_error_is_located_in_the_file() {
    let lines = yaml_errors("apiVersion: v1\nkind: [Service\n");
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("DIR/m.yaml:3:1: document 1: not valid YAML"),
        "{lines:?}"
    );
}

#[test]
fn a_validation_error_of_a_manifest_object_is_located_in_its_document() {
    use lb_config::source::{load_merged, FileSource, Source};
    let dir = tempfile::tempdir().unwrap();
    let toml = write(dir.path(), "lb.toml", "# objects come from the manifests\n");
    let manifests = write(
        dir.path(),
        "m.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: other\nspec:\n  ports:\n  - port: 80\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 80\n",
    );
    let states = vec![
        FileSource::new(&toml).desired().unwrap(),
        lb_config::manifests::ManifestSource::new(&manifests)
            .desired()
            .unwrap(),
    ];
    let mut loader = lb_config::Loader::new(Box::<lb_core::alloc::MemoryStore>::default());
    let errors = load_merged(&mut loader, states).unwrap_err();
    let shown = dir.path().display().to_string();
    let lines: Vec<String> = errors
        .lines()
        .iter()
        .map(|l| l.replace(&shown, "DIR"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    // Document 2, line 17 of the file: the value of `nodePort: 80`; lb's
    // path stays.
    assert!(
        lines[0]
            .starts_with("DIR/m.yaml:17:15: services[web].ports[0].node_port: Invalid value: 80"),
        "{lines:?}"
    );
}
