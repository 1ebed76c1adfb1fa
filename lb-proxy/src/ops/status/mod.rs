//! The live status page at the admin listener's `/`. The recent
//! events it shows is [`crate::control::events`]'s.
//!
//! The page is plain HTML, CSS and JavaScript compiled into the binary with
//! `include_str!`: no build step, nothing fetched from elsewhere (the admin
//! network may be closed). It polls the JSON API (`/api/v1/services`,
//! `/api/v1/endpoints`, `/api/v1/events`) every second and redraws in place,
//! computing byte rates from the difference between two polls, and
//! `/api/v1/rates` every five seconds for the sparklines ([`history`]).

pub mod history;

pub use crate::control::events::{Event, EventList, EventType, Events, ObjectRef, EVENT_CAPACITY};
pub use history::{History, RatesList, ServiceRates, RATES_PATH};

/// The page served at `/`.
pub const INDEX_HTML: &str = include_str!("index.html");
