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
use crate::{Principal, Role};

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 200;

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
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        if let Some(key) = headers.get("x-api-key") {
            let key = key.to_str().map_err(|_| unauthorized("invalid API key"))?;
            return self
                .api_keys
                .get(key)
                .cloned()
                .ok_or_else(|| unauthorized("invalid API key"));
        }
        let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(unauthorized(
                "authentication required: a bearer token or an X-Api-Key header",
            ));
        };
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
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let idempotency_key = header("idempotency-key");
        if let Some(key) = &idempotency_key {
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "validation_failed",
                    format!("Idempotency-Key must be 1-{MAX_KEY_LEN} characters"),
                ));
            }
        }
        let correlation_id = header("x-correlation-id")
            .and_then(|v| Uuid::parse_str(&v).ok())
            .unwrap_or_else(crate::fresh_uuid);
        let causation_id = header("x-causation-id").and_then(|v| Uuid::parse_str(&v).ok());
        Ok(Caller {
            principal,
            idempotency_key,
            correlation_id,
            causation_id,
        })
    }
}
