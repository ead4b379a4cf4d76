//! Typed routes over real sockets: the payload decoded as the application's
//! prost type, the reply with the request's id, errors as `Error` replies,
//! fire-and-forget routes, the order routes → message handlers, and the
//! routes' schemas in the AsyncAPI document.

#[path = "../examples/app/chat.rs"]
mod chat;
mod common;
mod rooms_util;

use bytes::Bytes;
use edk_ws::proto::error::Code;
use edk_ws::{Options, RouteError, WsClient};
use prost::Message as _;
use tokio::sync::mpsc;

use common::*;
use rooms_util::*;

fn chat_msg(id: &str, ty: &str, payload: Vec<u8>) -> edk_ws::Message {
    msg(id, ty, &payload)
}

/// `chat.send` replies with the text's length; "fail" → FORBIDDEN; "panic"
/// panics. `chat.typing` is fire-and-forget. Every message reaching the
/// plain handlers is reported on the channel.
fn setup(c: &WsClient, seen: mpsc::UnboundedSender<String>) {
    c.route("chat.send", |_conn, req: chat::SendRequest| async move {
        match req.text.as_str() {
            "fail" => Err(RouteError::new(Code::Forbidden, "not you")),
            "panic" => panic!("route bug (on purpose)"),
            t => Ok(chat::SendReply {
                seq: t.len() as u64,
            }),
        }
    });
    c.route_no_reply(
        "chat.typing",
        |_conn, _t: chat::Typing| async move { Ok(()) },
    );
    c.subscribe_message_handler(move |_conn, m| {
        let _ = seen.send(m.r#type.clone());
        async {}
    });
}

#[tokio::test]
async fn a_typed_route_decodes_replies_and_refuses() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    let srv = TestServer::start_with(Options::default(), |c| setup(c, tx)).await;
    let mut a = Peer::connect(&srv, "alice").await;

    // Ok(Resp): same id and type, Resp in the payload.
    let req = chat::SendRequest {
        text: "hello".into(),
    };
    a.send(&chat_msg("s1", "chat.send", req.encode_to_vec()))
        .await;
    let r = a.next().await;
    assert_eq!(
        (r.id.as_str(), r.r#type.as_str(), r.control.is_none()),
        ("s1", "chat.send", true)
    );
    assert_eq!(chat::SendReply::decode(r.payload).unwrap().seq, 5);
    assert_eq!(r.sender, "", "a reply comes from the server");

    // Undecodable payload: INVALID_REQUEST with the id; the connection stays.
    a.send(&chat_msg("s2", "chat.send", vec![0xff, 0xff, 0xff]))
        .await;
    let r = a.next().await;
    assert_eq!(r.id, "s2");
    assert_error(&r, Code::InvalidRequest);

    // Err(RouteError): its code and message.
    let req = chat::SendRequest {
        text: "fail".into(),
    };
    a.send(&chat_msg("s3", "chat.send", req.encode_to_vec()))
        .await;
    let r = a.next().await;
    assert_eq!(r.id, "s3");
    assert_error(&r, Code::Forbidden);
    match &r.control {
        Some(edk_ws::proto::message::Control::Error(e)) => assert_eq!(e.message, "not you"),
        other => panic!("{other:?}"),
    }

    // A panicking handler: INTERNAL, counted, the connection stays.
    let req = chat::SendRequest {
        text: "panic".into(),
    };
    a.send(&chat_msg("s4", "chat.send", req.encode_to_vec()))
        .await;
    let r = a.next().await;
    assert_eq!(r.id, "s4");
    assert_error(&r, Code::Internal);
    assert_eq!(srv.client.metrics().handler_panics, 1);

    // Fire-and-forget: nothing back on success; the next reply is s5's.
    let t = chat::Typing { active: true };
    a.send(&chat_msg("t1", "chat.typing", t.encode_to_vec()))
        .await;
    let req = chat::SendRequest { text: "ab".into() };
    a.send(&chat_msg("s5", "chat.send", req.encode_to_vec()))
        .await;
    let r = a.next().await;
    assert_eq!(r.id, "s5", "chat.typing must not be answered: {r:?}");
    // ... but an undecodable one is refused.
    a.send(&chat_msg("t2", "chat.typing", vec![0xff])).await;
    let r = a.next().await;
    assert_eq!(r.id, "t2");
    assert_error(&r, Code::InvalidRequest);

    // Routed types never reach the message handlers; other types do.
    a.send(&msg("o1", "other", b"x")).await;
    let first = tokio::time::timeout(WAIT, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, "other");

    // Without its route, a type goes to the message handlers again.
    assert!(srv.client.remove_route("chat.send"));
    assert!(!srv.client.remove_route("chat.send"));
    a.send(&chat_msg("s6", "chat.send", Bytes::new().to_vec()))
        .await;
    let next = tokio::time::timeout(WAIT, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, "chat.send");
    assert!(srv.client.metrics().handling_duration.routes.count >= 1);
}

#[tokio::test]
async fn routes_are_in_the_asyncapi_document_with_their_schemas() {
    let (tx, _seen) = mpsc::unbounded_channel();
    let srv = TestServer::start_with(Options::default(), |c| setup(c, tx)).await;
    let doc: serde_json::Value = serde_json::from_str(&srv.client.asyncapi()).unwrap();
    let op = &doc["operations"]["route.chat.send"];
    assert_eq!(op["action"], "receive");
    let replies: Vec<&str> = op["reply"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["$ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        replies,
        [
            "#/channels/ws/messages/chat.send.reply",
            "#/channels/ws/messages/error"
        ]
    );
    let typing = &doc["operations"]["route.chat.typing"];
    assert_eq!(
        typing["reply"]["messages"].as_array().unwrap().len(),
        1,
        "errors only"
    );
    let schema = &doc["components"]["schemas"]["edk.examples.chat.SendRequest"];
    assert_eq!(schema["properties"]["text"]["type"], "string");
    assert_eq!(
        schema["properties"]["text"]["description"],
        "The text, 1 to 500 characters."
    );
    let m = &doc["components"]["messages"]["chat.send"];
    assert!(m["x-proto"].as_str().unwrap().contains(
        "message SendRequest {\n  // The text, 1 to 500 characters.\n  string text = 1;\n}"
    ));
    assert!(doc["channels"]["ws"]["messages"]["chat.send.reply"].is_object());
    // Without routes, none.
    srv.client.remove_route("chat.send");
    srv.client.remove_route("chat.typing");
    let doc: serde_json::Value = serde_json::from_str(&srv.client.asyncapi()).unwrap();
    assert!(doc["operations"]
        .as_object()
        .unwrap()
        .keys()
        .all(|k| !k.starts_with("route.")));
}
