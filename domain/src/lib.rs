//! The reference domain as pure functions: `decide(&state, command) -> events` and
//! `evolve(state, &event) -> state`. No I/O, no async, no clock, no randomness: time,
//! ids and catalog prices come in with the command.
//!
//! - [`reminder`], [`order`], [`workout`], [`purchases`] — the aggregates;
//! - [`consumables`] — which skus are consumables and how often they are re-bought;
//! - [`money`] — amounts in minor units and their range;
//! - [`slotting`] — when to remind: inside the user's active hours, spread over slots;
//! - [`reorder`] — the voice re-order process across reminder and order.

pub mod activity;
pub mod catalog;
pub mod consumables;
mod error;
pub mod money;
pub mod order;
pub mod purchases;
pub mod reminder;
pub mod reorder;
pub mod slotting;
pub mod testing;
pub mod time;
pub mod workout;

pub use error::{DomainError, ErrorKind};
pub use eventfold_event_schemas::DomainEvent;

/// A consistency boundary: one event stream, decided on and folded.
pub trait Aggregate {
    /// Everything `decide` needs to know, folded from the stream's events.
    type State: Default + Clone + std::fmt::Debug;
    /// What the caller wants.
    type Command;

    /// Decides which events a command produces, or which rule it breaks.
    fn decide(state: &Self::State, command: Self::Command)
        -> Result<Vec<DomainEvent>, DomainError>;

    /// Applies one event. Events of other aggregates are ignored.
    fn evolve(state: Self::State, event: &DomainEvent) -> Self::State;

    /// Folds a whole history.
    fn fold<'a>(events: impl IntoIterator<Item = &'a DomainEvent>) -> Self::State {
        events
            .into_iter()
            .fold(Self::State::default(), Self::evolve)
    }
}
