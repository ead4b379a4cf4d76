//! Browsers cannot set headers on a WebSocket: with `user_id_from_token`, a
//! request without the user id header is identified by its verified token,
//! while a request with the header keeps the gateway rule (issue 11).

#[allow(clippy::large_enum_variant)]
mod common;
use common::*;

use edk_ws::{AuthError, AuthRequest, Authenticator, Identity, Options, WsClient};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request, StatusCode};
use warp::Filter;

/// `srv.request(user)` (a token for `user`) without the user id header, as
/// a browser sends it.
fn browser_request(srv: &TestServer, user: &str) -> Request<()> {
    let mut req = srv.request(user);
    req.headers_mut().remove("x-user-id");
    req
}

async fn echo_server(options: Options) -> TestServer {
    TestServer::start_with(options, |c| {
        c.subscribe_message_handler(|conn, m| async move {
            let _ = conn.send(m);
        });
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_header_the_token_names_the_user() {
    let srv = echo_server(Options::default().with_user_id_from_token(true)).await;
    let mut ws = srv
        .connect_req(browser_request(&srv, "alice"))
        .await
        .expect("a request without the header was refused");
    assert!(srv.client.is_connected("alice"));
    send(&mut ws, &msg("1", "echo", b"hi")).await;
    let back = recv(&mut ws).await;
    assert_eq!((back.id.as_str(), back.sender.as_str()), ("1", "alice"));
    assert_eq!(srv.client.metrics().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_header_the_gateway_rule_holds() {
    let srv = TestServer::start(Options::default().with_user_id_from_token(true)).await;

    // The header names alice, the token bob: 403, the token cannot overrule
    // the gateway.
    let mut req = srv.request("bob");
    req.headers_mut()
        .insert("x-user-id", HeaderValue::from_static("alice"));
    assert_eq!(
        srv.connect_req(req).await.err(),
        Some(StatusCode::FORBIDDEN)
    );

    // A malformed header is refused, not ignored in favour of the token.
    let mut req = srv.request("alice");
    req.headers_mut()
        .insert("x-user-id", HeaderValue::from_static("a b"));
    assert_eq!(
        srv.connect_req(req).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );

    // No header and a bad token, or no token: 401.
    let mut req = browser_request(&srv, "alice");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("edk.ws.v1, not.a.jwt"),
    );
    assert_eq!(
        srv.connect_req(req).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let mut req = browser_request(&srv, "alice");
    req.headers_mut().remove("sec-websocket-protocol");
    assert_eq!(
        srv.connect_req(req).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );

    let m = srv.client.metrics();
    assert_eq!((m.refused.forbidden, m.refused.unauthorized), (1, 3));
    assert_eq!(m.accepted, 0);
    assert_eq!(srv.client.user_count(), 0);

    // With the header, the option changes nothing for a matching token.
    let _ws = srv.connect("carol").await;
    assert!(srv.client.is_connected("carol"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_option_is_off_by_default() {
    let srv = TestServer::start(Options::default()).await;
    assert_eq!(
        srv.connect_req(browser_request(&srv, "alice")).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
}

/// Tokens `as:<user>` name their user; no other token is accepted.
struct NamingTokens;

#[edk_ws::async_trait]
impl Authenticator for NamingTokens {
    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Identity, AuthError> {
        let named = req
            .token
            .strip_prefix("as:")
            .ok_or_else(|| AuthError::Unauthorized("unknown token".into()))?;
        match req.user_id {
            Some(header) if header != named => Err(AuthError::Forbidden("other user".into())),
            _ => Ok(Identity::new(named)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_authenticator_decides_who_a_headerless_request_is() {
    let client = WsClient::new(
        Options::default().with_user_id_from_token(true),
        NamingTokens,
    );
    let routes = warp::path("ws")
        .and(warp::path::end())
        .and(client.handler());
    let listener = edk_ws::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    let connect = |token: &'static str| {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(token));
        async move {
            match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
                Ok(Ok((ws, _))) => Ok(ws),
                Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => Err(r.status()),
                other => panic!("handshake failed without a status: {other:?}"),
            }
        }
    };
    let _ws = connect("edk.ws.v1, as:bob")
        .await
        .expect("the identity's user was refused");
    assert!(client.is_connected("bob"), "registered under the identity");
    // The identity is checked for shape like a header.
    assert_eq!(
        connect("edk.ws.v1, as:b o b").await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(client.user_count(), 1);
}
