//! etcd's streaming watch through the gateway: one long answer whose body
//! is a sequence of JSON objects (`{"result": {...}}`), split across HTTP
//! chunks wherever the network cut them. [`Frames`] reassembles the objects,
//! [`message`] says what each one means, and [`Watch`] reads them off a live
//! answer, bounded in time.

use std::collections::VecDeque;

use serde_json::Value;

use super::http::Reply;
use super::json::{header_revision, i64_of, kv_of};
use super::{EtcdError, WatchEvent};

/// Reassembles whole JSON objects from the chunks of a stream.
#[derive(Debug, Default)]
pub(super) struct Frames {
    /// Bytes of an object not complete yet.
    partial: Vec<u8>,
}

impl Frames {
    /// Adds `chunk` and returns every object it completes, in order. An
    /// error is a stream that is not JSON.
    pub(super) fn push(&mut self, chunk: &[u8]) -> Result<Vec<Value>, serde_json::Error> {
        self.partial.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut used = 0;
        let mut stream = serde_json::Deserializer::from_slice(&self.partial).into_iter::<Value>();
        loop {
            match stream.next() {
                // Only whitespace is left (the newline between objects).
                None => {
                    used = self.partial.len();
                    break;
                }
                Some(Ok(v)) => {
                    out.push(v);
                    used = stream.byte_offset();
                }
                // The rest arrives with the next chunk.
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => return Err(e),
            }
        }
        self.partial.drain(..used);
        Ok(out)
    }
}

/// What one object of the watch stream means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Message {
    /// Nothing to act on (the watch was created; no `result`).
    Skip,
    /// Changes, or progress when nothing changed.
    Events(Vec<WatchEvent>),
    /// The start revision was compacted: the caller reads everything again.
    Compacted(i64),
    /// etcd cancelled the watch: it ends.
    Canceled,
    /// The gateway reports an error (the JSON of its `error`).
    Error(String),
}

/// Reads one object of the watch stream.
pub(super) fn message(msg: &Value) -> Message {
    if let Some(err) = msg.get("error") {
        return Message::Error(err.to_string());
    }
    let Some(result) = msg.get("result") else {
        return Message::Skip;
    };
    let compact = result.get("compact_revision").map(i64_of).unwrap_or(0);
    if compact > 0 {
        return Message::Compacted(compact);
    }
    if result.get("canceled").and_then(Value::as_bool) == Some(true) {
        return Message::Canceled;
    }
    let mut batch = Vec::new();
    for ev in result
        .get("events")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let Some(kv) = ev.get("kv").and_then(kv_of) else {
            continue;
        };
        // The gateway omits the default enum value: no type is PUT.
        if ev.get("type").and_then(Value::as_str) == Some("DELETE") {
            batch.push(WatchEvent::Delete {
                key: kv.key,
                revision: kv.mod_revision,
            });
        } else {
            batch.push(WatchEvent::Put(kv));
        }
    }
    if batch.is_empty() {
        if result.get("created").and_then(Value::as_bool) == Some(true) {
            return Message::Skip;
        }
        batch.push(WatchEvent::Progress(header_revision(result)));
    }
    Message::Events(batch)
}

/// A running watch (from [`super::Client::watch`]): batches of events until
/// the stream ends, etcd cancels it, or its time is up. Dropping it closes
/// the connection.
#[derive(Debug)]
pub struct Watch {
    endpoint: String,
    /// `None` once the stream is over.
    reply: Option<Reply>,
    frames: Frames,
    pending: VecDeque<Value>,
    deadline: tokio::time::Instant,
}

impl Watch {
    pub(super) fn new(
        endpoint: &str,
        reply: Option<Reply>,
        deadline: tokio::time::Instant,
    ) -> Self {
        Watch {
            endpoint: endpoint.to_string(),
            reply,
            frames: Frames::default(),
            pending: VecDeque::new(),
            deadline,
        }
    }

    /// The next batch of changes (or a progress mark). `None` when the
    /// stream is over: time was up (so a silently dead connection is
    /// noticed; the caller watches again from its last revision), etcd went
    /// away or cancelled the watch. A compacted start revision is
    /// [`EtcdError::Compacted`] (the caller reads everything again).
    pub async fn next(&mut self) -> Result<Option<Vec<WatchEvent>>, EtcdError> {
        loop {
            while let Some(msg) = self.pending.pop_front() {
                match message(&msg) {
                    Message::Skip => {}
                    Message::Events(batch) => return Ok(Some(batch)),
                    Message::Canceled => return Ok(self.end()),
                    Message::Compacted(rev) => {
                        self.end();
                        return Err(EtcdError::Compacted(rev));
                    }
                    Message::Error(e) => {
                        self.end();
                        return Err(self.api(format!("watch: {e}")));
                    }
                }
            }
            let Some(reply) = self.reply.as_mut() else {
                return Ok(None);
            };
            let next = tokio::time::timeout_at(self.deadline, reply.chunk()).await;
            match next {
                Ok(Ok(Some(chunk))) => match self.frames.push(&chunk) {
                    Ok(objects) => self.pending.extend(objects),
                    Err(e) => {
                        self.end();
                        return Err(self.api(format!("watch stream: {e}")));
                    }
                },
                // Time is up, the stream ended or the connection broke.
                Err(_) | Ok(Ok(None)) | Ok(Err(_)) => return Ok(self.end()),
            }
        }
    }

    fn end(&mut self) -> Option<Vec<WatchEvent>> {
        self.reply = None;
        self.pending.clear();
        None
    }

    fn api(&self, message: String) -> EtcdError {
        EtcdError::Api {
            endpoint: self.endpoint.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::json::b64;
    use super::super::Kv;
    use super::*;

    #[test]
    fn objects_cut_across_chunks_come_out_whole_and_in_order() {
        let stream =
            b"{\"result\":{\"created\":true}}\n{\"result\":{\"header\":{\"revision\":\"7\"}}}\n";
        let mut frames = Frames::default();
        let mut got = Vec::new();
        // Every cut point, one byte at a time.
        for b in stream.chunks(1) {
            got.extend(frames.push(b).expect("json"));
        }
        assert_eq!(
            got,
            vec![
                json!({"result": {"created": true}}),
                json!({"result": {"header": {"revision": "7"}}})
            ]
        );
        assert!(frames.partial.is_empty());
    }

    #[test]
    fn several_objects_in_one_chunk_all_come_out() {
        let mut frames = Frames::default();
        let got = frames.push(b"{\"a\":1}{\"b\":2}\r\n{\"c\"").expect("json");
        assert_eq!(got, vec![json!({"a": 1}), json!({"b": 2})]);
        assert_eq!(frames.push(b":3}").expect("json"), vec![json!({"c": 3})]);
    }

    #[test]
    fn a_stream_that_is_not_json_is_an_error() {
        let mut frames = Frames::default();
        assert!(frames.push(b"<html>bad gateway</html>").is_err());
    }

    #[test]
    fn events_become_puts_and_deletes_with_their_revisions() {
        let msg = json!({"result": {"header": {"revision": "9"}, "events": [
            {"kv": {"key": b64(b"/lb/services/default/web"), "value": b64(b"{}"), "mod_revision": "8"}},
            {"type": "DELETE", "kv": {"key": b64(b"/lb/pods/default/a"), "mod_revision": "9"}},
        ]}});
        assert_eq!(
            message(&msg),
            Message::Events(vec![
                WatchEvent::Put(Kv {
                    key: "/lb/services/default/web".into(),
                    value: b"{}".to_vec(),
                    mod_revision: 8,
                }),
                WatchEvent::Delete {
                    key: "/lb/pods/default/a".into(),
                    revision: 9,
                },
            ])
        );
    }

    #[test]
    fn an_answer_without_events_is_progress_unless_it_is_the_creation() {
        let progress = json!({"result": {"header": {"revision": "15"}}});
        assert_eq!(
            message(&progress),
            Message::Events(vec![WatchEvent::Progress(15)])
        );
        let created = json!({"result": {"header": {"revision": "15"}, "created": true}});
        assert_eq!(message(&created), Message::Skip);
        assert_eq!(message(&json!({})), Message::Skip);
    }

    #[test]
    fn compaction_cancellation_and_errors_are_told_apart() {
        let compacted = json!({"result": {"compact_revision": "40", "canceled": true}});
        assert_eq!(message(&compacted), Message::Compacted(40));
        let canceled = json!({"result": {"canceled": true}});
        assert_eq!(message(&canceled), Message::Canceled);
        let error = json!({"error": {"grpc_code": 7, "message": "permission denied"}});
        assert!(matches!(message(&error), Message::Error(e) if e.contains("permission denied")));
    }
}
