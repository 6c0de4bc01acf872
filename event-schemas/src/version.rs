use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The version of an event within its stream: the first event is version 0.
pub type StreamVersion = i64;

/// What the appender believes about the stream it appends to.
///
/// A mismatch is a conflict carrying the stream's actual version, so the caller can
/// reload and decide again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// Append whatever the stream's state.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `actual` (`None`: no stream) satisfies
    /// this expectation.
    pub fn accepts(self, actual: Option<StreamVersion>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(v) => actual == Some(v),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no_stream"),
            ExpectedVersion::StreamExists => f.write_str("stream_exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// A string that names no expected version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an expected version: use `any`, `no_stream`, `stream_exists` or a version number >= 0")]
pub struct ParseExpectedVersionError(pub String);

impl FromStr for ExpectedVersion {
    type Err = ParseExpectedVersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "any" => Ok(ExpectedVersion::Any),
            "no_stream" | "no-stream" => Ok(ExpectedVersion::NoStream),
            "stream_exists" | "stream-exists" => Ok(ExpectedVersion::StreamExists),
            other => match other.parse::<i64>() {
                Ok(v) if v >= 0 => Ok(ExpectedVersion::Exact(v)),
                _ => Err(ParseExpectedVersionError(s.to_owned())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_rejects_the_rest() {
        assert_eq!("any".parse(), Ok(ExpectedVersion::Any));
        assert_eq!("no_stream".parse(), Ok(ExpectedVersion::NoStream));
        assert_eq!("stream_exists".parse(), Ok(ExpectedVersion::StreamExists));
        assert_eq!("7".parse(), Ok(ExpectedVersion::Exact(7)));
        for bad in ["", "-1", "latest", "1.5"] {
            assert!(bad.parse::<ExpectedVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn accepts_matches_the_rules() {
        assert!(ExpectedVersion::NoStream.accepts(None));
        assert!(!ExpectedVersion::NoStream.accepts(Some(0)));
        assert!(ExpectedVersion::StreamExists.accepts(Some(0)));
        assert!(!ExpectedVersion::StreamExists.accepts(None));
        assert!(ExpectedVersion::Exact(3).accepts(Some(3)));
        assert!(!ExpectedVersion::Exact(3).accepts(Some(4)));
        assert!(ExpectedVersion::Any.accepts(None));
    }

    #[test]
    fn serde_shape_is_tagged() {
        let json = serde_json::to_string(&ExpectedVersion::Exact(2)).expect("serialise");
        assert_eq!(json, r#"{"kind":"exact","version":2}"#);
    }
}
