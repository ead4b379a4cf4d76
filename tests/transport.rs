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
}
