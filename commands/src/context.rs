use uuid::Uuid;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An end user: acts on their own data only.
    User,
    /// A trusted service: acts for anyone.
    Service,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id (for users) or service name.
    pub subject: String,
    /// What it may do.
    pub role: Role,
}

impl Principal {
    /// A trusted service.
    pub fn service(name: impl Into<String>) -> Self {
        Self {
            subject: name.into(),
            role: Role::Service,
        }
    }

    /// An end user.
    pub fn user(id: impl Into<String>) -> Self {
        Self {
            subject: id.into(),
            role: Role::User,
        }
    }

    /// Whether it may act on `user_id`'s data.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        self.role == Role::Service || self.subject == user_id
    }
}

/// Who is asking, and how to recognise a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// The caller.
    pub principal: Principal,
    /// The client's idempotency key: the same key for the same command returns the
    /// first result.
    pub idempotency_key: Option<String>,
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
