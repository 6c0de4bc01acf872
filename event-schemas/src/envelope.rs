use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Payload, Position, StreamId, StreamVersion};

/// Context recorded with every event: who caused it and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Ties together everything done for one request or conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The message (command or event) that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The authenticated caller (user id or service name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The idempotency key of the command that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// What the request that carried the idempotency key asked (a digest of its
    /// caller, method, path and body): the key reused for a different request is
    /// refused rather than answered with the first request's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_fingerprint: Option<String>,
    /// Anything else the writer wants to keep with the event.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Unique id; appending the same id again at the same place is a no-op.
    pub event_id: Uuid,
    /// Past-tense name, e.g. `OrderPlaced`.
    pub event_type: String,
    /// Version of the payload's shape for this event type (from 1).
    pub schema_version: i32,
    /// The payload: always a JSON object.
    pub data: serde_json::Value,
    /// Context: correlation, causation, actor, idempotency key.
    #[serde(default)]
    pub metadata: EventMetadata,
}

impl NewEvent {
    /// A schema-version-1 event with a random id and empty metadata.
    pub fn new(event_type: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version: 1,
            data,
            metadata: EventMetadata::default(),
        }
    }

    /// Replaces the event id (command handlers derive it from the idempotency key).
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// Replaces the metadata.
    pub fn with_metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Replaces the schema version.
    pub fn with_schema_version(mut self, schema_version: i32) -> Self {
        self.schema_version = schema_version;
        self
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Position in the global log.
    pub global_position: Position,
    /// The stream the event belongs to.
    pub stream_id: StreamId,
    /// Version within the stream, from 0.
    pub stream_version: StreamVersion,
    /// Unique id.
    pub event_id: Uuid,
    /// Past-tense name, e.g. `OrderPlaced`.
    pub event_type: String,
    /// Version of the payload's shape.
    pub schema_version: i32,
    /// The payload (a JSON object), as the log holds it.
    pub data: Payload,
    /// Context.
    pub metadata: EventMetadata,
    /// When the log stored it.
    pub recorded_at: DateTime<Utc>,
}
