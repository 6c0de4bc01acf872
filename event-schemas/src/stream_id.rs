use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted stream id, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 1024;

/// The id of an event stream: `{category}-{id}`, e.g. `order-7f3c…`.
///
/// The category is everything before the first `-`: lowercase ASCII letters, digits and
/// `_`, starting with a letter. The id part is non-empty and made of ASCII letters,
/// digits and `-_.:@`. Both rules exist because stream ids end up in Kafka topic names,
/// Redis keys and URLs, where anything else needs escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId {
    value: String,
    category_len: usize,
}

/// Why a string is not a valid [`StreamId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// The string is empty.
    #[error("stream id is empty")]
    Empty,
    /// The string is longer than [`MAX_STREAM_ID_LEN`] bytes.
    #[error("stream id is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Actual length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// There is no `-` separating category and id.
    #[error("stream id {0:?} has no category: expected `{{category}}-{{id}}`, e.g. `order-42`")]
    MissingCategory(String),
    /// The category part breaks the syntax rules.
    #[error("stream id {0:?} has an invalid category: use lowercase letters, digits and `_`, starting with a letter")]
    InvalidCategory(String),
    /// The id part breaks the syntax rules.
    #[error("stream id {0:?} has an invalid id part: use ASCII letters, digits and `-_.:@`")]
    InvalidId(String),
}

impl StreamId {
    /// Parses and validates a stream id.
    pub fn new(value: impl Into<String>) -> Result<Self, StreamIdError> {
        let value = value.into();
        if value.is_empty() {
            return Err(StreamIdError::Empty);
        }
        if value.len() > MAX_STREAM_ID_LEN {
            return Err(StreamIdError::TooLong {
                len: value.len(),
                max: MAX_STREAM_ID_LEN,
            });
        }
        let Some((category, id)) = value.split_once('-') else {
            return Err(StreamIdError::MissingCategory(value));
        };
        if !is_valid_category(category) {
            return Err(StreamIdError::InvalidCategory(value));
        }
        let id_ok = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
        if !id_ok {
            return Err(StreamIdError::InvalidId(value));
        }
        let category_len = category.len();
        Ok(Self {
            value,
            category_len,
        })
    }

    /// Builds `{category}-{id}` from its parts.
    pub fn from_parts(category: &str, id: impl fmt::Display) -> Result<Self, StreamIdError> {
        Self::new(format!("{category}-{id}"))
    }

    /// The whole id, e.g. `order-42`.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The category, e.g. `order`.
    pub fn category(&self) -> &str {
        &self.value[..self.category_len]
    }

    /// The id within the category, e.g. `42`.
    pub fn id(&self) -> &str {
        &self.value[self.category_len + 1..]
    }
}

/// Whether `category` is a valid stream category (the part of a stream id before `-`).
pub fn is_valid_category(category: &str) -> bool {
    let mut bytes = category.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && category.len() < MAX_STREAM_ID_LEN
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl FromStr for StreamId {
    type Err = StreamIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for StreamId {
    type Error = StreamIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<StreamId> for String {
    fn from(id: StreamId) -> Self {
        id.value
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_category_at_the_first_dash() {
        let id = StreamId::new("order-7f3c-aa").expect("valid");
        assert_eq!(id.category(), "order");
        assert_eq!(id.id(), "7f3c-aa");
    }

    #[test]
    fn rejects_bad_ids_with_the_reason() {
        assert_eq!(StreamId::new(""), Err(StreamIdError::Empty));
        assert!(matches!(
            StreamId::new("order"),
            Err(StreamIdError::MissingCategory(_))
        ));
        assert!(matches!(
            StreamId::new("Order-1"),
            Err(StreamIdError::InvalidCategory(_))
        ));
        assert!(matches!(
            StreamId::new("-1"),
            Err(StreamIdError::InvalidCategory(_))
        ));
        assert!(matches!(
            StreamId::new("order-"),
            Err(StreamIdError::InvalidId(_))
        ));
        assert!(matches!(
            StreamId::new("order-a b"),
            Err(StreamIdError::InvalidId(_))
        ));
        assert!(matches!(
            StreamId::new(format!("order-{}", "x".repeat(MAX_STREAM_ID_LEN))),
            Err(StreamIdError::TooLong { len: 1030, .. })
        ));
    }

    #[test]
    fn deserialising_validates() {
        let ok: Result<StreamId, _> = serde_json::from_str("\"workout-1\"");
        assert!(ok.is_ok());
        let bad: Result<StreamId, _> = serde_json::from_str("\"no category\"");
        assert!(bad.is_err());
    }
}
