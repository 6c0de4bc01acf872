//! What every backend does the same way around an append: validating it against the
//! limits, serialising it once, and recognising a retried append (idempotency).

use eventfold_event_schemas::{ExpectedVersion, NewEvent, Position, StreamId, StreamVersion};
use serde::Serialize;
use uuid::Uuid;

use crate::{Error, Result};

/// Limits checked on every append, with clear errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest serialised `data` + `metadata` of one event, in bytes (default 1 MiB).
    pub max_event_bytes: usize,
    /// Most events in one append (default 1000).
    pub max_events_per_append: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 1024 * 1024,
            max_events_per_append: 1000,
        }
    }
}

/// Where an append put its events. `last_position` is the consistency token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AppendResult {
    /// Version of the first appended event.
    pub first_version: StreamVersion,
    /// Version of the last appended event: the stream's new version.
    pub last_version: StreamVersion,
    /// Global position of the first appended event.
    pub first_position: Position,
    /// Global position of the last appended event.
    pub last_position: Position,
}

/// An event validated and serialised once, ready for any backend.
#[derive(Debug, Clone)]
pub(crate) struct PreparedEvent {
    pub(crate) event_id: Uuid,
    pub(crate) event_type: String,
    pub(crate) schema_version: i32,
    pub(crate) data: String,
    pub(crate) metadata: String,
}

/// Checks an append against `limits` and serialises its events.
pub(crate) fn prepare(
    limits: &Limits,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Vec<PreparedEvent>> {
    if let ExpectedVersion::Exact(version @ ..0) = expected {
        return Err(Error::InvalidExpectedVersion(version));
    }
    if events.is_empty() {
        return Err(Error::EmptyAppend);
    }
    if events.len() > limits.max_events_per_append {
        return Err(Error::TooManyEvents {
            count: events.len(),
            max: limits.max_events_per_append,
        });
    }
    events
        .iter()
        .map(|event| {
            if !event.data.is_object() {
                return Err(Error::DataNotObject {
                    event_id: event.event_id,
                    found: json_kind(&event.data),
                });
            }
            let type_ok = !event.event_type.is_empty()
                && event.event_type.len() <= 100
                && event
                    .event_type
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
            if !type_ok {
                return Err(Error::InvalidEventType(event.event_type.clone()));
            }
            if event.schema_version < 1 {
                return Err(Error::InvalidSchemaVersion {
                    event_id: event.event_id,
                    schema_version: event.schema_version,
                });
            }
            let data = serde_json::to_string(&event.data)?;
            let metadata = serde_json::to_string(&event.metadata)?;
            for (part, json) in [("data", &data), ("metadata", &metadata)] {
                if holds_nul(json) {
                    return Err(Error::NulCharacter {
                        event_id: event.event_id,
                        part,
                    });
                }
            }
            let size = data.len() + metadata.len();
            if size > limits.max_event_bytes {
                return Err(Error::EventTooLarge {
                    event_id: event.event_id,
                    size,
                    max: limits.max_event_bytes,
                });
            }
            Ok(PreparedEvent {
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                data,
                metadata,
            })
        })
        .collect()
}

/// Whether serialised JSON holds a NUL character: serde_json writes it as the escape
/// `\u0000` (never raw), and a backslash of the text itself as `\\`, so the escape is
/// one when an even number of backslashes comes before it.
fn holds_nul(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut from = 0;
    while let Some(offset) = json.get(from..).and_then(|rest| rest.find("\\u0000")) {
        let at = from + offset;
        let before = bytes[..at]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if before % 2 == 0 {
            return true;
        }
        from = at + 1;
    }
    false
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Where an event id of the append is already stored.
#[derive(Debug, Clone)]
pub(crate) struct StoredId {
    pub(crate) event_id: Uuid,
    pub(crate) stream_id: String,
    pub(crate) stream_version: StreamVersion,
    pub(crate) position: i64,
}

/// Decides whether an append that failed (version conflict or duplicate id) is the
/// retry of an append that already succeeded.
///
/// `Ok(Some(result))`: every event is stored, in this stream, in the same order, at
/// consecutive versions that this append's expectation could have produced — the
/// original result is returned and nothing is written. `Ok(None)`: none of the ids is
/// stored, so the failure is a genuine conflict. Anything in between is
/// [`Error::DuplicateEventId`].
pub(crate) fn recognise_retry(
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[PreparedEvent],
    mut stored: Vec<StoredId>,
) -> Result<Option<AppendResult>> {
    if stored.is_empty() {
        return Ok(None);
    }
    let mut in_order = Vec::with_capacity(events.len());
    for event in events {
        match stored.iter().position(|s| s.event_id == event.event_id) {
            Some(i) => in_order.push(stored.swap_remove(i)),
            None => {
                // Some ids are stored, this one is not: a partial overlap is never a retry.
                let first = in_order.first().or(stored.first());
                return Err(duplicate(first.cloned(), event.event_id));
            }
        }
    }
    let first_version = in_order[0].stream_version;
    let expectation_fits = match expected {
        ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
        ExpectedVersion::NoStream => first_version == 0,
        ExpectedVersion::Exact(v) => first_version == v + 1,
    };
    for (offset, s) in in_order.iter().enumerate() {
        let consecutive = s.stream_version == first_version + offset as i64;
        if s.stream_id != stream.as_str() || !consecutive || !expectation_fits {
            return Err(duplicate(Some(s.clone()), s.event_id));
        }
    }
    let last = &in_order[in_order.len() - 1];
    Ok(Some(AppendResult {
        first_version,
        last_version: last.stream_version,
        first_position: Position(in_order[0].position),
        last_position: Position(last.position),
    }))
}

fn duplicate(stored: Option<StoredId>, event_id: Uuid) -> Error {
    match stored.and_then(|s| StreamId::new(s.stream_id.clone()).ok().map(|id| (id, s))) {
        Some((stored_in, s)) => Error::DuplicateEventId {
            event_id: s.event_id,
            stored_in,
            stored_version: s.stream_version,
        },
        None => Error::Corrupt {
            position: -1,
            reason: format!("event {event_id} reported as duplicate but not found"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prepared(ids: &[Uuid]) -> Vec<PreparedEvent> {
        ids.iter()
            .map(|id| PreparedEvent {
                event_id: *id,
                event_type: "T".into(),
                schema_version: 1,
                data: "{}".into(),
                metadata: "{}".into(),
            })
            .collect()
    }

    fn stored(id: Uuid, stream: &str, version: i64) -> StoredId {
        StoredId {
            event_id: id,
            stream_id: stream.into(),
            stream_version: version,
            position: version + 10,
        }
    }

    #[test]
    fn a_full_match_in_order_is_a_retry() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let stream = StreamId::new("order-1").expect("valid");
        let got = recognise_retry(
            &stream,
            ExpectedVersion::Exact(2),
            &prepared(&[a, b]),
            vec![stored(b, "order-1", 4), stored(a, "order-1", 3)],
        )
        .expect("retry");
        assert_eq!(
            got,
            Some(AppendResult {
                first_version: 3,
                last_version: 4,
                first_position: Position(13),
                last_position: Position(14)
            })
        );
    }

    #[test]
    fn same_ids_elsewhere_are_errors() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let stream = StreamId::new("order-1").expect("valid");
        let other_stream = recognise_retry(
            &stream,
            ExpectedVersion::Any,
            &prepared(&[a]),
            vec![stored(a, "order-2", 0)],
        );
        assert!(matches!(other_stream, Err(Error::DuplicateEventId { .. })));
        let partial = recognise_retry(
            &stream,
            ExpectedVersion::Any,
            &prepared(&[a, b]),
            vec![stored(a, "order-1", 0)],
        );
        assert!(matches!(partial, Err(Error::DuplicateEventId { .. })));
        let other_version = recognise_retry(
            &stream,
            ExpectedVersion::Exact(5),
            &prepared(&[a]),
            vec![stored(a, "order-1", 0)],
        );
        assert!(matches!(other_version, Err(Error::DuplicateEventId { .. })));
    }

    #[test]
    fn limits_are_enforced_with_typed_errors() {
        let limits = Limits {
            max_event_bytes: 64,
            max_events_per_append: 2,
        };
        assert!(matches!(
            prepare(&limits, ExpectedVersion::Any, &[]),
            Err(Error::EmptyAppend)
        ));
        let e = NewEvent::new("T", json!({}));
        assert!(matches!(
            prepare(
                &limits,
                ExpectedVersion::Any,
                &[e.clone(), e.clone(), e.clone()]
            ),
            Err(Error::TooManyEvents { count: 3, max: 2 })
        ));
        assert!(matches!(
            prepare(
                &limits,
                ExpectedVersion::Any,
                &[NewEvent::new("T", json!([1]))]
            ),
            Err(Error::DataNotObject { .. })
        ));
        assert!(matches!(
            prepare(
                &limits,
                ExpectedVersion::Any,
                &[NewEvent::new("T", json!({"x": "y".repeat(100)}))]
            ),
            Err(Error::EventTooLarge { max: 64, .. })
        ));
        assert!(matches!(
            prepare(
                &limits,
                ExpectedVersion::Any,
                &[NewEvent::new("bad type", json!({}))]
            ),
            Err(Error::InvalidEventType(_))
        ));
        assert!(matches!(
            prepare(&limits, ExpectedVersion::Any, &[e.with_schema_version(0)]),
            Err(Error::InvalidSchemaVersion { .. })
        ));
    }

    /// A NUL in any string or key of the data is refused on every backend (PostgreSQL's
    /// `jsonb` cannot store it: the CLI's `streams append` used to answer "database
    /// error: unsupported Unicode escape sequence"); the text `\u0000` is not a NUL.
    #[test]
    fn a_nul_character_anywhere_in_the_payload_is_refused() {
        let limits = Limits::default();
        for data in [
            json!({"a": "x\u{0}y"}),
            json!({"a\u{0}": 1}),
            json!({"a": [{"b": "\u{0}"}]}),
            json!({"a": "\\\u{0}"}),
        ] {
            assert!(
                matches!(
                    prepare(
                        &limits,
                        ExpectedVersion::Any,
                        &[NewEvent::new("T", data.clone())]
                    ),
                    Err(Error::NulCharacter { part: "data", .. })
                ),
                "{data}"
            );
        }
        for fine in [
            json!({"a": "\\u0000"}),
            json!({"a": "\\\\u0000"}),
            json!({"a": "u0000"}),
        ] {
            assert!(
                prepare(
                    &limits,
                    ExpectedVersion::Any,
                    &[NewEvent::new("T", fine.clone())]
                )
                .is_ok(),
                "{fine}"
            );
        }
        assert!(holds_nul(r#"{"a":"\u0000"}"#));
        assert!(!holds_nul(r#"{"a":"\\u0000"}"#));
        assert!(holds_nul(r#"{"a":"\\\u0000"}"#));
    }
}
