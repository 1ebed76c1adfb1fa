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
