//! Features the contract names but this release does not serve yet. They are
//! refused here, all in one place, rather than silently ignored: a user who
//! writes `type = "LoadBalancer"` must not believe an address is being
//! announced. The release that implements a feature deletes its lines here.

use crate::error::Errors;
use crate::raw::RawConfig;

/// Pushes one error per unsupported feature in use.
pub(crate) fn check(raw: &RawConfig, errs: &mut Errors) {
    if let Some(etcd) = raw.source.as_ref().and_then(|s| s.etcd.as_ref()) {
        // Served by `source::etcd`; its own checks refuse what is not yet.
        crate::source::etcd::EtcdSettings::from_raw(etcd, errs);
    }
}
