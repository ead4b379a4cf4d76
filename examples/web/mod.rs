//! The example server's browser side (issue 11), kept apart from
//! `server.rs`:
//!
//! - the demo page at `/` (`index.html`, `demo.css` and `demo.js` from
//!   `static/`, embedded at build time so `cargo run` alone serves them;
//!   `demo.js` is built from `clients/ts/demo/` by `npm run build:demo` and
//!   committed, CI checks it is up to date);
//! - in development mode only (no `EDK_WS_JWT_SECRET`): `user_id_from_token`
//!   on, `GET /dev/token?user=NAME` mints a token for anybody and
//!   `POST /dev/kick?user=NAME` kicks anybody (for trying the client's
//!   reconnect rules). Both are loudly announced at start and do not exist
//!   in production mode.

use std::collections::HashMap;
use std::time::Duration;

use edk_ws::{JwtAuthenticator, Options, WsClient};
use tracing::warn;
use warp::filters::BoxedFilter;
use warp::http::{header, StatusCode};
use warp::reply::{Reply, Response};
use warp::Filter;

const INDEX_HTML: &str = include_str!("static/index.html");
const DEMO_CSS: &str = include_str!("static/demo.css");
const DEMO_JS: &str = include_str!("static/demo.js");

/// Longest and default lifetime of a development token.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Development mode lets browsers connect without a gateway: the token
/// names the user (unless `EDK_WS_USER_ID_FROM_TOKEN` says otherwise).
pub fn dev_options(options: Options) -> Options {
    if std::env::var_os("EDK_WS_USER_ID_FROM_TOKEN").is_some() {
        options
    } else {
        options.with_user_id_from_token(true)
    }
}

/// What to tell the person who started the server about tokens.
pub fn announce(addr: &str, dev: bool) {
    if dev {
        warn!(
            "DEVELOPMENT MODE: GET http://{addr}/dev/token?user=NAME mints a token for ANY user \
             and POST http://{addr}/dev/kick?user=NAME kicks anyone; browsers connect without \
             x-user-id (user_id_from_token). Set EDK_WS_JWT_SECRET for production."
        );
        println!("demo page: http://{addr}/");
    } else {
        println!(
            "tokens are minted with the same secret, e.g.: \
             EDK_WS_JWT_SECRET=... cargo run --example client -- --mint --user alice"
        );
    }
}

/// The demo page's routes, and with `dev` the `/dev/*` routes.
pub fn routes(dev: Option<(JwtAuthenticator, WsClient)>) -> BoxedFilter<(Response,)> {
    // Paths before methods: an unknown path is then a 404, not a 405.
    let page = |path: &'static str, body: &'static str, kind: &'static str| {
        let at = if path.is_empty() {
            warp::path::end().boxed()
        } else {
            warp::path(path).and(warp::path::end()).boxed()
        };
        at.and(warp::get())
            .map(move || {
                warp::reply::with_header(
                    warp::reply::with_header(body, header::CONTENT_TYPE, kind),
                    header::CACHE_CONTROL,
                    "no-cache",
                )
                .into_response()
            })
            .boxed()
    };
    let static_files = page("", INDEX_HTML, "text/html; charset=utf-8")
        .or(page("demo.css", DEMO_CSS, "text/css; charset=utf-8"))
        .unify()
        .or(page("demo.js", DEMO_JS, "text/javascript; charset=utf-8"))
        .unify()
        .boxed();
    let Some((jwt, client)) = dev else {
        return static_files;
    };
    let token = warp::path!("dev" / "token")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .map(move |q: HashMap<String, String>| mint(&jwt, &q));
    let kick = warp::path!("dev" / "kick")
        .and(warp::post())
        .and(warp::query::<HashMap<String, String>>())
        .map(move |q: HashMap<String, String>| {
            let Some(user) = q.get("user") else {
                return text(StatusCode::BAD_REQUEST, "expected ?user=NAME");
            };
            let reason = q.get("reason").map_or("kicked", String::as_str);
            match client.kick(user, reason) {
                Ok(_) => text(StatusCode::OK, "kicked"),
                Err(e) => text(StatusCode::NOT_FOUND, &e.to_string()),
            }
        });
    static_files.or(token).unify().or(kick).unify().boxed()
}

/// `GET /dev/token?user=NAME[&ttl=SECONDS]` → `{"user", "token", "expires_in"}`.
fn mint(jwt: &JwtAuthenticator, q: &HashMap<String, String>) -> Response {
    let user = q.get("user").map(String::as_str).unwrap_or_default();
    // The server's own rule for user ids: 1–128 bytes of visible ASCII.
    if user.is_empty() || user.len() > 128 || !user.bytes().all(|b| b.is_ascii_graphic()) {
        return text(
            StatusCode::BAD_REQUEST,
            "expected ?user=NAME: 1-128 visible ASCII characters",
        );
    }
    let ttl = match q.get("ttl").map(|s| s.parse::<u64>()) {
        None => DEFAULT_TTL,
        Some(Ok(s)) if s > 0 => Duration::from_secs(s).min(MAX_TTL),
        Some(_) => return text(StatusCode::BAD_REQUEST, "ttl: seconds, at least 1"),
    };
    match jwt.issue(user, ttl) {
        Ok(token) => warp::reply::with_header(
            warp::reply::json(&serde_json::json!({
                "user": user,
                "token": token,
                "expires_in": ttl.as_secs(),
            })),
            header::CACHE_CONTROL,
            "no-store",
        )
        .into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn text(status: StatusCode, body: &str) -> Response {
    warp::reply::with_status(body.to_owned(), status).into_response()
}
