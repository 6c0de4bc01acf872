//! JSON read strictly: an object names each key once.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Parses JSON text whose objects name each key once, at any depth. Parsed into a plain
/// `Value`, a repeated key keeps its last value silently (`{"quantity":1,
/// "quantity":1000}` is a purchase of 1,000), so that what a proxy or a log reads first
/// is not what runs; RFC 7493 (I-JSON) says a key MUST NOT repeat. The error names the
/// repeated key ("the key \"quantity\" is repeated at line 1 column 30"). Values are
/// otherwise what `serde_json::from_slice::<Value>` gives.
pub fn parse_unique(text: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Unique>(text).map(|Unique(value)| value)
}

/// A JSON value whose objects name each key once (see [`parse_unique`]).
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "the key {key:?} is repeated"
                )));
            }
            let Unique(item) = map.next_value()?;
            object.insert(key, item);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_is_refused_at_any_depth_and_values_parse_as_before() {
        for body in [
            r#"{"quantity":1,"quantity":1000}"#,
            r#"{"points":[{"lat":1,"lat":2}]}"#,
            r#"{"a":{"b":{"c":1,"c":1}}}"#,
        ] {
            let error = parse_unique(body.as_bytes()).expect_err(body).to_string();
            assert!(error.contains("is repeated"), "{body}: {error}");
        }
        let body = r#"{"s":"x","n":-3,"u":18446744073709551615,"f":1.5,"big":1e300,
            "b":true,"z":null,"a":[1,[2,{"k":"v"}]],"e":{},"t":"\u00e9"}"#;
        let plain: Value = serde_json::from_str(body).expect("valid");
        assert_eq!(parse_unique(body.as_bytes()).expect("valid"), plain);
        assert!(parse_unique(b"{").is_err());
        assert!(parse_unique(b"[1] 2").is_err(), "trailing text");
    }
}
