//! Faults found in review: each must leave the server serving and the
//! caller informed.
mod common;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use common::*;
use edk_ws::proto::error::Code;
use edk_ws::proto::message::Control;
use edk_ws::proto::Join;
use edk_ws::{
    async_trait, Conn, JoinDecision, Message, Options, RoomPolicy, RoomSettings, SendError,
    WsClient,
};

fn join(id: &str, room: &str) -> Message {
    Message {
        id: id.into(),
        control: Some(Control::Join(Join {
            room: room.into(),
            state: HashMap::new(),
        })),
        ..Default::default()
    }
}

/// The reply with `id`, skipping events.
async fn reply(ws: &mut Ws, id: &str) -> Message {
    loop {
        let m = recv(ws).await;
        if m.id == id {
            return m;
        }
    }
}

struct Faulty {
    client: Arc<OnceLock<WsClient>>,
}

#[async_trait]
impl RoomPolicy for Faulty {
    async fn on_join(
        &self,
        _conn: &Conn,
        room: &str,
        _state: &mut HashMap<String, String>,
    ) -> JoinDecision {
        if room == "boom" {
            panic!("policy bug");
        }
        JoinDecision::Allow { read_only: false }
    }

    fn room_settings(&self, _room: &str, defaults: RoomSettings) -> RoomSettings {
        // Calls back into the client while a room is being created.
        if let Some(c) = self.client.get() {
            let _ = (c.room_count(), c.rooms(), c.members("other"));
        }
        defaults
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_gets_an_internal_error_reply_and_the_connection_lives() {
    let cell = Arc::new(OnceLock::new());
    let c2 = cell.clone();
    let srv = TestServer::start_with(Options::default(), move |c| {
        let _ = c2.set(c.clone());
        c.set_room_policy(Faulty { client: c2.clone() });
    })
    .await;
    let mut ws = srv.connect("alice").await;
    send(&mut ws, &join("1", "boom")).await;
    match reply(&mut ws, "1").await.control {
        Some(Control::Error(e)) => assert_eq!(e.code, Code::Internal as i32),
        other => panic!("expected an INTERNAL error, got {other:?}"),
    }
    // Same connection, next request: served (and room_settings called back
    // into the client without deadlocking).
    send(&mut ws, &join("2", "fine")).await;
    assert!(matches!(
        reply(&mut ws, "2").await.control,
        Some(Control::Ack(_))
    ));
    assert_eq!(srv.client.rooms(), vec!["fine".to_string()]);
    assert_eq!(srv.client.metrics().handler_panics, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_bigger_than_the_queue_is_refused_without_closing() {
    let options = Options::default().with_send_queue_max_bytes(1024);
    let srv = TestServer::start(options).await;
    let mut ws = srv.connect("alice").await;
    let big = msg("big", "t", &[0u8; 2048]);
    assert_eq!(srv.client.send("alice", big), Err(SendError::TooLarge));
    srv.client.send("alice", msg("small", "t", b"ok")).unwrap();
    assert_eq!(recv(&mut ws).await.id, "small");
    assert!(srv.client.is_connected("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicking_a_closing_connection_says_so_and_keeps_the_first_reason() {
    let mut srv = TestServer::start(Options::default()).await;
    let mut ws = srv.connect("alice").await;
    srv.client.kick("alice", "first").unwrap();
    assert_eq!(srv.client.kick("alice", "second"), Err(SendError::Closed));
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (4002, "first"));
    drop(ws);
    assert_eq!(
        srv.next_disconnect().await.reason,
        edk_ws::DisconnectReason::Kicked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_during_shutdown_reports_every_recipient() {
    let options = Options::default().with_close_timeout(std::time::Duration::from_secs(30));
    let srv = TestServer::start(options).await;
    let _a = srv.connect("a").await;
    let _b = srv.connect("b").await;
    let client = srv.client.clone();
    let shutdown =
        tokio::spawn(async move { client.shutdown(std::time::Duration::from_secs(10)).await });
    srv.wait_until("shutdown started", |c| {
        c.send("a", msg("x", "t", b"")) == Err(SendError::ShuttingDown)
    })
    .await;
    let report = srv.client.broadcast(msg("y", "t", b""));
    assert!(!report.is_complete());
    assert!(report
        .failed
        .iter()
        .all(|(_, e)| *e == SendError::ShuttingDown));
    drop((_a, _b));
    shutdown.await.unwrap();
}
