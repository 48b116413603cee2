//! Who a request comes from. Each client token is its own client: async jobs and idempotency
//! keys are scoped to it, so one client can neither read nor replay another's jobs.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;

/// The client of a request, set by the authentication middleware: the SHA-256 of its token
/// (never the token), or `anonymous` when the gateway takes requests without one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller(Arc<str>);

impl Caller {
    pub fn anonymous() -> Caller {
        Caller(Arc::from("anonymous"))
    }

    pub fn from_token_digest(digest: &[u8]) -> Caller {
        Caller(Arc::from(format!("token:{}", hex::encode(digest))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A handler behind the authentication middleware always finds its caller; one that is not (a
/// routing mistake) refuses the request rather than treating it as anybody's.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or(ApiError::Unauthorized)
    }
}
