//! The typed event catalogue of the reference domain.
//!
//! Every event type has a name (past tense), a current schema version and a Rust type
//! with serde and a JSON Schema. [`DomainEvent`] is the closed set of them:
//! [`DomainEvent::decode`] upcasts stored payloads of older versions to the current
//! shape, so projections and aggregates only ever see current types.

mod orders;
mod purchases;
mod reminders;
mod upcast;
mod workouts;

pub use orders::{
    OrderCancelled, OrderConfirmed, OrderDrafted, OrderLine, OrderPlaced, PaymentPushRequested,
};
pub use purchases::{
    ConsumableDetected, DeviceActivated, PriceChanged, PurchaseRecorded,
    RepurchaseIntervalEstimated,
};
pub use reminders::{
    OrderQuote, ReminderDeclined, ReminderOffered, ReminderScheduled, ReminderSnoozed,
    ReminderSuperseded, ReorderAccepted,
};
pub use workouts::{
    GeoPoint, WorkoutCancelled, WorkoutCompleted, WorkoutGoalReached, WorkoutPaused,
    WorkoutResumed, WorkoutStarted, WorkoutUpdated,
};

use crate::{EventMetadata, NewEvent, RecordedEvent, StreamId, StreamIdError};

/// The stream categories of the reference domain, each the home of one aggregate (see
/// [`DomainEvent::stream`]). An event type the domain does not know has no place in them:
/// the aggregate would fail to read it, and every command on that stream with it.
pub const DOMAIN_CATEGORIES: &[&str] = &[
    "activity",
    "order",
    "price",
    "purchases",
    "reminder",
    "workout",
];

/// Why a stored event could not be turned into a [`DomainEvent`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The schema version is newer than this build knows (written by a newer writer).
    #[error("{event_type} v{version} is newer than this build understands (up to v{current})")]
    FutureVersion {
        /// Event type.
        event_type: String,
        /// Stored version.
        version: i32,
        /// Newest version known here.
        current: i32,
    },
    /// The payload does not match its declared type and version.
    #[error("{event_type} v{version}: {source}")]
    Invalid {
        /// Event type.
        event_type: String,
        /// Stored version.
        version: i32,
        /// What serde said.
        source: serde_json::Error,
    },
}

macro_rules! catalogue {
    ($( $(#[$doc:meta])* $name:ident = $version:literal ),+ $(,)?) => {
        /// Every event of the reference domain, in its current shape.
        #[derive(Debug, Clone, PartialEq)]
        pub enum DomainEvent {
            $( $(#[$doc])* $name($name), )+
        }

        /// Name and current schema version of every event type.
        pub const EVENT_TYPES: &[(&str, i32)] = &[ $( (stringify!($name), $version), )+ ];

        impl DomainEvent {
            /// The event type name, e.g. `OrderPlaced`.
            pub fn event_type(&self) -> &'static str {
                match self { $( DomainEvent::$name(_) => stringify!($name), )+ }
            }

            /// The current schema version of this event's type.
            pub fn schema_version(&self) -> i32 {
                match self { $( DomainEvent::$name(_) => $version, )+ }
            }

            /// The payload as JSON.
            pub fn to_data(&self) -> serde_json::Value {
                let result = match self { $( DomainEvent::$name(e) => serde_json::to_value(e), )+ };
                // Serialising these plain structs cannot fail (no maps with non-string
                // keys, no custom serialisers); fall back to an empty object regardless.
                result.unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
            }

            /// Decodes a payload of `event_type` at `version`, upcasting older versions.
            /// `Ok(None)`: an event type this catalogue does not know.
            pub fn decode(
                event_type: &str,
                version: i32,
                data: &serde_json::Value,
            ) -> Result<Option<DomainEvent>, DecodeError> {
                Self::decode_from(event_type, version, data)
            }

            /// Decodes a payload given as JSON text (see [`decode`](Self::decode)): the
            /// current version is read straight from the text, with no tree of values
            /// built on the way.
            pub fn decode_json(
                event_type: &str,
                version: i32,
                data: &str,
            ) -> Result<Option<DomainEvent>, DecodeError> {
                Self::decode_from(event_type, version, data)
            }

            fn decode_from<S: Source + ?Sized>(
                event_type: &str,
                version: i32,
                data: &S,
            ) -> Result<Option<DomainEvent>, DecodeError> {
                let current = match EVENT_TYPES.iter().find(|(name, _)| *name == event_type) {
                    Some((_, current)) => *current,
                    None => return Ok(None),
                };
                if version > current {
                    return Err(DecodeError::FutureVersion {
                        event_type: event_type.to_owned(), version, current,
                    });
                }
                let invalid = |source| DecodeError::Invalid {
                    event_type: event_type.to_owned(), version, source,
                };
                // The current version (nearly every event) is read in place; an older one
                // is upcast on a copy.
                if version == current {
                    let event = match event_type {
                        $( stringify!($name) => DomainEvent::$name(data.read().map_err(invalid)?), )+
                        _ => return Ok(None),
                    };
                    return Ok(Some(event));
                }
                let data = data.to_value().map_err(invalid)?;
                let data = upcast::to_current(event_type, version, data).map_err(invalid)?;
                let event = match event_type {
                    $( stringify!($name) => DomainEvent::$name(
                        <$name as serde::Deserialize>::deserialize(&data).map_err(invalid)?,
                    ), )+
                    _ => return Ok(None),
                };
                Ok(Some(event))
            }

            /// JSON Schemas of the current version of every event type, as
            /// `(file name, schema)`.
            pub fn json_schemas() -> Vec<(String, serde_json::Value)> {
                vec![ $( (
                    format!("{}.v{}.json", stringify!($name), $version),
                    serde_json::to_value(schemars::schema_for!($name))
                        .unwrap_or(serde_json::Value::Null),
                ), )+ ]
            }
        }

        $(
            impl From<$name> for DomainEvent {
                fn from(e: $name) -> Self { DomainEvent::$name(e) }
            }
        )+
    };
}

catalogue! {
    /// A purchase line was recorded.
    PurchaseRecorded = 2,
    /// A sku became a known consumable for a user.
    ConsumableDetected = 1,
    /// A re-purchase interval was (re-)estimated.
    RepurchaseIntervalEstimated = 1,
    /// A speaker woke up.
    DeviceActivated = 1,
    /// The catalog price or availability of a sku changed.
    PriceChanged = 1,
    /// A reminder was scheduled.
    ReminderScheduled = 1,
    /// A reminder was offered.
    ReminderOffered = 1,
    /// The user accepted the re-order.
    ReorderAccepted = 2,
    /// The user declined.
    ReminderDeclined = 1,
    /// The user snoozed.
    ReminderSnoozed = 1,
    /// A newer reminder replaced it.
    ReminderSuperseded = 1,
    /// An order was drafted.
    OrderDrafted = 1,
    /// An order was confirmed.
    OrderConfirmed = 1,
    /// An order was placed.
    OrderPlaced = 1,
    /// A payment push was requested.
    PaymentPushRequested = 1,
    /// An order was cancelled.
    OrderCancelled = 1,
    /// A workout started.
    WorkoutStarted = 1,
    /// A workout progressed.
    WorkoutUpdated = 1,
    /// A workout was paused.
    WorkoutPaused = 1,
    /// A workout was resumed.
    WorkoutResumed = 1,
    /// A workout was completed.
    WorkoutCompleted = 1,
    /// A workout was cancelled.
    WorkoutCancelled = 1,
    /// A workout's distance goal was reached.
    WorkoutGoalReached = 1,
}

impl DomainEvent {
    /// An event ready to append, with the given id and metadata.
    pub fn to_new_event(&self, event_id: uuid::Uuid, metadata: EventMetadata) -> NewEvent {
        NewEvent {
            event_id,
            event_type: self.event_type().to_owned(),
            schema_version: self.schema_version(),
            data: self.to_data(),
            metadata,
        }
    }

    /// The stream this event belongs in, named by the ids it carries: `purchases-{user}`,
    /// `activity-{user}`, `price-{sku}`, `reminder-{id}`, `order-{id}`, `workout-{id}`.
    /// The command service stores every event there (checked in debug builds), and
    /// `eventfold streams append` refuses another stream: an event elsewhere would be
    /// folded by the read models (keyed by these ids) but never by the aggregate the
    /// commands on that id read, so the two sides would disagree about it.
    pub fn stream(&self) -> Result<StreamId, StreamIdError> {
        use std::fmt::Display;
        let (category, id): (&str, &dyn Display) = match self {
            DomainEvent::PurchaseRecorded(e) => ("purchases", &e.user_id),
            DomainEvent::ConsumableDetected(e) => ("purchases", &e.user_id),
            DomainEvent::RepurchaseIntervalEstimated(e) => ("purchases", &e.user_id),
            DomainEvent::DeviceActivated(e) => ("activity", &e.user_id),
            DomainEvent::PriceChanged(e) => ("price", &e.sku),
            DomainEvent::ReminderScheduled(e) => ("reminder", &e.reminder_id),
            DomainEvent::ReminderOffered(e) => ("reminder", &e.reminder_id),
            DomainEvent::ReorderAccepted(e) => ("reminder", &e.reminder_id),
            DomainEvent::ReminderDeclined(e) => ("reminder", &e.reminder_id),
            DomainEvent::ReminderSnoozed(e) => ("reminder", &e.reminder_id),
            DomainEvent::ReminderSuperseded(e) => ("reminder", &e.reminder_id),
            DomainEvent::OrderDrafted(e) => ("order", &e.order_id),
            DomainEvent::OrderConfirmed(e) => ("order", &e.order_id),
            DomainEvent::OrderPlaced(e) => ("order", &e.order_id),
            DomainEvent::PaymentPushRequested(e) => ("order", &e.order_id),
            DomainEvent::OrderCancelled(e) => ("order", &e.order_id),
            DomainEvent::WorkoutStarted(e) => ("workout", &e.workout_id),
            DomainEvent::WorkoutUpdated(e) => ("workout", &e.workout_id),
            DomainEvent::WorkoutPaused(e) => ("workout", &e.workout_id),
            DomainEvent::WorkoutResumed(e) => ("workout", &e.workout_id),
            DomainEvent::WorkoutCompleted(e) => ("workout", &e.workout_id),
            DomainEvent::WorkoutCancelled(e) => ("workout", &e.workout_id),
            DomainEvent::WorkoutGoalReached(e) => ("workout", &e.workout_id),
        };
        StreamId::from_parts(category, id)
    }

    /// Decodes a recorded event (see [`decode`](Self::decode)).
    pub fn from_recorded(event: &RecordedEvent) -> Result<Option<DomainEvent>, DecodeError> {
        Self::decode_json(&event.event_type, event.schema_version, event.data.get())
    }
}

/// Where a payload is decoded from: a tree of values, or JSON text.
trait Source {
    /// The payload as a tree (for upcasting an older version).
    fn to_value(&self) -> Result<serde_json::Value, serde_json::Error>;
    /// The payload read into `T`.
    fn read<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error>;
}

impl Source for serde_json::Value {
    fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        Ok(self.clone())
    }

    fn read<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(self)
    }
}

impl Source for str {
    fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(self)
    }

    fn read<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self)
    }
}

#[cfg(test)]
mod tests;
