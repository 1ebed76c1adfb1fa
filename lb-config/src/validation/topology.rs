//! Topology fields: `node.zone`, a pod's or endpoint address's `zone`, an
//! address's `for_zones`/`for_nodes` hints (as `ValidateEndpointSlice`'s
//! `validateHints`) and a service's `traffic_distribution` (as
//! `validateServiceTrafficDistribution`).

use crate::hash::{HashSet, HashSetExt};

use lb_core::{EndpointHints, TrafficDistribution};

use super::fields::at_most;
use super::names;
use crate::error::{At, Errors, FieldError};
use crate::raw::MAX_ZONE_HINTS;

/// `supportedTrafficDistribution` with `PreferSameTrafficDistribution` on
/// (GA since Kubernetes 1.35), in its order.
const SUPPORTED_TRAFFIC_DISTRIBUTION: &[&str] =
    &["PreferClose", "PreferSameZone", "PreferSameNode"];

/// A zone: a label value (it is the `topology.kubernetes.io/zone` label of
/// a node); `""` is no zone.
pub(crate) fn zone(
    path: &(impl std::fmt::Display + ?Sized),
    value: Option<&str>,
    errs: &mut Errors,
) -> Option<String> {
    let value = value.filter(|z| !z.is_empty())?;
    let problems = names::label_value(value);
    let ok = problems.is_empty();
    for m in problems {
        errs.push(FieldError::invalid(path.to_string(), value, m));
    }
    ok.then(|| value.to_string())
}

/// An address's hints: at most [`MAX_ZONE_HINTS`] of each, no duplicate,
/// zones label values and nodes node names.
pub(crate) fn hints(
    path: &At<'_>,
    for_zones: Option<&[String]>,
    for_nodes: Option<&[String]>,
    errs: &mut Errors,
) -> EndpointHints {
    let mut list = |field: &str, names: Option<&[String]>, check: fn(&str) -> Vec<String>| {
        let names = names.unwrap_or_default();
        let at = path.field(field);
        if !at_most(&at, names.len(), MAX_ZONE_HINTS, errs) {
            return Vec::new();
        }
        let mut seen = HashSet::new();
        for (i, n) in names.iter().enumerate() {
            let p = at.index(i);
            if !seen.insert(n.as_str()) {
                errs.push(FieldError::duplicate(p.to_string(), n.as_str()));
            }
            for m in check(n) {
                errs.push(FieldError::invalid(p.to_string(), n.as_str(), m));
            }
        }
        names.to_vec()
    };
    EndpointHints {
        for_zones: list("for_zones", for_zones, names::label_value),
        for_nodes: list("for_nodes", for_nodes, names::dns1123_subdomain),
    }
}

/// `traffic_distribution`: one of Kubernetes' values, with its
/// "Unsupported value" otherwise.
pub(crate) fn traffic_distribution(
    path: &str,
    value: Option<&str>,
    errs: &mut Errors,
) -> Option<TrafficDistribution> {
    match value? {
        "PreferClose" => Some(TrafficDistribution::PreferClose),
        "PreferSameZone" => Some(TrafficDistribution::PreferSameZone),
        "PreferSameNode" => Some(TrafficDistribution::PreferSameNode),
        other => {
            errs.push(FieldError::not_supported(
                path,
                other,
                SUPPORTED_TRAFFIC_DISTRIBUTION,
            ));
            None
        }
    }
}
