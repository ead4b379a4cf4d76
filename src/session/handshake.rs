//! The warp filter that answers upgrade requests: plain HTTP refusals before
//! the upgrade, then the 101 and the hand-off to the connection task
//! (`session::task`).
//!
//! The upgrade is done here rather than with `warp::ws()` so that the
//! WebSocket configuration (a ~4 KiB read buffer instead of a fixed 128 KiB)
//! is ours.
//!
//! Checks, in order, and their answers: first the pure checks of
//! `checks.rs` (400, 426, 503, 403, 401), then:
//!
//! | check | answer |
//! |---|---|
//! | the [`Authenticator`](crate::Authenticator) accepts the token | 401 / 403 |
//! | one connection per user (`kick_out_new_user_conn = true`) | 409 |
//! | the backplane can be reached (clustered) | 503 |
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

use super::checks::{self, Refused};
use super::task;
use super::Endpoint;
use crate::auth::{AuthError, AuthRequest, Identity};
use crate::backplane::{AdmitError, Admitted};
use crate::logs::{ns, LogBudget, PeerAddr};
use crate::metrics::Refusal;
use crate::protocol::PROTOCOL;

pub(crate) fn filter(
    inner: Arc<Endpoint>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::method()
        .and(warp::header::headers_cloned())
        .and(super::serve::remote_addr())
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

fn refuse(inner: &Endpoint, r: Refused) -> Response {
    refuse_because(inner, r, "")
}

/// A refusal with its `detail` for the log (e.g. why a token was refused;
/// the client gets only the refusal's text).
fn refuse_because(inner: &Endpoint, r: Refused, detail: &str) -> Response {
    static LOG: LazyLock<LogBudget> = LazyLock::new(|| LogBudget::new(10));
    inner.hub().metrics.refuse(r.why);
    if let Some(suppressed) = LOG.admit() {
        info!(
            status = r.status.as_u16(),
            reason = r.text,
            detail = (!detail.is_empty()).then_some(detail),
            suppressed = (suppressed > 0).then_some(suppressed),
            "handshake refused"
        );
    }
    let mut res = warp::reply::with_status(r.text, r.status).into_response();
    if r.status == StatusCode::UPGRADE_REQUIRED {
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    res
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
    let options = &inner.hub().options;
    let shutting_down = inner.hub().registry.is_closed();
    let upgradable = on_upgrade.is_some();
    let key = match checks::check_upgrade(&method, &headers, upgradable, shutting_down, options) {
        Ok(key) => key,
        Err(r) => return refuse(&inner, r),
    };
    let Some(on_upgrade) = on_upgrade else {
        // `check_upgrade` refuses a request hyper cannot upgrade.
        return refuse(&inner, checks::not_an_upgrade());
    };
    if inner.anonymous_echo {
        let user = format!("anonymous-{}", inner.hub().next_conn_id());
        let (identity, echo) = (Identity::new(user), None);
        return admit(inner, key, identity, echo, peer, on_upgrade, started).await;
    }
    let (user_id, token, offered_protocol) = match checks::check_identity(&headers, options) {
        Ok(id) => id,
        Err(r) => return refuse(&inner, r),
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
            let r = Refused::new(Unauthorized, StatusCode::UNAUTHORIZED, "invalid token");
            return refuse_because(&inner, r, &why);
        }
        Err(AuthError::Forbidden(why)) => {
            let r = Refused::new(Forbidden, StatusCode::FORBIDDEN, "forbidden");
            return refuse_because(&inner, r, &why);
        }
    };
    // Browsers fail a handshake whose offered subprotocol is not echoed.
    let echo = Some(if offered_protocol { PROTOCOL } else { token });
    admit(inner, key, identity, echo, peer, on_upgrade, started).await
}

/// Admits an authenticated connection and answers 101 (or 409/503).
async fn admit(
    inner: Arc<Endpoint>,
    key: &HeaderValue,
    identity: Identity,
    echo: Option<&str>,
    peer: Option<SocketAddr>,
    on_upgrade: OnUpgrade,
    started: std::time::Instant,
) -> Response {
    use Refusal::*;
    // The identity is authoritative: whatever user it names (with the
    // header, the authenticator may still map it), checked for shape here.
    let Some(user) = checks::valid_user_id(identity.user_id.as_bytes()) else {
        let r = Refused::new(Unauthorized, StatusCode::UNAUTHORIZED, "invalid user id");
        return refuse(&inner, r);
    };

    // Counted as live from before admission, so shutdown cannot miss a
    // connection admitted while it was starting.
    let live = inner.tasks.token();
    let refuse_new = inner.hub().options.kick_out_new_user_conn;
    let conn = match inner
        .node
        .admit(Arc::from(user), identity.headers, peer, refuse_new)
        .await
    {
        Ok(Admitted::Registered(conn) | Admitted::Stale(conn)) => conn,
        Err(e) => {
            let r = match e {
                AdmitError::Conflict => {
                    Refused::new(Conflict, StatusCode::CONFLICT, "user already connected")
                }
                AdmitError::ShuttingDown => Refused::new(
                    ShuttingDown,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting down",
                ),
                AdmitError::Unavailable => Refused::new(
                    ShuttingDown,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backplane unavailable",
                ),
            };
            return refuse(&inner, r);
        }
    };
    let metrics = &inner.hub().metrics;
    metrics.accepted.fetch_add(1, Ordering::Relaxed);
    metrics.connections_now.fetch_add(1, Ordering::Relaxed);
    metrics.hot.slot().handshake(started.elapsed());

    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(task::run(inner, conn, on_upgrade, live));

    let mut res = warp::reply().into_response();
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(Ok(v)) = echo.map(HeaderValue::from_str) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    res
}
