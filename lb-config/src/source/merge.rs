//! The one function that merges the sources' states
//! ([`merge_states`]), under the conflict rules of the parent module's
//! docs, and the load that validates the result ([`load_merged`]); and the
//! sharing of unchanged objects between two reads of a source
//! ([`DesiredState::share_unchanged`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{exec_probes, DesiredState, Origin, Sourced};
use crate::config::Config;
use crate::error::{object_path, ConfigErrors, FieldError};
use crate::loader::Loader;
use crate::raw::{RawConfig, RawEndpoints, RawIpPool, RawPod, RawService};

impl DesiredState {
    /// Makes each object of this state that equals the object of the same
    /// kind and name in `last` that very object (shared), so validation
    /// recognises it as one it already checked: a source that parses afresh
    /// at every read (the config file, etcd) then costs a comparison per
    /// unchanged object, not a validation. Objects already shared with
    /// `last` (the manifests' unchanged files) cost a pointer comparison.
    pub fn share_unchanged(&mut self, last: &DesiredState) {
        share(objects(&mut self.services), held(&last.services));
        share(objects(&mut self.pods), held(&last.pods));
        share(objects(&mut self.endpoints), held(&last.endpoints));
        share(objects(&mut self.ip_pools), held(&last.ip_pools));
        if let (Some(now), Some(was)) = (&mut self.file, &last.file) {
            share(now.services.iter_mut(), was.services.iter());
            share(now.pods.iter_mut(), was.pods.iter());
            share(now.endpoints.iter_mut(), was.endpoints.iter());
            share(now.ip_pools.iter_mut(), was.ip_pools.iter());
        }
    }
}

/// The merged raw state, and where each of its objects came from, so a bad
/// etcd object can be dropped by key and a manifest object's error located
/// in its file.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// Settings from the file, objects from every source.
    pub raw: RawConfig,
    /// Conflicts resolved and objects skipped, one line each.
    pub warnings: Vec<String>,
    /// Where each object of `raw` came from, in `raw`'s order.
    pub origins: Origins,
}

/// Where each object of a merged [`RawConfig`] came from, kind by kind, in
/// the order of its lists. Kept as it comes out of the merge, and turned
/// into paths only when a load fails: a load of 10,000 services spent a
/// tenth of its time writing down paths no error would name.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// Of `raw.services`.
    pub services: Vec<Origin>,
    /// Of `raw.pods`.
    pub pods: Vec<Origin>,
    /// Of `raw.endpoints`.
    pub endpoints: Vec<Origin>,
    /// Of `raw.ip_pools`.
    pub ip_pools: Vec<Origin>,
}

impl Merged {
    /// Object path (`services[NS/NAME]`) → etcd key, for the etcd objects.
    pub fn etcd_paths(&self) -> BTreeMap<String, String> {
        paths(&self.raw, &self.origins, |o| match o {
            Origin::Etcd { key, .. } => Some(key.clone()),
            _ => None,
        })
    }

    /// Object path → the manifest file and document (from 1) it came from.
    pub fn manifest_paths(&self) -> BTreeMap<String, (String, usize)> {
        paths(&self.raw, &self.origins, |o| match o {
            Origin::Manifest { path, document } => Some((path.to_string(), *document)),
            _ => None,
        })
    }

    /// Drops the objects whose paths are in `bad` (with their origins).
    fn drop_paths(&mut self, bad: &BTreeMap<String, Vec<String>>) {
        fn keep<T: Named>(
            objects: &mut Vec<Arc<T>>,
            origins: &mut Vec<Origin>,
            kind: &str,
            bad: &BTreeMap<String, Vec<String>>,
        ) {
            let kept: Vec<(Arc<T>, Origin)> = std::mem::take(objects)
                .into_iter()
                .zip(std::mem::take(origins))
                .enumerate()
                .filter(|(i, (o, _))| {
                    let (ns, name) = o.id();
                    !bad.contains_key(&object_path(kind, ns, name, *i))
                })
                .map(|(_, pair)| pair)
                .collect();
            (*objects, *origins) = kept.into_iter().unzip();
        }
        let (raw, origins) = (&mut self.raw, &mut self.origins);
        keep(&mut raw.services, &mut origins.services, "services", bad);
        keep(&mut raw.pods, &mut origins.pods, "pods", bad);
        keep(&mut raw.endpoints, &mut origins.endpoints, "endpoints", bad);
        keep(&mut raw.ip_pools, &mut origins.ip_pools, "ip_pools", bad);
    }
}

/// The path validation names each object of `raw` by, for the objects whose
/// origin `pick` chooses, with what it picks.
fn paths<V>(
    raw: &RawConfig,
    origins: &Origins,
    pick: impl Fn(&Origin) -> Option<V>,
) -> BTreeMap<String, V> {
    fn add<T: Named, V>(
        out: &mut BTreeMap<String, V>,
        kind: &str,
        objects: &[Arc<T>],
        origins: &[Origin],
        pick: &impl Fn(&Origin) -> Option<V>,
    ) {
        for (i, (o, origin)) in objects.iter().zip(origins).enumerate() {
            if let Some(v) = pick(origin) {
                let (ns, name) = o.id();
                out.insert(object_path(kind, ns, name, i), v);
            }
        }
    }
    let mut out = BTreeMap::new();
    add(
        &mut out,
        "services",
        &raw.services,
        &origins.services,
        &pick,
    );
    add(&mut out, "pods", &raw.pods, &origins.pods, &pick);
    add(
        &mut out,
        "endpoints",
        &raw.endpoints,
        &origins.endpoints,
        &pick,
    );
    add(
        &mut out,
        "ip_pools",
        &raw.ip_pools,
        &origins.ip_pools,
        &pick,
    );
    out
}

/// `now`'s objects that equal `last`'s of the same name, made `last`'s
/// (the sources' lists and the config file's alike).
fn share<'n, 'l, T: Named + PartialEq + 'n + 'l>(
    now: impl Iterator<Item = &'n mut Arc<T>>,
    last: impl Iterator<Item = &'l Arc<T>>,
) {
    let last: Vec<&Arc<T>> = last.collect();
    // Most objects are already last's (a manifest file that did not
    // change): known by address, they skip the name lookup and the
    // comparison, which cost 15 ms a reload at 10,000 services.
    let held: crate::hash::HashSet<*const T> = last.iter().map(|o| Arc::as_ptr(o)).collect();
    let mut fresh = now.filter(|o| !held.contains(&Arc::as_ptr(o))).peekable();
    if fresh.peek().is_none() {
        return;
    }
    let by_name: crate::hash::HashMap<(&str, &str), &Arc<T>> =
        last.iter().map(|o| (o.id(), *o)).collect();
    for o in fresh {
        if let Some(was) = by_name.get(&o.id()) {
            if **o == ***was {
                *o = Arc::clone(was);
            }
        }
    }
}

/// The objects of a source's list, for [`share`].
fn objects<T>(list: &mut [Sourced<T>]) -> impl Iterator<Item = &mut Arc<T>> {
    list.iter_mut().map(|o| &mut o.object)
}

/// The objects of the last read's list, for [`share`].
fn held<T>(list: &[Sourced<T>]) -> impl Iterator<Item = &Arc<T>> {
    list.iter().map(|o| &o.object)
}

/// What names an object among those of its kind: (namespace, name); the
/// namespace defaults to `default`, and pools have none.
trait Named {
    fn id(&self) -> (&str, &str);
}

impl Named for RawService {
    fn id(&self) -> (&str, &str) {
        (self.namespace.as_deref().unwrap_or("default"), &self.name)
    }
}

impl Named for RawPod {
    fn id(&self) -> (&str, &str) {
        (self.namespace.as_deref().unwrap_or("default"), &self.name)
    }
}

impl Named for RawEndpoints {
    fn id(&self) -> (&str, &str) {
        (self.namespace.as_deref().unwrap_or("default"), &self.name)
    }
}

impl Named for RawIpPool {
    fn id(&self) -> (&str, &str) {
        ("", &self.name)
    }
}

/// Merges one kind: local objects (file, manifests) must be unique; etcd
/// objects lose to local ones and among themselves the older mod_revision
/// wins.
fn merge_kind<T: Named>(
    kind: &str,
    file: Vec<Arc<T>>,
    others: Vec<Sourced<T>>,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) -> (Vec<Arc<T>>, Vec<Origin>) {
    let from_file = file.len();
    // Local sources first, then etcd in mod_revision order (older first), so
    // the older etcd object is the one that stays.
    let (mut etcd, local): (Vec<_>, Vec<_>) = others
        .into_iter()
        .partition(|o| matches!(o.origin, Origin::Etcd { .. }));
    etcd.sort_by_key(|o| match &o.origin {
        Origin::Etcd { mod_revision, .. } => *mod_revision,
        _ => 0,
    });
    let candidates: Vec<Sourced<T>> = file
        .into_iter()
        .map(|object| Sourced {
            object,
            origin: Origin::File,
        })
        .chain(local)
        .chain(etcd)
        .collect();
    // Which candidates stay: the index borrows their names, so the
    // candidates are moved out only once it is done.
    let mut keep = vec![true; candidates.len()];
    let mut index: crate::hash::HashMap<(&str, &str), usize> =
        crate::hash::HashMap::with_capacity_and_hasher(candidates.len(), Default::default());
    for (i, o) in candidates.iter().enumerate() {
        let (ns, name) = o.object.id();
        // The file's own duplicates are validation's to report.
        if i < from_file {
            index.insert((ns, name), i);
            continue;
        }
        if name.is_empty() {
            continue;
        }
        let Some(&held) = index.get(&(ns, name)) else {
            index.insert((ns, name), i);
            continue;
        };
        keep[i] = false;
        let held = &candidates[held].origin;
        let path = object_path(kind, ns, name, 0);
        match (&o.origin, held) {
            (Origin::Etcd { key: lost, .. }, _) => warnings.push(format!(
                "{path}: etcd key {lost} skipped: the same object is already defined by {held}"
            )),
            _ => errors.push(FieldError::duplicate(
                format!("{path}.name"),
                format!("{ns}/{name}: defined in {held} and in {}", o.origin),
            )),
        }
    }
    drop(index);
    candidates
        .into_iter()
        .zip(keep)
        .filter(|(_, keep)| *keep)
        .map(|(o, _)| (o.object, o.origin))
        .unzip()
}

/// Merges the file's settings and objects with other sources' objects under
/// the conflict rules of the module docs. Errors are local duplicates.
pub fn merge(file: &RawConfig, others: Vec<DesiredState>) -> Result<Merged, ConfigErrors> {
    merge_owned(file.clone(), others)
}

/// [`merge`], moving the file's objects rather than copying them (a load
/// of 10,000 services copied every raw object twice here).
fn merge_owned(mut file: RawConfig, others: Vec<DesiredState>) -> Result<Merged, ConfigErrors> {
    let file_services = std::mem::take(&mut file.services);
    let file_pods = std::mem::take(&mut file.pods);
    let file_endpoints = std::mem::take(&mut file.endpoints);
    let file_pools = std::mem::take(&mut file.ip_pools);
    let mut errors = Vec::new();
    let mut merged = Merged {
        raw: file,
        ..Merged::default()
    };
    let mut services = Vec::new();
    let mut pods = Vec::new();
    let mut endpoints = Vec::new();
    let mut ip_pools = Vec::new();
    for s in others {
        services.extend(s.services);
        pods.extend(s.pods);
        endpoints.extend(s.endpoints);
        ip_pools.extend(s.ip_pools);
        merged.warnings.extend(s.warnings);
    }
    errors.extend(exec_probes::refused(&merged.raw, &pods));
    let (raw, origins, w) = (&mut merged.raw, &mut merged.origins, &mut merged.warnings);
    (raw.services, origins.services) =
        merge_kind("services", file_services, services, &mut errors, w);
    (raw.pods, origins.pods) = merge_kind("pods", file_pods, pods, &mut errors, w);
    (raw.endpoints, origins.endpoints) =
        merge_kind("endpoints", file_endpoints, endpoints, &mut errors, w);
    (raw.ip_pools, origins.ip_pools) = merge_kind("ip_pools", file_pools, ip_pools, &mut errors, w);
    if errors.is_empty() {
        Ok(merged)
    } else {
        Err(ConfigErrors { errors })
    }
}

/// Merges whole states from every source (one of which may carry the
/// config file: [`DesiredState::file`]) under the conflict rules of the
/// module docs. Two states that both carry a file are an error.
pub fn merge_states(states: Vec<DesiredState>) -> Result<Merged, ConfigErrors> {
    let mut file: Option<RawConfig> = None;
    let mut others = Vec::with_capacity(states.len());
    for mut state in states {
        if let Some(f) = state.file.take() {
            if file.is_some() {
                return Err(ConfigErrors::single(FieldError::internal(
                    "sources",
                    "two sources carry a config file",
                )));
            }
            file = Some(f);
        }
        others.push(state);
    }
    merge_owned(file.unwrap_or_default(), others)
}

/// Merges and validates every source's state (see [`merge_states`]) through
/// `loader` (which keeps allocations stable). An etcd object named by a
/// validation error is dropped (reported with its key) and the rest is tried
/// again, a bounded number of times; errors in local objects fail the load as
/// a bad file does.
pub fn load_merged(loader: &mut Loader, states: Vec<DesiredState>) -> Result<Config, ConfigErrors> {
    let started = std::time::Instant::now();
    let mut merged = merge_states(states)?;
    tracing::debug!(merge = ?started.elapsed(), "load: sources merged");
    #[cfg(feature = "manifests")]
    let located = |mut errors: ConfigErrors, merged: &Merged| {
        crate::locate::locate_manifest_objects(&mut errors.errors, &merged.manifest_paths());
        errors
    };
    #[cfg(not(feature = "manifests"))]
    let located = |errors: ConfigErrors, _: &Merged| errors;
    let mut warnings = std::mem::take(&mut merged.warnings);
    // Each round drops at least one object, so a handful of rounds covers
    // any realistic number of bad objects; the bound keeps it finite.
    for _round in 0..8 {
        match loader.load_raw(&merged.raw) {
            Ok(mut config) => {
                warnings.append(&mut config.warnings);
                config.warnings = warnings;
                return Ok(config);
            }
            Err(errors) => {
                // Paths are recomputed each round: an unnamed object's
                // (`kind[INDEX]`) moves when objects before it are dropped.
                let etcd_paths = merged.etcd_paths();
                let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
                let mut local = Vec::new();
                for e in &errors.errors {
                    let hit = etcd_paths.iter().find(|(p, _)| {
                        e.path == **p
                            || e.path.starts_with(&format!("{p}."))
                            || e.path.starts_with(&format!("{p}["))
                    });
                    match hit {
                        Some((p, key)) => bad
                            .entry(p.clone())
                            .or_default()
                            .push(format!("{key}: {e}")),
                        None => local.push(e.clone()),
                    }
                }
                if !local.is_empty() || bad.is_empty() {
                    return Err(located(errors, &merged));
                }
                for lines in bad.values() {
                    for l in lines {
                        warnings.push(format!("skipped etcd object: {l}"));
                    }
                }
                merged.drop_paths(&bad);
            }
        }
    }
    loader
        .load_raw(&merged.raw)
        .map_err(|e| located(e, &merged))
}
