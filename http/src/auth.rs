//! Authentication: a bearer JWT (HS256) or an API key; and what a request says about
//! itself (idempotency key, correlation and causation ids).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::{correlation_header, single_header, uuid_header, Principal, Role};

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 200;

/// Namespace of request fingerprints (UUID v5 over caller and request digest).
const FINGERPRINTS: Uuid = Uuid::from_u128(0x6a1d_52c4_8f0e_4b7a_9c3e_2d51_70e8_b4f6);

/// An `Idempotency-Key` header's value: 1-200 visible ASCII characters, no spaces.
fn idempotency_key(raw: &[u8]) -> Result<String, ApiError> {
    if raw.is_empty() || raw.len() > MAX_KEY_LEN || !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            format!("Idempotency-Key must be 1-{MAX_KEY_LEN} visible ASCII characters (no spaces)"),
        ));
    }
    Ok(String::from_utf8_lossy(raw).into_owned())
}

/// What a request asks, digested by [`request_digest`]; put in its extensions (by
/// the command routes, for requests with an `Idempotency-Key`) before [`Caller`]
/// is extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestDigest(pub String);

/// A digest of a request's method, path and body. A JSON body counts by its content,
/// not its spelling: keys in any order, any whitespace, `5.0` as `5` (as the body is
/// read), so a client that re-serialises a retry still sends the same request.
pub fn request_digest(method: &str, path: &str, body: &[u8]) -> RequestDigest {
    let mut text = format!("{method} {path}\n");
    let blank = body.iter().all(u8::is_ascii_whitespace);
    match serde_json::from_slice::<serde_json::Value>(body) {
        // Compact, and its keys sorted: serde_json's map is a `BTreeMap` (its
        // `preserve_order` feature is off; the digest's property tests would fail
        // if anything turned it on).
        Ok(value) => text.push_str(&crate::edge::integral(value).to_string()),
        Err(_) if blank => text.push_str("{}"),
        Err(_) => text.push_str(&String::from_utf8_lossy(body)),
    }
    RequestDigest(Uuid::new_v5(&FINGERPRINTS, text.as_bytes()).to_string())
}

/// Who may call, and how they prove it.
#[derive(Clone, Default)]
pub struct AuthConfig {
    jwt: Option<DecodingKey>,
    api_keys: HashMap<String, Principal>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt", &self.jwt.is_some())
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

impl AuthConfig {
    /// Accepts HS256 JWTs signed with `secret`.
    pub fn with_jwt_secret(mut self, secret: &[u8]) -> Self {
        self.jwt = Some(DecodingKey::from_secret(secret));
        self
    }

    /// Accepts `key` (header `X-Api-Key`) as `principal`.
    pub fn with_api_key(mut self, key: impl Into<String>, principal: Principal) -> Self {
        self.api_keys.insert(key.into(), principal);
        self
    }

    /// Parses `key=service:name,key2=user:u42` (the `EVENTFOLD_API_KEYS` format).
    pub fn with_api_keys_spec(mut self, spec: &str) -> Result<Self, String> {
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once('=').and_then(|(key, who)| {
                let (role, subject) = who.split_once(':')?;
                let principal = match role {
                    "service" => Principal::service(subject),
                    "user" => Principal::user(subject),
                    _ => return None,
                };
                (!key.is_empty() && !subject.is_empty()).then(|| (key.to_owned(), principal))
            });
            let (key, principal) = parsed.ok_or_else(|| {
                format!("API key entry {entry:?} is not KEY=service:NAME or KEY=user:ID")
            })?;
            self.api_keys.insert(key, principal);
        }
        Ok(self)
    }

    /// Who the headers say is calling: an `X-Api-Key` or a bearer token; 401 if neither
    /// proves anything.
    pub fn authenticate_headers(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Principal, ApiError> {
        // Each credential header once: never a first value of several.
        let api_key = single_header(headers, "x-api-key")?;
        let authorization = single_header(headers, axum::http::header::AUTHORIZATION.as_str())?;
        let Some(key) = api_key else {
            return match authorization {
                Some(header) => self.bearer(header),
                None => Err(unauthorized(
                    "authentication required: a bearer token or an X-Api-Key header",
                )),
            };
        };
        let key = key.to_str().map_err(|_| unauthorized("invalid API key"))?;
        let principal = self
            .api_keys
            .get(key)
            .cloned()
            .ok_or_else(|| unauthorized("invalid API key"))?;
        // The API key decides. A bearer token beside it that proves another caller (a
        // proxy that adds its own credential to a user's request) is refused rather
        // than overruled; one that proves nothing is not read.
        if let Some(Ok(other)) = authorization.map(|header| self.bearer(header)) {
            if other != principal {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "ambiguous_credentials",
                    "the X-Api-Key and the bearer token name different callers: send one",
                ));
            }
        }
        Ok(principal)
    }

    /// The caller an `Authorization: Bearer <token>` header proves (401 otherwise).
    fn bearer(&self, header: &axum::http::HeaderValue) -> Result<Principal, ApiError> {
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let key = self
            .jwt
            .as_ref()
            .ok_or_else(|| unauthorized("bearer tokens are not enabled"))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &Validation::new(Algorithm::HS256))
            .map_err(|e| unauthorized(&format!("invalid token: {e}")))?;
        let claims = data.claims;
        Ok(match claims.role.as_deref() {
            Some("service") => Principal::service(claims.sub),
            _ => Principal {
                subject: claims.sub,
                role: Role::User,
            },
        })
    }
}

/// 401 `unauthorized`.
fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// A principal already authenticated by the rate limiter, kept in the request's
/// extensions so that the handler does not verify the token twice.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub(crate) Principal);

/// Claims of an Eventfold JWT.
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Claims {
    /// The user id (or service name).
    pub sub: String,
    /// `user` (default) or `service`.
    #[serde(default)]
    pub role: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// The authenticated caller with the request's idempotency key and correlation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who is calling.
    pub principal: Principal,
    /// `Idempotency-Key`: the same key for the same command returns the first result.
    pub idempotency_key: Option<String>,
    /// With a key, what this caller's request asks (see [`request_digest`]): the key
    /// reused for a different request is refused.
    pub request_fingerprint: Option<String>,
    /// `X-Correlation-Id`, or a fresh one.
    pub correlation_id: Uuid,
    /// `X-Causation-Id`, when given.
    pub causation_id: Option<Uuid>,
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<AuthConfig>: axum::extract::FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let principal = match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(principal)) => principal.clone(),
            None => {
                let auth: Arc<AuthConfig> = axum::extract::FromRef::from_ref(state);
                auth.authenticate_headers(&parts.headers)?
            }
        };
        let idempotency_key = match single_header(&parts.headers, "idempotency-key")? {
            None => None,
            // As the document says (`^[\x21-\x7E]+$`): a key the header cannot carry
            // as text is refused, never taken for no key at all.
            Some(raw) => Some(idempotency_key(raw.as_bytes())?),
        };
        let request_fingerprint = match (&idempotency_key, parts.extensions.get::<RequestDigest>())
        {
            (Some(_), Some(RequestDigest(digest))) => Some(
                Uuid::new_v5(
                    &FINGERPRINTS,
                    format!("{:?}\n{}\n{digest}", principal.role, principal.subject).as_bytes(),
                )
                .to_string(),
            ),
            _ => None,
        };
        let correlation_id = correlation_header(&parts.headers)?.unwrap_or_else(crate::fresh_uuid);
        let causation_id = uuid_header(&parts.headers, "x-causation-id")?;
        Ok(Caller {
            principal,
            idempotency_key,
            request_fingerprint,
            correlation_id,
            causation_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `fields` as a JSON object, in the given order or reversed with whitespace.
    fn spelled(fields: &std::collections::BTreeMap<String, i64>, reversed: bool) -> String {
        let mut items: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k.clone())))
            .collect();
        if reversed {
            items.reverse();
            format!("{{ {} }}\n", items.join(" ,\n  "))
        } else {
            format!("{{{}}}", items.join(","))
        }
    }

    proptest! {
        /// A retry that re-serialises its body (key order, whitespace) is the same request.
        #[test]
        fn the_digest_reads_a_body_by_its_content_not_its_spelling(
            fields in proptest::collection::btree_map("[a-z_]{1,8}", any::<i64>(), 0..8),
        ) {
            let a = request_digest("POST", "/api/v1/x", spelled(&fields, false).as_bytes());
            let b = request_digest("POST", "/api/v1/x", spelled(&fields, true).as_bytes());
            prop_assert_eq!(a, b);
        }

        /// Another value, path or method is another request.
        #[test]
        fn another_value_path_or_method_is_another_digest(
            fields in proptest::collection::btree_map("[a-z_]{1,8}", any::<i64>(), 1..8),
            bump in 1i64..1000,
        ) {
            let body = spelled(&fields, false);
            let base = request_digest("POST", "/api/v1/x", body.as_bytes());
            let mut changed = fields.clone();
            if let Some(v) = changed.values_mut().next() {
                *v = v.wrapping_add(bump);
            }
            let other = spelled(&changed, false);
            prop_assert_ne!(&base, &request_digest("POST", "/api/v1/x", other.as_bytes()));
            prop_assert_ne!(&base, &request_digest("POST", "/api/v1/y", body.as_bytes()));
            prop_assert_ne!(&base, &request_digest("PUT", "/api/v1/x", body.as_bytes()));
        }
    }

    #[test]
    fn whole_floats_and_an_empty_body_read_as_they_are_parsed() {
        let d = |body: &str| request_digest("POST", "/p", body.as_bytes());
        assert_eq!(d(r#"{"n":5}"#), d(r#"{"n":5.0}"#));
        assert_ne!(d(r#"{"n":5}"#), d(r#"{"n":5.5}"#));
        assert_eq!(d(""), d("{}"));
        assert_eq!(d("  \n"), d("{ }"));
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert!(idempotency_key(b"order-42:retry_1").is_ok());
        for bad in [
            &b""[..],
            b"a b",
            b"tab\tkey",
            "caf\u{e9}".as_bytes(),
            &[b'k'; 201][..],
        ] {
            assert!(idempotency_key(bad).is_err(), "{bad:?}");
        }
    }
}
