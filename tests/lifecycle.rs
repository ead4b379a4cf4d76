//! The way out (send, send_many, broadcast, slow consumers, kick) and the ends
//! of a connection (heartbeat, idle timeout, shutdown, disconnect handlers,
//! metrics).

mod common;
use common::*;

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use edk_ws::{DisconnectReason, Message, Options, SendError, WsClient};
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

fn subscribe_echo(c: &WsClient) {
    let c2 = c.clone();
    c.subscribe_message_handler(move |conn, m: Message| {
        let c2 = c2.clone();
        async move {
            c2.send(conn.user_id(), m).expect("echo send failed");
        }
    });
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Reads until the stream ends, so that the client answers the server's close
/// frame (tungstenite sends its close reply on the next read).
async fn read_to_end<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => panic!("timed out waiting for the stream to end"),
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The next frame must be a close frame; returns its code and reason.
async fn next_is_close(ws: &mut Ws) -> (u16, String) {
    match next_event(ws).await {
        Event::Close(Some(c)) => c,
        other => panic!("expected a close frame, got {other:?}"),
    }
}

// ---------------------------------------------------------------- sending

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reaches_a_connected_user_and_fails_for_others() {
    let srv = TestServer::start(Options::default()).await;
    let mut alice = srv.connect("alice").await;

    let before = now_ms();
    srv.client
        .send("alice", msg("1", "notice", b"hi"))
        .expect("send to a connected user");
    let got = recv(&mut alice).await;
    let after = now_ms();
    assert_eq!(got.id, "1");
    assert_eq!(got.r#type, "notice");
    assert_eq!(got.payload.as_ref(), b"hi");
    assert_eq!(
        got.sender, "",
        "server-originated messages have sender \"\""
    );
    assert!(
        (before..=after).contains(&got.timestamp_ms),
        "timestamp {} not within [{before}, {after}]",
        got.timestamp_ms
    );

    assert_eq!(
        srv.client.send("nobody", msg("2", "notice", b"")),
        Err(SendError::NotConnected)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_many_and_broadcast_report_and_deliver() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = srv.connect("a").await;
    let mut b = srv.connect("b").await;
    let mut c = srv.connect("c").await;

    let report = srv
        .client
        .send_many(["a", "ghost", "b"], msg("many", "t", b"m"));
    assert_eq!(report.queued, 2);
    assert_eq!(
        report.failed,
        vec![("ghost".to_owned(), SendError::NotConnected)]
    );
    assert!(!report.is_complete());
    for ws in [&mut a, &mut b] {
        let got = recv(ws).await;
        assert_eq!(got.id, "many");
        assert_eq!(got.sender, "");
        assert!(got.timestamp_ms > 0);
    }

    let report = srv.client.broadcast(msg("all", "t", b"b"));
    assert_eq!(report.queued, 3);
    assert!(report.failed.is_empty());
    assert!(report.is_complete());
    for ws in [&mut a, &mut b, &mut c] {
        let got = recv(ws).await;
        assert_eq!(got.id, "all");
        assert_eq!(got.payload.as_ref(), b"b");
    }
    // "c" was not among send_many's recipients: its first message was the
    // broadcast (checked above, as `recv` returns the next message).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_with_4003_without_delaying_others() {
    let opts = Options::default()
        .with_send_queue_capacity(8)
        .with_send_queue_max_bytes(1 << 20)
        .with_close_timeout(Duration::from_secs(30));
    let mut srv = TestServer::start(opts).await;
    let mut slow = srv.connect("slow").await;
    let mut other = srv.connect("other").await;
    let slow_id = srv.client.connection("slow").unwrap().id();

    // "slow" does not read: its socket fills up, its writer blocks, its
    // queue fills up.
    let big = msg("big", "bulk", &vec![0x5a; 64 << 10]);
    let mut outcome = None;
    for i in 0..100_000u32 {
        if let Err(e) = srv.client.send("slow", big.clone()) {
            outcome = Some((i, e));
            break;
        }
        tokio::task::yield_now().await;
    }
    let (sent, err) = outcome.expect("send never failed on a client that does not read");
    assert_eq!(err, SendError::QueueFull, "after {sent} sends");
    assert!(matches!(
        srv.client.send("slow", big.clone()),
        Err(SendError::Closed | SendError::NotConnected)
    ));

    // Others are not delayed, even while the slow writer is stuck.
    for i in 0..3 {
        srv.client
            .send("other", msg(&format!("o{i}"), "t", b"x"))
            .unwrap();
        assert_eq!(recv(&mut other).await.id, format!("o{i}"));
    }

    // Now "slow" reads everything: what the socket held, then the close.
    let (code, _) = expect_close(&mut slow).await;
    assert_eq!(code, 4003);
    read_to_end(&mut slow).await;

    let d = srv.next_disconnect().await;
    assert_eq!(
        d,
        Disconnect {
            user: "slow".into(),
            conn_id: slow_id,
            reason: DisconnectReason::SlowConsumer,
        }
    );
    assert!(matches!(
        srv.client.send("slow", msg("late", "t", b"")),
        Err(SendError::Closed | SendError::NotConnected)
    ));
    assert_eq!(srv.client.metrics().disconnects.slow_consumer, 1);

    srv.client.send("other", msg("last", "t", b"")).unwrap();
    assert_eq!(recv(&mut other).await.id, "last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_closes_with_4002_and_the_reason() {
    let mut srv = TestServer::start(Options::default()).await;
    let mut alice = srv.connect("alice").await;
    let mut bob = srv.connect("bob").await;
    let alice_id = srv.client.connection("alice").unwrap().id();

    // What was queued before the kick is delivered first.
    srv.client.send("alice", msg("before", "t", b"")).unwrap();
    srv.client.kick("alice", "spamming the room").unwrap();
    assert_eq!(recv(&mut alice).await.id, "before");
    assert_eq!(
        next_is_close(&mut alice).await,
        (4002, "spamming the room".to_owned())
    );
    read_to_end(&mut alice).await;

    let d = srv.next_disconnect().await;
    assert_eq!(
        d,
        Disconnect {
            user: "alice".into(),
            conn_id: alice_id,
            reason: DisconnectReason::Kicked,
        }
    );
    assert!(!srv.client.is_connected("alice"));
    assert_eq!(
        srv.client.kick("ghost", "whatever"),
        Err(SendError::NotConnected)
    );
    assert_eq!(
        srv.client.kick("alice", "again"),
        Err(SendError::NotConnected)
    );

    // Bob is untouched.
    srv.client.send("bob", msg("b", "t", b"")).unwrap();
    assert_eq!(recv(&mut bob).await.id, "b");
}

// -------------------------------------------------------------- heartbeat

fn heartbeat_options() -> Options {
    Options::default()
        .with_ping_interval(Duration::from_millis(100))
        .with_idle_timeout(Duration::from_millis(1500))
        .with_close_timeout(Duration::from_secs(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pings_and_pongs_keep_a_reading_client_alive() {
    let mut srv = TestServer::start(heartbeat_options()).await;
    let mut ws = srv.connect("alice").await;

    // 20 pings 100 ms apart span more than the 1.5 s idle timeout: the
    // connection only survives them because the client's pongs count.
    let mut pings = 0;
    while pings < 20 {
        let item = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a ping");
        match item {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    assert!(pings >= 3);
    assert!(srv.client.is_connected("alice"));
    assert!(srv.disconnects.try_recv().is_err());

    ws.close(None).await.unwrap();
    read_to_end(&mut ws).await;
    assert_eq!(
        srv.next_disconnect().await.reason,
        DisconnectReason::ClientClosed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pings_are_answered() {
    let srv = TestServer::start(Options::default()).await;
    let mut ws = srv.connect("alice").await;
    ws.send(WsMessage::Ping(b"x".as_slice().into()))
        .await
        .unwrap();
    loop {
        let item = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for the pong");
        match item {
            Some(Ok(WsMessage::Pong(p))) => {
                assert_eq!(p.as_ref(), b"x");
                break;
            }
            Some(Ok(WsMessage::Ping(_))) => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    assert!(srv.client.is_connected("alice"));
}

/// A TCP stream whose writes can be swallowed. Once the server has dropped a
/// connection, reading it with tungstenite makes the client answer each
/// buffered ping with a pong; writing to the closed socket draws a reset and
/// the next write fails, ending the stream before the close frame is read.
/// Muted, the client can read everything the server sent.
struct MutableStream {
    inner: TcpStream,
    mute: bool,
}

impl AsyncRead for MutableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for MutableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.mute {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.mute {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.mute {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_is_closed_with_4000() {
    let mut srv = TestServer::start(heartbeat_options()).await;
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let stream = MutableStream {
        inner: tcp,
        mute: false,
    };
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(srv.request("idle"), stream),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake failed");
    let idle_id = srv.client.connection("idle").unwrap().id();

    // The client does not read, so it never answers a ping.
    let d = srv.next_disconnect().await;
    assert_eq!(
        d,
        Disconnect {
            user: "idle".into(),
            conn_id: idle_id,
            reason: DisconnectReason::IdleTimeout,
        }
    );
    assert_eq!(srv.client.metrics().disconnects.idle_timeout, 1);

    // What the server sent: pings, then the close frame.
    ws.get_mut().mute = true;
    let mut pings = 0;
    let close = loop {
        let item = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out reading the idle client's stream");
        match item {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            Some(Ok(WsMessage::Close(f))) => break f,
            other => panic!("expected pings then a close frame, got {other:?}"),
        }
    };
    let close = close.expect("close frame without a code");
    assert_eq!(u16::from(close.code), 4000);
    assert!(pings >= 1, "the server never pinged");
}

// --------------------------------------------------------------- shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_closes_with_1001_and_refuses_new_work() {
    let mut srv = TestServer::start(Options::default()).await;
    let users = ["u1", "u2", "u3"];
    let mut clients = Vec::new();
    let mut ids = HashMap::new();
    for u in users {
        clients.push(srv.connect(u).await);
        ids.insert(srv.client.connection(u).unwrap().id(), u);
    }
    // Several messages each, queued back to back right before the shutdown
    // so that some are most likely still queued when it starts.
    const QUEUED: usize = 20;
    for u in users {
        for i in 0..QUEUED {
            srv.client
                .send(u, msg(&format!("{u}-{i}"), "t", b""))
                .unwrap();
        }
    }

    // Shutdown runs in a spawned task; its first poll (which requests every
    // close) is made here, right after the sends.
    let c = srv.client.clone();
    let mut shutdown = Box::pin(async move { c.shutdown(Duration::from_secs(10)).await });
    assert!(futures::poll!(shutdown.as_mut()).is_pending());
    let shutdown = tokio::spawn(shutdown);

    for (u, ws) in users.iter().zip(clients.iter_mut()) {
        for i in 0..QUEUED {
            assert_eq!(recv(ws).await.id, format!("{u}-{i}"));
        }
        let (code, _) = next_is_close(ws).await;
        assert_eq!(code, 1001, "close code for {u}");
        read_to_end(ws).await;
    }

    let report = tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown did not return")
        .unwrap();
    assert_eq!(report.closed, 3);
    assert_eq!(report.unfinished, 0);

    let mut seen = Vec::new();
    for _ in 0..3 {
        let d = srv.next_disconnect().await;
        assert_eq!(d.reason, DisconnectReason::ServerShutdown, "{d:?}");
        assert_eq!(ids.get(&d.conn_id), Some(&d.user.as_str()));
        seen.push(d.conn_id);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 3);
    {
        let counts = srv.disconnect_counts.lock();
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    }
    assert_eq!(srv.client.user_count(), 0);
    assert_eq!(srv.client.metrics().connections, 0);

    assert_eq!(
        srv.client.send("u1", msg("x", "t", b"")),
        Err(SendError::ShuttingDown)
    );
    match srv.connect_req(srv.request("late")).await {
        Err(status) => assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE),
        Ok(_) => panic!("upgrade accepted after shutdown"),
    }
}

// ------------------------------------------------------ disconnect handlers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_handlers_run_once_per_connection() {
    let mut srv = TestServer::start(Options::default()).await;
    let mut expected: HashMap<u64, (&str, DisconnectReason)> = HashMap::new();
    let id_of = |srv: &TestServer, u: &str| srv.client.connection(u).unwrap().id();

    // Client close.
    let mut alice = srv.connect("alice").await;
    expected.insert(
        id_of(&srv, "alice"),
        ("alice", DisconnectReason::ClientClosed),
    );
    // Kick.
    let mut bob = srv.connect("bob").await;
    expected.insert(id_of(&srv, "bob"), ("bob", DisconnectReason::Kicked));
    // Replaced by a second connection, which the client then closes.
    let mut carol1 = srv.connect("carol").await;
    expected.insert(id_of(&srv, "carol"), ("carol", DisconnectReason::Replaced));
    let mut carol2 = srv.connect("carol").await;
    expected.insert(
        id_of(&srv, "carol"),
        ("carol", DisconnectReason::ClientClosed),
    );
    // Protocol error.
    let mut dave = srv.connect("dave").await;
    expected.insert(
        id_of(&srv, "dave"),
        ("dave", DisconnectReason::ProtocolError),
    );
    assert_eq!(expected.len(), 5, "connection ids are unique");

    assert_eq!(expect_close(&mut carol1).await.0, 4001);
    read_to_end(&mut carol1).await;

    srv.client.kick("bob", "bye").unwrap();
    assert_eq!(expect_close(&mut bob).await.0, 4002);
    read_to_end(&mut bob).await;

    dave.send(WsMessage::text("not binary")).await.unwrap();
    assert_eq!(expect_close(&mut dave).await.0, 1003);
    read_to_end(&mut dave).await;

    alice.close(None).await.unwrap();
    read_to_end(&mut alice).await;
    carol2.close(None).await.unwrap();
    read_to_end(&mut carol2).await;

    for _ in 0..expected.len() {
        let d = srv.next_disconnect().await;
        let (user, reason) = expected
            .get(&d.conn_id)
            .unwrap_or_else(|| panic!("disconnect of an unknown connection: {d:?}"));
        assert_eq!((d.user.as_str(), d.reason), (*user, *reason), "{d:?}");
    }
    srv.wait_until("all connections ended", |c| c.metrics().connections == 0)
        .await;
    assert_eq!(srv.client.user_count(), 0);
    assert_eq!(srv.client.metrics().connections, 0);
    let counts = srv.disconnect_counts.lock().clone();
    let want: HashMap<u64, u32> = expected.keys().map(|&id| (id, 1)).collect();
    assert_eq!(counts, want, "disconnect handler calls per connection");
    assert!(srv.disconnects.try_recv().is_err(), "extra disconnect call");

    let m = srv.client.metrics();
    assert_eq!(m.accepted, 5);
    assert_eq!(m.disconnects.client_closed, 2);
    assert_eq!(m.disconnects.kicked, 1);
    assert_eq!(m.disconnects.replaced, 1);
    assert_eq!(m.disconnects.protocol_error, 1);
}

// ---------------------------------------------------------------- metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_messages_and_bytes() {
    let srv = TestServer::start_with(Options::default(), subscribe_echo).await;
    let m0 = srv.client.metrics();
    assert_eq!(m0.messages_in, 0);
    assert_eq!(m0.messages_out, 0);

    let mut ws = srv.connect("alice").await;
    assert_eq!(srv.client.metrics().connections, 1);

    const N: u64 = 10;
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    for i in 0..N {
        let m = msg(&format!("m{i}"), "echo", &vec![1u8; 100 * i as usize]);
        bytes_in += m.encoded_len() as u64;
        send(&mut ws, &m).await;
        let echo = recv(&mut ws).await;
        assert_eq!(echo.id, m.id);
        bytes_out += echo.encoded_len() as u64;
    }
    // One more, sent by the server.
    srv.client.send("alice", msg("srv", "t", b"abc")).unwrap();
    bytes_out += recv(&mut ws).await.encoded_len() as u64;

    srv.wait_until("messages and bytes counted", |c| {
        let m = c.metrics();
        m.messages_in >= N
            && m.bytes_in >= bytes_in
            && m.messages_out > N
            && m.bytes_out >= bytes_out
    })
    .await;
    let m = srv.client.metrics();
    assert!(m.messages_in >= N, "{m:?}");
    assert!(m.bytes_in >= bytes_in, "{m:?}");
    assert!(m.messages_out > N, "{m:?}");
    assert!(m.bytes_out >= bytes_out, "{m:?}");
}
