//! What the last load validated, by the raw object it came from, so a
//! service that did not change is not validated again.
//!
//! Sources share their objects between reads (see
//! [`Sourced`](crate::source::Sourced) and
//! [`DesiredState::share_unchanged`](crate::source::DesiredState::share_unchanged)),
//! so "did not change" is "the same allocation": the memo holds each raw
//! object it saw (which keeps its address from being reused by another)
//! beside what validating it gave. Only services that validated without an
//! error or a warning are kept (those must be reported at every load), and
//! only named ones (an unnamed object's path holds its position in the
//! list). A load keeps what it used and forgets the rest, so the memo never
//! outgrows the desired state.
//!
//! Endpoints objects are validated at every load, on purpose: keeping
//! their validated addresses for 10,000 services held 24 MB to save about
//! 10 ms per load, once their paths were written only for errors. Pods
//! depend on the node, and the checks across objects on every object.

use crate::hash::HashMap;
use std::sync::Arc;

use super::service::{self, ServiceDraft};
use crate::error::Errors;
use crate::raw::RawService;

/// Validated services by the address of their raw object (see the module).
#[derive(Debug, Default)]
pub(crate) struct Memo {
    /// Boxed: every load moves each entry from the last pass's map to the
    /// next's, and a draft is a few hundred bytes.
    services: HashMap<usize, Box<(Arc<RawService>, ServiceDraft)>>,
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
    /// [`service::service`], or what it gave for the same object last time.
    pub(crate) fn service(
        &mut self,
        raw: &Arc<RawService>,
        index: usize,
        errs: &mut Errors,
        warnings: &mut Vec<String>,
    ) -> Option<ServiceDraft> {
        let key = Arc::as_ptr(raw) as usize;
        if let Some(entry) = self.last.services.remove(&key) {
            let draft = entry.1.clone();
            // Capacity for all of the last pass's entries, reserved once.
            if self.next.services.capacity() == 0 {
                self.next.services.reserve(self.last.services.len() + 1);
            }
            self.next.services.insert(key, entry);
            return Some(draft);
        }
        let (errors, warned) = (errs.len(), warnings.len());
        let mut draft = service::service(raw, index, errs, warnings)?;
        draft.source = Some(raw.clone());
        if errs.len() == errors && warnings.len() == warned && !raw.name.is_empty() {
            self.next
                .services
                .insert(key, Box::new((raw.clone(), draft.clone())));
        }
        Some(draft)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, port: &str) -> Arc<RawService> {
        crate::parse_str(&format!(
            "[[services]]\nname = \"{name}\"\nports = [{{ port = {port} }}]\n"
        ))
        .expect("parses")
        .services[0]
            .clone()
    }

    #[test]
    fn the_same_object_is_validated_once_and_a_new_one_again() {
        let mut memo = Memo::default();
        let raw = service("web", "80");
        let mut errs = Errors::default();
        let mut warnings = Vec::new();
        memo.pass()
            .service(&raw, 0, &mut errs, &mut warnings)
            .expect("valid");
        assert_eq!(memo.services.len(), 1);
        let key = Arc::as_ptr(&raw) as usize;
        // Poison the entry: a second load must take it, not validate again.
        memo.services.get_mut(&key).expect("kept").1.path = "memo".into();
        let again = memo
            .pass()
            .service(&raw, 0, &mut errs, &mut warnings)
            .expect("valid");
        assert_eq!(
            again.path, "memo",
            "the same raw object: not validated again"
        );
        // Equal contents in a new allocation: validated afresh.
        let copy = Arc::new(raw.as_ref().clone());
        let fresh = memo
            .pass()
            .service(&copy, 0, &mut errs, &mut warnings)
            .expect("valid");
        assert_eq!(fresh.path, "services[web]");
        assert!(errs.is_empty());
    }

    #[test]
    fn a_service_with_errors_is_validated_and_reported_at_every_load() {
        let mut memo = Memo::default();
        let raw = service("web", "0");
        for _ in 0..2 {
            let mut errs = Errors::default();
            let _ = memo.pass().service(&raw, 0, &mut errs, &mut Vec::new());
            assert_eq!(errs.len(), 1, "{:?}", errs.list);
        }
        assert!(memo.services.is_empty());
    }

    #[test]
    fn a_load_forgets_the_objects_it_did_not_see() {
        let mut memo = Memo::default();
        let (a, b) = (service("a", "80"), service("b", "81"));
        let mut errs = Errors::default();
        {
            let mut pass = memo.pass();
            pass.service(&a, 0, &mut errs, &mut Vec::new());
            pass.service(&b, 1, &mut errs, &mut Vec::new());
        }
        memo.pass().service(&b, 0, &mut errs, &mut Vec::new());
        assert_eq!(memo.services.len(), 1);
        assert_eq!(Arc::strong_count(&a), 1, "a's raw object is no longer held");
    }
}
