//! One connection per user: replacement (close 4001) by default, 409 with
//! `kick_out_new_user_conn`, and 200 simultaneous handshakes for one user in
//! both modes without a registry leak.

// The harness's `Event` trips clippy::large_enum_variant (tests/common is
// not ours to edit).
#[allow(clippy::large_enum_variant)]
mod common;
use common::*;

use std::collections::HashSet;
use std::sync::Arc;

use edk_ws::{DisconnectReason, Options, WsClient};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::http::{Request, StatusCode};

const RACERS: usize = 200;

/// Message handlers: `echo` goes back through `WsClient::send` (so it reaches
/// whichever connection is registered for the user); `whoami` is answered on
/// the very connection it came in on, with that connection's id.
fn echo_and_whoami(c: &WsClient) {
    let c2 = c.clone();
    c.subscribe_message_handler(move |conn, m| {
        let c2 = c2.clone();
        async move {
            match m.r#type.as_str() {
                "whoami" => {
                    let _ = conn.send(msg(&m.id, "whoami", conn.id().to_string().as_bytes()));
                }
                _ => {
                    let _ = c2.send(conn.user_id(), m);
                }
            }
        }
    });
}

/// Reads a close handshake to its end so the server side finishes promptly.
async fn read_to_end(ws: &mut Ws) {
    loop {
        if let Event::Ended(_) = next_event(ws).await {
            return;
        }
    }
}

async fn close_and_finish(mut ws: Ws) {
    ws.close(None).await.expect("client close failed");
    read_to_end(&mut ws).await;
}

async fn echo_round_trip(ws: &mut Ws, id: &str) {
    send(ws, &msg(id, "echo", id.as_bytes())).await;
    let got = recv(ws).await;
    assert_eq!(got.id, id);
    assert_eq!(got.payload.as_ref(), id.as_bytes());
}

fn options(kick_out_new_user_conn: bool) -> Options {
    Options::default().with_kick_out_new_user_conn(kick_out_new_user_conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_replaces_the_first() {
    let mut srv = TestServer::start_with(options(false), echo_and_whoami).await;
    let mut old = srv.connect("alice").await;
    echo_round_trip(&mut old, "before").await;
    let old_id = srv.client.connection("alice").unwrap().id();

    let mut new = srv.connect("alice").await;
    let new_id = srv.client.connection("alice").unwrap().id();
    assert_ne!(new_id, old_id);

    let (code, _) = expect_close(&mut old).await;
    assert_eq!(code, 4001);
    read_to_end(&mut old).await;
    let d = srv.next_disconnect().await;
    assert_eq!(
        d,
        Disconnect {
            user: "alice".into(),
            conn_id: old_id,
            reason: DisconnectReason::Replaced,
        }
    );

    // The new connection is the registered one and works.
    echo_round_trip(&mut new, "after").await;
    assert_eq!(srv.client.user_count(), 1);
    assert_eq!(srv.client.connection("alice").unwrap().id(), new_id);
    let m = srv.client.metrics();
    assert_eq!(m.disconnects.replaced, 1);
    assert_eq!(m.connections, 1);

    // The old connection's end did not unregister the new one; closing the
    // new one is the only other disconnect.
    close_and_finish(new).await;
    let d = srv.next_disconnect().await;
    assert_eq!(d.conn_id, new_id);
    assert_eq!(d.reason, DisconnectReason::ClientClosed);
    {
        let counts = srv.disconnect_counts.lock();
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert_eq!(counts.get(&old_id), Some(&1));
        assert_eq!(counts.get(&new_id), Some(&1));
    }
    assert_eq!(srv.client.user_count(), 0);
    srv.wait_until("no open connection", |c| c.metrics().connections == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_out_mode_refuses_the_new_connection_with_409() {
    let mut srv = TestServer::start_with(options(true), echo_and_whoami).await;
    let mut old = srv.connect("alice").await;
    let old_id = srv.client.connection("alice").unwrap().id();

    assert_eq!(
        srv.connect_req(srv.request("alice")).await.err(),
        Some(StatusCode::CONFLICT)
    );

    // The old connection is untouched: still registered, still echoes.
    echo_round_trip(&mut old, "still-here").await;
    assert_eq!(srv.client.connection("alice").unwrap().id(), old_id);
    let m = srv.client.metrics();
    assert_eq!(m.refused.conflict, 1);
    assert_eq!(m.accepted, 1);
    assert_eq!(m.connections, 1);
    assert_eq!(m.disconnects.replaced, 0);
    assert!(srv.disconnect_counts.lock().is_empty());

    close_and_finish(old).await;
    let d = srv.next_disconnect().await;
    assert_eq!(d.conn_id, old_id);
    assert_eq!(d.reason, DisconnectReason::ClientClosed);
    assert_eq!(srv.disconnect_counts.lock().len(), 1);
    assert_eq!(srv.client.user_count(), 0);
}

/// Starts `RACERS` handshakes for `user` at once; their outcomes in order.
async fn race_handshakes(srv: &TestServer, user: &str) -> Vec<Result<Ws, StatusCode>> {
    let barrier = Arc::new(Barrier::new(RACERS));
    let reqs: Vec<Request<()>> = (0..RACERS).map(|_| srv.request(user)).collect();
    let tasks: Vec<_> = reqs
        .into_iter()
        .map(|req| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
                    .await
                    .expect("handshake timed out")
                {
                    Ok((ws, _)) => Ok(ws),
                    Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status()),
                    Err(e) => panic!("handshake failed without a status: {e}"),
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(RACERS);
    for t in tasks {
        out.push(t.await.expect("handshake task panicked"));
    }
    out
}

enum Whoami {
    /// Answered: the connection id the server reported, and the client.
    Reply(u64, Box<Ws>),
    /// Closed by the server with this code (handshake then read to the end).
    Closed(u16),
}

/// Sends `whoami` and reads what comes back: a reply or a close frame.
async fn whoami(mut ws: Ws) -> Whoami {
    // A replaced client may already have its close frame waiting; a failed
    // write is fine, what it reads next decides.
    let _ = futures::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Binary(bytes::Bytes::from(
            prost::Message::encode_to_vec(&msg("w", "whoami", b"")),
        )),
    )
    .await;
    match next_event(&mut ws).await {
        Event::Msg(m) => {
            assert_eq!(m.r#type, "whoami");
            let id = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
            Whoami::Reply(id, Box::new(ws))
        }
        Event::Close(Some((code, _))) => {
            read_to_end(&mut ws).await;
            Whoami::Closed(code)
        }
        other => panic!("expected a whoami reply or a close frame, got {other:?}"),
    }
}

/// Every accepted connection's disconnect handler ran exactly once, and
/// nothing is left registered or open.
async fn assert_no_leak(srv: &mut TestServer, accepted: usize) -> Vec<Disconnect> {
    let mut all = Vec::with_capacity(accepted);
    for _ in 0..accepted {
        all.push(srv.next_disconnect().await);
    }
    let ids: HashSet<u64> = all.iter().map(|d| d.conn_id).collect();
    assert_eq!(ids.len(), accepted, "a connection was reported twice");
    {
        let counts = srv.disconnect_counts.lock();
        assert_eq!(counts.len(), accepted);
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    }
    assert_eq!(srv.client.metrics().accepted, accepted as u64);
    assert_eq!(srv.client.user_count(), 0, "registry leak");
    // The open-connections gauge drops right after the disconnect handlers.
    srv.wait_until("no open connection", |c| c.metrics().connections == 0)
        .await;
    assert!(srv.client.connected_users().is_empty());
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_for_one_user_replace_mode() {
    let mut srv = TestServer::start_with(options(false), echo_and_whoami).await;
    let results = race_handshakes(&srv, "racer").await;
    let clients: Vec<Ws> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|s| panic!("handshake refused with {s} in replace mode")))
        .collect();

    // Every handshake has been answered, so every admission is done: exactly
    // one connection is registered and all the others are closing.
    assert_eq!(srv.client.user_count(), 1);
    let survivor_id = srv.client.connection("racer").unwrap().id();

    let tasks: Vec<_> = clients
        .into_iter()
        .map(|ws| tokio::spawn(whoami(ws)))
        .collect();
    let mut replies = Vec::new();
    let mut close_codes = Vec::new();
    for t in tasks {
        match t.await.expect("whoami task panicked") {
            Whoami::Reply(id, ws) => replies.push((id, ws)),
            Whoami::Closed(code) => close_codes.push(code),
        }
    }
    assert_eq!(replies.len(), 1, "exactly one connection must answer");
    assert_eq!(close_codes.len(), RACERS - 1);
    assert!(
        close_codes.iter().all(|&c| c == 4001),
        "close codes: {close_codes:?}"
    );
    let (id, ws) = replies.pop().unwrap();
    assert_eq!(id, survivor_id);
    assert_eq!(srv.client.connection("racer").unwrap().id(), survivor_id);

    close_and_finish(*ws).await;
    let all = assert_no_leak(&mut srv, RACERS).await;
    for d in &all {
        assert_eq!(d.user, "racer");
        let expected = if d.conn_id == survivor_id {
            DisconnectReason::ClientClosed
        } else {
            DisconnectReason::Replaced
        };
        assert_eq!(d.reason, expected, "connection {}", d.conn_id);
    }
    assert!(all.iter().any(|d| d.conn_id == survivor_id));
    assert_eq!(
        srv.client.metrics().disconnects.replaced,
        (RACERS - 1) as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_for_one_user_kick_out_mode() {
    let mut srv = TestServer::start_with(options(true), echo_and_whoami).await;
    let results = race_handshakes(&srv, "racer").await;
    let mut accepted = Vec::new();
    let mut statuses = Vec::new();
    for r in results {
        match r {
            Ok(ws) => accepted.push(ws),
            Err(s) => statuses.push(s),
        }
    }
    assert_eq!(accepted.len(), 1, "exactly one 101");
    assert_eq!(statuses.len(), RACERS - 1);
    assert!(
        statuses.iter().all(|&s| s == StatusCode::CONFLICT),
        "statuses: {statuses:?}"
    );
    assert_eq!(srv.client.user_count(), 1);
    let survivor_id = srv.client.connection("racer").unwrap().id();

    let Whoami::Reply(id, ws) = whoami(accepted.pop().unwrap()).await else {
        panic!("the accepted connection was closed");
    };
    assert_eq!(id, survivor_id);
    let m = srv.client.metrics();
    assert_eq!(m.refused.conflict, (RACERS - 1) as u64);
    assert_eq!(m.accepted, 1);

    close_and_finish(*ws).await;
    let all = assert_no_leak(&mut srv, 1).await;
    assert_eq!(all[0].conn_id, survivor_id);
    assert_eq!(all[0].reason, DisconnectReason::ClientClosed);
}
