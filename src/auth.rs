//! Token checking at the handshake: the pluggable [`Authenticator`] trait and
//! the built-in HS256 JWT implementation, [`JwtAuthenticator`].

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What an [`Authenticator`] is asked to check.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuthRequest<'a> {
    /// The user id from the gateway header (already checked for shape).
    pub user_id: &'a str,
    /// The token from `Sec-WebSocket-Protocol`.
    pub token: &'a str,
    /// Every header of the upgrade request.
    pub headers: &'a HeaderMap,
    /// The peer's address, when known.
    pub peer: Option<SocketAddr>,
}

/// Who a connection belongs to, as accepted by an [`Authenticator`].
/// Built with [`Identity::new`] (and [`Identity::with_headers`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Identity {
    /// The user id the connection is registered under.
    pub user_id: String,
    /// Request headers the authenticator chose to keep for the handlers
    /// (e.g. a tenant or a trace id). Kept for the connection's life: keep
    /// only what you need.
    pub headers: HeaderMap,
}

impl Identity {
    /// The identity of `user_id`, keeping no headers.
    pub fn new(user_id: impl Into<String>) -> Self {
        Identity {
            user_id: user_id.into(),
            headers: HeaderMap::new(),
        }
    }

    /// Keeps `headers` for the connection's handlers ([`Conn::headers`](crate::Conn::headers)).
    #[must_use]
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }
}

/// Why a handshake was refused by an [`Authenticator`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Missing, malformed, badly signed or expired credentials → HTTP 401.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Valid credentials that do not allow this connection (e.g. a token
    /// issued to another user) → HTTP 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
}

/// Checks the token of an upgrade request.
///
/// Implement it to plug in any scheme (opaque session tokens, an auth
/// service, …). It runs before the upgrade, so a refusal is a plain HTTP
/// answer (401 or 403).
///
/// ```
/// use edk_ws::{async_trait, AuthError, AuthRequest, Authenticator, Identity};
///
/// struct StaticToken(String);
///
/// #[async_trait]
/// impl Authenticator for StaticToken {
///     async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
///         if req.token == self.0 {
///             Ok(Identity::new(req.user_id))
///         } else {
///             Err(AuthError::Unauthorized("unknown token".into()))
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Accepts the request as an [`Identity`], or refuses it.
    ///
    /// # Errors
    ///
    /// [`AuthError::Unauthorized`] (401) or [`AuthError::Forbidden`] (403).
    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError>;
}

/// The claims [`JwtAuthenticator`] reads and [`JwtAuthenticator::issue`] writes.
/// Built with [`Claims::new`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// Subject: must equal the `x-user-id` header.
    pub sub: String,
    /// Expiry, Unix seconds. Required and enforced.
    pub exp: u64,
}

impl Claims {
    /// Claims for `sub` expiring at `exp` (Unix seconds).
    pub fn new(sub: impl Into<String>, exp: u64) -> Self {
        Claims {
            sub: sub.into(),
            exp,
        }
    }
}

/// HS256 JWT checking: the token's `sub` must equal the user id header and
/// its `exp` must be in the future.
///
/// Bad signature, malformed token, missing/expired `exp` → 401; a valid
/// token for another user → 403.
///
/// ```
/// use std::time::Duration;
/// let auth = edk_ws::JwtAuthenticator::new(b"secret");
/// let token = auth.issue("alice", Duration::from_secs(3600)).unwrap();
/// assert_eq!(token.split('.').count(), 3);
/// ```
#[derive(Clone)]
pub struct JwtAuthenticator {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator").finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    /// A checker for tokens signed with `secret` (HS256), no clock leeway.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtAuthenticator {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
        }
    }

    /// Allows `seconds` of clock skew on `exp`.
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.validation.leeway = seconds;
        self
    }

    /// Signs a token for `user_id` valid for `ttl` (for tests, tools and the
    /// example; production tokens usually come from your identity service).
    ///
    /// # Errors
    ///
    /// What `jsonwebtoken` reports when it cannot encode (not expected for
    /// HS256 with these claims).
    pub fn issue(
        &self,
        user_id: &str,
        ttl: std::time::Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let exp = unix_now_secs().saturating_add(ttl.as_secs());
        self.issue_claims(&Claims {
            sub: user_id.to_owned(),
            exp,
        })
    }

    /// Signs arbitrary claims (e.g. an already expired `exp`, for tests).
    ///
    /// # Errors
    ///
    /// As [`JwtAuthenticator::issue`].
    pub fn issue_claims(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// Checks a token synchronously (what [`Authenticator::authenticate`] does).
    ///
    /// # Errors
    ///
    /// `Unauthorized` for a bad signature, a malformed token or a missing
    /// or passed `exp`; `Forbidden` when `sub` is another user.
    pub fn verify(&self, user_id: &str, token: &str) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::Unauthorized(format!("invalid token: {e}")))?;
        if data.claims.sub != user_id {
            return Err(AuthError::Forbidden(
                "token subject does not match the user id".into(),
            ));
        }
        Ok(data.claims)
    }
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        self.verify(req.user_id, req.token)?;
        Ok(Identity::new(req.user_id))
    }
}

fn unix_now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn verify_outcomes() {
        let a = JwtAuthenticator::new(b"k1");
        let t = a.issue("alice", Duration::from_secs(60)).unwrap();
        assert_eq!(a.verify("alice", &t).unwrap().sub, "alice");
        assert!(matches!(a.verify("bob", &t), Err(AuthError::Forbidden(_))));
        let other = JwtAuthenticator::new(b"k2");
        assert!(matches!(
            other.verify("alice", &t),
            Err(AuthError::Unauthorized(_))
        ));
        assert!(matches!(
            a.verify("alice", "x.y.z"),
            Err(AuthError::Unauthorized(_))
        ));
        let expired = a
            .issue_claims(&Claims {
                sub: "alice".into(),
                exp: unix_now_secs() - 10,
            })
            .unwrap();
        assert!(matches!(
            a.verify("alice", &expired),
            Err(AuthError::Unauthorized(_))
        ));
    }
}
