//! Given/when/then for aggregates: `given(history).when(command).then(events)`.
//!
//! ```
//! use eventfold_domain::testing::given;
//! use eventfold_domain::workout::{Workout, WorkoutCommand};
//! # use chrono::{TimeZone, Utc};
//! # let now = Utc.with_ymd_and_hms(2026, 1, 1, 7, 0, 0).unwrap();
//! # let id = uuid::Uuid::nil();
//! given::<Workout>([])
//!     .when(WorkoutCommand::Pause { at: now })
//!     .then_err(eventfold_domain::DomainError::WorkoutNotFound);
//! ```

use crate::{Aggregate, DomainError, DomainEvent};

/// A history to decide on.
#[derive(Debug)]
pub struct Given<A: Aggregate> {
    state: A::State,
}

/// Starts a scenario from `history`.
pub fn given<A: Aggregate>(history: impl IntoIterator<Item = DomainEvent>) -> Given<A> {
    let events: Vec<DomainEvent> = history.into_iter().collect();
    Given {
        state: A::fold(&events),
    }
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` on the history.
    pub fn when(self, command: A::Command) -> Then {
        Then {
            outcome: A::decide(&self.state, command),
        }
    }
}

/// The outcome of a decision.
#[derive(Debug)]
pub struct Then {
    outcome: Result<Vec<DomainEvent>, DomainError>,
}

impl Then {
    /// Asserts the command produced exactly `expected`.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = DomainEvent>) {
        let expected: Vec<DomainEvent> = expected.into_iter().collect();
        match self.outcome {
            Ok(events) => assert_eq!(events, expected),
            Err(error) => panic!("expected events {expected:?}, got error {error:?}"),
        }
    }

    /// Asserts the command broke exactly the rule `expected`.
    #[track_caller]
    pub fn then_err(self, expected: DomainError) {
        match self.outcome {
            Ok(events) => panic!("expected error {expected:?}, got events {events:?}"),
            Err(error) => assert_eq!(error, expected),
        }
    }

    /// The raw outcome, for custom assertions.
    pub fn outcome(self) -> Result<Vec<DomainEvent>, DomainError> {
        self.outcome
    }
}
