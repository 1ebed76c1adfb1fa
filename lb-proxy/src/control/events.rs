//! What happened, for operators: a bounded ring of recent events (reloads,
//! their errors, endpoint state changes) that the status page and
//! `/api/v1/events` show, and the follower that records endpoint state
//! changes by comparing published snapshots.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use lb_core::Snapshot;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::control::follow::{Follower, Reconciled};

/// How many events the ring keeps (older ones are dropped): enough to see
/// what happened around the last few reloads, bounded like everything else.
pub const EVENT_CAPACITY: usize = 100;

/// One thing an operator wants to see happened: a reload (applied or
/// refused, with its errors), an endpoint that changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, RFC 3339 in UTC.
    pub time: String,
    /// `info`, `warning` or `error`.
    pub level: String,
    /// `reload`, `endpoint`, `start`.
    pub kind: String,
    /// What happened, in one or a few lines.
    pub message: String,
}

/// Body of `GET /api/v1/events`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventList {
    /// The events, newest first.
    pub items: Vec<Event>,
}

/// A bounded ring of recent events, shared by the App (which records) and
/// the admin API (which reads). Recording takes a short lock; it happens on
/// reloads and state changes, never per connection.
#[derive(Debug, Default)]
pub struct Events {
    ring: Mutex<VecDeque<Event>>,
}

impl Events {
    /// Records an event now.
    pub fn record(&self, level: &str, kind: &str, message: impl Into<String>) {
        let event = Event {
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            level: level.to_string(),
            kind: kind.to_string(),
            message: message.into(),
        };
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == EVENT_CAPACITY {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The events, newest first.
    pub fn list(&self) -> EventList {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        EventList {
            items: ring.iter().rev().cloned().collect(),
        }
    }
}

/// Records (and logs at info) every endpoint whose state word changes
/// between published snapshots (ready, not ready, terminating, draining), and
/// endpoints that join or leave. It runs off the data path, under
/// [`crate::control::follow::follow`].
#[derive(Debug)]
pub struct EndpointStates {
    events: Arc<Events>,
    before: Option<BTreeMap<String, String>>,
}

impl EndpointStates {
    /// Records into `events`; the first snapshot it sees is the baseline.
    pub fn new(events: Arc<Events>) -> Self {
        EndpointStates {
            events,
            before: None,
        }
    }
}

impl Follower for EndpointStates {
    async fn reconcile(&mut self, snapshot: Arc<Snapshot>) -> Reconciled {
        let after = endpoint_states(&snapshot);
        if let Some(before) = &self.before {
            record_changes(&self.events, before, &after);
        }
        self.before = Some(after);
        Reconciled::Done
    }
}

fn record_changes(
    events: &Events,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) {
    for (key, state) in after {
        let was = before.get(key).map(String::as_str);
        if was == Some(state.as_str()) {
            continue;
        }
        let message = match was {
            Some(was) => format!("{key}: {was} -> {state}"),
            None => format!("{key}: added ({state})"),
        };
        info!(endpoint = %key, state = %state, previous = was.unwrap_or("none"), "endpoint state changed");
        let level = if state == "ready" { "info" } else { "warning" };
        events.record(level, "endpoint", message);
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        info!(endpoint = %key, "endpoint removed");
        events.record("info", "endpoint", format!("{key}: removed"));
    }
}

/// `namespace/service:port/PROTO IP:PORT` → state word.
fn endpoint_states(snapshot: &Snapshot) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for service in snapshot.services() {
        for port in &service.ports {
            let key = port.key();
            for e in port.endpoints() {
                let state = if e.weight == 0 {
                    "draining"
                } else if e.terminating && !e.ready {
                    "terminating"
                } else if e.ready {
                    "ready"
                } else {
                    "not_ready"
                };
                // The key prints as namespace/service:port/PROTO.
                out.insert(format!("{key} {}", e.addr), state.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_events_first() {
        let events = Events::default();
        for i in 0..EVENT_CAPACITY + 5 {
            events.record("info", "reload", format!("reload {i}"));
        }
        let list = events.list();
        assert_eq!(list.items.len(), EVENT_CAPACITY);
        assert_eq!(
            list.items[0].message,
            format!("reload {}", EVENT_CAPACITY + 4)
        );
    }
}
