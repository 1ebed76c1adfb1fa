//! TOML text to [`RawConfig`], reporting parse errors one per line with their
//! path. Objects in the lists (`[[services]]`, ...) are read one by one, so
//! that one bad service does not hide the errors of the next, and an error
//! inside a named object is located as `services[NAME].field`.
//!
//! The text is parsed into toml's borrowing document tree ([`DeTable`]:
//! strings point into the text unless they hold escapes) and each object is
//! deserialized from its subtree, which is then dropped. An owned
//! `toml::Table` first cost about 60 bytes of heap per byte of TOML (300 MB
//! at its peak for a 5 MB file of 10,000 services).

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::error::{object_path, FieldError};
use crate::raw::RawConfig;

/// The top-level keys that hold lists of named objects.
const LISTS: [&str; 4] = ["ip_pools", "pods", "services", "endpoints"];

/// Parses the file's text. An empty text is a valid, empty config.
pub(crate) fn parse(text: &str) -> Result<RawConfig, Vec<FieldError>> {
    let document = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => return Err(vec![syntax_error(text, &e)]),
    };
    let span = document.span();
    let mut table = document.into_inner();
    let mut errors = Vec::new();
    let mut lists = Vec::new();
    for key in LISTS {
        if let Some(v) = table.remove(key) {
            lists.push((key, v));
        }
    }
    let mut config: RawConfig = match deserialize(Spanned::new(span, DeValue::Table(table))) {
        Ok(c) => c,
        Err((path, msg)) => {
            errors.push(FieldError::parse(
                path.unwrap_or_else(|| "file".into()),
                msg,
            ));
            RawConfig::default()
        }
    };
    for (key, value) in lists {
        match key {
            "ip_pools" => config.ip_pools = list(key, value, &mut errors),
            "pods" => config.pods = list(key, value, &mut errors),
            "services" => config.services = list(key, value, &mut errors),
            _ => config.endpoints = list(key, value, &mut errors),
        }
    }
    if errors.is_empty() {
        fit(&mut config);
        Ok(config)
    } else {
        Err(errors)
    }
}

/// Gives back the spare capacity of the lists that repeat per object: the
/// document tree gives no length up front, so a list of 10 addresses grew to
/// 16 slots (11 MB for 10,000 endpoint lists), and the raw state is kept
/// until the next read.
fn fit(config: &mut RawConfig) {
    // Just read: each object is held once, so `make_mut` copies nothing.
    for endpoints in &mut config.endpoints {
        let endpoints = std::sync::Arc::make_mut(endpoints);
        for subset in &mut endpoints.subsets {
            subset.addresses.shrink_to_fit();
            subset.not_ready_addresses.shrink_to_fit();
            subset.ports.shrink_to_fit();
        }
        endpoints.subsets.shrink_to_fit();
    }
    for service in &mut config.services {
        std::sync::Arc::make_mut(service).ports.shrink_to_fit();
    }
}

/// Reads a list of objects element by element; each error is located at
/// `kind[NAME]` (or `kind[NAMESPACE/NAME]`, or `kind[INDEX]` without a name).
fn list<T: DeserializeOwned>(
    kind: &str,
    value: Spanned<DeValue<'_>>,
    errors: &mut Vec<FieldError>,
) -> Vec<T> {
    let items = match value.into_inner() {
        DeValue::Array(items) => items,
        other => {
            errors.push(FieldError::parse(
                kind,
                format!(
                    "expected an array of tables ([[{kind}]]), found {}",
                    other.type_str()
                ),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let (namespace, name) = match item.get_ref() {
            DeValue::Table(t) => (
                text_of(t, "namespace").unwrap_or("default").to_string(),
                text_of(t, "name").unwrap_or("").to_string(),
            ),
            _ => (String::new(), String::new()),
        };
        match deserialize::<T>(item) {
            Ok(v) => out.push(v),
            Err((path, msg)) => {
                let base = object_path(kind, &namespace, &name, i);
                let path = match path {
                    None => base,
                    Some(p) if p.starts_with('[') => format!("{base}{p}"),
                    Some(p) => format!("{base}.{p}"),
                };
                errors.push(FieldError::parse(path, msg));
            }
        }
    }
    out
}

/// A string field of a table, if it is one.
fn text_of<'t>(table: &'t DeTable<'_>, key: &str) -> Option<&'t str> {
    table.get(key).and_then(|v| v.get_ref().as_str())
}

/// Deserializes with the path of the failing field, if any.
fn deserialize<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
) -> Result<T, (Option<String>, String)> {
    serde_path_to_error::deserialize(ValueDeserializer::from(value)).map_err(|e| {
        let path = e.path().to_string();
        let path = (path != ".").then_some(path);
        (
            path,
            crate::locate::in_words(&one_line(e.inner().message()), false),
        )
    })
}

/// A TOML syntax error as one line: `line L, column C: message`.
fn syntax_error(text: &str, e: &toml::de::Error) -> FieldError {
    let location = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}")
        }
        None => "file".to_string(),
    };
    FieldError::parse(location, format!("TOML syntax: {}", one_line(e.message())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn empty_text_is_the_default_config() {
        assert_eq!(parse("").unwrap(), RawConfig::default());
    }

    #[test]
    fn unknown_keys_are_located() {
        let l = lines("[proxy]\nfoo = 1\n");
        assert_eq!(l.len(), 1);
        assert!(l[0].starts_with("proxy"), "{l:?}");
        assert!(l[0].contains("unknown field `foo`"), "{l:?}");
        let l = lines("[[services]]\nname = \"web\"\n[[services.ports]]\nport = 80\nbogus = 1\n");
        assert!(l[0].starts_with("services[web].ports[0]"), "{l:?}");
        assert!(l[0].contains("unknown field `bogus`"), "{l:?}");
    }

    #[test]
    fn every_bad_object_is_reported() {
        let l = lines(
            "[[services]]\nname = \"a\"\nport = 1\n[[services]]\nname = \"b\"\nnamespace = \"x\"\ncluster_ip = 5\n",
        );
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(
            l[0].starts_with("services[a].port: unknown field `port`"),
            "{l:?}"
        );
        assert!(
            l[1].starts_with("services[x/b].cluster_ip: expected a string, found an integer 5"),
            "{l:?}"
        );
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let l = lines("[node]\nname = \n");
        assert_eq!(l.len(), 1);
        assert!(l[0].starts_with("line 2, column"), "{l:?}");
    }
}
