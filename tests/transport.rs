//! The socket under a connection: TCP_NODELAY whatever listener the user
//! binds, and bytes a client sends along with its handshake.
mod common;
use common::*;
use edk_ws::{Options, WsClient};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

fn echo(c: &WsClient) {
    let c2 = c.clone();
    c.subscribe_message_handler(move |conn, m| {
        let c2 = c2.clone();
        async move {
            c2.send(conn.user_id(), m).unwrap();
        }
    });
}

/// A listener bound the ordinary way (not through `edk_ws::bind`), so
/// nothing was inherited: the library must reach the socket itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodelay_is_set_on_a_plain_tokio_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let srv = TestServer::start_on(listener, Options::default(), echo).await;
    let mut ws = srv.connect("alice").await;
    send(&mut ws, &msg("1", "echo", b"hi")).await;
    assert_eq!(recv(&mut ws).await.id, "1");
    let m = srv.client.metrics();
    assert_eq!(m.accepted, 1);
    assert_eq!(
        m.tcp_nodelay_unavailable, 0,
        "the TcpStream was not recovered"
    );
}

/// A client may send its first frame right behind the upgrade request,
/// before the 101 arrives; hyper has read those bytes already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_sent_with_the_handshake_is_delivered() {
    let srv = TestServer::start_with(Options::default(), echo).await;
    let token = srv.token("bob");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: edk.ws.v1, {token}\r\nx-user-id: bob\r\n\r\n",
        srv.addr
    );
    let payload = msg("early", "echo", b"sent with the handshake").encode_to_vec();
    assert!(payload.len() < 126);
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut bytes = request.into_bytes();
    bytes.extend([0x82, 0x80 | payload.len() as u8]);
    bytes.extend(mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));

    let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tcp.write_all(&bytes).await.unwrap();
    // Read the 101 response; whatever follows it is WebSocket data.
    let mut got = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("no handshake response")
            .unwrap();
        assert!(n > 0, "server closed during the handshake");
        got.extend_from_slice(&chunk[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let rest = got[end..].to_vec();
    let tcp = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    let mut ws = WebSocketStream::from_partially_read(tcp, rest, Role::Client, None).await;
    let reply = recv(&mut ws).await;
    assert_eq!(reply.id, "early");
    assert_eq!(reply.payload.as_ref(), b"sent with the handshake");
    assert_eq!(reply.sender, "bob");
    // The early bytes were handed over once: the next reply is the next
    // message, not a second copy of the first.
    send(&mut ws, &msg("later", "echo", b"")).await;
    assert_eq!(recv(&mut ws).await.id, "later");
    assert_eq!(srv.client.metrics().messages_in, 2);
}

/// warp's own server over a Unix socket: the stream is taken back too
/// (there is no Nagle delay to turn off, so nothing is counted).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_is_served_directly() {
    use edk_ws::JwtAuthenticator;
    use warp::Filter;

    let path = std::env::temp_dir().join(format!("edk-ws-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let jwt = JwtAuthenticator::new(SECRET);
    let client = WsClient::new(Options::default(), jwt.clone());
    echo(&client);
    let routes = warp::path("ws").and(client.handler());
    tokio::spawn(warp::serve(routes).incoming(listener).run());

    let req = upgrade_request("ws://localhost/ws", &jwt, "carol");
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, stream))
        .await
        .expect("handshake timed out")
        .expect("handshake failed");
    let _ = std::fs::remove_file(&path);
    let (mut tx, mut rx) = futures::StreamExt::split(ws);
    futures::SinkExt::send(
        &mut tx,
        tokio_tungstenite::tungstenite::Message::Binary(
            msg("u", "echo", b"x").encode_to_vec().into(),
        ),
    )
    .await
    .unwrap();
    let reply = loop {
        match tokio::time::timeout(WAIT, futures::StreamExt::next(&mut rx)).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b)))) => {
                break edk_ws::Message::decode(b).unwrap()
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no reply: {other:?}"),
        }
    };
    assert_eq!(reply.id, "u");
    assert_eq!(reply.sender, "carol");
    assert_eq!(client.metrics().tcp_nodelay_unavailable, 0);
}

/// An upgrade request to `url` for `user` with a token from `jwt` (for
/// servers outside the harness).
fn upgrade_request(
    url: &str,
    jwt: &edk_ws::JwtAuthenticator,
    user: &'static str,
) -> tokio_tungstenite::tungstenite::http::Request<()> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut req = url.into_client_request().unwrap();
    let token = jwt.issue(user, std::time::Duration::from_secs(60)).unwrap();
    let h = req.headers_mut();
    h.insert("x-user-id", HeaderValue::from_static(user));
    h.insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("edk.ws.v1, {token}")).unwrap(),
    );
    req
}

/// Plain `warp::serve` (not `edk_ws::serve`, which the harness uses)
/// still works: the TcpStream is recovered from warp's own server, and
/// the peer address comes from warp's filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_warp_serve_still_recovers_the_tcp_stream() {
    use edk_ws::JwtAuthenticator;
    use warp::Filter;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let jwt = JwtAuthenticator::new(SECRET);
    let client = WsClient::new(Options::default(), jwt.clone());
    let c2 = client.clone();
    client.subscribe_message_handler(move |conn, mut m| {
        m.r#type = conn
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let _ = c2.send(conn.user_id(), m);
        async {}
    });
    let routes = warp::path("ws").and(client.handler());
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    let req = upgrade_request(&format!("ws://{addr}/ws"), &jwt, "dave");
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")
        .expect("handshake failed");
    send(&mut ws, &msg("w", "echo", b"")).await;
    let reply = recv(&mut ws).await;
    assert_eq!(
        (reply.id.as_str(), reply.r#type.as_str()),
        ("w", "127.0.0.1")
    );
    assert_eq!(client.metrics().tcp_nodelay_unavailable, 0);
}
