//! Input types that validate themselves where they are read, one place per type, and
//! describe the same rules in the OpenAPI document (their JSON Schema): a request the
//! document calls valid is accepted by the parser, and the other way round.

use std::borrow::Cow;

use axum::http::StatusCode;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{ApiError, Timestamp, YEARS};

/// No control characters (tab, line feed and carriage return aside: they are refused
/// in names), at least one character that is not white space.
const NAME_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";

/// 400 `invalid_path`: the path segment `field` is refused for `why`.
fn invalid_path(field: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_path",
        format!("{field} {why}"),
    )
    .with_details(serde_json::json!({ "field": field }))
}

/// A UUID from the path segment `field` (any case; answered and stored in lower case):
/// anything else is 400 `invalid_path`, not a search that finds nothing.
pub fn uuid_path(field: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| invalid_path(field, &format!("{raw:?} is not a UUID")))
}

/// A string of 1 to `MAX` characters (Unicode scalar values, as JSON Schema's
/// `maxLength` counts them), not blank, with no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Text<const MAX: usize>(pub String);

/// A name: a category, a sport.
pub type Name = Text<200>;
/// Free text: a title, a reason.
pub type Title = Text<500>;

impl<const MAX: usize> Text<MAX> {
    /// Checks `raw`.
    pub fn new(raw: String) -> Result<Self, String> {
        // Stricter than `check_text`: tab and line breaks have no place in a name.
        if let Some(c) = raw.chars().find(|c| c.is_control()) {
            return Err(format!(
                "control character U+{:04X} is not allowed",
                c as u32
            ));
        }
        if raw.trim().is_empty() {
            return Err("must not be empty or blank".into());
        }
        let length = raw.chars().count();
        if length > MAX {
            return Err(format!("is {length} characters long; at most {MAX}"));
        }
        Ok(Self(raw))
    }

    /// Checks a path segment named `field`: 400 `invalid_path` in the error shape.
    pub fn from_path(field: &str, raw: String) -> Result<Self, ApiError> {
        Self::new(raw).map_err(|why| invalid_path(field, &why))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Text::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl<const MAX: usize> JsonSchema for Text<MAX> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Text{MAX}").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX,
            "pattern": NAME_PATTERN,
        })
    }
}

/// An id that names a stream: 1 to 200 ASCII letters, digits and `-_.:@` (a user id,
/// a sku, a device id), not dots alone: `.` and `..` in a URL path are dot segments
/// that clients resolve away (`/users/../reminders` is sent as `/reminders`), so such a
/// user could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Id(
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9_.:@-]*[A-Za-z0-9_:@-][A-Za-z0-9_.:@-]*$"),
        length(min = 1, max = 200)
    )]
    pub String,
);

impl Id {
    /// Checks `raw`.
    pub fn new(raw: String) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > 200 {
            return Err(format!(
                "must be 1-200 characters, not {}",
                raw.chars().count()
            ));
        }
        match raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.:@".contains(*c)))
        {
            Some(c) => Err(format!(
                "{c:?} is not allowed: use ASCII letters, digits and -_.:@"
            )),
            None if raw.bytes().all(|b| b == b'.') => Err(format!(
                "{raw:?} is dots alone: a URL path cannot name it (clients resolve `.` and `..`)"
            )),
            None => Ok(Self(raw)),
        }
    }

    /// Checks a path segment named `field`: 400 `invalid_path` in the error shape.
    pub fn from_path(field: &str, raw: String) -> Result<Self, ApiError> {
        Self::new(raw).map_err(|why| invalid_path(field, &why))
    }

    /// The id, owned.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Id::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// An ISO 4217 currency code, three capital letters (`RUB`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Currency(#[schemars(regex(pattern = r"^[A-Z]{3}$"))] pub String);

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(raw))
        } else {
            Err(serde::de::Error::custom(
                "currency must be an ISO 4217 code such as RUB",
            ))
        }
    }
}

impl Default for Currency {
    fn default() -> Self {
        Self("RUB".into())
    }
}

/// The largest integer every JSON reader holds exactly: 2^53 − 1 (I-JSON, RFC 7493).
/// Amounts stop there, so that a client in any language, and the edge's own reading
/// of a whole float such as `100.0`, never rounds one.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// An amount of money in minor units (kopecks, cents): 0 to [`MAX_SAFE_INTEGER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Amount(pub i64);

impl Amount {
    /// Checks `raw`.
    pub fn new(raw: i64) -> Result<Self, String> {
        if (0..=MAX_SAFE_INTEGER).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(format!(
                "an amount in minor units is 0 to {MAX_SAFE_INTEGER}, not {raw}"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Amount::new(i64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Amount {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_SAFE_INTEGER,
        })
    }
}

/// An integer in `MIN..=MAX` (a page size, a number of weeks): out of range is a 400
/// naming the range, never silently clamped; the document states the same range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Bounded<const MIN: i64, const MAX: i64>(i64);

impl<const MIN: i64, const MAX: i64> Bounded<MIN, MAX> {
    /// Checks `raw`.
    pub fn new(raw: i64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(format!("must be {MIN}-{MAX}, not {raw}"))
        }
    }

    /// The value.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The value of an optional parameter, or `default`, in the caller's integer type
    /// (`MIN..=MAX` fits it; a value that did not would read as `default`).
    pub fn or<T: TryFrom<i64>>(value: Option<Self>, default: T) -> T {
        value.and_then(|v| T::try_from(v.0).ok()).unwrap_or(default)
    }
}

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(i64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl<const MIN: i64, const MAX: i64> JsonSchema for Bounded<MIN, MAX> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Bounded{MIN}To{MAX}").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": MIN,
            "maximum": MAX,
        })
    }
}

/// Years 1970-9999 and weeks 01-53, as a pattern.
const ISO_WEEK_PATTERN: &str = "^(19[7-9][0-9]|[2-9][0-9]{3})-W(0[1-9]|[1-4][0-9]|5[0-3])$";

/// An ISO 8601 week, `2026-W48`, in the years 1970-9999. The document's pattern
/// says the shape; a week 53 of a year that has 52 is a 422 (`no_such_week`), as a
/// rule no pattern can state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IsoWeek(String);

impl IsoWeek {
    /// Checks `raw`: the shape (a 400 when wrong, with `field` named), then that
    /// the year has the week (a 422).
    pub fn parse(field: &str, raw: String) -> Result<Self, ApiError> {
        let shape = raw.len() == 8
            && raw.as_bytes()[4..6] == *b"-W"
            && raw[..4].bytes().all(|b| b.is_ascii_digit())
            && raw[6..].bytes().all(|b| b.is_ascii_digit());
        let parts = shape
            .then(|| Some((raw[..4].parse::<i32>().ok()?, raw[6..].parse::<u32>().ok()?)))
            .flatten()
            .filter(|(year, week)| YEARS.contains(year) && (1..=53).contains(week));
        let Some((year, week)) = parts else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                format!(
                    "{field} must be an ISO week such as 2026-W48, in the years {}-{}, not {raw:?}",
                    YEARS.start(),
                    YEARS.end()
                ),
            )
            .with_details(serde_json::json!({ "field": field })));
        };
        if chrono::NaiveDate::from_isoywd_opt(year, week, chrono::Weekday::Mon).is_none() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_such_week",
                format!("{year} has no ISO week {week}"),
            )
            .with_details(serde_json::json!({ "field": field })));
        }
        Ok(Self(raw))
    }

    /// The week, `2026-W48`.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl JsonSchema for IsoWeek {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "IsoWeek".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": ISO_WEEK_PATTERN,
            "description": "ISO 8601 week, e.g. 2026-W48",
        })
    }
}

/// The year range as a pattern over RFC 3339's year digits.
const YEAR_PATTERN: &str = "^(19[7-9][0-9]|[2-9][0-9]{3})-";

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "pattern": YEAR_PATTERN,
            "description": format!(
                "RFC 3339 date and time, in the years {}-{}",
                YEARS.start(),
                YEARS.end()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_where_they_are_read() {
        let parse = |s: &str| serde_json::from_value::<Name>(serde_json::json!(s));
        assert!(parse("u1").is_ok());
        assert!(parse("Кофе в капсулах").is_ok());
        assert!(parse("").is_err());
        assert!(parse("   ").is_err());
        assert!(parse("a\u{0}b").is_err());
        assert!(parse("a\nb").is_err());
        assert!(parse(&"x".repeat(200)).is_ok());
        assert!(parse(&"x".repeat(201)).is_err());
        assert!(parse(&"ё".repeat(200)).is_ok(), "characters, not bytes");
    }

    #[test]
    fn the_name_pattern_says_what_the_parser_does() {
        // The schema's pattern, read by a JSON Schema validator, must agree with
        // `Text::new` on the classes a fuzzer tries.
        for (text, valid) in [
            ("u1", true),
            (" a ", true),
            ("   ", false),
            ("a\u{7}", false),
            ("a\u{85}", false),
        ] {
            assert_eq!(Name::new(text.into()).is_ok(), valid, "{text:?}");
        }
        assert!(NAME_PATTERN.starts_with('^') && NAME_PATTERN.ends_with('$'));
    }

    #[test]
    fn ids_are_what_a_stream_id_takes() {
        assert!(Id::new("u-42@home.example:1".into()).is_ok());
        assert!(Id::new("".into()).is_err());
        assert!(Id::new("ü".into()).is_err());
        assert!(Id::new("a b".into()).is_err());
        assert!(Id::new("x".repeat(201)).is_err());
        for dots in [".", "..", "..."] {
            assert!(Id::new(dots.into()).is_err(), "{dots}");
        }
        assert!(Id::new("..a".into()).is_ok());
        assert!(Id::new("a.".into()).is_ok());
    }

    #[test]
    fn amounts_stop_where_json_readers_stay_exact() {
        let parse = |v: serde_json::Value| serde_json::from_value::<Amount>(v);
        assert!(parse(serde_json::json!(0)).is_ok());
        assert!(parse(serde_json::json!(MAX_SAFE_INTEGER)).is_ok());
        assert!(parse(serde_json::json!(MAX_SAFE_INTEGER + 1)).is_err());
        assert!(parse(serde_json::json!(-1)).is_err());
        assert!(parse(serde_json::json!(1.5)).is_err());
    }

    #[test]
    fn currencies_are_three_capitals() {
        let parse = |s: &str| serde_json::from_value::<Currency>(serde_json::json!(s));
        assert!(parse("RUB").is_ok());
        assert!(parse("rub").is_err());
        assert!(parse("RUBL").is_err());
    }
}
