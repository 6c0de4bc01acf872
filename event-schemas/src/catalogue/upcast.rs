//! Upcasters: small pure functions that turn a stored payload of version N into
//! version N+1. Chained until the current version. A new version of an event type
//! needs one here (and a golden fixture of the old version in `fixtures/`).

use serde_json::{Map, Value};

/// Applies the upcasters of `event_type` from `version` up to the current version.
pub(super) fn to_current(
    event_type: &str,
    mut version: i32,
    mut data: Value,
) -> Result<Value, serde_json::Error> {
    loop {
        data = match (event_type, version) {
            ("PurchaseRecorded", 1) => purchase_recorded_v1_to_v2(data)?,
            ("ReorderAccepted", 1) => reorder_accepted_v1_to_v2(data)?,
            _ => return Ok(data),
        };
        version += 1;
    }
}

/// v1 carried `price` in major units as a decimal number and no currency (everything
/// was in roubles); v2 carries `unit_price` in minor units and `currency`.
fn purchase_recorded_v1_to_v2(data: Value) -> Result<Value, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct V1 {
        price: f64,
        #[serde(flatten)]
        rest: Map<String, Value>,
    }
    let V1 { price, mut rest } = serde_json::from_value(data)?;
    // Checked, not `as`: a cast would turn a price beyond i64's minor units into
    // i64::MAX without a word.
    let minor = (price * 100.0).round();
    if !(minor.is_finite() && minor >= i64::MIN as f64 && minor < i64::MAX as f64) {
        return Err(serde::de::Error::custom(format!(
            "price {price} is beyond what minor units can hold"
        )));
    }
    rest.insert("unit_price".into(), Value::from(minor as i64));
    rest.insert("currency".into(), Value::from("RUB"));
    Ok(Value::Object(rest))
}

/// v1 did not record what the user said yes to; v2 carries it as `quote`. A v1 event
/// gets none: its order is drafted at the catalog's price when it is drafted, as before.
fn reorder_accepted_v1_to_v2(data: Value) -> Result<Value, serde_json::Error> {
    let mut fields: Map<String, Value> = serde_json::from_value(data)?;
    fields.insert("quote".into(), Value::Null);
    Ok(Value::Object(fields))
}
