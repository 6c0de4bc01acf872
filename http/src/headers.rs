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

/// The namespace of correlation ids derived from text that is not a UUID.
const CORRELATIONS: Uuid = Uuid::from_u128(0x3f0c_9d1e_2b7a_4c85_a6d4_91e2_5b0f_7c38);

/// The `X-Correlation-Id` of a request, when sent: a UUID as it is; other text (1 to 200
/// visible ASCII characters: gateways stamp their own formats, e.g. `uuid#counter`) as
/// the UUID v5 of that text, so the same id always correlates the same way and a
/// gateway's ids never refuse requests. Sent twice, empty, longer or not visible ASCII:
/// 400 `invalid_header`.
pub fn correlation_header(headers: &HeaderMap) -> Result<Option<Uuid>, ApiError> {
    const NAME: &str = "x-correlation-id";
    let Some(text) = text_header(headers, NAME)? else {
        return Ok(None);
    };
    let text = text.trim();
    if let Ok(id) = Uuid::parse_str(text) {
        return Ok(Some(id));
    }
    let visible = (1..=200).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
    if !visible {
        return Err(invalid_header(
            NAME,
            "must be a UUID or 1 to 200 visible ASCII characters",
        ));
    }
    Ok(Some(Uuid::new_v5(&CORRELATIONS, text.as_bytes())))
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
            let map = headers(&[("x-causation-id", bad)]);
            let error = uuid_header(&map, "x-causation-id").expect_err("bad");
            assert_eq!(error.error, "invalid_header", "{bad:?}");
        }
    }

    #[test]
    fn a_gateway_s_correlation_id_maps_to_a_stable_uuid() {
        let id = Uuid::new_v4();
        let of =
            |value: &'static [u8]| correlation_header(&headers(&[("x-correlation-id", value)]));
        let given = HeaderMap::from_iter([(
            axum::http::HeaderName::from_static("x-correlation-id"),
            HeaderValue::from_str(&id.to_string()).expect("value"),
        )]);
        assert_eq!(correlation_header(&given).expect("uuid"), Some(id));
        let kong = of(b"3e9a2c4f-0b1d-4e5f-9a8b-7c6d5e4f3a2b#17").expect("gateway id");
        assert_eq!(
            kong,
            of(b"3e9a2c4f-0b1d-4e5f-9a8b-7c6d5e4f3a2b#17").expect("again")
        );
        assert_ne!(
            kong,
            of(b"3e9a2c4f-0b1d-4e5f-9a8b-7c6d5e4f3a2b#18").expect("next")
        );
        for bad in [&b""[..], b"a b", "é".as_bytes(), &[b'x'; 201]] {
            assert!(of(bad).is_err(), "{bad:?}");
        }
        assert_eq!(correlation_header(&HeaderMap::new()).expect("none"), None);
    }
}
