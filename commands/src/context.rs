use uuid::Uuid;

pub use eventfold_http::{Principal, Role};

/// Who is asking, and how to recognise a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// The caller.
    pub principal: Principal,
    /// The client's idempotency key: the same key for the same command returns the
    /// first result.
    pub idempotency_key: Option<String>,
    /// What the request with that key asked ([`eventfold_http::Caller`]'s
    /// fingerprint), stored with the events: the key reused for a different request
    /// is refused. `None` for keys that are not a client's (derived by the service).
    pub request_fingerprint: Option<String>,
    /// Ties everything done for one request or conversation together.
    pub correlation_id: Uuid,
    /// The message that caused this command, if any.
    pub causation_id: Option<Uuid>,
}

impl CommandContext {
    /// A context with a fresh correlation id and no idempotency key.
    pub fn new(principal: Principal) -> Self {
        Self {
            principal,
            idempotency_key: None,
            request_fingerprint: None,
            correlation_id: Uuid::new_v4(),
            causation_id: None,
        }
    }

    /// Sets the idempotency key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

impl From<eventfold_http::Caller> for CommandContext {
    fn from(caller: eventfold_http::Caller) -> Self {
        Self {
            principal: caller.principal,
            idempotency_key: caller.idempotency_key,
            request_fingerprint: caller.request_fingerprint,
            correlation_id: caller.correlation_id,
            causation_id: caller.causation_id,
        }
    }
}
