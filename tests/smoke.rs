mod common;
use common::*;
use edk_ws::{DisconnectReason, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trip_and_client_close() {
    let mut srv = TestServer::start_with(Options::default(), |c| {
        let c2 = c.clone();
        c.subscribe_message_handler(move |conn, m| {
            let c2 = c2.clone();
            async move {
                c2.send(conn.user_id(), m).unwrap();
            }
        });
    })
    .await;
    let mut ws = srv.connect("alice").await;
    let mut m = msg("1", "echo", b"hello");
    m.sender = "mallory".into();
    send(&mut ws, &m).await;
    let got = recv(&mut ws).await;
    assert_eq!(got.id, "1");
    assert_eq!(got.payload.as_ref(), b"hello");
    assert_eq!(got.sender, "alice");
    assert!(got.timestamp_ms > 0);
    ws.close(None).await.unwrap();
    let d = srv.next_disconnect().await;
    assert_eq!(d.reason, DisconnectReason::ClientClosed);
    assert_eq!(srv.client.user_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_join_publish_ack() {
    use edk_ws::proto::message::Control;
    use edk_ws::proto::{Join, MemberChanged};
    let srv = TestServer::start(Options::default()).await;
    let mut a = srv.connect("a").await;
    let mut b = srv.connect("b").await;
    for (ws, id) in [(&mut a, "j1"), (&mut b, "j2")] {
        let m = edk_ws::Message {
            id: id.into(),
            control: Some(Control::Join(Join {
                room: "r".into(),
                state: [("seat".to_string(), id.to_string())].into(),
            })),
            ..Default::default()
        };
        send(ws, &m).await;
        let r = recv(ws).await;
        assert_eq!(r.id, id);
        assert!(matches!(r.control, Some(Control::Ack(_))), "{r:?}");
    }
    // a sees b join
    let ev = recv(&mut a).await;
    match ev.control {
        Some(Control::MemberChanged(MemberChanged {
            member: Some(m),
            joined: true,
            ..
        })) => {
            assert_eq!(m.user_id, "b");
            assert_eq!(m.state["seat"], "j2");
        }
        other => panic!("expected MemberChanged, got {other:?}"),
    }
    let mut p = msg("p1", "chat", b"hi");
    p.room = "r".into();
    send(&mut b, &p).await;
    let ack = recv(&mut b).await;
    assert!(matches!(ack.control, Some(Control::Ack(_))));
    let got = recv(&mut a).await;
    assert_eq!(
        (got.room.as_str(), got.sender.as_str(), got.payload.as_ref()),
        ("r", "b", &b"hi"[..])
    );
    b.close(None).await.unwrap();
    let left = recv(&mut a).await;
    assert!(matches!(
        left.control,
        Some(Control::MemberChanged(MemberChanged { joined: false, .. }))
    ));
    a.close(None).await.unwrap();
    srv.wait_until("rooms dropped", |c| c.room_count() == 0)
        .await;
}

/// A client that closes first gets the server's close reply (a clean close
/// handshake, `wasClean` in browsers), not a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_gets_a_close_reply() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let srv = TestServer::start(Options::default()).await;
    let mut ws = srv.connect("alice").await;
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("no reply");
    match reply {
        Some(Ok(WsMessage::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("expected the server's close reply, got {other:?}"),
    }
    let end = tokio::time::timeout(WAIT, ws.next()).await.expect("no end");
    assert!(end.is_none(), "stream must end cleanly, got {end:?}");
}
