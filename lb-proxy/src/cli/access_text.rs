//! The access log's line in the binary's text format (`--log-format text`):
//! the fields of an access event in a fixed order, as nginx's stream
//! module writes them, instead of the `key=value` list of other events:
//!
//! ```text
//! 2026-12-07T14:50:01.123456Z  INFO lb_proxy::access: 127.0.0.1:40000 -> 10.96.0.10:80 default/web:http/TCP -> 127.0.0.1:9000 round_robin closed 5 12 3ms
//! ```
//!
//! client `->` frontend, service port `->` endpoint (`-` when the client was
//! turned away), pick reason, close cause (`rejected:REASON` when turned
//! away), bytes from the client, bytes to the client, duration. Every other
//! event goes to the default format unchanged; JSON needs nothing of this
//! (each field is a key of the object).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::dataplane::access::TARGET;

/// An event format that writes access events as one nginx-like line and
/// hands every other event to `F`.
#[derive(Debug)]
pub struct AccessText<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for AccessText<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != TARGET {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = Line::default();
        event.record(&mut line);
        SystemTime.format_time(&mut writer)?;
        let cause = match line.rejected.as_str() {
            "" | "-" => line.cause,
            why => format!("{}:{why}", line.cause),
        };
        writeln!(
            writer,
            "  INFO {TARGET}: {} -> {} {} -> {} {} {cause} {} {} {}ms",
            line.client,
            line.frontend,
            line.service,
            line.endpoint,
            line.reason,
            line.bytes_rx,
            line.bytes_tx,
            line.duration_ms,
        )
    }
}

/// The fields of one access event, as text.
#[derive(Debug, Default)]
struct Line {
    client: String,
    frontend: String,
    service: String,
    endpoint: String,
    reason: String,
    cause: String,
    rejected: String,
    bytes_rx: u64,
    bytes_tx: u64,
    duration_ms: u64,
}

impl Visit for Line {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "bytes_rx" => self.bytes_rx = value,
            "bytes_tx" => self.bytes_tx = value,
            "duration_ms" => self.duration_ms = value,
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let slot = match field.name() {
            "client" => &mut self.client,
            "frontend" => &mut self.frontend,
            "service" => &mut self.service,
            "endpoint" => &mut self.endpoint,
            "reason" => &mut self.reason,
            "cause" => &mut self.cause,
            "rejected" => &mut self.rejected,
            _ => return,
        };
        *slot = format!("{value:?}");
    }
}
