//! The way in: binary frame → decoded `Message` → message handlers, and the
//! frames that end a connection with a protocol error (1003, 1007, 1009).

mod common;
use common::*;

use std::sync::Arc;

use bytes::Bytes;
use edk_ws::{DisconnectReason, Message, Options, WsClient};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Subscribes a handler that echoes every message back to its sender's
/// connection, except messages whose type starts with `panic`.
fn subscribe_echo(c: &WsClient) {
    let c2 = c.clone();
    c.subscribe_message_handler(move |conn, m: Message| {
        let c2 = c2.clone();
        async move {
            if !m.r#type.starts_with("panic") {
                c2.send(conn.user_id(), m).expect("echo send failed");
            }
        }
    });
}

/// Receives from a channel fed by handlers, bounded by [`WAIT`].
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for a handler call")
        .expect("handler channel closed")
}

/// Sends a message on `ws` and waits for its echo.
async fn round_trip(ws: &mut Ws, id: &str) -> Message {
    send(ws, &msg(id, "echo", id.as_bytes())).await;
    let got = recv(ws).await;
    assert_eq!(got.id, id, "echo of another message");
    assert_eq!(got.payload.as_ref(), id.as_bytes());
    got
}

/// Reads until the stream ends, so that the client answers the server's close
/// frame (tungstenite sends its close reply on the next read).
async fn read_to_end(ws: &mut Ws) {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => panic!("timed out waiting for the stream to end"),
            Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    handler: &'static str,
    user: String,
    conn_id: u64,
    msg_id: String,
    sender: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_run_in_subscription_order_with_connection_identity() {
    let (tx, mut rx) = mpsc::unbounded_channel::<Call>();
    let srv = TestServer::start_with(Options::default(), |c| {
        for name in ["h1", "h2"] {
            let tx = tx.clone();
            c.subscribe_message_handler(move |conn, m: Message| {
                let tx = tx.clone();
                async move {
                    // An await inside: the next handler must still wait for
                    // this one to finish.
                    tokio::task::yield_now().await;
                    let _ = tx.send(Call {
                        handler: name,
                        user: conn.user_id().to_owned(),
                        conn_id: conn.id(),
                        msg_id: m.id.clone(),
                        sender: m.sender.clone(),
                    });
                }
            });
        }
    })
    .await;
    drop(tx);

    let mut alice = srv.connect("alice").await;
    let mut bob = srv.connect("bob").await;
    let alice_id = srv.client.connection("alice").unwrap().id();
    let bob_id = srv.client.connection("bob").unwrap().id();
    assert_ne!(alice_id, bob_id);

    const N: usize = 50;
    for i in 0..N {
        send(&mut alice, &msg(&format!("a{i}"), "t", b"x")).await;
        send(&mut bob, &msg(&format!("b{i}"), "t", b"x")).await;
    }

    let (mut from_alice, mut from_bob) = (Vec::new(), Vec::new());
    for _ in 0..4 * N {
        let call = next(&mut rx).await;
        match call.user.as_str() {
            "alice" => from_alice.push(call),
            "bob" => from_bob.push(call),
            other => panic!("handler called for unknown user {other}"),
        }
    }

    for (user, conn_id, prefix, calls) in [
        ("alice", alice_id, "a", &from_alice),
        ("bob", bob_id, "b", &from_bob),
    ] {
        let expected: Vec<Call> = (0..N)
            .flat_map(|i| {
                ["h1", "h2"].map(|h| Call {
                    handler: h,
                    user: user.to_owned(),
                    conn_id,
                    msg_id: format!("{prefix}{i}"),
                    sender: user.to_owned(),
                })
            })
            .collect();
        assert_eq!(calls, &expected, "calls for {user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handler_is_awaited_and_unsubscribe_stops_it() {
    let (started_tx, mut started) = mpsc::unbounded_channel::<String>();
    let (permit_tx, permit_rx) = mpsc::unbounded_channel::<()>();
    let permit_rx = Arc::new(tokio::sync::Mutex::new(permit_rx));
    let (second_tx, mut second) = mpsc::unbounded_channel::<String>();

    let mut first_sub = None;
    let srv = TestServer::start_with(Options::default(), |c| {
        // First handler: records that it started, then awaits a permit that
        // the test hands out.
        first_sub = Some(c.subscribe_message_handler(move |_conn, m: Message| {
            let started_tx = started_tx.clone();
            let permit_rx = permit_rx.clone();
            async move {
                let _ = started_tx.send(m.id.clone());
                permit_rx.lock().await.recv().await;
            }
        }));
        // Second handler: records, then echoes.
        let c2 = c.clone();
        c.subscribe_message_handler(move |conn, m: Message| {
            let second_tx = second_tx.clone();
            let c2 = c2.clone();
            async move {
                let _ = second_tx.send(m.id.clone());
                c2.send(conn.user_id(), m).unwrap();
            }
        });
    })
    .await;

    let mut ws = srv.connect("alice").await;
    send(&mut ws, &msg("1", "t", b"")).await;
    assert_eq!(next(&mut started).await, "1");
    // The first handler is parked on its await: the second one has not run.
    assert!(
        second.try_recv().is_err(),
        "second handler ran before the first one's future completed"
    );
    permit_tx.send(()).unwrap();
    assert_eq!(next(&mut second).await, "1");
    assert_eq!(recv(&mut ws).await.id, "1");

    assert!(first_sub.take().unwrap().unsubscribe());

    // No permit is handed out any more: if the first handler still ran, it
    // would block this connection and the echo would never come.
    send(&mut ws, &msg("2", "t", b"")).await;
    assert_eq!(next(&mut second).await, "2");
    assert_eq!(recv(&mut ws).await.id, "2");
    assert!(
        started.try_recv().is_err(),
        "unsubscribed handler was called"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_does_not_stall_other_connections() {
    let release = Arc::new(Notify::new());
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let r2 = release.clone();
    let srv = TestServer::start_with(Options::default(), move |c| {
        let c2 = c.clone();
        c.subscribe_message_handler(move |conn, m: Message| {
            let c2 = c2.clone();
            let release = r2.clone();
            let entered_tx = entered_tx.clone();
            async move {
                if conn.user_id() == "slow" {
                    let _ = entered_tx.send(());
                    release.notified().await;
                }
                c2.send(conn.user_id(), m).unwrap();
            }
        });
    })
    .await;

    let mut slow = srv.connect("slow").await;
    let mut fast = srv.connect("fast").await;

    send(&mut slow, &msg("s1", "t", b"")).await;
    next(&mut entered).await;
    // The slow handler is parked until `release`: "fast" is still served.
    for i in 0..5 {
        round_trip(&mut fast, &format!("f{i}")).await;
    }
    release.notify_one();
    assert_eq!(recv(&mut slow).await.id, "s1");
}

/// A handler that panics on `panic-sync` (when called) and `panic-async`
/// (in its future); with `echo`, it sends every other message back.
fn subscribe_panicking(c: &WsClient, echo: bool) {
    c.subscribe_message_handler(move |conn, m: Message| {
        if m.r#type == "panic-sync" {
            panic!("test: panic in the handler body");
        }
        async move {
            if m.r#type == "panic-async" {
                tokio::task::yield_now().await;
                panic!("test: panic in the handler future");
            }
            if echo {
                conn.send(m).expect("echo send failed");
            }
        }
    });
}

/// Both kinds of panic are caught and counted, and the connection lives.
async fn both_panics_are_caught(srv: &TestServer, ws: &mut Ws) {
    assert_eq!(srv.client.metrics().handler_panics, 0);
    send(ws, &msg("p1", "panic-sync", b"")).await;
    round_trip(ws, "after-sync").await;
    send(ws, &msg("p2", "panic-async", b"")).await;
    round_trip(ws, "after-async").await;
    srv.wait_until("two handler panics", |c| c.metrics().handler_panics >= 2)
        .await;
    assert_eq!(srv.client.metrics().handler_panics, 2);
    assert!(srv.client.is_connected("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handlers_are_caught_and_counted() {
    let srv = TestServer::start_with(Options::default(), |c| {
        subscribe_panicking(c, false);
        subscribe_echo(c);
    })
    .await;
    let mut ws = srv.connect("alice").await;
    both_panics_are_caught(&srv, &mut ws).await;

    // The server keeps serving: a new connection works too.
    let mut bob = srv.connect("bob").await;
    round_trip(&mut bob, "bob-1").await;
    round_trip(&mut ws, "alice-last").await;
}

/// With a single message handler, its future is awaited without a wrapper
/// of the module's own: a panic must still be caught and counted there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_panicking_handler_is_caught_and_counted() {
    let srv = TestServer::start_with(Options::default(), |c| subscribe_panicking(c, true)).await;
    let mut ws = srv.connect("alice").await;
    both_panics_are_caught(&srv, &mut ws).await;
    round_trip(&mut ws, "alice-last").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_is_overwritten_and_timestamp_stamped() {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let srv = TestServer::start_with(Options::default(), |c| {
        c.subscribe_message_handler(move |_conn, m: Message| {
            let _ = tx.send(m);
            async {}
        });
        subscribe_echo(c);
    })
    .await;

    let mut ws = srv.connect("alice").await;
    let mut m = msg("1", "t", b"payload");
    m.sender = "mallory".into();
    m.timestamp_ms = 1;
    m.metadata.insert("k".into(), "v".into());
    let before = now_ms();
    send(&mut ws, &m).await;

    let got = next(&mut rx).await;
    let after = now_ms();
    assert_eq!(got.sender, "alice");
    assert!(
        (before..=after).contains(&got.timestamp_ms),
        "timestamp {} not within [{before}, {after}]",
        got.timestamp_ms
    );
    assert_eq!(got.id, "1");
    assert_eq!(got.r#type, "t");
    assert_eq!(got.payload.as_ref(), b"payload");
    assert_eq!(got.metadata.get("k").map(String::as_str), Some("v"));

    // The echo carries the origin user id, not the claimed one.
    let echo = recv(&mut ws).await;
    assert_eq!(echo.sender, "alice");
    assert!(echo.timestamp_ms >= before);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Connects a bystander and an offender, has the offender send `frame`, and
/// checks: the offender gets a close frame with `code`, its disconnect reason
/// is `ProtocolError`, and the bystander is still served.
async fn assert_protocol_error(frame: WsMessage, code: u16) {
    let opts = Options::default().with_max_message_size(1024);
    let mut srv = TestServer::start_with(opts, subscribe_echo).await;
    let mut bystander = srv.connect("bystander").await;
    let mut bad = srv.connect("bad").await;
    let bad_id = srv.client.connection("bad").unwrap().id();
    round_trip(&mut bystander, "before").await;

    bad.send(frame).await.expect("client send failed");
    let (got, _reason) = expect_close(&mut bad).await;
    assert_eq!(got, code, "close code");
    read_to_end(&mut bad).await;
    drop(bad);

    let d = srv.next_disconnect().await;
    assert_eq!(
        d,
        Disconnect {
            user: "bad".into(),
            conn_id: bad_id,
            reason: DisconnectReason::ProtocolError,
        }
    );
    assert!(!srv.client.is_connected("bad"));
    assert_eq!(srv.client.metrics().disconnects.protocol_error, 1);

    assert!(srv.client.is_connected("bystander"));
    round_trip(&mut bystander, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_frame_closes_with_1003() {
    assert_protocol_error(WsMessage::text("hello"), 1003).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_binary_closes_with_1007() {
    assert_protocol_error(
        WsMessage::Binary(Bytes::from_static(&[0xff, 0xff, 0xff])),
        1007,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_the_limit_closes_with_1009() {
    use prost::Message as _;
    // A well-formed message: only its size is wrong.
    let big = msg("big", "echo", &[7u8; 4096]);
    let frame = Bytes::from(big.encode_to_vec());
    assert!(frame.len() >= 4096);
    assert_protocol_error(WsMessage::Binary(frame), 1009).await;
}
