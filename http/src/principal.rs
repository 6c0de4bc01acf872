//! Who is calling, and what they may do.

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
