//! Handshake contract: user id header, token in `Sec-WebSocket-Protocol`,
//! JWT and custom authenticators, origin allow-list, non-upgrade requests,
//! shutdown, and the refusal counters.

// The harness's `Event` trips clippy::large_enum_variant (tests/common is
// not ours to edit).
#[allow(clippy::large_enum_variant)]
mod common;
use common::*;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edk_ws::{
    AuthError, AuthRequest, Authenticator, Claims, Conn, Identity, JwtAuthenticator, Options,
    SendError, WsClient,
};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, Request, StatusCode};
use warp::Filter;

/// An upgrade request to `srv` with the given raw `x-user-id` and
/// `Sec-WebSocket-Protocol` values (`None`: header absent).
fn request_with(srv_url: &str, user: Option<&[u8]>, protocol: Option<&str>) -> Request<()> {
    let mut req = srv_url.into_client_request().unwrap();
    let h = req.headers_mut();
    if let Some(u) = user {
        h.insert("x-user-id", HeaderValue::from_bytes(u).unwrap());
    }
    if let Some(p) = protocol {
        h.insert("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
    }
    req
}

/// `edk.ws.v1, <token>`.
fn offered(token: &str) -> String {
    format!("edk.ws.v1, {token}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Reads a close handshake to its end so the server side finishes promptly.
async fn read_to_end(ws: &mut Ws) {
    loop {
        if let Event::Ended(_) = next_event(ws).await {
            return;
        }
    }
}

/// A raw HTTP/1.1 response: status, lower-cased headers, body.
struct RawResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Sends `request` (raw bytes) on a fresh TCP connection and reads one
/// response (headers, then `content-length` bytes of body).
async fn raw_http(addr: std::net::SocketAddr, request: &str) -> RawResponse {
    tokio::time::timeout(WAIT, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the response headers");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(
            parts.next(),
            Some("HTTP/1.1"),
            "status line {status_line:?}"
        );
        let status: u16 = parts.next().unwrap().parse().unwrap();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .map(|v| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < len {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the response body");
            body.extend_from_slice(&chunk[..n]);
        }
        RawResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&body[..len]).into_owned(),
        }
    })
    .await
    .expect("timed out waiting for a raw HTTP response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_header_is_required_and_checked() {
    let srv = TestServer::start(Options::default()).await;
    let url = srv.url();
    // Each bad user id carries a token valid for exactly that id, so only
    // the user id check can refuse it.
    let tok = |u: &[u8]| offered(&srv.token(&String::from_utf8_lossy(u)));

    let missing = request_with(&url, None, Some(&offered(&srv.token("alice"))));
    assert_eq!(
        srv.connect_req(missing).await.err(),
        Some(StatusCode::UNAUTHORIZED),
        "missing user id header"
    );

    let too_long = vec![b'a'; 129];
    let bad: [(&str, &[u8]); 5] = [
        ("empty", b""),
        ("129 bytes", &too_long),
        ("space", b"a b"),
        ("tab", b"a\tb"),
        ("non-ASCII", "aé".as_bytes()),
    ];
    for (what, user) in bad {
        let req = request_with(&url, Some(user), Some(&tok(user)));
        assert_eq!(
            srv.connect_req(req).await.err(),
            Some(StatusCode::UNAUTHORIZED),
            "user id: {what}"
        );
    }
    assert_eq!(srv.client.metrics().refused.unauthorized, 6);
    assert_eq!(srv.client.metrics().accepted, 0);
    assert_eq!(srv.client.user_count(), 0);

    // Boundaries that must be accepted: 128 bytes, 1 byte, 0x21 and 0x7E.
    let longest = "z".repeat(128);
    for user in [longest.as_str(), "x", "!~"] {
        let req = request_with(
            &url,
            Some(user.as_bytes()),
            Some(&offered(&srv.token(user))),
        );
        let _ws = srv
            .connect_req(req)
            .await
            .unwrap_or_else(|s| panic!("user id {user:?} refused with {s}"));
        assert!(srv.client.is_connected(user), "{user:?} not registered");
    }
    assert_eq!(srv.client.metrics().accepted, 3);
    assert_eq!(srv.client.metrics().refused.unauthorized, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_alone_is_echoed_as_the_subprotocol() {
    let srv = TestServer::start(Options::default()).await;
    let token = srv.token("alice");
    let req = request_with(&srv.url(), Some(b"alice"), Some(&token));
    let (_ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")
        .expect("handshake with a bare token failed");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some(token.as_str())
    );
    assert!(srv.client.is_connected("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offered_protocol_is_echoed_instead_of_the_token() {
    let srv = TestServer::start(Options::default()).await;
    let (_ws, resp) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(srv.request("alice")))
            .await
            .expect("handshake timed out")
            .expect("handshake with `edk.ws.v1, <token>` failed");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some(edk_ws::PROTOCOL)
    );
    assert_eq!(edk_ws::PROTOCOL, "edk.ws.v1");
    assert!(srv.client.is_connected("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_401() {
    let srv = TestServer::start(Options::default()).await;
    let url = srv.url();
    let t1 = srv.token("alice");
    let two_tokens = format!("edk.ws.v1, {t1}, {t1}x");
    let cases: [(&str, Option<&str>); 3] = [
        ("no Sec-WebSocket-Protocol", None),
        ("only edk.ws.v1", Some("edk.ws.v1")),
        ("two token candidates", Some(&two_tokens)),
    ];
    for (what, protocol) in cases {
        let req = request_with(&url, Some(b"alice"), protocol);
        assert_eq!(
            srv.connect_req(req).await.err(),
            Some(StatusCode::UNAUTHORIZED),
            "{what}"
        );
    }
    assert_eq!(srv.client.metrics().refused.unauthorized, 3);
    assert_eq!(srv.client.metrics().accepted, 0);
    assert!(!srv.client.is_connected("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_refusals() {
    let srv = TestServer::start(Options::default()).await;
    let url = srv.url();
    let other_secret = JwtAuthenticator::new(b"another-secret")
        .issue("alice", Duration::from_secs(3600))
        .unwrap();
    let expired = srv
        .jwt
        .issue_claims(&Claims::new("alice", unix_now() - 100))
        .unwrap();
    let unauthorized = [
        ("bad signature", other_secret),
        ("malformed", "not-a.jwt".to_owned()),
        ("expired", expired),
    ];
    for (what, token) in &unauthorized {
        let req = request_with(&url, Some(b"alice"), Some(&offered(token)));
        assert_eq!(
            srv.connect_req(req).await.err(),
            Some(StatusCode::UNAUTHORIZED),
            "{what} token"
        );
    }

    // A valid token, but issued to bob.
    let req = request_with(&url, Some(b"alice"), Some(&offered(&srv.token("bob"))));
    assert_eq!(
        srv.connect_req(req).await.err(),
        Some(StatusCode::FORBIDDEN),
        "token of another user"
    );

    let m = srv.client.metrics();
    assert_eq!(m.refused.unauthorized, 3);
    assert_eq!(m.refused.forbidden, 1);
    assert_eq!(m.accepted, 0);
    assert_eq!(srv.client.user_count(), 0);

    // The same server accepts a good token.
    let _ws = srv.connect("alice").await;
    assert_eq!(srv.client.metrics().accepted, 1);
}

/// Accepts the token `open-sesame` and keeps only the `x-tenant` header;
/// `banned` is forbidden; anything else is unauthorized.
struct TenantAuth {
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

#[edk_ws::async_trait]
impl Authenticator for TenantAuth {
    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        self.seen
            .lock()
            .push((req.user_id.unwrap_or("").to_owned(), req.token.to_owned()));
        // This scheme names no user: without the header, refuse.
        let Some(user_id) = req.user_id else {
            return Err(AuthError::Unauthorized("no user id".into()));
        };
        match req.token {
            "open-sesame" => {
                let mut headers = HeaderMap::new();
                if let Some(t) = req.headers.get("x-tenant") {
                    headers.insert("x-tenant", t.clone());
                }
                Ok(Identity::new(user_id).with_headers(headers))
            }
            "banned" => Err(AuthError::Forbidden("banned".into())),
            _ => Err(AuthError::Unauthorized("unknown token".into())),
        }
    }
}

/// A server like the harness's, but with `auth` instead of JWT.
async fn start_custom(
    auth: impl Authenticator,
    setup: impl FnOnce(&WsClient),
) -> (String, WsClient) {
    let client = WsClient::new(Options::default(), auth);
    setup(&client);
    let routes = warp::path("ws")
        .and(warp::path::end())
        .and(client.handler())
        .or(warp::path("healthz").map(|| "ok"));
    let listener = edk_ws::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    (format!("ws://{addr}/ws"), client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_authenticator_and_its_kept_headers() {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let (url, client) = start_custom(TenantAuth { seen: seen.clone() }, |c| {
        c.subscribe_message_handler(|conn: Conn, m| async move {
            let h = conn.headers();
            let tenant = h
                .get("x-tenant")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let payload = format!("tenant={tenant};kept={}", h.len());
            conn.send(msg(&m.id, "headers", payload.as_bytes()))
                .unwrap();
        });
    })
    .await;
    let connect = |req: Request<()>| async move {
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("handshake timed out")
        {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status()),
            Err(e) => panic!("handshake failed without a status: {e}"),
        }
    };

    // A valid JWT means nothing to this authenticator.
    let jwt = JwtAuthenticator::new(SECRET)
        .issue("alice", Duration::from_secs(3600))
        .unwrap();
    let req = request_with(&url, Some(b"alice"), Some(&offered(&jwt)));
    assert_eq!(connect(req).await.err(), Some(StatusCode::UNAUTHORIZED));
    let req = request_with(&url, Some(b"alice"), Some(&offered("banned")));
    assert_eq!(connect(req).await.err(), Some(StatusCode::FORBIDDEN));

    let mut req = request_with(&url, Some(b"alice"), Some(&offered("open-sesame")));
    req.headers_mut()
        .insert("x-tenant", HeaderValue::from_static("acme"));
    req.headers_mut()
        .insert("x-not-kept", HeaderValue::from_static("secret"));
    let mut ws = connect(req).await.expect("custom token refused");
    assert!(client.is_connected("alice"));

    send(&mut ws, &msg("q1", "headers?", b"")).await;
    let got = recv(&mut ws).await;
    assert_eq!(got.id, "q1");
    assert_eq!(
        std::str::from_utf8(&got.payload).unwrap(),
        "tenant=acme;kept=1"
    );

    assert_eq!(
        *seen.lock(),
        vec![
            ("alice".to_owned(), jwt),
            ("alice".to_owned(), "banned".to_owned()),
            ("alice".to_owned(), "open-sesame".to_owned()),
        ]
    );
    let m = client.metrics();
    assert_eq!(m.refused.unauthorized, 1);
    assert_eq!(m.refused.forbidden, 1);
    assert_eq!(m.accepted, 1);
    ws.close(None).await.unwrap();
    read_to_end(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_allow_list() {
    // `Options` is #[non_exhaustive]: set the field on a default value.
    let options = Options::default().with_allowed_origins(vec!["https://good.example".into()]);
    let srv = TestServer::start(options).await;

    let with_origin = |origin: Option<&'static str>| {
        let mut req = srv.request("alice");
        if let Some(o) = origin {
            req.headers_mut()
                .insert("origin", HeaderValue::from_static(o));
        }
        req
    };
    assert_eq!(
        srv.connect_req(with_origin(None)).await.err(),
        Some(StatusCode::FORBIDDEN),
        "missing Origin"
    );
    assert_eq!(
        srv.connect_req(with_origin(Some("https://evil.example")))
            .await
            .err(),
        Some(StatusCode::FORBIDDEN),
        "other Origin"
    );
    assert_eq!(srv.client.metrics().refused.forbidden, 2);
    assert!(!srv.client.is_connected("alice"));

    let _ws = srv
        .connect_req(with_origin(Some("https://good.example")))
        .await
        .expect("allowed Origin refused");
    assert!(srv.client.is_connected("alice"));
    assert_eq!(srv.client.metrics().refused.forbidden, 2);
    assert_eq!(srv.client.metrics().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_upgrade_requests_and_other_routes() {
    let srv = TestServer::start(Options::default()).await;
    let host = srv.addr;
    let token = srv.token("alice");
    let ws_headers = |method: &str, version: &str| {
        format!(
            "{method} /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: {version}\r\nx-user-id: alice\r\n\
             Sec-WebSocket-Protocol: edk.ws.v1, {token}\r\nContent-Length: 0\r\n\r\n"
        )
    };

    let r = raw_http(
        srv.addr,
        &format!("GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 400, "plain GET /ws");

    let r = raw_http(srv.addr, &ws_headers("POST", "13")).await;
    assert_eq!(r.status, 400, "POST with upgrade headers");

    let no_key =
        ws_headers("GET", "13").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    let r = raw_http(srv.addr, &no_key).await;
    assert_eq!(r.status, 400, "upgrade without Sec-WebSocket-Key");

    let r = raw_http(srv.addr, &ws_headers("GET", "8")).await;
    assert_eq!(r.status, 426, "Sec-WebSocket-Version: 8");
    assert_eq!(
        r.headers.get("sec-websocket-version").map(String::as_str),
        Some("13")
    );

    let r = raw_http(
        srv.addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "GET /healthz");
    assert_eq!(r.body, "ok");

    let m = srv.client.metrics();
    assert_eq!(m.refused.bad_request, 3);
    assert_eq!(m.refused.upgrade_required, 1);
    assert_eq!(m.accepted, 0);
    assert_eq!(srv.client.user_count(), 0);

    // The same raw request with version 13 is a real upgrade.
    let r = raw_http(srv.addr, &ws_headers("GET", "13")).await;
    assert_eq!(r.status, 101);
    assert_eq!(
        r.headers.get("sec-websocket-accept").map(String::as_str),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_during_and_after_shutdown_get_503() {
    // A long close timeout: alice's connection stays open (and the shutdown
    // in progress) until the test answers the close frame.
    let options = Options::default().with_close_timeout(Duration::from_secs(60));
    let srv = TestServer::start(options).await;
    let mut alice = srv.connect("alice").await;

    let c = srv.client.clone();
    let shutdown = tokio::spawn(async move { c.shutdown(Duration::from_secs(60)).await });
    srv.wait_until("the shutdown to start", |c| {
        c.send("nobody", msg("x", "x", b"")) == Err(SendError::ShuttingDown)
    })
    .await;

    // During: alice has not answered the close frame yet.
    assert_eq!(
        srv.connect_req(srv.request("bob")).await.err(),
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "upgrade during shutdown"
    );
    assert!(
        !shutdown.is_finished(),
        "shutdown ended before alice answered"
    );

    let (code, _) = expect_close(&mut alice).await;
    assert_eq!(code, 1001);
    read_to_end(&mut alice).await;
    let report = tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown did not finish")
        .unwrap();
    assert_eq!(report.closed, 1);
    assert_eq!(report.unfinished, 0);

    // After.
    assert_eq!(
        srv.connect_req(srv.request("alice")).await.err(),
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "upgrade after shutdown"
    );
    let m = srv.client.metrics();
    assert_eq!(m.refused.shutting_down, 2);
    assert_eq!(m.accepted, 1);
    assert_eq!(m.connections, 0);
    assert_eq!(srv.client.user_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_counters_count_each_refusal_once() {
    let options = Options::default().with_kick_out_new_user_conn(true);
    let srv = TestServer::start(options).await;
    let url = srv.url();

    // 400
    let r = raw_http(
        srv.addr,
        &format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            srv.addr
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    // 401 x2
    let req = request_with(&url, None, Some(&offered(&srv.token("alice"))));
    assert_eq!(
        srv.connect_req(req).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let req = request_with(&url, Some(b"alice"), Some(&offered("garbage")));
    assert_eq!(
        srv.connect_req(req).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    // 403
    let req = request_with(&url, Some(b"alice"), Some(&offered(&srv.token("bob"))));
    assert_eq!(
        srv.connect_req(req).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    // 101, then 409
    let mut ws = srv.connect("alice").await;
    assert_eq!(
        srv.connect_req(srv.request("alice")).await.err(),
        Some(StatusCode::CONFLICT)
    );

    let m = srv.client.metrics();
    assert_eq!(m.refused.bad_request, 1);
    assert_eq!(m.refused.unauthorized, 2);
    assert_eq!(m.refused.forbidden, 1);
    assert_eq!(m.refused.conflict, 1);
    assert_eq!(m.refused.shutting_down, 0);
    assert_eq!(m.accepted, 1);
    assert_eq!(m.connections, 1);

    ws.close(None).await.unwrap();
    read_to_end(&mut ws).await;
}
