//! Entry points of the fuzz targets (`fuzz/`) and the conformance echo
//! server (`examples/autobahn_server.rs`), behind the `fuzzing` feature:
//! not public API. Each fuzz entry point panics when an outcome is not
//! one of the documented answers.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use prost::Message as _;

use crate::auth::JwtAuthenticator;
use crate::backplane::{LocalBackplane, Node};
use crate::client::WsClient;
use crate::conn::{Conn, Connection};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::options::Options;
use crate::protocol::close::{code, DisconnectReason};
use crate::protocol::proto::message::Control;
use crate::protocol::proto::Message;
use crate::session::{checks, task, Endpoint};

impl WsClient {
    /// The conformance test endpoint: no identity checks (each connection
    /// is a fresh anonymous user) and every binary frame echoed as it
    /// came, through the connection's own reader, queue, writer and output
    /// buffer. For the Autobahn run only.
    pub fn conformance_echo(options: Options) -> WsClient {
        let hub = Hub::new(options.sanitized(), Arc::new(Metrics::default()));
        let node = Node::new(hub, Arc::new(LocalBackplane::new()));
        let mut endpoint = Endpoint::new(node, Box::new(JwtAuthenticator::new(b"unused")));
        endpoint.anonymous_echo = true;
        WsClient::from_endpoint(endpoint)
    }
}

/// An in-memory world: one endpoint with no sockets, and a peer that is a
/// member of room `r` (so publishes and events have a recipient).
struct World {
    rt: tokio::runtime::Runtime,
    inner: Arc<Endpoint>,
    peer: Arc<Connection>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    // Batched events never flush on their own: inputs stay independent.
    let options = Options::default()
        .with_event_batch_interval(Duration::from_secs(86_400))
        .sanitized();
    let hub = Hub::new(options, Arc::new(Metrics::default()));
    let node = Node::new(hub, Arc::new(LocalBackplane::new()));
    let inner = Arc::new(Endpoint::new(
        node,
        Box::new(JwtAuthenticator::new(b"fuzz")),
    ));
    let peer = attach(&inner, "peer");
    let _ = rt.block_on(inner.node.join(&peer, "r", Default::default(), false));
    World { rt, inner, peer }
});

fn attach(inner: &Endpoint, user: &str) -> Arc<Connection> {
    let hub = inner.hub();
    let id = hub.next_conn_id();
    let conn = hub.new_connection(id, id, Arc::from(user), HeaderMap::new(), None);
    let _ = hub.registry.admit(conn.clone(), false);
    conn
}

/// Splits fuzz input into frames: a little-endian `u16` length, then that
/// many bytes, up to 16 frames; what is left is the last frame.
fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < 15 {
        let n = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let n = n.min(rest.len());
        out.push(&rest[..n]);
        data = &rest[n..];
    }
    out.push(data);
    out
}

/// (a) Inbound frames → cost rule → budgets → decode → module requests,
/// against the in-memory world. Every frame queued for the connection
/// decodes, every error code is a documented one, a close is 1007 or 1009
/// (a protocol error), and a request with an id gets exactly one reply
/// with that id.
pub fn inbound_frames(data: &[u8]) {
    let w = &*WORLD;
    let conn = attach(&w.inner, "fuzzer");
    let handle = Conn(conn.clone());
    let mut budgets = task::Budgets::default();
    for frame in frames(data) {
        if conn.is_closing() {
            break;
        }
        let sent = Message::decode(frame).ok();
        let frame = Bytes::copy_from_slice(frame);
        w.rt.block_on(task::on_frame(
            &w.inner,
            &conn,
            &handle,
            &mut budgets,
            frame,
        ));
        let batch = conn.queue.take();
        conn.queue.sent();
        let queued: Vec<Message> = batch.msgs.iter().map(decodes).collect();
        for m in &queued {
            if let Some(Control::Error(e)) = &m.control {
                assert!(
                    (1..=10).contains(&e.code),
                    "undocumented error code {}",
                    e.code
                );
            }
        }
        if let Some(close) = &batch.close {
            assert!(
                [code::INVALID_PAYLOAD, code::MESSAGE_TOO_BIG].contains(&close.code),
                "close {}",
                close.code
            );
            assert_eq!(close.reason, DisconnectReason::ProtocolError);
            continue;
        }
        if let Some(req) =
            sent.filter(|m| !m.id.is_empty() && crate::session::control::is_request(m))
        {
            let replies = queued
                .iter()
                .filter(|m| m.id == req.id && m.control.is_some())
                .count();
            assert_eq!(replies, 1, "request {:?}: {replies} replies", req.id);
        }
    }
    for b in w.peer.queue.take().msgs {
        decodes(&b);
    }
    w.peer.queue.sent();
    w.rt.block_on(w.inner.node.ended(&conn));
}

fn decodes(frame: &Bytes) -> Message {
    match Message::decode(frame.clone()) {
        Ok(m) => m,
        Err(e) => panic!("the server queued an undecodable frame: {e}"),
    }
}

/// (b) Header sets → the handshake's pure checks. The first byte picks
/// the method and flags; the rest is `name: value` lines. A refusal is
/// one of the documented statuses; an acceptance has a valid key, user id
/// and token.
pub fn handshake(data: &[u8]) {
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    let method = if flags & 1 == 0 {
        Method::GET
    } else {
        Method::POST
    };
    let (upgradable, shutting_down) = (flags & 2 == 0, flags & 4 != 0);
    let mut options = Options::default();
    if flags & 8 != 0 {
        options.allowed_origins = vec!["https://app.example".into()];
    }
    let mut headers = HeaderMap::new();
    for line in text.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    match checks::check(&method, &headers, upgradable, shutting_down, &options) {
        Err(r) => assert!(
            [400, 426, 503, 403, 401].contains(&r.status.as_u16()),
            "status {}",
            r.status
        ),
        Ok(u) => {
            assert!(checks::valid_key(u.key.as_bytes()));
            assert!(u
                .user_id
                .is_none_or(|id| checks::valid_user_id(id.as_bytes()).is_some()));
            assert!(!u.token.is_empty() && !u.token.contains(','));
            assert!(method == Method::GET && upgradable && !shutting_down);
            let offered = headers
                .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.split(',').any(|t| t.trim() == crate::PROTOCOL));
            assert_eq!(u.offered_protocol, offered);
        }
    }
}

/// (c) What the writer produces parses back with tungstenite: binary
/// frames (buffered or written at once), pings, pongs and the close frame
/// through a stream that takes a few bytes per write, read back by a
/// tungstenite client as exactly those messages, nothing after the close.
pub fn writer_frames(data: &[u8]) {
    crate::io::outbuf::check_frames_parse_back(data);
}

/// (d) The WebSocket read path (`src/io/ws_read.rs`): client bytes
/// (after two bytes: a chunk size and a read size) parsed as the
/// connection's reader does, in chunks and in one go. No panic, and the
/// chunking changes nothing: the same messages, then the same error.
pub fn read_frames(data: &[u8]) {
    use crate::io::ws_read::parse_chunked;
    let [chunk, read, wire @ ..] = data else {
        return;
    };
    let max = 1 << 16;
    let read = usize::from(*read).max(1) * 16;
    let whole = parse_chunked(wire, &[], max, read);
    let chunked = parse_chunked(wire, &[usize::from(*chunk), 1, 7], max, read);
    assert_eq!(whole.0, chunked.0, "the same messages whatever the chunks");
    assert_eq!(
        whole.1.map(|e| e.to_string()),
        chunked.1.map(|e| e.to_string()),
        "the same error whatever the chunks"
    );
}
