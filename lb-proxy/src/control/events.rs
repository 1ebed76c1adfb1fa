//! What happened, for operators, shaped as Kubernetes events: each has a
//! `type` (`Normal` or `Warning`), a `reason`, a `message` and the object it
//! is about, and the same reason and message on the same object raise a
//! `count` (with `first_seen` kept and `last_seen` moved) instead of adding
//! an entry, as Kubernetes' event correlator does; and, as its aggregator,
//! the same reason on the same object with [`AGGREGATE_MAX_EVENTS`]
//! different messages within [`AGGREGATE_INTERVAL`] becomes one entry whose
//! message is the latest, prefixed `(combined from similar events): `. So a
//! flapping endpoint or a failing probe is a few entries with rising counts,
//! never a flood. At most
//! [`EVENT_CAPACITY`] are kept (the least recently seen are dropped). The
//! status page, `/api/v1/events`, `lb-proxy get events` and
//! `lb-proxy describe service` show them.
//!
//! What is an event (the schema this module owns):
//!
//! | object | type | reason | when |
//! |---|---|---|---|
//! | Node (this node) | Normal | `Starting` | the proxy started |
//! | Node | Normal | `Reloaded` | a reload applied a new config |
//! | Node | Warning | `ReloadFailed` | a reload failed validation |
//! | Node | Warning | `StateFileError` | allocations cannot be saved |
//! | Node | Normal | `StateFileSaved` | they are saved again |
//! | Service | Warning | `AllocationFailed` | a LoadBalancer address is pending (MetalLB's event) |
//! | Service | Normal | `EndpointReady` | an endpoint turned ready (a probe passed) |
//! | Service | Warning | `EndpointNotReady` | an endpoint turned not ready (a probe failed) |
//! | Service | Normal | `EndpointTerminating`, `EndpointDraining` | an endpoint leaves |
//! | Service | Normal | `EndpointAdded`, `EndpointRemoved` | an endpoint joined or left |
//! | Service | Warning | `EndpointEjected` | consecutive dial failures ejected an endpoint |
//! | Service | Normal | `EndpointReturned` | its ejection ran out: it takes connections again |
//! | Pod | Warning | `Unhealthy` | a readiness probe failed (the kubelet's reason and words) |
//! | Pod | Normal | `Healthy` | a readiness probe made its pod ready again |
//!
//! Per-connection outcomes are counters (`/metrics`), never events.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lb_core::health::PodKey;
use lb_core::{ServiceEntry, ServiceKey, Snapshot};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::control::follow::{Follower, Reconciled};

/// How many events are kept (the least recently seen are dropped): repeats
/// aggregate into one entry, so this is a thousand distinct happenings,
/// bounded like everything else.
pub const EVENT_CAPACITY: usize = 1000;

/// Different messages with the same reason on the same object within
/// [`AGGREGATE_INTERVAL`] from which on they are combined into one entry
/// (client-go's `defaultAggregateMaxEvents`).
pub const AGGREGATE_MAX_EVENTS: usize = 10;

/// How far back similar events count towards [`AGGREGATE_MAX_EVENTS`]
/// (client-go's `defaultAggregateIntervalInSeconds`, 600).
pub const AGGREGATE_INTERVAL: Duration = Duration::from_secs(600);

/// What Kubernetes' aggregator puts before the message of a combined event.
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// Kubernetes' event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// Something went as it should (a reload, an endpoint turning ready).
    Normal,
    /// Something an operator may need to act on.
    Warning,
}

impl EventType {
    /// `Normal` or `Warning`, as `kubectl get events` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an event is about, as Kubernetes' `involvedObject` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// `Service`, `Pod` or `Node`.
    pub kind: String,
    /// The object's namespace; empty for a Node.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectRef {
    /// A Service, for events about it (its address, its endpoints).
    pub fn service(key: &ServiceKey) -> ObjectRef {
        ObjectRef {
            kind: "Service".to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }
    }

    /// A pod (`namespace/name`), for its readiness probe's events, as the
    /// kubelet records them on the Pod.
    pub fn pod(key: &PodKey) -> ObjectRef {
        ObjectRef {
            kind: "Pod".to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }
    }

    /// This node (the proxy on it), for events about the proxy itself
    /// (start, reloads, the state file), as kube-proxy records its own.
    pub fn node(name: &str) -> ObjectRef {
        ObjectRef {
            kind: "Node".to_string(),
            namespace: String::new(),
            name: name.to_string(),
        }
    }

    /// `kind/name` (`service/web`, `node/node-1`), as the OBJECT column of
    /// `kubectl get events` prints it.
    pub fn display(&self) -> String {
        format!("{}/{}", self.kind.to_ascii_lowercase(), self.name)
    }
}

/// One event as `/api/v1/events` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Why, in one CamelCase word (`ReloadFailed`, `AllocationFailed`).
    pub reason: String,
    /// What happened, in one or a few lines.
    pub message: String,
    /// What it happened to.
    pub object: ObjectRef,
    /// How many times it happened (the same reason and message on the same
    /// object).
    pub count: u64,
    /// The first time, RFC 3339 in UTC.
    pub first_seen: String,
    /// The last time, RFC 3339 in UTC.
    pub last_seen: String,
}

/// Body of `GET /api/v1/events`: most recently seen first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventList {
    /// The events, most recently seen first.
    pub items: Vec<Event>,
}

impl EventList {
    /// The events about `object`, most recently seen first (what `describe`
    /// shows under Events).
    pub fn about(&self, kind: &str, namespace: &str, name: &str) -> Vec<&Event> {
        self.items
            .iter()
            .filter(|e| {
                e.object.kind == kind && e.object.namespace == namespace && e.object.name == name
            })
            .collect()
    }
}

/// One kept event, with its times unformatted.
#[derive(Debug)]
struct Entry {
    event_type: EventType,
    reason: String,
    message: String,
    object: ObjectRef,
    count: u64,
    first: SystemTime,
    last: SystemTime,
    /// Holds every similar event since [`AGGREGATE_MAX_EVENTS`] of them
    /// came (its message is the latest, prefixed).
    combined: bool,
}

impl Entry {
    fn similar(&self, event_type: EventType, reason: &str, object: &ObjectRef) -> bool {
        self.event_type == event_type && self.reason == reason && self.object == *object
    }
}

/// The recent events, shared by the parts that record (control plane,
/// followers) and the admin API (which reads). Recording takes a short lock
/// and scans at most [`EVENT_CAPACITY`] entries; it happens on reloads and
/// state changes, never per connection.
#[derive(Debug, Default)]
pub struct Events {
    /// Least recently seen first.
    entries: Mutex<VecDeque<Entry>>,
}

impl Events {
    /// Records an event now.
    pub fn record(
        &self,
        event_type: EventType,
        reason: &str,
        object: ObjectRef,
        message: impl Into<String>,
    ) {
        self.record_at(SystemTime::now(), event_type, reason, object, message);
    }

    /// Records an event seen at `at`: a repeat of a kept one (same object,
    /// type, reason and message) raises its count and moves its last time;
    /// a message that would be the [`AGGREGATE_MAX_EVENTS`]th different one
    /// with this reason on this object within [`AGGREGATE_INTERVAL`] goes to
    /// their combined entry; anything else is a new entry, and the least
    /// recently seen entry goes when [`EVENT_CAPACITY`] are kept.
    pub fn record_at(
        &self,
        at: SystemTime,
        event_type: EventType,
        reason: &str,
        object: ObjectRef,
        message: impl Into<String>,
    ) {
        let message = message.into();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let similar = |e: &Entry| e.similar(event_type, reason, &object);
        let same = entries
            .iter()
            .rposition(|e| !e.combined && e.message == message && similar(e));
        let mut combine = false;
        let same = same.or_else(|| {
            let recent = entries
                .iter()
                .filter(|e| {
                    similar(e) && at.duration_since(e.last).unwrap_or_default() < AGGREGATE_INTERVAL
                })
                .count();
            combine = recent + 1 >= AGGREGATE_MAX_EVENTS;
            if combine {
                entries.iter().rposition(|e| e.combined && similar(e))
            } else {
                None
            }
        });
        let entry = match same.and_then(|i| entries.remove(i)) {
            Some(mut e) => {
                e.count = e.count.saturating_add(1);
                e.last = at.max(e.last);
                if e.combined {
                    e.message = format!("{COMBINED_PREFIX}{message}");
                }
                e
            }
            None if combine => Entry {
                event_type,
                reason: reason.to_string(),
                message: format!("{COMBINED_PREFIX}{message}"),
                object,
                count: 1,
                first: at,
                last: at,
                combined: true,
            },
            None => Entry {
                event_type,
                reason: reason.to_string(),
                message,
                object,
                count: 1,
                first: at,
                last: at,
                combined: false,
            },
        };
        while entries.len() >= EVENT_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The events, most recently seen first.
    pub fn list(&self) -> EventList {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        EventList {
            items: entries
                .iter()
                .rev()
                .map(|e| Event {
                    event_type: e.event_type,
                    reason: e.reason.clone(),
                    message: e.message.clone(),
                    object: e.object.clone(),
                    count: e.count,
                    first_seen: time(e.first),
                    last_seen: time(e.last),
                })
                .collect(),
        }
    }
}

/// Records (and logs at info) every endpoint whose state word changes
/// between published snapshots (ready, not ready, terminating, draining), and
/// endpoints that join or leave, as events on their Service. Probe verdicts
/// reach the snapshot as readiness, so a probe transition is one of these.
/// It runs off the data path, under [`crate::control::follow::follow`].
///
/// It keeps the last snapshot it saw, not a copy of every endpoint's state
/// (230 bytes an endpoint, 23 MB at 100,000), and compares only the services
/// whose ports are not the same `Arc`s: a snapshot carries an unchanged
/// port by identity, so a change to one service of 10,000 compares one.
#[derive(Debug)]
pub struct EndpointStates {
    events: Arc<Events>,
    before: Option<Arc<Snapshot>>,
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
        if let Some(before) = &self.before {
            let (was, now) = changed_states(before, &snapshot);
            record_changes(&self.events, &was, &now);
        }
        self.before = Some(snapshot);
        Reconciled::Done
    }
}

/// Records `ejected` as a Warning `EndpointEjected` on its Service. The
/// message leaves out the ejection's length (it doubles on each ejection in
/// a row; the log says it), so an endpoint ejected again and again is one
/// event whose count rises.
pub fn record_ejection(events: &Events, ejected: &crate::dataplane::Ejected) {
    let port = &ejected.port;
    events.record(
        EventType::Warning,
        "EndpointEjected",
        ObjectRef::service(&port.service),
        format!(
            "Endpoint {}/{} {} ejected after consecutive dial failures",
            port_label(port),
            port.protocol,
            ejected.endpoint
        ),
    );
}

/// Records `returned` as a Normal `EndpointReturned` on its Service: its
/// ejection ran out (or a dial to it succeeded), so it takes new
/// connections again. The message is the same each time, so an endpoint
/// ejected and returned again and again is two events whose counts rise.
pub fn record_return(events: &Events, port: &lb_core::ServicePortKey, endpoint: SocketAddr) {
    info!(service = %port, %endpoint, "endpoint returned to rotation after its ejection");
    events.record(
        EventType::Normal,
        "EndpointReturned",
        ObjectRef::service(&port.service),
        format!(
            "Endpoint {}/{} {endpoint} returned to rotation after its ejection",
            port_label(port),
            port.protocol,
        ),
    );
}

/// Turns the data plane's ejection notices into events: each notice is an
/// `EndpointEjected`, and when its ejection has run out, an endpoint still
/// in the table and no longer ejected is an `EndpointReturned`. It runs off
/// the data path (the App runs it on the operator runtime); the ejections
/// waiting to run out are at most one per ejected endpoint.
#[derive(Debug)]
pub struct EjectionEvents {
    events: Arc<Events>,
    table: Arc<lb_core::Table>,
    /// When each ejection runs out, in order (a sequence number keeps two
    /// due at the same instant apart).
    due: BTreeMap<(tokio::time::Instant, u64), (lb_core::ServicePortKey, SocketAddr)>,
    seq: u64,
}

impl EjectionEvents {
    /// Records into `events`, looking endpoints up in `table` when their
    /// ejections run out.
    pub fn new(events: Arc<Events>, table: Arc<lb_core::Table>) -> Self {
        EjectionEvents {
            events,
            table,
            due: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Follows `notices` until `stop` is cancelled (or the notices end and
    /// no ejection is left to run out).
    pub async fn run(
        mut self,
        mut notices: tokio::sync::mpsc::Receiver<crate::dataplane::Ejected>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut open = true;
        loop {
            let next = self.due.keys().next().map(|(at, _)| *at);
            if !open && next.is_none() {
                return;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                notice = notices.recv(), if open => match notice {
                    Some(ejected) => self.ejected(&ejected, tokio::time::Instant::now()),
                    None => open = false,
                },
                () = sleep_until_some(next) => self.run_out(tokio::time::Instant::now()),
            }
        }
    }

    /// Records an ejection and when it runs out (its length from now: the
    /// notice comes after the ejection began, so never too early).
    fn ejected(&mut self, ejected: &crate::dataplane::Ejected, now: tokio::time::Instant) {
        record_ejection(&self.events, ejected);
        self.seq = self.seq.wrapping_add(1);
        self.due.insert(
            (now + ejected.length, self.seq),
            (ejected.port.clone(), ejected.endpoint),
        );
    }

    /// Records a return for every ejection run out by `now` whose endpoint
    /// is still in the table and not ejected again.
    fn run_out(&mut self, now: tokio::time::Instant) {
        let later = self.due.split_off(&(now, u64::MAX));
        let run_out = std::mem::replace(&mut self.due, later);
        if run_out.is_empty() {
            return;
        }
        let snapshot = self.table.load();
        let std_now = now.into_std();
        for (port_key, endpoint) in run_out.into_values() {
            let back = snapshot.port(&port_key).is_some_and(|port| {
                port.index_of(endpoint)
                    .is_some_and(|i| port.endpoint(i).health.ejection(std_now).is_none())
            });
            if back {
                record_return(&self.events, &port_key, endpoint);
            }
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A service port as events name it: its name, else its number.
fn port_label(key: &lb_core::ServicePortKey) -> String {
    if key.port_name.is_empty() {
        key.port.to_string()
    } else {
        key.port_name.clone()
    }
}

/// Endpoint state words, by (service, `PORT/PROTO IP:PORT`).
type States = BTreeMap<(ServiceKey, String), String>;

fn record_changes(events: &Events, before: &States, after: &States) {
    for ((service, endpoint), state) in after {
        let was = before
            .get(&(service.clone(), endpoint.clone()))
            .map(String::as_str);
        if was == Some(state.as_str()) {
            continue;
        }
        info!(service = %service, endpoint = %endpoint, state = %state, previous = was.unwrap_or("none"), "endpoint state changed");
        let (event_type, reason) = match state.as_str() {
            _ if was.is_none() => (EventType::Normal, "EndpointAdded"),
            "ready" => (EventType::Normal, "EndpointReady"),
            "terminating" => (EventType::Normal, "EndpointTerminating"),
            "draining" => (EventType::Normal, "EndpointDraining"),
            _ => (EventType::Warning, "EndpointNotReady"),
        };
        let message = match was {
            Some(was) => format!("Endpoint {endpoint}: {was} -> {state}"),
            None => format!("Endpoint {endpoint} added ({state})"),
        };
        events.record(event_type, reason, ObjectRef::service(service), message);
    }
    for (service, endpoint) in before.keys().filter(|k| !after.contains_key(*k)) {
        info!(service = %service, endpoint = %endpoint, "endpoint removed");
        events.record(
            EventType::Normal,
            "EndpointRemoved",
            ObjectRef::service(service),
            format!("Endpoint {endpoint} removed"),
        );
    }
}

/// The endpoint states of the services that differ between two snapshots
/// (added, removed, or with any port not carried by identity), before and
/// after; the services both share unchanged are left out of both.
fn changed_states(before: &Snapshot, after: &Snapshot) -> (States, States) {
    let (mut was, mut now) = (States::new(), States::new());
    for entry in after.services() {
        let key = &entry.spec.key;
        let old = before.service(key);
        if old.is_some_and(|old| same_ports(old, entry)) {
            continue;
        }
        if let Some(old) = old {
            insert_states(&mut was, old);
        }
        insert_states(&mut now, entry);
    }
    for entry in before.services() {
        if after.service(&entry.spec.key).is_none() {
            insert_states(&mut was, entry);
        }
    }
    (was, now)
}

fn same_ports(a: &ServiceEntry, b: &ServiceEntry) -> bool {
    a.ports.len() == b.ports.len() && a.ports.iter().zip(&b.ports).all(|(a, b)| Arc::ptr_eq(a, b))
}

/// Adds one service's endpoints as (service, `PORT/PROTO IP:PORT`) → state word.
fn insert_states(out: &mut States, service: &ServiceEntry) {
    for port in &service.ports {
        let key = port.key();
        let port_label = port_label(key);
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
            out.insert(
                (
                    key.service.clone(),
                    format!("{port_label}/{} {}", key.protocol, e.addr),
                ),
                state.to_string(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn node() -> ObjectRef {
        ObjectRef::node("node-1")
    }

    /// Service `name` with one TCP port `http` (80) and `endpoints` on 8080,
    /// the first `ready` of them ready.
    fn web(name: &str, endpoints: &[&str], ready: usize) -> lb_core::ServiceSpec {
        let mut port = lb_core::PortSpec::tcp("http", 80);
        for (i, e) in endpoints.iter().enumerate() {
            let mut ep = lb_core::EndpointSpec::new(format!("{e}:8080").parse().expect("address"));
            if i >= ready {
                ep.ready = Some(false);
            }
            port = port.with_endpoint(ep);
        }
        lb_core::ServiceSpec::cluster_ip("default", name, "127.97.0.1".parse().expect("address"))
            .with_port(port)
    }

    async fn follow(states: &mut EndpointStates, services: Vec<lb_core::ServiceSpec>) {
        let node = lb_core::NodeSpec {
            name: "n".into(),
            addresses: vec!["127.97.0.1".parse().expect("address")],
            zone: None,
        };
        let previous = states.before.clone();
        let next = Snapshot::build(node, services, previous.as_deref(), SystemTime::now());
        states.reconcile(Arc::new(next)).await;
    }

    fn messages(events: &Events) -> Vec<String> {
        let mut m: Vec<String> = events
            .list()
            .items
            .iter()
            .map(|e| format!("{} {}: {}", e.object.name, e.reason, e.message))
            .collect();
        m.sort();
        m
    }

    #[tokio::test]
    async fn endpoint_events_name_only_the_services_that_changed() {
        let events = Arc::new(Events::default());
        let mut states = EndpointStates::new(events.clone());
        let a = ["127.97.1.1", "127.97.1.2"];
        let b = ["127.97.2.1"];
        follow(&mut states, vec![web("a", &a, 2), web("b", &b, 1)]).await;
        assert!(
            messages(&events).is_empty(),
            "the first table is the baseline"
        );
        // b unchanged (carried by identity), a loses readiness on one
        // endpoint, c appears.
        follow(
            &mut states,
            vec![
                web("a", &a, 1),
                web("b", &b, 1),
                web("c", &["127.97.3.1"], 1),
            ],
        )
        .await;
        assert_eq!(
            messages(&events),
            [
                "a EndpointNotReady: Endpoint http/TCP 127.97.1.2:8080: ready -> not_ready",
                "c EndpointAdded: Endpoint http/TCP 127.97.3.1:8080 added (ready)",
            ]
        );
        // a leaves; b and c stay as they were.
        follow(
            &mut states,
            vec![web("b", &b, 1), web("c", &["127.97.3.1"], 1)],
        )
        .await;
        let now = messages(&events);
        assert_eq!(now.len(), 4, "{now:?}");
        assert!(
            now.contains(&"a EndpointRemoved: Endpoint http/TCP 127.97.1.1:8080 removed".into())
        );
        assert!(
            now.contains(&"a EndpointRemoved: Endpoint http/TCP 127.97.1.2:8080 removed".into())
        );
    }

    #[test]
    fn a_repeated_event_raises_its_count_and_keeps_its_first_time() {
        let events = Events::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t1 = t0 + Duration::from_secs(60);
        let t2 = t0 + Duration::from_secs(120);
        let failed = "reload failed validation";
        events.record_at(t0, EventType::Warning, "ReloadFailed", node(), failed);
        events.record_at(
            t1,
            EventType::Normal,
            "Reloaded",
            node(),
            "config reloaded: 1 services",
        );
        events.record_at(t2, EventType::Warning, "ReloadFailed", node(), failed);
        let list = events.list();
        assert_eq!(list.items.len(), 2);
        let newest = &list.items[0];
        assert_eq!(newest.reason, "ReloadFailed");
        assert_eq!(newest.count, 2);
        assert_eq!(newest.first_seen, "2023-11-14T22:13:20Z");
        assert_eq!(newest.last_seen, "2023-11-14T22:15:20Z");
        assert_eq!(list.items[1].count, 1);
    }

    #[test]
    fn another_message_or_object_is_another_event() {
        let events = Events::default();
        let web = ObjectRef::service(&ServiceKey::new("default", "web"));
        let api = ObjectRef::service(&ServiceKey::new("default", "api"));
        events.record(EventType::Warning, "AllocationFailed", web.clone(), "a");
        events.record(EventType::Warning, "AllocationFailed", web.clone(), "b");
        events.record(EventType::Warning, "AllocationFailed", api, "a");
        events.record(EventType::Warning, "AllocationFailed", web, "a");
        let list = events.list();
        assert_eq!(list.items.len(), 3);
        assert_eq!(list.items[0].count, 2, "{list:?}");
        assert_eq!(list.about("Service", "default", "web").len(), 2);
    }

    #[test]
    fn a_flapping_endpoint_is_a_few_entries_whose_counts_rise() {
        let events = Events::default();
        let web = ObjectRef::service(&ServiceKey::new("default", "web"));
        let pod = ObjectRef::pod(&PodKey::new("default", "web-1"));
        for _ in 0..50 {
            events.record(
                EventType::Warning,
                "EndpointEjected",
                web.clone(),
                "ejected",
            );
            events.record(
                EventType::Normal,
                "EndpointReturned",
                web.clone(),
                "returned",
            );
            events.record(
                EventType::Warning,
                "Unhealthy",
                pod.clone(),
                "Readiness probe failed: HTTP 500",
            );
        }
        let list = events.list();
        assert_eq!(list.items.len(), 3, "{list:?}");
        assert!(list.items.iter().all(|e| e.count == 50), "{list:?}");
        assert_eq!(list.about("Pod", "default", "web-1").len(), 1);
    }

    #[test]
    fn ten_different_messages_of_one_reason_are_combined_as_kubernetes_does() {
        let events = Events::default();
        let pod = ObjectRef::pod(&PodKey::new("default", "web-1"));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for i in 0..30u64 {
            events.record_at(
                t0 + Duration::from_secs(i),
                EventType::Warning,
                "Unhealthy",
                pod.clone(),
                format!("Readiness probe failed: attempt {i}"),
            );
        }
        let list = events.list();
        // Nine on their own, then one combined entry for the other 21.
        assert_eq!(list.items.len(), AGGREGATE_MAX_EVENTS, "{list:?}");
        let combined = &list.items[0];
        assert_eq!(combined.count, 21);
        assert_eq!(
            combined.message,
            "(combined from similar events): Readiness probe failed: attempt 29"
        );
        // Similar events older than the interval start over.
        let later = t0 + AGGREGATE_INTERVAL + Duration::from_secs(60);
        events.record_at(
            later,
            EventType::Warning,
            "Unhealthy",
            pod.clone(),
            "Readiness probe failed: new",
        );
        assert_eq!(
            events.list().items[0].message,
            "Readiness probe failed: new"
        );
        // Another reason on the same object is counted apart.
        events.record(
            EventType::Normal,
            "Healthy",
            pod,
            "Readiness probe succeeded",
        );
        assert_eq!(events.list().items[0].count, 1);
    }

    #[test]
    fn at_most_a_thousand_events_are_kept_the_least_recently_seen_dropped() {
        let events = Events::default();
        events.record(EventType::Normal, "Starting", node(), "first");
        for i in 0..EVENT_CAPACITY + 5 {
            // Each on its own object, so none is combined with the others.
            let service = ObjectRef::service(&ServiceKey::new("default", format!("s{i}")));
            events.record(
                EventType::Normal,
                "Reloaded",
                service,
                format!("reload {i}"),
            );
            // A repeat keeps its entry alive: it is recent again.
            events.record(EventType::Normal, "Starting", node(), "first");
        }
        let list = events.list();
        assert_eq!(list.items.len(), EVENT_CAPACITY);
        assert_eq!(list.items[0].message, "first");
        assert_eq!(list.items[0].count, EVENT_CAPACITY as u64 + 6);
        assert_eq!(
            list.items[1].message,
            format!("reload {}", EVENT_CAPACITY + 4)
        );
        assert!(!list.items.iter().any(|e| e.message == "reload 0"));
    }
}
