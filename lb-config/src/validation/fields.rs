//! Checks of fields that several objects share: label maps and port
//! protocols.

use std::collections::BTreeMap;

use lb_core::Protocol;

use super::names;
use crate::error::{Errors, FieldError};

/// Validates a label map (selector or pod labels) as `ValidateLabels` does.
pub(crate) fn labels(path: &str, map: &BTreeMap<String, String>, errs: &mut Errors) {
    for (k, v) in map {
        for m in names::label_key(k) {
            errs.push(FieldError::invalid(path, k, m));
        }
        for m in names::label_value(v) {
            errs.push(FieldError::invalid(path, v, m));
        }
    }
}

/// A port protocol: `TCP` (default) or `UDP`.
pub(crate) fn protocol(path: &str, value: &Option<String>, errs: &mut Errors) -> Protocol {
    match value.as_deref() {
        None => Protocol::Tcp,
        Some(text) => match text.parse() {
            Ok(p) => p,
            Err(()) => {
                errs.push(FieldError::not_supported(path, text, &["TCP", "UDP"]));
                Protocol::Tcp
            }
        },
    }
}

/// Whether a list of `len` items at `path` is within its bound `max`;
/// when not, Kubernetes' `Too many: <len>: must have at most <max> items`
/// is pushed and the caller skips the items (one error, not one per item
/// of a list that may hold 100,000).
pub(crate) fn at_most(
    path: &(impl std::fmt::Display + ?Sized),
    len: usize,
    max: usize,
    errs: &mut Errors,
) -> bool {
    if len > max {
        errs.push(FieldError::too_many(path.to_string(), len, max));
        return false;
    }
    true
}
