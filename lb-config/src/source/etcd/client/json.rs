//! The JSON of etcd's gateway, both ways: base64 keys and values, 64-bit
//! numbers that arrive as strings, and an answer told from an error. Pure,
//! so the decoding is tested without an etcd.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper::StatusCode;
use serde_json::Value;

use super::Kv;

/// A number the gateway may send as a string (int64 fields) or a number;
/// 0 when absent or malformed (as protobuf's default).
pub(super) fn i64_of(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// Bytes as the gateway wants them in a key or value field.
pub(super) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The end of the range of keys starting with `prefix` (etcd's convention:
/// the prefix with its last byte incremented).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One `mvccpb.KeyValue`; `None` when its key is not base64 of UTF-8 (lb
/// writes no such key, so it is not one of lb's).
pub(super) fn kv_of(v: &Value) -> Option<Kv> {
    let key = B64.decode(v.get("key")?.as_str()?).ok()?;
    let value = match v.get("value").and_then(Value::as_str) {
        Some(s) => B64.decode(s).ok()?,
        None => Vec::new(),
    };
    Some(Kv {
        key: String::from_utf8(key).ok()?,
        value,
        mod_revision: v.get("mod_revision").map(i64_of).unwrap_or(0),
    })
}

/// The store's revision in an answer's `header`.
pub(super) fn header_revision(v: &Value) -> i64 {
    v.get("header")
        .and_then(|h| h.get("revision"))
        .map(i64_of)
        .unwrap_or(0)
}

/// The `kvs` of a range answer (absent when no key matched).
pub(super) fn kvs_of(v: &Value) -> Vec<Kv> {
    v.get("kvs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(kv_of).collect())
        .unwrap_or_default()
}

/// A whole (non-streaming) answer: its JSON, or etcd's own message when the
/// status is not a success or the body carries an `error`.
pub(super) fn answer(status: StatusCode, body: &[u8]) -> Result<Value, String> {
    let text = String::from_utf8_lossy(body);
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("HTTP {status}: not JSON ({e}): {text}"))?;
    if !status.is_success() || v.get("error").is_some() {
        let msg = v
            .get("message")
            .or_else(|| v.get("error"))
            .map(|m| {
                m.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| m.to_string())
            })
            .unwrap_or_else(|| text.to_string());
        return Err(format!("HTTP {status}: {msg}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_range_of_a_prefix_ends_at_its_last_byte_plus_one() {
        assert_eq!(prefix_end("/lb/"), b"/lb0".to_vec());
        assert_eq!(prefix_end("a"), b"b".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn int64_fields_are_read_as_strings_or_numbers() {
        assert_eq!(i64_of(&json!("42")), 42);
        assert_eq!(i64_of(&json!(7)), 7);
        assert_eq!(i64_of(&json!("x")), 0);
        assert_eq!(i64_of(&json!(null)), 0);
    }

    #[test]
    fn a_range_answer_decodes_to_keys_values_and_revisions() {
        let body = json!({
            "header": {"revision": "12"},
            "kvs": [
                {"key": b64(b"/lb/services/default/web"), "value": b64(b"{}"), "mod_revision": "9"},
                {"key": b64(b"/lb/empty"), "mod_revision": "3"},
                {"key": "not base64!"},
            ],
            "count": "3",
        })
        .to_string();
        let v = answer(StatusCode::OK, body.as_bytes()).expect("answer");
        assert_eq!(header_revision(&v), 12);
        assert_eq!(
            kvs_of(&v),
            vec![
                Kv {
                    key: "/lb/services/default/web".into(),
                    value: b"{}".to_vec(),
                    mod_revision: 9,
                },
                Kv {
                    key: "/lb/empty".into(),
                    value: Vec::new(),
                    mod_revision: 3,
                },
            ]
        );
    }

    #[test]
    fn an_empty_range_has_no_kvs() {
        let v = answer(StatusCode::OK, br#"{"header":{"revision":"5"}}"#).expect("answer");
        assert!(kvs_of(&v).is_empty());
        assert_eq!(header_revision(&v), 5);
    }

    #[test]
    fn an_error_answer_gives_etcds_message_with_the_status() {
        let body = br#"{"error":"etcdserver: user name or password is invalid","code":3,"message":"etcdserver: authentication failed, invalid user ID or password"}"#;
        assert_eq!(
            answer(StatusCode::BAD_REQUEST, body).expect_err("error"),
            "HTTP 400 Bad Request: etcdserver: authentication failed, invalid user ID or password"
        );
        // An error field alone fails an answer even with status 200.
        assert_eq!(
            answer(StatusCode::OK, br#"{"error":"boom"}"#).expect_err("error"),
            "HTTP 200 OK: boom"
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_an_error_that_quotes_it() {
        let err = answer(StatusCode::BAD_GATEWAY, b"upstream down").expect_err("error");
        assert!(err.starts_with("HTTP 502 Bad Gateway: not JSON ("), "{err}");
        assert!(err.ends_with("upstream down"), "{err}");
    }
}
