//! An event's payload as the log stores it: JSON text.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// A recorded event's payload: the JSON text the log holds, checked to be JSON once when
/// it is read and then passed on as it is. Relaying or publishing an event copies the
/// text into the envelope; decoding it reads the text straight into the typed event. No
/// tree of [`Value`]s is built on the way (building, writing out and freeing that tree
/// was a third of the Kafka relay's CPU time).
///
/// Two payloads are equal when they hold the same JSON value, whatever the order of
/// their keys or their spacing (PostgreSQL's `jsonb` orders keys its own way).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// The payload of JSON `text`; an error when it is not JSON.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The payload of JSON `text` with the whitespace between its tokens left out
    /// (PostgreSQL writes `jsonb` out as `{"a": 1, "b": 2}`; relayed and published as
    /// `{"a":1,"b":2}`, as every other writer of the payload does); an error when it is
    /// not JSON.
    pub fn compacted(text: &str) -> Result<Self, serde_json::Error> {
        Self::from_json(without_whitespace(text))
    }

    /// The payload holding `value`.
    pub fn from_value(value: &Value) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The payload as a tree of values.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.get())
    }

    /// The payload read into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.get())
    }
}

/// `text` without the whitespace outside its strings (JSON's insignificant whitespace
/// when `text` is JSON).
fn without_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        // Outside a string: copy up to the next blank or the next string.
        let Some(at) = rest.find([' ', '\n', '\r', '\t', '"']) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        if rest.as_bytes()[at] != b'"' {
            rest = &rest[at + 1..];
            continue;
        }
        // Inside a string: copy up to its closing quote, escapes and all.
        let mut end = at + 1;
        loop {
            // Past the end (a trailing backslash) or inside a character (a backslash
            // before a non-ASCII one): not JSON, kept as it is for the parser to refuse.
            let Some(tail) = rest.get(end..) else {
                end = rest.len();
                break;
            };
            match tail.find(['"', '\\']) {
                Some(i) if tail.as_bytes()[i] == b'\\' => end += i + 2,
                Some(i) => {
                    end += i + 1;
                    break;
                }
                // An unterminated string: likewise.
                None => {
                    end = rest.len();
                    break;
                }
            }
        }
        // `end` falls after an ASCII byte (a quote, or the byte an escape's backslash
        // precedes) or at the end, so always on a character boundary; fall back to
        // copying the rest if not.
        let Some(string) = rest.get(..end) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&string[at..]);
        rest = &rest[end..];
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        if self.get() == other.get() {
            return true;
        }
        match (self.to_value(), other.to_value()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value().is_ok_and(|v| v == *other)
    }
}

impl PartialEq<Payload> for Value {
    fn eq(&self, other: &Payload) -> bool {
        other == self
    }
}

impl TryFrom<Value> for Payload {
    type Error = serde_json::Error;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::from_value(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_values_are_equal_whatever_their_key_order_and_spacing() {
        let a = Payload::from_json(r#"{"b": 1, "a": [true, null]}"#.to_owned()).expect("json");
        let b = Payload::from_value(&json!({"a": [true, null], "b": 1})).expect("json");
        assert_eq!(a, b);
        assert_eq!(a, json!({"b": 1, "a": [true, null]}));
        let c = Payload::from_value(&json!({"a": [true, null], "b": 2})).expect("json");
        assert_ne!(a, c);
    }

    #[test]
    fn postgres_jsonb_text_is_compacted_and_strings_are_left_alone() {
        let text = r#"{"a": 1, "b": [1, 2, {"c": "x y\" , \\"}], "d": " \t", "é": "ü : ,"}"#;
        let payload = Payload::compacted(text).expect("json");
        assert_eq!(
            payload.get(),
            r#"{"a":1,"b":[1,2,{"c":"x y\" , \\"}],"d":" \t","é":"ü : ,"}"#
        );
        assert_eq!(payload, Payload::from_json(text.to_owned()).expect("json"));
        assert!(Payload::compacted(r#"{"a": "unterminated}"#).is_err());
        assert!(Payload::compacted(r#"{"a": "\"#).is_err());
        assert!(Payload::compacted(r#"{"a": "\é"}"#).is_err());
    }

    proptest::proptest! {
        #[test]
        fn compacting_pretty_json_gives_the_compact_form(value in arbitrary_json()) {
            let pretty = serde_json::to_string_pretty(&value).expect("serializes");
            let compact = serde_json::to_string(&value).expect("serializes");
            let payload = Payload::compacted(&pretty).expect("json");
            proptest::prop_assert_eq!(payload.get(), compact.as_str());
        }
    }

    fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            // Blanks, quotes, backslashes and control characters inside strings.
            "[ \t\n\r\"\\\\a-zé\u{1}-\u{1f}:,{}\\[\\]]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map("[ \"\\\\a-z:]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn text_that_is_not_json_is_refused() {
        assert!(Payload::from_json("{\"a\":".to_owned()).is_err());
        assert!(Payload::from_json("{} {}".to_owned()).is_err());
    }

    #[test]
    fn it_is_written_into_an_envelope_as_it_is() {
        #[derive(Serialize, Deserialize)]
        struct Envelope {
            data: Payload,
        }
        let text = r#"{"z":1,"a":"é\n"}"#;
        let envelope = Envelope {
            data: Payload::from_json(text.to_owned()).expect("json"),
        };
        let written = serde_json::to_string(&envelope).expect("serializes");
        assert_eq!(written, format!(r#"{{"data":{text}}}"#));
        let read: Envelope = serde_json::from_str(&written).expect("deserializes");
        assert_eq!(read.data.get(), text);
    }
}
