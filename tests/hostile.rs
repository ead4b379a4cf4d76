//! Hostile clients (issue 10): what the server does before the upgrade
//! (deadline, head size, pending caps, key check), vanished clients,
//! re-joins, `nbf`, the cost rule, inbound budgets and fair slow-consumer
//! detection. Real sockets; waits are on events, bounded by `WAIT`.

#[allow(clippy::large_enum_variant)]
mod common;
mod rooms_util;

use std::net::SocketAddr;
use std::sync::{LazyLock, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use edk_ws::proto::error::Code;
use edk_ws::{Claims, DisconnectReason, Message, Options, SendError};
use parking_lot::Mutex;
use rooms_util::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until the server closes; returns what it sent. Panics after
/// [`WAIT`].
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the server did not close the connection");
    got
}

fn status_of(response: &[u8]) -> Option<u16> {
    let head = std::str::from_utf8(response.get(..12)?).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.parse().ok()
}

fn short_deadline() -> Options {
    Options::default().with_handshake_timeout(Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_connections_are_closed_at_the_handshake_deadline() {
    let srv = TestServer::start(short_deadline()).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    let mut slow = TcpStream::connect(srv.addr).await.unwrap();
    // The slow one sends its head a byte at a time (an attacker's pace,
    // not a wait): it never completes it.
    let drip = tokio::spawn(async move {
        let head = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nx-pad: ";
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for b in head.iter().chain(std::iter::repeat(&b'a')).take(2_000) {
            tick.tick().await;
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
        }
        read_until_closed(&mut slow).await
    });
    assert!(read_until_closed(&mut silent).await.is_empty());
    drip.await.unwrap();
    // Generous: the deadline is 300 ms; the drip alone would last 40 s.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    srv.wait_until("both timeouts counted", |c| {
        c.metrics().handshake_timeouts == 2
    })
    .await;
    assert_eq!(srv.client.metrics().pending_handshakes, 0);
    // The server still serves.
    let _ws = srv.connect("after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_the_cap_gets_431() {
    let srv = TestServer::start(Options::default()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut head = b"GET /ws HTTP/1.1\r\nHost: x\r\nx-pad: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 40 << 10));
    // The server may stop reading (and answer) before all of it is sent.
    let _ = s.write_all(&head).await;
    let response = read_until_closed(&mut s).await;
    assert_eq!(
        status_of(&response),
        Some(431),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    srv.wait_until("the malformed request counted", |c| {
        c.metrics().malformed_requests == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_pending_sockets_does_not_lock_out_others() {
    let options = Options::default()
        .with_handshake_timeout(Duration::from_secs(60))
        .with_max_pending_handshakes(40)
        .with_max_pending_handshakes_per_ip(10);
    let srv = TestServer::start(options).await;
    // 127.0.0.2 opens 100 silent sockets: 10 are pending, 90 get 503.
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 1..=100u64 {
        let mut s = connect_from([127, 0, 0, 2], srv.addr).await;
        srv.wait_until("the server took the connection", |c| {
            let m = c.metrics();
            m.pending_handshakes + m.pending_ip_cap_refused == i
        })
        .await;
        if srv.client.metrics().pending_ip_cap_refused > refused {
            assert_eq!(status_of(&read_until_closed(&mut s).await), Some(503));
            refused += 1;
        } else {
            held.push(s);
        }
    }
    assert_eq!((held.len(), refused), (10, 90));
    // A user from another address is served.
    let mut ws = srv.connect("alice").await;
    send(&mut ws, &msg("1", "t", b"")).await;
    // Three more addresses fill the total cap (10 + 3 × 10 = 40): then
    // everyone gets 503, until the pending ones go.
    for from in 3..=5 {
        for _ in 0..10 {
            held.push(connect_from([127, 0, 0, from], srv.addr).await);
        }
    }
    srv.wait_until("40 pending", |c| c.metrics().pending_handshakes == 40)
        .await;
    let mut late = connect_from([127, 0, 0, 6], srv.addr).await;
    assert_eq!(status_of(&read_until_closed(&mut late).await), Some(503));
    assert_eq!(srv.client.metrics().pending_cap_refused, 1);
    drop(held);
    srv.wait_until("none pending", |c| c.metrics().pending_handshakes == 0)
        .await;
    let _bob = srv.connect("bob").await;
}

/// Sends a raw upgrade request with `key` and returns the status.
async fn status_with_key(srv: &TestServer, key: &str) -> Option<u16> {
    let token = srv.token("alice");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nx-user-id: alice\r\n\
         Sec-WebSocket-Protocol: edk.ws.v1, {token}\r\nConnection: close\r\n\r\n"
    );
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 12];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .expect("no answer")
        .ok()?;
    status_of(&got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_base64_of_16_bytes_gets_400() {
    let srv = TestServer::start(Options::default()).await;
    for key in [
        "",
        "not base64!",
        "dGhlIHNhbXBsZSBub25j",
        "dGhlIHNhbXBsZSBub25jZXM=",
    ] {
        assert_eq!(status_with_key(&srv, key).await, Some(400), "key {key:?}");
    }
    assert_eq!(
        status_with_key(&srv, "dGhlIHNhbXBsZSBub25jZQ==").await,
        Some(101)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_is_client_closed() {
    let mut srv = TestServer::start(Options::default()).await;
    let ws = srv.connect("gone").await;
    drop(ws); // no close frame: the socket just ends
    assert_eq!(
        srv.next_disconnect().await.reason,
        DisconnectReason::ClientClosed
    );
    let m = srv.client.metrics();
    assert_eq!(
        (m.disconnects.client_closed, m.disconnects.protocol_error),
        (1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_with_a_new_state_tells_every_member() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = srv.connect("a").await;
    let mut b = srv.connect("b").await;
    send(&mut a, &join_req("1", "r", &[("seat", "1")])).await;
    assert_ack(&recv(&mut a).await);
    send(&mut b, &join_req("2", "r", &[])).await;
    assert_ack(&recv(&mut b).await);
    send(&mut a, &join_req("3", "r", &[("seat", "2")])).await;
    let ev = recv(&mut b).await;
    let sc = state_changed(&ev).expect("state_changed");
    assert_eq!((sc.room.as_str(), sc.user_id.as_str()), ("r", "a"));
    assert_eq!(sc.changes, state(&[("seat", "2")]));
    // a (the requester too): b's join, then the event and the ack.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(recv(&mut a).await);
    }
    assert!(seen
        .iter()
        .any(|m| state_changed(m).is_some_and(|s| s.user_id == "a")));
    assert!(seen.iter().any(|m| m.id == "3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_yet_valid_is_refused() {
    let srv = TestServer::start(Options::default()).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let early = Claims::new("alice", now + 3600).with_nbf(now + 600);
    let token = srv.jwt.issue_claims(&early).unwrap();
    let mut req = srv.request("alice");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("edk.ws.v1, {token}")).unwrap(),
    );
    assert_eq!(
        srv.connect_req(req).await.err().map(|s| s.as_u16()),
        Some(401)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_over_the_limit_closes_1009_before_decoding() {
    let mut srv = TestServer::start(Options::default()).await;
    let mut ws = srv.connect("alice").await;
    let mut m = msg("1", "t", b"");
    m.metadata = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
    send(&mut ws, &m).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);
    srv.next_disconnect().await;
    // The issue's heavy message: ~100,000 tiny entries in under 1 MiB.
    let mut ws = srv.connect("bob").await;
    let mut heavy = msg("2", "t", b"");
    heavy.metadata = (0..100_000)
        .map(|i| (format!("{i}"), String::new()))
        .collect();
    send(&mut ws, &heavy).await;
    assert_eq!(expect_close(&mut ws).await.0, 1009);
    assert_eq!(srv.client.metrics().messages_over_entry_limits, 2);
    // Within the limits: delivered as usual.
    let mut ok = msg("3", "t", b"");
    ok.metadata = (0..64).map(|i| (format!("k{i}"), "v".into())).collect();
    let mut carol = srv.connect("carol").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    srv.client.subscribe_message_handler(move |_, m: Message| {
        let _ = tx.send(m.metadata.len());
        async {}
    });
    send(&mut carol, &ok).await;
    assert_eq!(
        tokio::time::timeout(WAIT, rx.recv()).await.unwrap(),
        Some(64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_budget_answers_requests_and_drops_the_rest() {
    let options = Options::default()
        .with_max_inbound_messages_per_second(1)
        .with_inbound_messages_burst(3);
    let srv = TestServer::start_with(options, |c| {
        let c2 = c.clone();
        c.subscribe_message_handler(move |conn, m| {
            let _ = c2.send(conn.user_id(), m);
            async {}
        });
    })
    .await;
    let mut ws = srv.connect("alice").await;
    for i in 0..5 {
        send(&mut ws, &msg(&i.to_string(), "echo", b"")).await;
    }
    send(&mut ws, &msg("", "echo", b"no id")).await;
    send(&mut ws, &marker("end")).await; // over the budget too: dropped
    let mut echoed = 0;
    let mut limited = Vec::new();
    while echoed + limited.len() < 5 {
        let m = recv(&mut ws).await;
        match error_code(&m) {
            Some(code) => {
                assert_eq!(code, Code::RateLimited);
                limited.push(m.id);
            }
            None => echoed += 1,
        }
    }
    assert_eq!((echoed, limited), (3, vec!["3".to_owned(), "4".to_owned()]));
    srv.wait_until("counted", |c| {
        let m = c.metrics();
        (m.inbound_rate_limited, m.inbound_dropped) == (2, 2)
    })
    .await;
}

/// The issue's burst: one member publishes 20 × 500 KB at once. The
/// inbound budget answers what is over it with RATE_LIMITED, and the
/// members, who read, are not closed although the burst is more than
/// their send queue's soft limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_burst_is_budgeted_and_reading_members_stay() {
    let options = Options::default()
        .with_max_inbound_bytes_per_second(1) // no refill: exact counts
        .with_inbound_bytes_burst(4 << 20)
        .with_send_queue_max_bytes(1 << 20);
    let srv = TestServer::start(options).await;
    let mut publisher = srv.connect("pub").await;
    send(&mut publisher, &join_req("j", "room", &[])).await;
    assert_ack(&recv(&mut publisher).await);
    let mut readers = Vec::new();
    for i in 0..10 {
        let mut ws = srv.connect(&format!("m{i}")).await;
        send(&mut ws, &join_req("j", "room", &[])).await;
        let reply = loop {
            let m = recv(&mut ws).await;
            if m.id == "j" {
                break m;
            }
        };
        assert_ack(&reply);
        readers.push(ws);
    }
    let payload = vec![7u8; 500_000];
    for i in 0..20 {
        send(
            &mut publisher,
            &publish_req(&format!("p{i}"), "room", "blob", &payload),
        )
        .await;
    }
    let (mut acks, mut limited) = (0, 0);
    while acks + limited < 20 {
        let m = recv(&mut publisher).await;
        if !m.id.starts_with('p') {
            continue; // member events
        }
        match error_code(&m) {
            None => acks += 1,
            Some(Code::RateLimited) => limited += 1,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    // 4 MiB of burst: 8 publishes of 500 KB.
    assert_eq!((acks, limited), (8, 12));
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut blobs = 0;
                while blobs < 8 {
                    match next_event(&mut ws).await {
                        Event::Msg(m) if m.r#type == "blob" => blobs += 1,
                        Event::Msg(_) => {}
                        other => panic!("a reading member was closed: {other:?}"),
                    }
                }
                ws
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let m = srv.client.metrics();
    assert_eq!(m.disconnects.slow_consumer, 0);
    assert_eq!(m.inbound_rate_limited, 12);
}

/// A slow-consumer warning: its message and the `user` of the span it was
/// logged in.
type Warning = (String, Option<String>);
static WARNINGS: LazyLock<Mutex<Vec<Warning>>> = LazyLock::new(Mutex::default);

fn capture_warnings() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let keep = tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() || *meta.level() <= tracing::Level::WARN
        });
        let _ = tracing_subscriber::registry()
            .with(tracing_subscriber::Layer::with_filter(Capture, keep))
            .try_init();
    });
}

struct Capture;
struct SpanUser(String);

#[derive(Default)]
struct Fields {
    user: Option<String>,
    message: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "user" => self.user = Some(format!("{value:?}")),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let (Some(user), Some(span)) = (f.user, ctx.span(id)) {
            span.extensions_mut().insert(SpanUser(user));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        if !f.message.contains("slow consumer") {
            return;
        }
        let user = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|s| s.extensions().get::<SpanUser>().map(|u| u.0.clone()))
        });
        WARNINGS.lock().push((f.message, user));
    }
}

/// A client that stops reading is closed with 4003 once its queue has
/// been over its soft limit for the grace period (well below the hard
/// limits), and the warning is logged in its own span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_closed_after_the_grace_and_warned_about_in_its_span() {
    capture_warnings();
    let options = Options::default()
        .with_send_queue_max_bytes(64 << 10)
        .with_slow_consumer_grace(Duration::from_millis(200))
        .with_send_queue_hard_capacity(usize::MAX >> 1)
        .with_send_queue_hard_max_bytes(usize::MAX >> 1)
        .with_close_timeout(Duration::from_millis(200));
    let mut srv = TestServer::start(options).await;
    let _stalled = srv.connect("stalled-reader").await; // never read
                                                        // Encoded once: every push shares the same 32 KiB.
    let chunk = bytes::Bytes::from(prost::Message::encode_to_vec(&msg(
        "x",
        "bulk",
        &[1u8; 32 << 10],
    )));
    let conn = srv.client.connection("stalled-reader").unwrap();
    let pushed = tokio::spawn(async move {
        loop {
            match conn.send_encoded(chunk.clone()) {
                Ok(()) => tokio::task::yield_now().await,
                Err(e) => return e,
            }
        }
    });
    let d = srv.next_disconnect().await;
    assert_eq!(d.reason, DisconnectReason::SlowConsumer);
    let err = tokio::time::timeout(WAIT, pushed).await.unwrap().unwrap();
    assert!(
        matches!(err, SendError::Closed | SendError::NotConnected),
        "closed by the grace period, not a hard limit: {err:?}"
    );
    let warnings = WARNINGS.lock().clone();
    assert!(
        warnings
            .iter()
            .any(|(_, user)| user.as_deref() == Some("stalled-reader")),
        "no slow-consumer warning in the client's span: {warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_of_the_server_closes_pending_connections() {
    let listener = edk_ws::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let ws = edk_ws::WsClient::new(
        Options::default().with_handshake_timeout(Duration::from_secs(60)),
        edk_ws::JwtAuthenticator::new(SECRET),
    );
    let routes = warp::Filter::map(warp::any(), || "ok");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        edk_ws::serve(routes, listener, &ws)
            .graceful(async {
                let _ = rx.await;
            })
            .run(),
    );
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while ws.metrics().pending_handshakes == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never pending");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = tx.send(());
    assert!(read_until_closed(&mut silent).await.is_empty());
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

/// Under `edk_ws::serve` the peer address reaches the connection and the
/// `edk_ws::remote_addr()` filter (warp's own filter cannot see it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_address_is_known_under_serve() {
    use warp::Filter;
    let listener = edk_ws::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let ws = edk_ws::WsClient::new(Options::default(), edk_ws::JwtAuthenticator::new(SECRET));
    let routes = warp::path("ip")
        .and(edk_ws::remote_addr())
        .map(|a: Option<SocketAddr>| a.map(|a| a.ip().to_string()).unwrap_or_default());
    tokio::spawn(edk_ws::serve(routes, listener, &ws).run());
    let mut s = connect_from([127, 0, 0, 9], addr).await;
    s.write_all(b"GET /ip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let response = String::from_utf8(read_until_closed(&mut s).await).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\n127.0.0.9"), "{response}");
}
