//! Raw file to typed objects, collecting every error with its path, in the
//! words of Kubernetes' validation (`ValidateService`, `ValidateObjectMeta`,
//! `ValidateEndpoints`, ...).

mod dns;
mod external;
mod fields;
mod ip_pools;
mod listeners;
mod memo;
mod names;
mod objects;
mod self_loop;
mod service;
mod settings;
mod topology;

use crate::hash::{HashSet, HashSetExt};

pub(crate) use listeners::{check_services as check_listeners, reserved_node_ports};
pub(crate) use memo::Memo;
pub(crate) use objects::{Endpoints, ManualEndpoints, Pod};
pub(crate) use self_loop::check as check_self_loops;
pub(crate) use service::{IpRequest, ServiceDraft};
pub(crate) use settings::Settings;

use crate::error::{object_path, Errors, FieldError};
use crate::raw::RawConfig;

/// Everything valid in the file, ready for allocation and endpoint resolution.
#[derive(Debug)]
pub(crate) struct Validated {
    pub(crate) settings: Settings,
    pub(crate) services: Vec<ServiceDraft>,
    pub(crate) pods: Vec<Pod>,
    pub(crate) endpoints: Vec<ManualEndpoints>,
    /// `[[ip_pools]]`, valid ones only.
    pub(crate) pools: Vec<lb_core::pool::IpPool>,
    pub(crate) warnings: Vec<String>,
}

/// Validates the whole file. Objects with errors are left out of the result;
/// the caller refuses the config when `errs` is not empty.
/// Objects `memo` validated at the last load are not validated again.
pub(crate) fn validate(
    raw: &RawConfig,
    hostname: &str,
    memo: &mut Memo,
    carry: &crate::carry::Carry,
    errs: &mut Errors,
) -> Validated {
    let mut memo = memo.pass();
    let settings = settings::settings(raw, hostname, errs);
    listeners::check_own(&settings, errs);
    let mut warnings = settings::warnings(&settings);

    let mut services = Vec::with_capacity(raw.services.len());
    let mut seen = HashSet::with_capacity(raw.services.len());
    for (i, s) in raw.services.iter().enumerate() {
        let ns = s.namespace.as_deref().unwrap_or("default");
        if !s.name.is_empty() && !seen.insert((ns, s.name.as_str())) {
            errs.push(FieldError::duplicate(
                format!("{}.name", object_path("services", ns, &s.name, i)),
                &s.name,
            ));
            continue;
        }
        services.extend(memo.service(s, i, errs, &mut warnings));
    }

    let mut pods = Vec::with_capacity(raw.pods.len());
    let mut seen = HashSet::with_capacity(raw.pods.len());
    for (i, p) in raw.pods.iter().enumerate() {
        let ns = p.namespace.as_deref().unwrap_or("default");
        if !p.name.is_empty() && !seen.insert((ns, p.name.as_str())) {
            errs.push(FieldError::duplicate(
                format!("{}.name", object_path("pods", ns, &p.name, i)),
                &p.name,
            ));
            continue;
        }
        pods.extend(objects::pod(p, i, &settings.node, errs));
    }

    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    let mut seen = HashSet::with_capacity(raw.endpoints.len());
    // Services with a selector, by namespace and name: one lookup per
    // `[[endpoints]]` object instead of a scan of every service.
    let selected: HashSet<(&str, &str)> = raw
        .services
        .iter()
        .filter(|s| s.selector.as_ref().is_some_and(|sel| !sel.is_empty()))
        .map(|s| (s.namespace.as_deref().unwrap_or("default"), s.name.as_str()))
        .collect();
    for (i, e) in raw.endpoints.iter().enumerate() {
        let ns = e.namespace.as_deref().unwrap_or("default");
        let path = || object_path("endpoints", ns, &e.name, i);
        if !e.name.is_empty() && !seen.insert((ns, e.name.as_str())) {
            errs.push(FieldError::duplicate(format!("{}.name", path()), &e.name));
            continue;
        }
        if selected.contains(&(ns, e.name.as_str())) {
            let path = path();
            warnings.push(format!(
                "{path}: ignored: the service of the same name has a selector, so its endpoints come from [[pods]]"
            ));
        }
        if carry.validated(e) {
            endpoints.push(ManualEndpoints::new(e.clone(), i, None));
        } else if let Some(valid) = objects::endpoints(e, i, errs) {
            endpoints.push(ManualEndpoints::new(e.clone(), i, Some(valid)));
        }
    }

    let pools = ip_pools::pools(raw, &settings.allowed_external, errs);
    external::check_services(&services, &settings.allowed_external, errs);
    ip_pools::bind_warnings(&pools, settings.vip_mode, &mut warnings);

    Validated {
        settings,
        services,
        pods,
        endpoints,
        pools,
        warnings,
    }
}
