//! Token checking at the handshake: the pluggable [`Authenticator`] trait and
//! the built-in HS256 JWT implementation, [`JwtAuthenticator`].
//!
//! ## Where the user id comes from
//!
//! Behind a gateway, the gateway authenticates the user and injects the
//! user id header (`x-user-id`); the token must then be issued to that user
//! (`sub` = header, else 403). Browsers cannot set that header, so with the
//! option `user_id_from_token` (off by default) a request *without* the
//! header is identified by its token instead: the user is the `sub` of the
//! verified token. This weakens nothing:
//!
//! - every connection still needs a token that verifies (signature, `exp`):
//!   a client can only ever be the subject of a token signed with the
//!   secret, exactly as before, since the token had to name the header's
//!   user anyway;
//! - when the header *is* present the gateway stays authoritative: a token
//!   for anybody else is refused (403), so a client cannot use a token to
//!   overrule the gateway;
//! - a present but malformed header is refused (401), never ignored in
//!   favour of the token.
//!
//! Leave it off when every client comes through a gateway that always sets
//! the header (then a request without it is a misrouted one, and 401 says
//! so). The [`Identity`] an authenticator returns is authoritative: its
//! `user_id` (checked for shape: 1–128 visible ASCII bytes, else 401) is the
//! user the connection is registered under.

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
    /// The user id from the gateway header (already checked for shape), or
    /// `None` when the request has no such header and the option
    /// `user_id_from_token` allows that: the authenticator then decides who
    /// the user is from the token alone, or refuses. (Without that option a
    /// request without the header is refused with 401 before any
    /// authenticator runs, so an authenticator that cannot identify users
    /// from tokens may simply refuse `None`.)
    pub user_id: Option<&'a str>,
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
///         match req.user_id {
///             Some(user) if req.token == self.0 => Ok(Identity::new(user)),
///             // A static token names no user: without the header, refuse.
///             None => Err(AuthError::Unauthorized("no user id".into())),
///             Some(_) => Err(AuthError::Unauthorized("unknown token".into())),
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Accepts the request as an [`Identity`], or refuses it. The returned
    /// `user_id` is the one the connection is registered under (see
    /// [`AuthRequest::user_id`] for when it may differ from the header: it
    /// may not, unless the header is absent).
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
    /// Subject: must equal the `x-user-id` header when there is one; is the
    /// user id when there is none (option `user_id_from_token`).
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

/// HS256 JWT checking: the token's `exp` must be in the future and its `nbf`,
/// if any, in the past (both with the same leeway); with
/// [`with_max_age`](JwtAuthenticator::with_max_age), its `iat` must be
/// present and recent enough. Its `sub` must equal the user id header;
/// without the header (allowed by the option `user_id_from_token`) the user
/// is the token's `sub`.
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
        let claims = self.verify_token(token)?;
        if claims.sub != user_id {
            return Err(AuthError::Forbidden(
                "token subject does not match the user id".into(),
            ));
        }
        Ok(claims)
    }

    /// Checks a token's signature and `exp`, whoever it was issued to (its
    /// `sub` is then the user id).
    ///
    /// # Errors
    ///
    /// `Unauthorized` for a bad signature, a malformed token, a missing or
    /// passed `exp`, an `nbf` in the future, or (with a maximum age) a
    /// missing or too old `iat`.
    pub fn verify_token(&self, token: &str) -> Result<Claims, AuthError> {
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
        Ok(data.claims)
    }
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        let claims = match req.user_id {
            Some(user) => self.verify(user, req.token)?,
            None => self.verify_token(req.token)?,
        };
        Ok(Identity::new(claims.sub))
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
        assert!(matches!(
            a.verify_token(&expired),
            Err(AuthError::Unauthorized(_))
        ));
        assert_eq!(a.verify_token(&t).unwrap().sub, "alice");
    }

    #[tokio::test]
    async fn authenticate_takes_the_subject_only_without_a_header() {
        let a = JwtAuthenticator::new(b"k1");
        let t = a.issue("alice", Duration::from_secs(60)).unwrap();
        let headers = HeaderMap::new();
        let req = |user_id| AuthRequest {
            user_id,
            token: &t,
            headers: &headers,
            peer: None,
        };
        let id = a.authenticate(&req(None)).await.unwrap();
        assert_eq!(id.user_id, "alice");
        let id = a.authenticate(&req(Some("alice"))).await.unwrap();
        assert_eq!(id.user_id, "alice");
        assert!(matches!(
            a.authenticate(&req(Some("bob"))).await,
            Err(AuthError::Forbidden(_))
        ));
        let other = JwtAuthenticator::new(b"k2");
        assert!(matches!(
            other.authenticate(&req(None)).await,
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
