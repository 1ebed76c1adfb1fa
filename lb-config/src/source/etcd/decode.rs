//! The keys under the prefix decoded into one desired state: the value of
//! each key is the fields of the file's table (JSON or TOML), its place in
//! the key space says its kind, namespace and name.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use super::EtcdSettings;
use crate::raw::{RawEndpoints, RawIpPool, RawPod, RawService};
use crate::source::{DesiredState, Origin, Sourced};

fn parse_value<T: DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(value).map_err(|e| format!("not UTF-8: {e}"))?;
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
    } else {
        toml::from_str(text).map_err(|e| format!("invalid TOML: {}", e.message()))
    }
}

fn fill(ns_field: &mut Option<String>, name_field: &mut String, ns: &str, name: &str) {
    if name_field.is_empty() {
        *name_field = name.to_string();
    }
    if ns_field.is_none() {
        *ns_field = Some(ns.to_string());
    }
}

/// Decodes every key under the prefix into one desired state. A key that
/// cannot be decoded is skipped and named in a warning; the rest applies.
pub fn decode(settings: &EtcdSettings, kvs: &BTreeMap<String, (Vec<u8>, i64)>) -> DesiredState {
    let mut state = DesiredState::default();
    let base = format!("{}/", settings.prefix);
    for (key, (value, mod_revision)) in kvs {
        let origin = Origin::Etcd {
            key: key.clone(),
            mod_revision: *mod_revision,
        };
        let Some(rest) = key.strip_prefix(&base) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let bad = |m: String| format!("etcd key {key}: skipped: {m}");
        let result: Result<(), String> = match parts.as_slice() {
            ["allocations"] => Ok(()),
            ["services", ns, name] => parse_value::<RawService>(value).map(|mut o| {
                fill(&mut o.namespace, &mut o.name, ns, name);
                state.services.push(Sourced::new(o, origin));
            }),
            ["endpoints", ns, name] => parse_value::<RawEndpoints>(value).map(|mut o| {
                fill(&mut o.namespace, &mut o.name, ns, name);
                state.endpoints.push(Sourced::new(o, origin));
            }),
            ["pods", ns, name] => parse_value::<RawPod>(value).and_then(|mut o| {
                fill(&mut o.namespace, &mut o.name, ns, name);
                let exec = o.readiness_probe.as_ref().is_some_and(|p| p.exec.is_some());
                if exec && !settings.allow_exec_probes {
                    return Err("exec readiness probes from etcd are refused (they run commands as root on every node); set [source.etcd] allow_exec_probes = true to accept them".into());
                }
                // From etcd a pod without a node is local nowhere.
                if o.node.is_none() {
                    o.node = Some(String::new());
                }
                state.pods.push(Sourced::new(o, origin));
                Ok(())
            }),
            ["ip_pools", name] => parse_value::<RawIpPool>(value).map(|mut o| {
                if o.name.is_empty() {
                    o.name = name.to_string();
                }
                state.ip_pools.push(Sourced::new(o, origin));
            }),
            _ => Err("not a key lb reads (<prefix>/services|endpoints|pods/<ns>/<name>, <prefix>/ip_pools/<name>)".into()),
        };
        if let Err(m) = result {
            tracing::warn!("{}", bad(m.clone()));
            state.warnings.push(bad(m));
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::etcd::ClientOptions;

    fn settings(allow_exec_probes: bool) -> EtcdSettings {
        EtcdSettings {
            client: ClientOptions::default(),
            prefix: "/lb".into(),
            allow_exec_probes,
        }
    }

    fn kvs(items: &[(&str, &str, i64)]) -> BTreeMap<String, (Vec<u8>, i64)> {
        items
            .iter()
            .map(|(k, v, rev)| (k.to_string(), (v.as_bytes().to_vec(), *rev)))
            .collect()
    }

    #[test]
    fn the_key_names_the_object_when_the_value_does_not() {
        let state = decode(
            &settings(false),
            &kvs(&[
                ("/lb/services/shop/web", r#"{"ports":[{"port":80}]}"#, 4),
                ("/lb/ip_pools/pool", "addresses = [\"127.0.0.0/30\"]", 5),
                ("/lb/allocations", "{}", 6),
            ]),
        );
        assert_eq!(state.services.len(), 1);
        let web = &state.services[0];
        assert_eq!(web.object.name, "web");
        assert_eq!(web.object.namespace.as_deref(), Some("shop"));
        assert_eq!(
            web.origin,
            Origin::Etcd {
                key: "/lb/services/shop/web".into(),
                mod_revision: 4
            }
        );
        assert_eq!(state.ip_pools[0].object.name, "pool");
        assert!(state.warnings.is_empty(), "{:?}", state.warnings);
    }

    #[test]
    fn a_key_that_cannot_be_decoded_is_skipped_with_a_warning_naming_it() {
        let state = decode(
            &settings(false),
            &kvs(&[
                ("/lb/services/default/bad", "{not json", 2),
                ("/lb/widgets/default/x", "{}", 3),
                ("/elsewhere/services/default/y", "{}", 4),
            ]),
        );
        assert!(state.services.is_empty());
        assert_eq!(state.warnings.len(), 2, "{:?}", state.warnings);
        assert!(state.warnings[0]
            .starts_with("etcd key /lb/services/default/bad: skipped: invalid JSON"));
        assert!(state.warnings[1].contains("/lb/widgets/default/x"));
    }

    #[test]
    fn pods_from_etcd_are_local_nowhere_and_need_leave_for_exec_probes() {
        let pod = r#"{"ip":"127.0.0.9","readiness_probe":{"exec":{"command":["true"]}}}"#;
        let refused = decode(&settings(false), &kvs(&[("/lb/pods/default/p", pod, 1)]));
        assert!(refused.pods.is_empty());
        assert!(refused.warnings[0].contains("allow_exec_probes"));
        let allowed = decode(&settings(true), &kvs(&[("/lb/pods/default/p", pod, 1)]));
        assert_eq!(allowed.pods[0].object.node.as_deref(), Some(""));
    }
}
