use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A position in the global log (`$all`). Positions start at 1 and only grow; they may
/// have holes (an append that rolled back burns its positions).
///
/// [`Position::START`] (0) is "before the first event": subscribing after it delivers
/// everything. A command response carries the position of its last event as a
/// consistency token; a query can wait until its read model has passed it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct Position(#[schemars(range(min = 0))] pub i64);

impl Position {
    /// Before the first event.
    pub const START: Position = Position(0);

    /// The next position.
    pub fn next(self) -> Position {
        Position(self.0.saturating_add(1))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A string that is not a log position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a log position: expected a non-negative integer")]
pub struct ParsePositionError(pub String);

impl FromStr for Position {
    type Err = ParsePositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Position(n)),
            _ => Err(ParsePositionError(s.to_owned())),
        }
    }
}
