//! Who may write an `exec` readiness probe. An exec probe runs its command on
//! this node as lb-proxy's user (often root), so it is accepted from the TOML
//! file (the operator wrote it) and from a program's own source, but from the
//! manifests only when the file says `[source.manifests] allow_exec_probes =
//! true` (etcd has its own `[source.etcd] allow_exec_probes`, applied where
//! its keys are decoded). Checked at every merge, so `check`, `run` and a
//! reload all read the setting from the file as it is now.

use crate::error::FieldError;
use crate::raw::{RawConfig, RawPod};
use crate::source::{Origin, Sourced};

/// The refusal, worded as etcd's.
const REFUSED: &str = "exec readiness probes from manifests are refused (they run commands as lb-proxy's user, often root, on this node); set [source.manifests] allow_exec_probes = true to accept them";

/// Whether `file` lets the manifests carry exec probes.
fn allowed(file: &RawConfig) -> bool {
    file.source
        .as_ref()
        .and_then(|s| s.manifests.as_ref())
        .and_then(|m| m.allow_exec_probes)
        .unwrap_or(false)
}

/// A `Forbidden` error for each manifest Pod with an exec readiness probe,
/// unless `file` allows them; each names the file, the document and the
/// object, as the manifests' other errors do.
pub(super) fn refused(file: &RawConfig, pods: &[Sourced<RawPod>]) -> Vec<FieldError> {
    if allowed(file) {
        return Vec::new();
    }
    pods.iter()
        .filter_map(|p| {
            let Origin::Manifest { path, document } = &p.origin else {
                return None;
            };
            p.object.readiness_probe.as_ref()?.exec.as_ref()?;
            let pod = &p.object;
            let obj = match pod.namespace.as_deref() {
                None | Some("") => pod.name.clone(),
                Some(ns) => format!("{ns}/{}", pod.name),
            };
            Some(FieldError::forbidden(
                format!(
                    "{path}: document {document} (Pod {obj}).spec.containers[].readinessProbe.exec"
                ),
                REFUSED,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::{RawExecAction, RawManifests, RawProbe, RawSource};

    fn pod(name: &str, exec: bool, origin: Origin) -> Sourced<RawPod> {
        let probe = RawProbe {
            exec: exec.then(|| RawExecAction {
                command: vec!["true".into()],
            }),
            ..RawProbe::default()
        };
        Sourced::new(
            RawPod {
                name: name.into(),
                namespace: Some("shop".into()),
                readiness_probe: Some(probe),
                ..RawPod::default()
            },
            origin,
        )
    }

    fn manifest(document: usize) -> Origin {
        Origin::Manifest {
            path: "pods.yaml".into(),
            document,
        }
    }

    fn allowing(allow: Option<bool>) -> RawConfig {
        RawConfig {
            source: Some(RawSource {
                manifests: Some(RawManifests {
                    allow_exec_probes: allow,
                }),
                ..RawSource::default()
            }),
            ..RawConfig::default()
        }
    }

    #[test]
    fn a_manifest_exec_probe_is_forbidden_naming_its_file_document_and_pod() {
        let pods = [
            pod("probed", true, manifest(2)),
            pod("plain", false, manifest(3)),
        ];
        for file in [RawConfig::default(), allowing(None), allowing(Some(false))] {
            let errors = refused(&file, &pods);
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(
                lines[0].starts_with(
                    "pods.yaml: document 2 (Pod shop/probed).spec.containers[].readinessProbe.exec: Forbidden: exec readiness probes from manifests are refused"
                ),
                "{lines:?}"
            );
            assert!(lines[0].contains("[source.manifests] allow_exec_probes = true"));
        }
    }

    #[test]
    fn allow_exec_probes_accepts_them_and_other_origins_never_need_it() {
        assert!(refused(&allowing(Some(true)), &[pod("probed", true, manifest(1))]).is_empty());
        let others = [
            pod("mine", true, Origin::File),
            pod(
                "fed",
                true,
                Origin::Program {
                    source: "discovery".into(),
                },
            ),
        ];
        assert!(refused(&RawConfig::default(), &others).is_empty());
    }
}
