//! Errors that come from a file, located in it: `FILE:LINE:COLUMN` found
//! from the error's path (`services[web].ports[0].port`), in the TOML file
//! through toml's spans, in a YAML manifest by walking the document to the
//! path; and serde's type errors said in words (`expected an integer, found
//! a string "x"`) rather than in Rust's types (`expected i64`).

use std::borrow::Cow;

use toml::de::{DeTable, DeValue};

use crate::error::{FieldError, Location};

/// One step of an error path: a key, a list index, or an object of a list
/// by name (`[NAME]` or `[NAMESPACE/NAME]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
    Named { namespace: String, name: String },
}

/// An error path as steps: `services[prod/web].ports[0].port`. Names in
/// brackets may hold dots.
pub(crate) fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let mut key = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !key.is_empty() {
                    out.push(Step::Key(std::mem::take(&mut key)));
                }
            }
            '[' => {
                if !key.is_empty() {
                    out.push(Step::Key(std::mem::take(&mut key)));
                }
                let inner: String = chars.by_ref().take_while(|c| *c != ']').collect();
                out.push(match inner.parse::<usize>() {
                    Ok(i) => Step::Index(i),
                    Err(_) => match inner.split_once('/') {
                        Some((ns, name)) => Step::Named {
                            namespace: ns.to_string(),
                            name: name.to_string(),
                        },
                        None => Step::Named {
                            namespace: "default".to_string(),
                            name: inner,
                        },
                    },
                });
            }
            c => key.push(c),
        }
    }
    if !key.is_empty() {
        out.push(Step::Key(key));
    }
    out
}

/// The byte offset in `text` of the deepest value on `path` that the TOML
/// document holds (the field itself, else the object that lacks it).
#[cfg(test)]
pub(crate) fn toml_offset(text: &str, path: &str) -> Option<usize> {
    let root = DeValue::Table(DeTable::parse(text).ok()?.into_inner());
    offset_in(&root, path)
}

/// [`toml_offset`] in a document parsed once: a file with thousands of
/// errors is parsed once, not once per error, and walked without copies.
fn offset_in(root: &DeValue<'_>, path: &str) -> Option<usize> {
    let mut here = root;
    let mut found = None;
    for step in steps(path) {
        let next: Option<(usize, &DeValue<'_>)> = match (step, here) {
            (Step::Key(k), DeValue::Table(t)) => t
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                .map(|(key, v)| {
                    // A table header's value spans its whole body: the key
                    // is where the reader looks.
                    let at = if matches!(v.get_ref(), DeValue::Table(_)) {
                        key.span().start
                    } else {
                        v.span().start
                    };
                    (at, v.get_ref())
                }),
            (Step::Index(i), DeValue::Array(a)) => a.get(i).map(|v| (v.span().start, v.get_ref())),
            (Step::Named { namespace, name }, DeValue::Array(a)) => a
                .iter()
                .find(|v| {
                    let DeValue::Table(t) = v.get_ref() else {
                        return false;
                    };
                    let field = |f: &str| {
                        t.iter()
                            .find(|(k, _)| k.get_ref().as_ref() == f)
                            .and_then(|(_, v)| match v.get_ref() {
                                DeValue::String(s) => Some(s.to_string()),
                                _ => None,
                            })
                    };
                    field("name").as_deref() == Some(name.as_str())
                        && field("namespace").unwrap_or_else(|| "default".into()) == namespace
                })
                .map(|v| (v.span().start, v.get_ref())),
            _ => None,
        };
        match next {
            Some((at, v)) => {
                found = Some(at);
                here = v;
            }
            None => break,
        }
    }
    found
}

/// Line and column (from 1, in characters) of a byte offset.
#[cfg(test)]
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    line_columns(text, &[offset])[0]
}

/// Line and column of each of `offsets` (in any order), in one pass over
/// the text up to the furthest one: a file with thousands of errors on one
/// long line (an inline list of 100,000 addresses) took half a minute to
/// report when each error counted its line again from the start.
pub(crate) fn line_columns(text: &str, offsets: &[usize]) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..offsets.len()).collect();
    order.sort_by_key(|&i| offsets[i]);
    let mut found = vec![(1, 1); offsets.len()];
    let (mut pos, mut line, mut column) = (0, 1, 1);
    for i in order {
        let mut at = offsets[i].min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        if at > pos {
            for c in text[pos..at].chars() {
                if c == '\n' {
                    line += 1;
                    column = 1;
                } else {
                    column += 1;
                }
            }
            pos = at;
        }
        found[i] = (line, column);
    }
    found
}

/// Locates, in the TOML `text` of `file`, every error that has no location
/// yet and whose path (or, for an unknown key, the key itself) the document
/// holds. A syntax error (`line L, column C`) takes its place in the file.
pub fn locate_toml(errors: &mut [FieldError], text: &str, file: &str) {
    let root = DeTable::parse(text)
        .ok()
        .map(|t| DeValue::Table(t.into_inner()));
    // Offsets first, then every line and column in one pass.
    let mut located = Vec::new();
    for (i, e) in errors.iter_mut().enumerate() {
        if e.location.is_some() {
            continue;
        }
        if let Some((line, column)) = syntax_position(&e.path) {
            e.location = Some(Location {
                file: file.to_string(),
                line,
                column,
            });
            e.path.clear();
            continue;
        }
        let unknown = unknown_key(&e.detail).map(|k| format!("{}.{k}", e.path));
        let Some(root) = &root else {
            continue;
        };
        let offset = unknown
            .as_deref()
            .and_then(|p| offset_in(root, p))
            .or_else(|| offset_in(root, &e.path));
        if let Some(offset) = offset {
            located.push((i, offset));
        }
    }
    let offsets: Vec<usize> = located.iter().map(|(_, o)| *o).collect();
    for ((i, _), (line, column)) in located.into_iter().zip(line_columns(text, &offsets)) {
        if let Some(e) = errors.get_mut(i) {
            e.location = Some(Location {
                file: file.to_string(),
                line,
                column,
            });
        }
    }
}

/// `line L, column C`, the path of a syntax error read without a file.
fn syntax_position(path: &str) -> Option<(usize, usize)> {
    let rest = path.strip_prefix("line ")?;
    let (line, column) = rest.split_once(", column ")?;
    Some((line.parse().ok()?, column.parse().ok()?))
}

/// The key named by serde's `unknown field `KEY`, expected ...`.
fn unknown_key(detail: &str) -> Option<&str> {
    let rest = detail.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(k, _)| k)
}

/// serde's `invalid type: string "x", expected i64` in words: `expected an
/// integer, found a string "x"`; other messages unchanged. `yaml` names
/// mappings and sequences as YAML does, else as TOML does (tables, arrays).
pub(crate) fn in_words(message: &str, yaml: bool) -> String {
    let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    else {
        return message.to_string();
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_string();
    };
    format!(
        "expected {}, found {}",
        expected_words(expected, yaml),
        found_words(found, yaml)
    )
}

fn expected_words(expected: &str, yaml: bool) -> Cow<'_, str> {
    let (table, array) = if yaml {
        ("a mapping", "a sequence")
    } else {
        ("a table", "an array")
    };
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".into(),
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "an integer of 0 or more".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => array.into(),
        "a map" => table.into(),
        e if e.starts_with("struct ") => table.into(),
        e => e.into(),
    }
}

fn found_words(found: &str, yaml: bool) -> String {
    let (table, array) = if yaml {
        ("a mapping", "a sequence")
    } else {
        ("a table", "an array")
    };
    let unquote = |s: &str| s.trim_matches('`').to_string();
    if let Some(s) = found.strip_prefix("string ") {
        format!("a string {s}")
    } else if let Some(n) = found.strip_prefix("integer ") {
        format!("an integer {}", unquote(n))
    } else if let Some(n) = found.strip_prefix("floating point ") {
        format!("a float {}", unquote(n))
    } else if let Some(b) = found.strip_prefix("boolean ") {
        format!("a boolean {}", unquote(b))
    } else {
        match found {
            "sequence" => array.to_string(),
            "map" => table.to_string(),
            "unit value" | "null" => "nothing (null)".to_string(),
            other => other.to_string(),
        }
    }
}

/// Line and column (from 1) of `path` (or of the deepest part of it the
/// document holds) in YAML document `document` (from 1) of `text`: the
/// document is walked down to the path, and the parser's position there is
/// where the walk stops.
#[cfg(feature = "manifests")]
pub(crate) fn yaml_position(text: &str, document: usize, path: &str) -> Option<(usize, usize)> {
    use serde::de::DeserializeSeed;
    let doc = serde_yaml_ng::Deserializer::from_str(text).nth(document.checked_sub(1)?)?;
    let steps = steps(path);
    let stopped = yaml::Seek(&steps).deserialize(doc).err()?;
    let at = stopped.location()?;
    Some((at.line(), at.column()))
}

#[cfg(feature = "manifests")]
mod yaml {
    use std::fmt;

    use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::Step;

    /// Walks to the end of its steps and stops there with an error, which
    /// the YAML parser marks with the position it is at.
    pub(super) struct Seek<'p>(pub(super) &'p [Step]);

    const HERE: &str = "here";

    impl<'de> de::DeserializeSeed<'de> for Seek<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Seek<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any value")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_none<E: de::Error>(self) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let Some((Step::Key(key), rest)) = self.0.split_first() else {
                return Err(de::Error::custom(HERE));
            };
            while let Some(k) = map.next_key::<String>()? {
                if k == *key {
                    return map.next_value_seed(Seek(rest));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Err(de::Error::custom(HERE))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let Some((Step::Index(index), rest)) = self.0.split_first() else {
                return Err(de::Error::custom(HERE));
            };
            for _ in 0..*index {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Err(de::Error::custom(HERE));
                }
            }
            seq.next_element_seed(Seek(rest))?;
            Err(de::Error::custom(HERE))
        }
    }
}

/// Locates validation errors of objects that came from manifests:
/// `paths` maps an object's path (`services[web]`) to its file and
/// document. The rest of the error's path, in the file's snake_case
/// (`.ports[0].node_port`), is looked up under the manifest's names
/// (`spec.ports[0].nodePort`); where the manifest has no such key (a
/// default, a field the kinds name differently) the error points at the
/// deepest part it has. lb's path stays in the message.
#[cfg(feature = "manifests")]
pub(crate) fn locate_manifest_objects(
    errors: &mut [FieldError],
    paths: &std::collections::BTreeMap<String, (String, usize)>,
) {
    let mut texts: std::collections::BTreeMap<String, Option<String>> = Default::default();
    for e in errors.iter_mut().filter(|e| e.location.is_none()) {
        let Some((object, (file, document))) = paths.iter().find(|(p, _)| {
            e.path == **p
                || e.path.starts_with(&format!("{p}."))
                || e.path.starts_with(&format!("{p}["))
        }) else {
            continue;
        };
        let kind = object.split('[').next().unwrap_or_default();
        let rest = &e.path[object.len()..];
        let text = texts
            .entry(file.clone())
            .or_insert_with(|| crate::source::read_settled(std::path::Path::new(file)).ok());
        let Some(text) = text.as_deref() else {
            continue;
        };
        if let Some((line, column)) = yaml_position(text, *document, &manifest_path(kind, rest)) {
            e.location = Some(Location {
                file: file.clone(),
                line,
                column,
            });
        }
    }
}

/// The manifest's path for the rest of an lb path (`.ports[0].node_port`)
/// of an object of `kind`: names and labels under `metadata`, a pod's
/// address at `status.podIP`, an Endpoints' subsets at the top, the rest
/// under `spec`, each key in the API's camelCase.
#[cfg(feature = "manifests")]
fn manifest_path(kind: &str, rest: &str) -> String {
    let rest = rest.trim_start_matches('.');
    let first = rest.split(['.', '[']).next().unwrap_or_default();
    let camel = camel_path(rest);
    match (kind, first) {
        (_, "" | "name") => "metadata.name".to_string(),
        (_, "namespace" | "labels") => format!("metadata.{camel}"),
        ("pods", "ip") => "status.podIP".to_string(),
        ("endpoints", _) => camel,
        _ => format!("spec.{camel}"),
    }
}

/// `ports[0].node_port` → `ports[0].nodePort`, with Kubernetes' acronyms
/// (`cluster_ip` → `clusterIP`, `external_ips` → `externalIPs`).
#[cfg(feature = "manifests")]
fn camel_path(path: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        for (i, part) in word.split('_').enumerate() {
            match (i, part) {
                (0, p) => out.push_str(p),
                (_, "ip") => out.push_str("IP"),
                (_, "ips") => out.push_str("IPs"),
                (_, p) => {
                    let mut c = p.chars();
                    if let Some(f) = c.next() {
                        out.extend(f.to_uppercase());
                        out.push_str(c.as_str());
                    }
                }
            }
        }
        word.clear();
    };
    for c in path.chars() {
        if c == '.' || c == '[' || c == ']' {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_keys_indexes_and_names_with_dots() {
        assert_eq!(
            steps("pods[prod/a.b].ports[0].name"),
            vec![
                Step::Key("pods".into()),
                Step::Named {
                    namespace: "prod".into(),
                    name: "a.b".into()
                },
                Step::Key("ports".into()),
                Step::Index(0),
                Step::Key("name".into()),
            ]
        );
    }

    #[test]
    fn positions_found_in_one_pass_are_those_counted_one_by_one() {
        let text = "a = 1\nb = \"é\" # ü\n\nc = [1, 2, 3]\n";
        let offsets: Vec<usize> = vec![30, 0, 9, 5, 13, 6, 100, 22];
        let one_by_one: Vec<(usize, usize)> = offsets
            .iter()
            .map(|&o| {
                let mut at = o.min(text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let before = &text[..at];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                (line, column)
            })
            .collect();
        assert_eq!(line_columns(text, &offsets), one_by_one);
    }

    #[test]
    fn a_path_is_found_at_its_value_else_at_its_object() {
        let text = "[proxy]\nmax_connections = \"x\"\n\n[[services]]\nname = \"web\"\n[[services.ports]]\nport = 80\n";
        let at = |p: &str| toml_offset(text, p).map(|o| line_column(text, o));
        assert_eq!(at("proxy.max_connections"), Some((2, 19)));
        assert_eq!(at("services[web].ports[0].port"), Some((7, 8)));
        assert_eq!(at("services[web].ports[0].node_port"), Some((6, 1)));
        assert_eq!(at("proxy"), Some((1, 2)));
        assert_eq!(at("services[other]"), Some((4, 1)));
    }

    #[cfg(feature = "manifests")]
    #[test]
    fn a_yaml_path_is_found_in_its_document() {
        let text = "kind: A\n---\nkind: Service\nspec:\n  ports:\n  - name: a\n    port: x\n";
        assert_eq!(yaml_position(text, 2, "spec.ports[0].port"), Some((7, 11)));
        assert_eq!(
            yaml_position(text, 2, "spec.ports[0].nodePort"),
            Some((6, 5))
        );
        assert_eq!(yaml_position(text, 2, "kind"), Some((3, 7)));
    }

    #[test]
    fn type_errors_are_said_in_words() {
        assert_eq!(
            in_words("invalid type: string \"x\", expected i64", false),
            "expected an integer, found a string \"x\""
        );
        assert_eq!(
            in_words("invalid type: integer `5`, expected a boolean", false),
            "expected a boolean, found an integer 5"
        );
        assert_eq!(
            in_words("invalid type: map, expected a sequence", false),
            "expected an array, found a table"
        );
        assert_eq!(
            in_words("invalid type: sequence, expected struct RawProxy", true),
            "expected a mapping, found a sequence"
        );
        assert_eq!(
            in_words("invalid value: integer `-1`, expected u64", false),
            "expected an integer of 0 or more, found an integer -1"
        );
        assert_eq!(in_words("unknown field `x`", false), "unknown field `x`");
    }

    #[cfg(feature = "manifests")]
    #[test]
    fn lb_paths_become_the_manifests_names() {
        assert_eq!(
            super::manifest_path("services", ".ports[0].node_port"),
            "spec.ports[0].nodePort"
        );
        assert_eq!(
            super::manifest_path("services", ".cluster_ip"),
            "spec.clusterIP"
        );
        assert_eq!(
            super::manifest_path("services", ".external_ips[1]"),
            "spec.externalIPs[1]"
        );
        assert_eq!(super::manifest_path("services", ".name"), "metadata.name");
        assert_eq!(super::manifest_path("services", ""), "metadata.name");
        assert_eq!(super::manifest_path("pods", ".ip"), "status.podIP");
        assert_eq!(
            super::manifest_path("endpoints", ".subsets[0].addresses[0]"),
            "subsets[0].addresses[0]"
        );
    }
}
