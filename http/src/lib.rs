//! What the command routes and the query routes share, so that neither side's crate
//! depends on the other's: the [`Principal`] and its [`Role`], authentication
//! ([`AuthConfig`]: HS256 bearer tokens or API keys, and the [`Caller`] extractor), and
//! the one error shape of the API ([`ApiError`]: `{"error", "message", "code",
//! "details"}`).

mod auth;
mod error;
mod principal;

pub use auth::{AuthConfig, Caller, Claims};
pub use error::ApiError;
pub use principal::{Principal, Role};
