//! Delivery over NATS JetStream: the `notifications.v1` reaction.
//!
//! It follows the log like a projection (checkpoint, retries, lag in
//! `/api/v1/projections` and `projections status`) and publishes
//! - `PaymentPushRequested` to `{subject}.push.{user_id}` (the seed's voice flow ends
//!   with "a push asks the user to pay"),
//! - `WorkoutGoalReached` to `{subject}.goal.{user_id}`,
//!
//! into one JetStream stream (created when missing, subjects `{subject}.>`). Each
//! message carries the event's envelope as JSON and the headers `Nats-Msg-Id` (the
//! event id), `Eventfold-Position`, `Eventfold-Event-Type`.
//!
//! **Exactly once in effect.** Delivery is recorded by the reaction's checkpoint, not by
//! a `PaymentPushSent` event: the stream itself is the record of what was delivered, an
//! event per push would double the log's writes for a fact the log cannot vouch for, and
//! a checkpoint keeps the reaction replayable. Messages are published one at a time in
//! log order, each acknowledged by JetStream before the next; the checkpoint moves after
//! the batch's acknowledgements. A crash between an acknowledgement and the checkpoint
//! republishes: within the stream's duplicate window the server drops the copy (same
//! `Nats-Msg-Id`); beyond it, the dispatcher does not republish at all, because on start
//! it resumes after the larger of its checkpoint and the `Eventfold-Position` of the
//! stream's last message (everything before that was published, in order, by the one
//! dispatcher the lease allows).
//!
//! **NATS down.** The client reconnects in the background; a publish that is not
//! acknowledged is retried with backoff (the reaction shows `retrying` with the error and
//! its lag grows); nothing is skipped, and the rest of the service keeps working.

use std::time::Duration;

use eventfold_domain::DomainEvent;
use eventfold_event_schemas::{Position, RecordedEvent};
use eventfold_projections::{async_trait, Error, FailPoint, Result, Sink};
use serde::Serialize;

use crate::reactions::ReactionProgress;

/// The dispatcher's name on the status board.
pub(crate) const DISPATCHER: &str = "notifications.v1";

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NatsSettings {
    /// `nats://host:port`.
    pub(crate) url: String,
    /// The JetStream stream.
    pub(crate) stream: String,
    /// The subjects' first token(s).
    pub(crate) subject: String,
}

impl NatsSettings {
    /// Checks the names NATS would refuse (or misread) before anything connects.
    pub(crate) fn new(
        url: String,
        stream: Option<String>,
        subject: Option<String>,
    ) -> anyhow::Result<Self> {
        let stream = stream.unwrap_or_else(|| "EVENTFOLD_NOTIFICATIONS".to_owned());
        let subject = subject.unwrap_or_else(|| "notifications".to_owned());
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !token_ok(&stream) {
            anyhow::bail!(
                "EVENTFOLD_NATS_STREAM {stream:?}: a stream name is letters, digits, '_' and '-'"
            );
        }
        if !subject.split('.').all(token_ok) {
            anyhow::bail!(
                "EVENTFOLD_NATS_SUBJECT {subject:?}: tokens of letters, digits, '_' and '-' separated by '.', no wildcards"
            );
        }
        Ok(Self {
            url,
            stream,
            subject,
        })
    }

    /// The subject of a notification `kind` for `user_id`.
    pub(crate) fn subject_for(&self, kind: &str, user_id: &str) -> String {
        format!("{}.{kind}.{}", self.subject, subject_token(user_id))
    }
}

/// A user id as one subject token: `.`, `*`, `>`, `%`, whitespace and other characters a
/// token cannot hold are percent-encoded (ids accepted by the API are `[A-Za-z0-9_.:@-]`,
/// so in practice only `.` becomes `%2E`).
pub(crate) fn subject_token(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '@') {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// What a notification message carries: the event's envelope.
#[derive(Debug, Serialize)]
pub(crate) struct Envelope<'a> {
    /// The event's id (also `Nats-Msg-Id`).
    pub(crate) event_id: uuid::Uuid,
    /// `PaymentPushRequested` or `WorkoutGoalReached`.
    pub(crate) event_type: &'a str,
    /// Its schema version.
    pub(crate) schema_version: i32,
    /// Its stream.
    pub(crate) stream_id: &'a str,
    /// Its position in the log.
    pub(crate) global_position: i64,
    /// When it was recorded.
    pub(crate) recorded_at: chrono::DateTime<chrono::Utc>,
    /// The payload.
    pub(crate) data: &'a eventfold_event_schemas::Payload,
}

/// Publishes notifications to JetStream.
pub(crate) struct Dispatcher {
    settings: NatsSettings,
    jetstream: async_nats::jetstream::Context,
    progress: ReactionProgress,
    fail_point: FailPoint,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        store: "nats",
        reason: format!("{what}: {error}"),
    }
}

/// A client that connects (and reconnects) in the background, retrying every 100 ms to
/// 2 s, so a NATS that is down at start-up or restarts is picked up quickly.
pub(crate) async fn connect(settings: &NatsSettings) -> anyhow::Result<async_nats::Client> {
    let client = async_nats::ConnectOptions::new()
        .name("eventfold")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| {
            let shift = u32::try_from(attempts.min(5)).unwrap_or(5);
            Duration::from_millis(100u64 << shift).min(Duration::from_secs(2))
        })
        .connect(settings.url.as_str())
        .await?;
    Ok(client)
}

impl Dispatcher {
    /// A dispatcher publishing through `client`, its checkpoint on `pool`.
    pub(crate) fn new(
        settings: NatsSettings,
        client: async_nats::Client,
        pool: sqlx::AnyPool,
    ) -> Self {
        let mut jetstream = async_nats::jetstream::new(client);
        jetstream.set_timeout(Duration::from_secs(2));
        Self {
            settings,
            jetstream,
            progress: ReactionProgress::new(pool, DISPATCHER),
            fail_point: FailPoint::default(),
        }
    }

    async fn stream(&self) -> Result<async_nats::jetstream::stream::Stream> {
        self.jetstream
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: self.settings.stream.clone(),
                subjects: vec![format!("{}.>", self.settings.subject)],
                storage: async_nats::jetstream::stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("creating the stream", e))
    }

    /// The position of the stream's last message published by a dispatcher.
    async fn last_published(&self) -> Result<Option<Position>> {
        let mut stream = self.stream().await?;
        let last = stream
            .info()
            .await
            .map_err(|e| unavailable("reading the stream", e))?
            .state
            .last_sequence;
        if last == 0 {
            return Ok(None);
        }
        let message = match stream.get_raw_message(last).await {
            Ok(message) => message,
            // Removed by retention in the meantime: nothing to learn from it.
            Err(error)
                if error.kind()
                    == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
            {
                return Ok(None)
            }
            Err(error) => return Err(unavailable("reading the last message", error)),
        };
        Ok(message
            .headers
            .get("Eventfold-Position")
            .and_then(|v| v.as_str().parse::<i64>().ok())
            .map(Position))
    }

    /// Publishes one event and waits for JetStream's acknowledgement.
    async fn publish(&self, record: &RecordedEvent, event: &DomainEvent) -> Result<()> {
        let subject = match event {
            DomainEvent::PaymentPushRequested(e) => self.settings.subject_for("push", &e.user_id),
            DomainEvent::WorkoutGoalReached(e) => self.settings.subject_for("goal", &e.user_id),
            _ => return Ok(()),
        };
        let body = serde_json::to_vec(&Envelope {
            event_id: record.event_id,
            event_type: &record.event_type,
            schema_version: record.schema_version,
            stream_id: record.stream_id.as_str(),
            global_position: record.global_position.0,
            recorded_at: record.recorded_at,
            data: &record.data,
        })
        .map_err(|e| Error::Poison {
            position: record.global_position.0,
            event_type: record.event_type.clone(),
            reason: e.to_string(),
        })?;
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(body.into())
            .message_id(record.event_id.to_string())
            .header(
                "Eventfold-Position",
                record.global_position.0.to_string().as_str(),
            )
            .header("Eventfold-Event-Type", record.event_type.as_str());
        self.jetstream
            .send_publish(subject, message)
            .await
            .map_err(|e| unavailable("publishing", e))?
            .await
            .map_err(|e| unavailable("waiting for the acknowledgement", e))?;
        Ok(())
    }
}

#[async_trait]
impl Sink for Dispatcher {
    fn name(&self) -> &'static str {
        DISPATCHER
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(event_type, "PaymentPushRequested" | "WorkoutGoalReached")
    }

    async fn setup(&self) -> Result<()> {
        self.progress.setup().await?;
        self.stream().await?;
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Position> {
        let stored = self.progress.checkpoint().await?;
        let published = self.last_published().await?.unwrap_or_default();
        Ok(stored.max(published))
    }

    async fn apply(
        &self,
        _from: Position,
        events: &[(RecordedEvent, DomainEvent)],
        to: Position,
    ) -> Result<()> {
        for (record, event) in events {
            self.fail_point.trip()?;
            self.publish(record, event).await?;
        }
        self.progress.advance(to).await
    }

    async fn park(&self, record: &RecordedEvent, error: &str) -> Result<()> {
        self.progress.park(record, error).await
    }

    fn fail_point(&self) -> FailPoint {
        self.fail_point.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_become_one_subject_token() {
        assert_eq!(subject_token("u-1_a:b@c"), "u-1_a:b@c");
        assert_eq!(subject_token("a.b"), "a%2Eb");
        assert_eq!(subject_token("a*>b c%"), "a%2A%3Eb%20c%25");
        assert_eq!(subject_token("é"), "%C3%A9");
    }

    #[test]
    fn names_nats_refuses_are_refused_before_connecting() {
        let ok = NatsSettings::new("nats://x".into(), None, None).expect("defaults");
        assert_eq!(ok.subject_for("push", "u1"), "notifications.push.u1");
        assert!(NatsSettings::new("n".into(), Some("a.b".into()), None).is_err());
        assert!(NatsSettings::new("n".into(), None, Some("a.>".into())).is_err());
        assert!(NatsSettings::new("n".into(), None, Some("a..b".into())).is_err());
        assert!(NatsSettings::new("n".into(), None, Some("t1.notifications".into())).is_ok());
    }
}
