use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How a caller should treat a broken rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The aggregate does not exist (HTTP 404).
    NotFound,
    /// The aggregate's state forbids it (HTTP 409).
    Conflict,
    /// The command itself is invalid (HTTP 422).
    Invalid,
}

/// A domain rule the command breaks, named after the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// No reminder with that id.
    #[error("reminder not found")]
    ReminderNotFound,
    /// The reminder was already scheduled.
    #[error("reminder {0} is already scheduled")]
    ReminderAlreadyScheduled(Uuid),
    /// Accept/decline/snooze need an offer first.
    #[error("reminder has not been offered yet")]
    ReminderNotOffered,
    /// A snoozed reminder is not offered before its time.
    #[error("reminder is snoozed until {0}")]
    ReminderSnoozed(DateTime<Utc>),
    /// The user already said yes.
    #[error("re-order already accepted: order {0}")]
    ReminderAlreadyAccepted(Uuid),
    /// The user already said no.
    #[error("reminder was declined")]
    ReminderAlreadyDeclined,
    /// A newer reminder replaced this one.
    #[error("reminder was replaced by {0}")]
    ReminderSuperseded(Uuid),
    /// Snoozing into the past.
    #[error("snooze must end in the future")]
    SnoozeNotInFuture,
    /// The catalog cannot deliver the sku now.
    #[error("{sku} is not available right now")]
    SkuUnavailable {
        /// The sku.
        sku: String,
    },
    /// The catalog has no price for the sku.
    #[error("{sku} is not in the catalog")]
    SkuNotInCatalog {
        /// The sku.
        sku: String,
    },
    /// No order with that id.
    #[error("order not found")]
    OrderNotFound,
    /// Drafting an order id twice.
    #[error("order {0} already exists")]
    OrderAlreadyExists(Uuid),
    /// An order must have lines with positive quantities and prices.
    #[error("order is invalid: {0}")]
    InvalidOrder(String),
    /// Confirming twice.
    #[error("order was already placed")]
    OrderAlreadyPlaced,
    /// Acting on a cancelled order.
    #[error("order was cancelled")]
    OrderAlreadyCancelled,
    /// No workout with that id.
    #[error("workout not found")]
    WorkoutNotFound,
    /// Starting twice.
    #[error("workout already started")]
    WorkoutAlreadyStarted,
    /// Updates and pauses need a running workout.
    #[error("workout is paused")]
    WorkoutPaused,
    /// Resuming needs a paused workout.
    #[error("workout is not paused")]
    WorkoutNotPaused,
    /// Nothing happens to a completed or cancelled workout.
    #[error("workout is already finished")]
    WorkoutFinished,
    /// A measurement out of range (negative distance, impossible heart rate, …).
    #[error("invalid measurement: {0}")]
    InvalidMeasurement(String),
    /// A purchase with a non-positive quantity or a negative price, or empty fields.
    #[error("invalid purchase: {0}")]
    InvalidPurchase(String),
    /// A time before the aggregate's own history (e.g. an update before the start).
    #[error("{0} is before the last recorded time of this stream")]
    TimeTravel(DateTime<Utc>),
}

impl DomainError {
    /// How a caller should treat it.
    pub fn kind(&self) -> ErrorKind {
        use DomainError::*;
        match self {
            ReminderNotFound | OrderNotFound | WorkoutNotFound => ErrorKind::NotFound,
            SnoozeNotInFuture
            | InvalidOrder(_)
            | InvalidMeasurement(_)
            | InvalidPurchase(_)
            | TimeTravel(_) => ErrorKind::Invalid,
            _ => ErrorKind::Conflict,
        }
    }

    /// A stable machine-readable code, e.g. `reminder_already_accepted`.
    pub fn code(&self) -> &'static str {
        use DomainError::*;
        match self {
            ReminderNotFound => "reminder_not_found",
            ReminderAlreadyScheduled(_) => "reminder_already_scheduled",
            ReminderNotOffered => "reminder_not_offered",
            ReminderSnoozed(_) => "reminder_snoozed",
            ReminderAlreadyAccepted(_) => "reminder_already_accepted",
            ReminderAlreadyDeclined => "reminder_already_declined",
            ReminderSuperseded(_) => "reminder_superseded",
            SnoozeNotInFuture => "snooze_not_in_future",
            SkuUnavailable { .. } => "sku_unavailable",
            SkuNotInCatalog { .. } => "sku_not_in_catalog",
            OrderNotFound => "order_not_found",
            OrderAlreadyExists(_) => "order_already_exists",
            InvalidOrder(_) => "invalid_order",
            OrderAlreadyPlaced => "order_already_placed",
            OrderAlreadyCancelled => "order_already_cancelled",
            WorkoutNotFound => "workout_not_found",
            WorkoutAlreadyStarted => "workout_already_started",
            WorkoutPaused => "workout_paused",
            WorkoutNotPaused => "workout_not_paused",
            WorkoutFinished => "workout_finished",
            InvalidMeasurement(_) => "invalid_measurement",
            InvalidPurchase(_) => "invalid_purchase",
            TimeTravel(_) => "time_travel",
        }
    }
}
