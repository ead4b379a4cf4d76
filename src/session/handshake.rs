//! The warp filter that answers upgrade requests: plain HTTP refusals before
//! the upgrade, then the 101 and the hand-off to the connection task
//! (`session::task`).
//!
//! The upgrade is done here rather than with `warp::ws()` so that the
//! WebSocket configuration (a ~4 KiB read buffer instead of a fixed 128 KiB)
//! is ours.
//!
//! Checks, in order, and their answers:
//!
//! | check | answer |
//! |---|---|
//! | `GET` with `Connection: upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Key` | 400 |
//! | `Sec-WebSocket-Version: 13` | 426 (with `Sec-WebSocket-Version: 13`) |
//! | not shutting down | 503 |
//! | `Origin` allowed (when an allow-list is set) | 403 |
//! | user id header: 1–128 bytes of visible ASCII (may be absent with `user_id_from_token`) | 401 |
//! | exactly one token in `Sec-WebSocket-Protocol` | 401 |
//! | the [`Authenticator`](crate::Authenticator) accepts it | 401 / 403 |
//! | one connection per user (`kick_out_new_user_conn = true`) | 409 |
//!
//! Every refusal is logged at info in a `handshake` span (`ns`, `peer`) with
//! its status and reason, at most 10 lines a second across the process (a
//! flood of refusals cannot flood the log; suppressed lines are counted in
//! the next one written), and counted in the metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{info, Instrument};
use warp::reply::{Reply, Response};
use warp::Filter;

use super::task;
use super::Endpoint;
use crate::auth::{AuthError, AuthRequest};
use crate::backplane::{AdmitError, Admitted};
use crate::logs::{ns, LogBudget, PeerAddr};
use crate::metrics::Refusal;
use crate::protocol::PROTOCOL;

pub(crate) fn filter(
    inner: Arc<Endpoint>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::method()
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::ext::optional::<OnUpgrade>())
        .then(
            move |method, headers, peer: Option<SocketAddr>, on_upgrade| {
                let inner = inner.clone();
                let span = tracing::info_span!(
                    "handshake",
                    ns = ns(&inner.hub().options.name),
                    peer = %PeerAddr(peer)
                );
                async move { handshake(inner, method, headers, peer, on_upgrade).await }
                    .instrument(span)
            },
        )
}

fn refuse(inner: &Endpoint, why: Refusal, status: StatusCode, text: &'static str) -> Response {
    refuse_because(inner, why, status, text, "")
}

/// A refusal with its `detail` for the log (e.g. why a token was refused;
/// the client gets only `text`).
fn refuse_because(
    inner: &Endpoint,
    why: Refusal,
    status: StatusCode,
    text: &'static str,
    detail: &str,
) -> Response {
    static LOG: LazyLock<LogBudget> = LazyLock::new(|| LogBudget::new(10));
    inner.hub().metrics.refuse(why);
    if let Some(suppressed) = LOG.admit() {
        info!(
            status = status.as_u16(),
            reason = text,
            detail = (!detail.is_empty()).then_some(detail),
            suppressed = (suppressed > 0).then_some(suppressed),
            "handshake refused"
        );
    }
    warp::reply::with_status(text, status).into_response()
}

async fn handshake(
    inner: Arc<Endpoint>,
    method: http::Method,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    on_upgrade: Option<OnUpgrade>,
) -> Response {
    use Refusal::*;
    let started = std::time::Instant::now();
    let key = match (
        method == http::Method::GET,
        is_upgrade(&headers),
        on_upgrade.is_some(),
    ) {
        (true, true, true) => headers.get(header::SEC_WEBSOCKET_KEY),
        _ => None,
    };
    let (Some(key), Some(on_upgrade)) = (key, on_upgrade) else {
        return refuse(
            &inner,
            BadRequest,
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade request",
        );
    };
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut r = refuse(
            &inner,
            UpgradeRequired,
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: use 13",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let options = &inner.hub().options;
    if inner.hub().registry.is_closed() {
        return refuse(
            &inner,
            ShuttingDown,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
        );
    }
    if !origin_allowed(&options.allowed_origins, &headers) {
        return refuse(
            &inner,
            Forbidden,
            StatusCode::FORBIDDEN,
            "origin not allowed",
        );
    }
    // No header: the token names the user, when the option allows it (see
    // `auth.rs` for why that is safe). A header that is present but invalid
    // is refused, never ignored in favour of the token.
    let user_id = match headers.get(options.user_id_header.as_str()) {
        Some(v) => match valid_user_id(v.as_bytes()) {
            Some(user) => Some(user),
            None => {
                return refuse(
                    &inner,
                    Unauthorized,
                    StatusCode::UNAUTHORIZED,
                    "invalid user id header",
                )
            }
        },
        None if options.user_id_from_token => None,
        None => {
            return refuse(
                &inner,
                Unauthorized,
                StatusCode::UNAUTHORIZED,
                "missing user id header",
            )
        }
    };
    let Some((token, offered_protocol)) = parse_protocols(&headers) else {
        return refuse(
            &inner,
            Unauthorized,
            StatusCode::UNAUTHORIZED,
            "missing token in Sec-WebSocket-Protocol",
        );
    };
    let req = AuthRequest {
        user_id,
        token,
        headers: &headers,
        peer,
    };
    let identity = match inner.auth.authenticate(&req).await {
        Ok(id) => id,
        Err(AuthError::Unauthorized(why)) => {
            return refuse_because(
                &inner,
                Unauthorized,
                StatusCode::UNAUTHORIZED,
                "invalid token",
                &why,
            );
        }
        Err(AuthError::Forbidden(why)) => {
            return refuse_because(&inner, Forbidden, StatusCode::FORBIDDEN, "forbidden", &why);
        }
    };
    // The identity is authoritative: whatever user it names (with the
    // header, the authenticator may still map it), checked for shape here.
    let Some(user) = valid_user_id(identity.user_id.as_bytes()) else {
        return refuse(
            &inner,
            Unauthorized,
            StatusCode::UNAUTHORIZED,
            "invalid user id",
        );
    };

    // Counted as live from before admission, so shutdown cannot miss a
    // connection admitted while it was starting.
    let live = inner.tasks.token();
    let refuse_new = options.kick_out_new_user_conn;
    let conn = match inner
        .node
        .admit(Arc::from(user), identity.headers, peer, refuse_new)
        .await
    {
        Ok(Admitted::Registered(conn) | Admitted::Stale(conn)) => conn,
        Err(e) => {
            let (why, status, text) = match e {
                AdmitError::Conflict => (Conflict, StatusCode::CONFLICT, "user already connected"),
                AdmitError::ShuttingDown => (
                    ShuttingDown,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting down",
                ),
                AdmitError::Unavailable => (
                    ShuttingDown,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backplane unavailable",
                ),
            };
            return refuse(&inner, why, status, text);
        }
    };
    let metrics = &inner.hub().metrics;
    metrics.accepted.fetch_add(1, Ordering::Relaxed);
    metrics.connections_now.fetch_add(1, Ordering::Relaxed);
    metrics.hot.slot().handshake(started.elapsed());

    let accept = derive_accept_key(key.as_bytes());
    // Browsers fail a handshake whose offered subprotocol is not echoed.
    let echo = if offered_protocol { PROTOCOL } else { token };
    tokio::spawn(task::run(inner, conn, on_upgrade, live));

    let mut res = warp::reply().into_response();
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Ok(v) = HeaderValue::from_str(echo) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    res
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
}

fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
        None => false,
    }
}

/// 1–128 bytes of visible ASCII (0x21–0x7E).
pub(crate) fn valid_user_id(v: &[u8]) -> Option<&str> {
    if v.is_empty() || v.len() > 128 || !v.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return None;
    }
    std::str::from_utf8(v).ok()
}

/// The token from `Sec-WebSocket-Protocol`, in either form: `<token>` alone,
/// or `edk.ws.v1, <token>` (any order), and whether `edk.ws.v1` was offered.
/// `None` when there is no token or more than one candidate.
fn parse_protocols(headers: &HeaderMap) -> Option<(&str, bool)> {
    let mut offered_protocol = false;
    let mut token: Option<&str> = None;
    for v in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        for item in v
            .to_str()
            .ok()?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if item == PROTOCOL {
                offered_protocol = true;
            } else if token.replace(item).is_some() {
                return None;
            }
        }
    }
    Some((token?, offered_protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(v).unwrap(),
        );
        m
    }

    #[test]
    fn token_forms() {
        assert_eq!(parse_protocols(&h("abc")), Some(("abc", false)));
        assert_eq!(parse_protocols(&h("edk.ws.v1, abc")), Some(("abc", true)));
        assert_eq!(parse_protocols(&h("abc, edk.ws.v1")), Some(("abc", true)));
        assert_eq!(parse_protocols(&h("edk.ws.v1")), None);
        assert_eq!(parse_protocols(&h("a, b")), None);
        assert_eq!(parse_protocols(&HeaderMap::new()), None);
    }

    #[test]
    fn user_ids() {
        assert!(valid_user_id(b"alice").is_some());
        assert!(valid_user_id(b"").is_none());
        assert!(valid_user_id(b"a b").is_none());
        assert!(valid_user_id(&[b'a'; 129]).is_none());
        assert!(valid_user_id(&[b'a'; 128]).is_some());
    }
}
