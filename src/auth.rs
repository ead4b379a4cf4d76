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
/// Built with [`Claims::new`] and the `with_*` methods.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// Subject: must equal the `x-user-id` header.
    pub sub: String,
    /// Expiry, Unix seconds. Required and enforced.
    pub exp: u64,
    /// Not before, Unix seconds. Optional; enforced when present, with the
    /// same leeway as `exp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds. Optional, unless the authenticator has a
    /// maximum token age ([`JwtAuthenticator::with_max_age`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

impl Claims {
    /// Claims for `sub` expiring at `exp` (Unix seconds).
    pub fn new(sub: impl Into<String>, exp: u64) -> Self {
        Claims {
            sub: sub.into(),
            exp,
            nbf: None,
            iat: None,
        }
    }

    /// Sets `nbf`: the token is not valid before `nbf` (Unix seconds).
    #[must_use]
    pub fn with_nbf(mut self, nbf: u64) -> Self {
        self.nbf = Some(nbf);
        self
    }

    /// Sets `iat`: when the token was issued (Unix seconds).
    #[must_use]
    pub fn with_iat(mut self, iat: u64) -> Self {
        self.iat = Some(iat);
        self
    }
}

/// HS256 JWT checking: the token's `sub` must equal the user id header, its
/// `exp` must be in the future and its `nbf`, if any, in the past (both
/// with the same leeway); with [`with_max_age`](JwtAuthenticator::with_max_age),
/// its `iat` must be present and recent enough.
///
/// Bad signature, malformed token, missing/expired `exp`, `nbf` in the
/// future, missing or too old `iat` (with a maximum age) → 401; a valid
/// token for another user → 403.
///
/// ```
/// use std::time::Duration;
/// let auth = edk_ws::JwtAuthenticator::new(b"secret").with_max_age(Duration::from_secs(86_400));
/// let token = auth.issue("alice", Duration::from_secs(3600)).unwrap();
/// assert_eq!(token.split('.').count(), 3);
/// assert!(auth.verify("alice", &token).is_ok());
/// ```
#[derive(Clone)]
pub struct JwtAuthenticator {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    /// The oldest a token may be (from its `iat`), if limited.
    max_age: Option<u64>,
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
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtAuthenticator {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            max_age: None,
        }
    }

    /// Allows `seconds` of clock skew on `exp`, `nbf` and `iat`.
    #[must_use]
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.validation.leeway = seconds;
        self
    }

    /// Refuses tokens issued more than `max_age` ago (plus the leeway),
    /// and tokens without `iat` or with an `iat` in the future (beyond the
    /// leeway): a stolen long-lived token stops working after `max_age`.
    #[must_use]
    pub fn with_max_age(mut self, max_age: std::time::Duration) -> Self {
        self.max_age = Some(max_age.as_secs());
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
        let now = unix_now_secs();
        let exp = now.saturating_add(ttl.as_secs());
        self.issue_claims(&Claims::new(user_id, exp).with_iat(now))
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
    /// `Unauthorized` for a bad signature, a malformed token, a missing
    /// or passed `exp`, an `nbf` still ahead, or (with a maximum age) a
    /// missing, future or too old `iat`; `Forbidden` when `sub` is another
    /// user.
    pub fn verify(&self, user_id: &str, token: &str) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::Unauthorized(format!("invalid token: {e}")))?;
        if let Some(max_age) = self.max_age {
            let leeway = self.validation.leeway;
            let now = unix_now_secs();
            match data.claims.iat {
                None => return Err(AuthError::Unauthorized("token has no iat".into())),
                Some(iat) if iat > now.saturating_add(leeway) => {
                    return Err(AuthError::Unauthorized("token issued in the future".into()))
                }
                Some(iat) if now > iat.saturating_add(max_age).saturating_add(leeway) => {
                    return Err(AuthError::Unauthorized("token too old".into()))
                }
                Some(_) => {}
            }
        }
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
            .issue_claims(&Claims::new("alice", unix_now_secs() - 10))
            .unwrap();
        assert!(matches!(
            a.verify("alice", &expired),
            Err(AuthError::Unauthorized(_))
        ));
    }

    #[test]
    fn nbf_is_enforced_with_the_leeway() {
        let now = unix_now_secs();
        let a = JwtAuthenticator::new(b"k").with_leeway(30);
        let claims = |nbf| Claims::new("alice", now + 600).with_nbf(nbf);
        let early = a.issue_claims(&claims(now + 120)).unwrap();
        assert!(matches!(
            a.verify("alice", &early),
            Err(AuthError::Unauthorized(_))
        ));
        let skewed = a.issue_claims(&claims(now + 10)).unwrap();
        assert!(a.verify("alice", &skewed).is_ok(), "within the leeway");
        let ok = a.issue_claims(&claims(now - 10)).unwrap();
        assert!(a.verify("alice", &ok).is_ok());
    }

    #[test]
    fn max_age_needs_a_recent_iat() {
        let now = unix_now_secs();
        let a = JwtAuthenticator::new(b"k").with_max_age(Duration::from_secs(60));
        let with_iat = |iat| Claims::new("alice", now + 600).with_iat(iat);
        let fresh = a.issue_claims(&with_iat(now - 10)).unwrap();
        assert!(a.verify("alice", &fresh).is_ok());
        for bad in [
            Claims::new("alice", now + 600),
            with_iat(now - 120),
            with_iat(now + 120),
        ] {
            let t = a.issue_claims(&bad).unwrap();
            assert!(
                matches!(a.verify("alice", &t), Err(AuthError::Unauthorized(_))),
                "{bad:?}"
            );
        }
        // Without a maximum age, iat is not needed.
        let b = JwtAuthenticator::new(b"k");
        let t = b.issue_claims(&Claims::new("alice", now + 600)).unwrap();
        assert!(b.verify("alice", &t).is_ok());
    }
}
