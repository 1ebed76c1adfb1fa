//! What the last load validated, by the raw object it came from, so an
//! object that did not change is not validated again.
//!
//! Sources share their objects between reads (see
//! [`Sourced`](crate::source::Sourced)), so "did not change" is "the same
//! allocation": the memo holds each raw object it saw (which keeps its
//! address from being reused by another) beside what validating it gave.
//! Only objects that validated without an error or a warning are kept
//! (those must be reported at every load), and only named ones (an unnamed
//! object's path holds its position in the list). A load keeps what it used
//! and forgets the rest, so the memo never outgrows the desired state.
//!
//! Validating one object depends on nothing but the object: objects that
//! depend on the node or on other objects (pods, the cross-object checks)
//! are validated at every load.

use std::collections::HashMap;
use std::sync::Arc;

use super::objects::{self, Endpoints};
use super::service::{self, ServiceDraft};
use crate::error::Errors;
use crate::raw::{RawEndpoints, RawService};

/// Validated objects by the address of their raw object (see the module).
#[derive(Debug, Default)]
pub(crate) struct Memo {
    endpoints: HashMap<usize, (Arc<RawEndpoints>, Arc<Endpoints>)>,
    services: HashMap<usize, (Arc<RawService>, ServiceDraft)>,
}

fn address<T>(object: &Arc<T>) -> usize {
    Arc::as_ptr(object) as usize
}

/// One load's use of a [`Memo`]: the last load's entries, and this load's.
pub(crate) struct Pass<'m> {
    last: Memo,
    next: &'m mut Memo,
}

impl Memo {
    /// Starts a load: entries it does not use are gone when it ends.
    pub(crate) fn pass(&mut self) -> Pass<'_> {
        Pass {
            last: std::mem::take(self),
            next: self,
        }
    }
}

impl Pass<'_> {
    /// [`objects::endpoints`], or what it gave for the same object last time.
    pub(crate) fn endpoints(
        &mut self,
        raw: &Arc<RawEndpoints>,
        index: usize,
        errs: &mut Errors,
    ) -> Option<Arc<Endpoints>> {
        let key = address(raw);
        let valid = match self.last.endpoints.remove(&key) {
            Some((_, valid)) => valid,
            None => {
                let before = errs.len();
                let valid = Arc::new(objects::endpoints(raw, index, errs)?);
                if errs.len() > before || raw.name.is_empty() {
                    return Some(valid);
                }
                valid
            }
        };
        self.next
            .endpoints
            .insert(key, (raw.clone(), valid.clone()));
        Some(valid)
    }

    /// [`service::service`], or what it gave for the same object last time.
    pub(crate) fn service(
        &mut self,
        raw: &Arc<RawService>,
        index: usize,
        errs: &mut Errors,
        warnings: &mut Vec<String>,
    ) -> Option<ServiceDraft> {
        let key = address(raw);
        if let Some(entry) = self.last.services.remove(&key) {
            let draft = entry.1.clone();
            self.next.services.insert(key, entry);
            return Some(draft);
        }
        let (errors, warned) = (errs.len(), warnings.len());
        let draft = service::service(raw, index, errs, warnings)?;
        if errs.len() == errors && warnings.len() == warned && !raw.name.is_empty() {
            self.next.services.insert(key, (raw.clone(), draft.clone()));
        }
        Some(draft)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(name: &str, ip: &str) -> Arc<RawEndpoints> {
        Arc::new(
            crate::parse_str(&format!(
                "[[endpoints]]\nname = \"{name}\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"{ip}\" }}]\n"
            ))
            .expect("parses")
            .endpoints[0]
            .as_ref()
            .clone(),
        )
    }

    #[test]
    fn the_same_object_is_validated_once_and_a_new_one_again() {
        let mut memo = Memo::default();
        let raw = endpoints("web", "127.0.0.10");
        let mut errs = Errors::default();
        let first = memo.pass().endpoints(&raw, 0, &mut errs).expect("valid");
        let again = memo.pass().endpoints(&raw, 0, &mut errs).expect("valid");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same raw object: not validated again"
        );
        // Equal contents in a new allocation: validated afresh.
        let copy = Arc::new(raw.as_ref().clone());
        let fresh = memo.pass().endpoints(&copy, 0, &mut errs).expect("valid");
        assert!(!Arc::ptr_eq(&first, &fresh));
        assert!(errs.is_empty());
    }

    #[test]
    fn an_object_with_errors_is_validated_and_reported_at_every_load() {
        let mut memo = Memo::default();
        let raw = endpoints("web", "not-an-ip");
        for _ in 0..2 {
            let mut errs = Errors::default();
            let mut pass = memo.pass();
            let _ = pass.endpoints(&raw, 0, &mut errs);
            assert_eq!(errs.len(), 1, "{:?}", errs.list);
        }
    }

    #[test]
    fn a_load_forgets_the_objects_it_did_not_see() {
        let mut memo = Memo::default();
        let (a, b) = (endpoints("a", "127.0.0.10"), endpoints("b", "127.0.0.11"));
        let mut errs = Errors::default();
        {
            let mut pass = memo.pass();
            pass.endpoints(&a, 0, &mut errs);
            pass.endpoints(&b, 1, &mut errs);
        }
        memo.pass().endpoints(&b, 0, &mut errs);
        assert_eq!(memo.endpoints.len(), 1);
        assert_eq!(Arc::strong_count(&a), 1, "a's raw object is no longer held");
    }
}
