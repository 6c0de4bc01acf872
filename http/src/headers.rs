//! Request headers read from one place: a header the API reads is taken only when it
//! is sent once, and an id header only when it is an id. A repeated header is refused
//! rather than read as its first value (a proxy that adds a second `X-Api-Key` or
//! `Authorization` must not decide who is calling), and a malformed id is refused
//! rather than replaced.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use uuid::Uuid;

use crate::ApiError;

/// 400 `invalid_header`: header `name` is refused for `why`.
fn invalid_header(name: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_header",
        format!("header {name} {why}"),
    )
    .with_details(serde_json::json!({ "header": name }))
}

/// The value of header `name` when the request sends it; 400 `invalid_header` when it
/// sends it more than once.
pub fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h HeaderValue>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(invalid_header(name, "is sent more than once: send it once"));
    }
    Ok(first)
}

/// The text of header `name`, when sent once and visible ASCII (400 otherwise).
pub fn text_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    single_header(headers, name)?
        .map(|value| {
            value
                .to_str()
                .map_err(|_| invalid_header(name, "is not visible ASCII text"))
        })
        .transpose()
}

/// A UUID from header `name` (`X-Correlation-Id`, `X-Causation-Id`), when sent:
/// anything else is 400 `invalid_header`, never a fresh id in its place.
pub fn uuid_header(headers: &HeaderMap, name: &str) -> Result<Option<Uuid>, ApiError> {
    text_header(headers, name)?
        .map(|text| {
            Uuid::parse_str(text.trim()).map_err(|_| invalid_header(name, "must be a UUID"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static [u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_bytes(value).expect("header value"));
        }
        map
    }

    #[test]
    fn a_header_sent_twice_is_refused_not_read_as_its_first_value() {
        let twice = headers(&[("x-api-key", b"k1"), ("x-api-key", b"k2")]);
        let error = single_header(&twice, "x-api-key").expect_err("twice");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(error.message.contains("more than once"), "{error:?}");
        let once = headers(&[("x-api-key", b"k1")]);
        assert_eq!(
            text_header(&once, "x-api-key").expect("once"),
            Some("k1"),
            "one value is read"
        );
        assert_eq!(
            text_header(&HeaderMap::new(), "x-api-key").expect("none"),
            None
        );
    }

    #[test]
    fn id_headers_are_uuids_or_refused() {
        let id = Uuid::new_v4();
        let good = HeaderMap::from_iter([(
            axum::http::HeaderName::from_static("x-correlation-id"),
            HeaderValue::from_str(&id.to_string().to_uppercase()).expect("value"),
        )]);
        assert_eq!(
            uuid_header(&good, "x-correlation-id").expect("good"),
            Some(id)
        );
        for bad in [&b"not-a-uuid"[..], b"", "é".as_bytes()] {
            let map = headers(&[("x-correlation-id", bad)]);
            let error = uuid_header(&map, "x-correlation-id").expect_err("bad");
            assert_eq!(error.error, "invalid_header", "{bad:?}");
        }
    }
}
