//! Shared test harness: a real warp server on 127.0.0.1:0 with the module
//! mounted at /ws, real tokio-tungstenite clients, and helpers that wait on
//! events with a timeout (never sleep).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edk_ws::{Conn, DisconnectReason, JwtAuthenticator, Message, Options, WsClient};
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use warp::Filter;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub const SECRET: &[u8] = b"test-secret";

/// A disconnect as seen by the disconnect handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub user: String,
    pub conn_id: u64,
    pub reason: DisconnectReason,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub client: WsClient,
    pub jwt: JwtAuthenticator,
    /// Every disconnect handler call, in order.
    pub disconnects: mpsc::UnboundedReceiver<Disconnect>,
    /// Disconnect handler calls per connection id (to check "exactly once").
    pub disconnect_counts: Arc<Mutex<HashMap<u64, u32>>>,
}

impl TestServer {
    /// A server with `options`, JWT auth with [`SECRET`], the module at
    /// `/ws`, `GET /healthz`, and a disconnect recorder.
    pub async fn start(options: Options) -> TestServer {
        Self::start_with(options, |_| {}).await
    }

    /// Like [`TestServer::start`], letting `setup` subscribe handlers before
    /// the server accepts anything.
    pub async fn start_with(options: Options, setup: impl FnOnce(&WsClient)) -> TestServer {
        let listener = edk_ws::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Self::start_on(listener, options, setup).await
    }

    /// Like [`TestServer::start_with`], served from `listener`.
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        options: Options,
        setup: impl FnOnce(&WsClient),
    ) -> TestServer {
        let jwt = JwtAuthenticator::new(SECRET);
        let client = WsClient::new(options, jwt.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let counts: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
        let c2 = counts.clone();
        client.subscribe_disconnect_handler(move |conn: Conn, reason| {
            *c2.lock().entry(conn.id()).or_default() += 1;
            let _ = tx.send(Disconnect {
                user: conn.user_id().to_owned(),
                conn_id: conn.id(),
                reason,
            });
            async {}
        });
        setup(&client);
        let routes = warp::path("ws")
            .and(warp::path::end())
            .and(client.handler())
            .or(warp::path("healthz").map(|| "ok"));
        let addr = listener.local_addr().unwrap();
        tokio::spawn(edk_ws::serve(routes, listener, &client).run());
        TestServer {
            addr,
            client,
            jwt,
            disconnects: rx,
            disconnect_counts: counts,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn token(&self, user: &str) -> String {
        self.jwt.issue(user, Duration::from_secs(3600)).unwrap()
    }

    /// An upgrade request for `user` with a valid token offered as
    /// `edk.ws.v1, <token>`.
    pub fn request(&self, user: &str) -> Request<()> {
        let mut req = self.url().into_client_request().unwrap();
        let h = req.headers_mut();
        h.insert("x-user-id", HeaderValue::from_str(user).unwrap());
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("edk.ws.v1, {}", self.token(user))).unwrap(),
        );
        req
    }

    /// Connects `user`; panics if the handshake fails.
    pub async fn connect(&self, user: &str) -> Ws {
        self.connect_req(self.request(user))
            .await
            .unwrap_or_else(|s| {
                panic!("handshake for {user} refused with {s}");
            })
    }

    /// Performs a handshake; `Err(status)` when refused with an HTTP status.
    pub async fn connect_req(&self, req: Request<()>) -> Result<Ws, StatusCode> {
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
            Ok(Ok((ws, _resp))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => Err(resp.status()),
            Ok(Err(e)) => panic!("handshake failed without a status: {e}"),
            Err(_) => panic!("handshake timed out"),
        }
    }

    /// The next disconnect handler call.
    pub async fn next_disconnect(&mut self) -> Disconnect {
        tokio::time::timeout(WAIT, self.disconnects.recv())
            .await
            .expect("timed out waiting for a disconnect handler call")
            .expect("disconnect channel closed")
    }

    /// Waits until `cond` holds on the client's state (polled on a short
    /// interval, bounded by [`WAIT`]).
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&WsClient) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !cond(&self.client) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub fn msg(id: &str, ty: &str, payload: &[u8]) -> Message {
    Message {
        id: id.into(),
        r#type: ty.into(),
        payload: Bytes::copy_from_slice(payload),
        ..Default::default()
    }
}

pub async fn send(ws: &mut Ws, m: &Message) {
    ws.send(WsMessage::Binary(Bytes::from(m.encode_to_vec())))
        .await
        .expect("client send failed");
}

/// What a client saw next, skipping pings and pongs.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Msg(Message),
    Close(Option<(u16, String)>),
    /// The stream ended or failed without a close frame.
    Ended(String),
}

pub async fn next_event(ws: &mut Ws) -> Event {
    loop {
        let item = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame");
        match item {
            None => return Event::Ended("stream ended".into()),
            Some(Err(e)) => return Event::Ended(e.to_string()),
            Some(Ok(WsMessage::Binary(b))) => {
                return Event::Msg(Message::decode(b).expect("server sent an undecodable frame"))
            }
            Some(Ok(WsMessage::Close(f))) => {
                return Event::Close(f.map(|f| (u16::from(f.code), f.reason.to_string())))
            }
            Some(Ok(WsMessage::Text(t))) => panic!("server sent a text frame: {t}"),
            Some(Ok(_)) => continue,
        }
    }
}

/// The next message; panics on anything else.
pub async fn recv(ws: &mut Ws) -> Message {
    match next_event(ws).await {
        Event::Msg(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Reads until a close frame and returns its code (skipping messages).
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match next_event(ws).await {
            Event::Msg(_) => continue,
            Event::Close(Some(c)) => return c,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub fn close_code(c: u16) -> CloseCode {
    CloseCode::from(c)
}
