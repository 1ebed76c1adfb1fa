//! The live status page at the admin listener's `/`, and the ring of recent
//! events (reloads, their errors, endpoint state changes) it shows.
//!
//! The page is plain HTML, CSS and JavaScript compiled into the binary with
//! `include_str!`: no build step, nothing fetched from elsewhere (the admin
//! network may be closed). It polls the JSON API (`/api/v1/services`,
//! `/api/v1/endpoints`, `/api/v1/events`) every second and redraws in place,
//! computing byte rates from the difference between two polls.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The page served at `/`.
pub const INDEX_HTML: &str = include_str!("index.html");

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
            time: crate::ops::views::format_rfc3339(SystemTime::now()),
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
