//! Rooms over real sockets: requests and their replies, publish, member
//! events, state, policies, the server API, limits, leaving on disconnect
//! and member-event batching in large rooms.
// The shared harness is not ours to change; its `Event` enum trips this lint.
#[allow(clippy::large_enum_variant)]
mod common;
mod rooms_util;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use edk_ws::proto::error::Code;
use edk_ws::proto::message::Control;
use edk_ws::proto::{Ack, UpdateState};
use edk_ws::{Conn, JoinDecision, Message, Options, RoomError, RoomPolicy, StateChange, Status};
use rooms_util::*;

fn options(f: impl FnOnce(&mut Options)) -> Options {
    let mut o = Options::default();
    f(&mut o);
    o
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The policy used by the policy tests:
/// - join: room "vip" is refused; an "admin" key in the member state is
///   dropped and "role" is set; users named "guest-*" are read-only;
/// - state: the room key "locked" may not be set or removed by clients;
///   a "title" is upper-cased and stamped with "edited_by";
/// - publish: messages of type "shout" are refused.
struct Rules;

#[edk_ws::async_trait]
impl RoomPolicy for Rules {
    async fn on_join(
        &self,
        conn: &Conn,
        room: &str,
        state: &mut HashMap<String, String>,
    ) -> JoinDecision {
        if room == "vip" {
            return JoinDecision::Deny("members only".into());
        }
        let guest = conn.user_id().starts_with("guest-");
        state.remove("admin");
        let role = if guest { "guest" } else { "member" };
        state.insert("role".into(), role.into());
        JoinDecision::Allow { read_only: guest }
    }

    async fn on_state_change(
        &self,
        conn: &Conn,
        _room: &str,
        change: &mut StateChange,
    ) -> Result<(), String> {
        if change.room_changes.contains_key("locked")
            || change.room_removed.iter().any(|k| k == "locked")
        {
            return Err("locked is owned by the server".into());
        }
        if let Some(t) = change.room_changes.get("title").cloned() {
            change.room_changes.insert("title".into(), t.to_uppercase());
            change
                .room_changes
                .insert("edited_by".into(), conn.user_id().into());
        }
        Ok(())
    }

    async fn on_publish(&self, _conn: &Conn, _room: &str, msg: &Message) -> Result<(), String> {
        if msg.r#type == "shout" {
            return Err("no shouting".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Ack,
    Members,
    Activities,
    Err(Code),
}

fn kind(m: &Message) -> Want {
    match &m.control {
        Some(Control::Ack(_)) => Want::Ack,
        Some(Control::Members(_)) => Want::Members,
        Some(Control::Activities(_)) => Want::Activities,
        Some(Control::Error(_)) => Want::Err(error_code(m).unwrap()),
        _ => panic!("not a reply: {m:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_exactly_one_reply() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let requests = vec![
        (join_req("q1", "r", &[("seat", "1")]), Want::Ack),
        (list_req("q2", "r"), Want::Members),
        (
            update_req(
                "q3",
                UpdateState {
                    room: "r".into(),
                    room_changes: state(&[("topic", "chess")]),
                    member_changes: state(&[("ready", "yes")]),
                    ..Default::default()
                },
            ),
            Want::Ack,
        ),
        (publish_req("q4", "r", "chat", b"hi"), Want::Ack),
        (set_activity_req("q5", Status::Online, ""), Want::Ack),
        (list_activities_req("q6"), Want::Activities),
        (leave_req("q7", "elsewhere"), Want::Err(Code::NotAMember)),
        (list_req("q8", "ghost"), Want::Err(Code::NotFound)),
        (join_req("q9", "", &[]), Want::Err(Code::InvalidRequest)),
        (
            ctl("q10", Control::Ack(Ack {})),
            Want::Err(Code::InvalidRequest),
        ),
        (
            update_req(
                "q11",
                UpdateState {
                    room: "r".into(),
                    ..Default::default()
                },
            ),
            Want::Err(Code::InvalidRequest),
        ),
        (
            publish_req("q12", "ghost", "chat", b"x"),
            Want::Err(Code::NotAMember),
        ),
        (leave_req("q13", "r"), Want::Ack),
        // The room emptied and is gone.
        (list_req("q14", "r"), Want::Err(Code::NotFound)),
    ];
    // Pipelined: everything is sent before any reply is read.
    for (m, _) in &requests {
        a.send(m).await;
    }
    a.send(&list_activities_req("end")).await;
    let mut replies: HashMap<String, Vec<Want>> = HashMap::new();
    loop {
        let m = a.next().await;
        if m.id.is_empty() {
            continue; // an event, not a reply
        }
        let done = m.id == "end";
        replies.entry(m.id.clone()).or_default().push(kind(&m));
        if done {
            break;
        }
    }
    for (m, want) in &requests {
        assert_eq!(
            replies.remove(&m.id),
            Some(vec![*want]),
            "replies to {}",
            m.id
        );
    }
    replies.remove("end");
    assert!(replies.is_empty(), "replies with unknown ids: {replies:?}");
    assert_eq!(srv.client.room_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_other_members_stamped_by_the_server() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    let mut c = Peer::connect(&srv, "c").await;
    let mut d = Peer::connect(&srv, "d").await;
    for p in [&mut a, &mut b, &mut c] {
        p.join("r", &[]).await;
    }
    let mut m = publish_req("p1", "r", "chat", b"hello");
    m.sender = "mallory".into();
    m.timestamp_ms = 1;
    m.metadata.insert("k".into(), "v".into());
    assert_ack(&b.request(m).await);
    srv.client.publish("r", marker("after")).unwrap();
    for p in [&mut a, &mut c] {
        let (before, _) = p.until_marker().await;
        let chats: Vec<&Message> = before.iter().filter(|m| m.r#type == "chat").collect();
        assert_eq!(chats.len(), 1, "{} got {chats:?}", p.user);
        let got = chats[0];
        assert_eq!(got.room, "r");
        assert_eq!(got.sender, "b", "the sender is stamped by the server");
        assert!(
            got.timestamp_ms > 1_600_000_000_000,
            "timestamp stamped: {got:?}"
        );
        assert_eq!(got.payload.as_ref(), b"hello");
        assert_eq!(got.metadata.get("k").map(String::as_str), Some("v"));
        assert!(got.control.is_none());
    }
    // Not echoed to the sender.
    let (before, _) = b.until_marker().await;
    b.assert_none(&before, "its own publish", |m| m.r#type == "chat");
    // Not delivered outside the room.
    srv.client.send("d", marker("d")).unwrap();
    let (before, _) = d.until_marker().await;
    assert!(before.is_empty(), "a non-member got {before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_echo_delivers_to_the_sender_too() {
    let srv = TestServer::start(options(|o| o.room_publish_echo = true)).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    a.join("r", &[]).await;
    b.join("r", &[]).await;
    assert_ack(&b.request(publish_req("p1", "r", "chat", b"echo")).await);
    for p in [&mut b, &mut a] {
        let got = p.wait_for("the publish", |m| m.r#type == "chat").await;
        assert_eq!(
            (got.room.as_str(), got.sender.as_str(), got.payload.as_ref()),
            ("r", "b", &b"echo"[..])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_by_a_non_member_is_refused_and_not_delivered() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    let mut c = Peer::connect(&srv, "c").await;
    a.join("r", &[]).await;
    b.join("r", &[]).await;
    let r = c.request(publish_req("p1", "r", "chat", b"sneaky")).await;
    assert_error(&r, Code::NotAMember);
    assert_eq!(r.id, "p1");
    let r = c.request(publish_req("p2", "nowhere", "chat", b"x")).await;
    assert_error(&r, Code::NotAMember);
    srv.client.publish("r", marker("after")).unwrap();
    for p in [&mut a, &mut b] {
        let (before, _) = p.until_marker().await;
        p.assert_none(&before, "a non-member's publish", |m| m.r#type == "chat");
    }
    assert!(srv.client.rooms() == ["r"], "{:?}", srv.client.rooms());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_member_events_and_list_members() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    let mut c = Peer::connect(&srv, "c").await;
    a.join("r", &[("seat", "1")]).await;
    b.join("r", &[("seat", "2"), ("color", "red")]).await;
    let ev = a
        .wait_for("b joined", |m| member_changed(m).is_some())
        .await;
    let ev = member_changed(&ev).unwrap();
    assert!(ev.joined);
    assert_eq!(ev.room, "r");
    let member = ev.member.as_ref().expect("member");
    assert_eq!(member.user_id, "b");
    assert_eq!(member.state, state(&[("seat", "2"), ("color", "red")]));

    srv.client
        .set_room_state("r", state(&[("topic", "chess")]), vec![])
        .await
        .unwrap();
    let reply = b.request(list_req("l1", "r")).await;
    let ms = members_reply(&reply);
    assert_eq!(ms.room, "r");
    assert_eq!(
        member_map(ms),
        HashMap::from([
            ("a".to_string(), state(&[("seat", "1")])),
            ("b".to_string(), state(&[("seat", "2"), ("color", "red")])),
        ])
    );
    assert_eq!(ms.room_state, state(&[("topic", "chess")]));

    // Joining again replaces the member state.
    a.join("r", &[("seat", "9")]).await;
    let reply = b.request(list_req("l2", "r")).await;
    assert_eq!(
        member_map(members_reply(&reply))["a"],
        state(&[("seat", "9")])
    );

    // Not a member / no such room.
    assert_error(&c.request(list_req("l3", "r")).await, Code::NotAMember);
    assert_error(&c.request(list_req("l4", "ghost")).await, Code::NotFound);

    assert_ack(&b.request(leave_req("x1", "r")).await);
    let ev = a
        .wait_for("b left", |m| member_changed(m).is_some_and(|c| !c.joined))
        .await;
    let ev = member_changed(&ev).unwrap();
    assert_eq!(ev.room, "r");
    assert_eq!(ev.member.as_ref().unwrap().user_id, "b");
    assert_error(&b.request(leave_req("x2", "r")).await, Code::NotAMember);
    assert_error(&b.request(list_req("l5", "r")).await, Code::NotAMember);
    let ms = srv.client.members("r").unwrap();
    assert_eq!(
        member_map(&ms).keys().cloned().collect::<Vec<_>>(),
        ["a".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_state_reaches_every_member_and_the_server() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    a.join("r", &[("seat", "1"), ("old", "x")]).await;
    b.join("r", &[]).await;

    let r = a
        .request(update_req(
            "u1",
            UpdateState {
                room: "r".into(),
                room_changes: state(&[("topic", "chess"), ("mode", "blitz")]),
                ..Default::default()
            },
        ))
        .await;
    assert_ack(&r);
    for p in [&mut a, &mut b] {
        let m = p
            .wait_for("room StateChanged", |m| state_changed(m).is_some())
            .await;
        let sc = state_changed(&m).unwrap();
        assert_eq!(sc.room, "r");
        assert_eq!(sc.user_id, "", "room state changes have no user id");
        assert_eq!(sc.changes, state(&[("topic", "chess"), ("mode", "blitz")]));
        assert!(sc.removed.is_empty());
    }
    assert_eq!(
        srv.client.room_state("r").unwrap(),
        state(&[("topic", "chess"), ("mode", "blitz")])
    );

    let r = a
        .request(update_req(
            "u2",
            UpdateState {
                room: "r".into(),
                room_changes: state(&[("topic", "go")]),
                room_removed: vec!["mode".into()],
                member_changes: state(&[("ready", "yes"), ("seat", "2")]),
                member_removed: vec!["old".into()],
            },
        ))
        .await;
    assert_ack(&r);
    for p in [&mut a, &mut b] {
        let m = p
            .wait_for("room StateChanged", |m| {
                state_changed(m).is_some_and(|s| s.user_id.is_empty())
            })
            .await;
        let sc = state_changed(&m).unwrap();
        assert_eq!(sc.changes, state(&[("topic", "go")]));
        assert_eq!(sc.removed, ["mode"]);
        let m = p
            .wait_for("member StateChanged", |m| {
                state_changed(m).is_some_and(|s| s.user_id == "a")
            })
            .await;
        let sc = state_changed(&m).unwrap();
        assert_eq!(sc.room, "r");
        assert_eq!(sc.changes, state(&[("ready", "yes"), ("seat", "2")]));
        assert_eq!(sc.removed, ["old"]);
    }
    assert_eq!(
        srv.client.room_state("r").unwrap(),
        state(&[("topic", "go")])
    );
    let ms = srv.client.members("r").unwrap();
    assert_eq!(
        member_map(&ms)["a"],
        state(&[("ready", "yes"), ("seat", "2")])
    );
    let reply = b.request(list_req("l1", "r")).await;
    let ms = members_reply(&reply);
    assert_eq!(ms.room_state, state(&[("topic", "go")]));
    assert_eq!(
        member_map(ms)["a"],
        state(&[("ready", "yes"), ("seat", "2")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_policy_refuses_and_transforms() {
    let srv = TestServer::start_with(Options::default(), |c| c.set_room_policy(Rules)).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    a.join("r", &[]).await;
    b.join("r", &[]).await;
    // The server is not subject to the policy.
    srv.client
        .set_room_state("r", state(&[("locked", "yes")]), vec![])
        .await
        .unwrap();
    for (id, u) in [
        (
            "s1",
            UpdateState {
                room: "r".into(),
                room_changes: state(&[("locked", "no"), ("topic", "x")]),
                ..Default::default()
            },
        ),
        (
            "s2",
            UpdateState {
                room: "r".into(),
                room_removed: vec!["locked".into()],
                member_changes: state(&[("ready", "yes")]),
                ..Default::default()
            },
        ),
    ] {
        assert_error(&a.request(update_req(id, u)).await, Code::Forbidden);
    }
    assert_eq!(
        srv.client.room_state("r").unwrap(),
        state(&[("locked", "yes")])
    );
    assert_eq!(
        member_map(&srv.client.members("r").unwrap())["a"],
        state(&[("role", "member")])
    );
    srv.client.publish("r", marker("refused")).unwrap();
    for p in [&mut a, &mut b] {
        let (before, _) = p.until_marker().await;
        let changes: Vec<_> = before.iter().filter_map(state_changed).collect();
        // Only the server's own change.
        assert_eq!(changes.len(), 1, "{}: {changes:?}", p.user);
        assert_eq!(changes[0].changes, state(&[("locked", "yes")]));
    }

    let r = a
        .request(update_req(
            "s3",
            UpdateState {
                room: "r".into(),
                room_changes: state(&[("title", "hello")]),
                ..Default::default()
            },
        ))
        .await;
    assert_ack(&r);
    let want = state(&[("title", "HELLO"), ("edited_by", "a")]);
    for p in [&mut a, &mut b] {
        let m = p
            .wait_for("StateChanged", |m| state_changed(m).is_some())
            .await;
        assert_eq!(state_changed(&m).unwrap().changes, want, "{}", p.user);
    }
    assert_eq!(
        srv.client.room_state("r").unwrap(),
        state(&[("locked", "yes"), ("title", "HELLO"), ("edited_by", "a")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_policy_denies_adjusts_and_marks_read_only() {
    let srv = TestServer::start_with(Options::default(), |c| c.set_room_policy(Rules)).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    let mut g = Peer::connect(&srv, "guest-g").await;

    let r = a.request(join_req("j0", "vip", &[])).await;
    assert_error(&r, Code::Forbidden);
    assert!(srv.client.rooms().is_empty(), "{:?}", srv.client.rooms());

    a.join("r", &[("seat", "1")]).await;
    b.join("r", &[("seat", "2"), ("admin", "yes")]).await;
    let m = a
        .wait_for("b joined", |m| member_changed(m).is_some())
        .await;
    let member = member_changed(&m).unwrap().member.clone().unwrap();
    assert_eq!(member.user_id, "b");
    assert_eq!(member.state, state(&[("seat", "2"), ("role", "member")]));

    g.join("r", &[("admin", "yes")]).await;
    for p in [&mut a, &mut b] {
        let m = p
            .wait_for("guest joined", |m| {
                member_changed(m).is_some_and(|c| c.member.as_ref().unwrap().user_id == "guest-g")
            })
            .await;
        let c = member_changed(&m).unwrap();
        assert!(c.joined);
        assert_eq!(
            c.member.as_ref().unwrap().state,
            state(&[("role", "guest")])
        );
    }

    // Read-only: no publish, no state change; reading is fine.
    assert_error(
        &g.request(publish_req("g1", "r", "chat", b"hi")).await,
        Code::Forbidden,
    );
    assert_error(
        &g.request(update_req(
            "g2",
            UpdateState {
                room: "r".into(),
                room_changes: state(&[("topic", "spam")]),
                ..Default::default()
            },
        ))
        .await,
        Code::Forbidden,
    );
    assert_error(
        &g.request(update_req(
            "g3",
            UpdateState {
                room: "r".into(),
                member_changes: state(&[("role", "admin")]),
                ..Default::default()
            },
        ))
        .await,
        Code::Forbidden,
    );
    let reply = g.request(list_req("g4", "r")).await;
    let ms = members_reply(&reply);
    assert_eq!(
        member_map(ms),
        HashMap::from([
            ("a".to_string(), state(&[("seat", "1"), ("role", "member")])),
            ("b".to_string(), state(&[("seat", "2"), ("role", "member")])),
            ("guest-g".to_string(), state(&[("role", "guest")])),
        ])
    );
    assert!(srv.client.room_state("r").unwrap().is_empty());
    srv.client.publish("r", marker("after")).unwrap();
    for p in [&mut a, &mut b] {
        let (before, _) = p.until_marker().await;
        p.assert_none(&before, "a read-only member's publish or change", |m| {
            m.r#type == "chat" || state_changed(m).is_some()
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_policy_denies() {
    let srv = TestServer::start_with(Options::default(), |c| c.set_room_policy(Rules)).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    a.join("r", &[]).await;
    b.join("r", &[]).await;
    assert_error(
        &b.request(publish_req("p1", "r", "shout", b"HEY")).await,
        Code::Forbidden,
    );
    assert_ack(&b.request(publish_req("p2", "r", "talk", b"hey")).await);
    let (before, _) = {
        srv.client.publish("r", marker("after")).unwrap();
        a.until_marker().await
    };
    a.assert_none(&before, "a refused publish", |m| m.r#type == "shout");
    let talks: Vec<_> = before.iter().filter(|m| m.r#type == "talk").collect();
    assert_eq!(talks.len(), 1, "{before:?}");
    assert_eq!(talks[0].payload.as_ref(), b"hey");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_api_join_leave_publish_state() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;

    srv.client
        .join("a", "r", state(&[("seat", "1")]))
        .await
        .unwrap();
    srv.client
        .join("b", "r", state(&[("seat", "2")]))
        .await
        .unwrap();
    assert_eq!(
        srv.client.join("nobody", "r", HashMap::new()).await,
        Err(RoomError::NotConnected)
    );
    assert_eq!(
        srv.client.join("a", "", HashMap::new()).await,
        Err(RoomError::InvalidName)
    );
    let m = a
        .wait_for("b joined", |m| member_changed(m).is_some())
        .await;
    let c = member_changed(&m).unwrap();
    assert!(c.joined);
    assert_eq!(c.member.as_ref().unwrap().user_id, "b");
    assert_eq!(c.member.as_ref().unwrap().state, state(&[("seat", "2")]));
    assert_eq!(srv.client.rooms(), ["r"]);
    assert_eq!(srv.client.room_count(), 1);
    let ms = srv.client.members("r").unwrap();
    assert_eq!(
        member_map(&ms),
        HashMap::from([
            ("a".to_string(), state(&[("seat", "1")])),
            ("b".to_string(), state(&[("seat", "2")])),
        ])
    );
    // A member of a room joined by the server can use it.
    let reply = a.request(list_req("l1", "r")).await;
    assert_eq!(members_reply(&reply).members.len(), 2);

    // Room state.
    srv.client
        .set_room_state("r", state(&[("topic", "x"), ("n", "1")]), vec![])
        .await
        .unwrap();
    for p in [&mut a, &mut b] {
        let m = p
            .wait_for("StateChanged", |m| state_changed(m).is_some())
            .await;
        let sc = state_changed(&m).unwrap();
        assert_eq!((sc.room.as_str(), sc.user_id.as_str()), ("r", ""));
        assert_eq!(sc.changes, state(&[("topic", "x"), ("n", "1")]));
    }
    srv.client
        .set_room_state("r", HashMap::new(), vec!["n".into()])
        .await
        .unwrap();
    for p in [&mut a, &mut b] {
        let m = p
            .wait_for("StateChanged", |m| state_changed(m).is_some())
            .await;
        assert_eq!(state_changed(&m).unwrap().removed, ["n"]);
    }
    assert_eq!(
        srv.client.room_state("r").unwrap(),
        state(&[("topic", "x")])
    );
    assert_eq!(
        srv.client
            .set_room_state("ghost", state(&[("k", "v")]), vec![])
            .await,
        Err(RoomError::NotFound)
    );
    assert!(srv.client.room_state("ghost").is_none());
    assert!(srv.client.members("ghost").is_none());

    // Publish: to everyone, sender kept as given.
    let mut m = msg("", "news", b"all");
    m.sender = "bot".into();
    let report = srv.client.publish("r", m).unwrap();
    assert_eq!(report.queued, 2);
    for p in [&mut a, &mut b] {
        let got = p.wait_for("news", |m| m.r#type == "news").await;
        assert_eq!(
            (got.room.as_str(), got.sender.as_str(), got.payload.as_ref()),
            ("r", "bot", &b"all"[..])
        );
        assert!(got.timestamp_ms > 0);
    }
    // publish_except skips the excluded.
    let report = srv
        .client
        .publish_except("r", msg("", "secret", b"for b"), &["a"])
        .unwrap();
    assert_eq!(report.queued, 1);
    let got = b.wait_for("secret", |m| m.r#type == "secret").await;
    assert_eq!(got.room, "r");
    srv.client.publish("r", marker("after")).unwrap();
    let (before, _) = a.until_marker().await;
    a.assert_none(&before, "an excluded publish", |m| m.r#type == "secret");
    assert!(matches!(
        srv.client.publish("ghost", msg("", "x", b"")),
        Err(RoomError::NotFound)
    ));

    // Server leave.
    srv.client.leave("b", "r").await.unwrap();
    assert_eq!(srv.client.leave("b", "r").await, Err(RoomError::NotAMember));
    let m = a
        .wait_for("b left", |m| member_changed(m).is_some_and(|c| !c.joined))
        .await;
    assert_eq!(
        member_changed(&m).unwrap().member.as_ref().unwrap().user_id,
        "b"
    );
    assert_error(&b.request(list_req("l2", "r")).await, Code::NotAMember);
    srv.client.leave("a", "r").await.unwrap();
    assert_eq!(srv.client.room_count(), 0);
    assert!(srv.client.rooms().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_room_notifies_members_and_removes_them() {
    let srv = TestServer::start(options(|o| o.max_rooms_per_connection = 1)).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    a.join("r", &[]).await;
    b.join("r", &[]).await;
    assert_eq!(srv.client.room_count(), 1);
    assert_eq!(srv.client.close_room("r", "game over").await, Ok(2));
    for p in [&mut a, &mut b] {
        let m = p
            .wait_for("RoomClosed", |m| {
                matches!(m.control, Some(Control::RoomClosed(_)))
            })
            .await;
        let Some(Control::RoomClosed(rc)) = &m.control else {
            unreachable!()
        };
        assert_eq!((rc.room.as_str(), rc.reason.as_str()), ("r", "game over"));
    }
    assert_eq!(srv.client.room_count(), 0);
    assert!(srv.client.rooms().is_empty());
    assert!(srv.client.members("r").is_none());
    assert_error(
        &a.request(publish_req("p1", "r", "chat", b"x")).await,
        Code::NotAMember,
    );
    assert_error(&a.request(leave_req("x1", "r")).await, Code::NotAMember);
    assert_eq!(
        srv.client.close_room("r", "again").await,
        Err(RoomError::NotFound)
    );
    // The closed room no longer counts against the connection's limit.
    a.join("r2", &[]).await;
    // And the room can be created afresh, empty.
    b.join("r", &[]).await;
    let ms = srv.client.members("r").unwrap();
    assert_eq!(
        member_map(&ms).keys().cloned().collect::<Vec<_>>(),
        ["b".to_string()]
    );
    assert_eq!(sorted(srv.client.rooms()), ["r", "r2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_closes_4002_and_the_others_see_the_leave() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    a.join("r", &[]).await;
    b.join("r", &[]).await;
    srv.client.kick("b", "bye").unwrap();
    let (code, reason) = expect_close(&mut b.ws).await;
    assert_eq!((code, reason.as_str()), (4002, "bye"));
    // Reading on sends our close reply and sees the stream end.
    assert!(matches!(next_event(&mut b.ws).await, Event::Ended(_)));
    let m = a
        .wait_for("b left", |m| member_changed(m).is_some_and(|c| !c.joined))
        .await;
    let c = member_changed(&m).unwrap();
    assert_eq!(c.room, "r");
    assert_eq!(c.member.as_ref().unwrap().user_id, "b");
    let ms = srv.client.members("r").unwrap();
    assert_eq!(
        member_map(&ms).keys().cloned().collect::<Vec<_>>(),
        ["a".to_string()]
    );
    assert!(srv.client.kick("nobody", "x").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_leaves_every_room_and_empty_rooms_are_dropped() {
    let mut srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    let mut c = Peer::connect(&srv, "c").await;
    for r in ["r1", "r2"] {
        a.join(r, &[]).await;
    }
    for r in ["r1", "r2", "r3"] {
        b.join(r, &[("n", r)]).await;
    }
    c.join("r1", &[]).await;
    assert_eq!(sorted(srv.client.rooms()), ["r1", "r2", "r3"]);

    // A clean close.
    b.close().await;
    let mut left = HashSet::new();
    while left.len() < 2 {
        let m = a
            .wait_for("b left", |m| {
                member_changed(m)
                    .is_some_and(|c| !c.joined && c.member.as_ref().unwrap().user_id == "b")
            })
            .await;
        let ch = member_changed(&m).unwrap();
        assert_eq!(
            ch.member.as_ref().unwrap().state,
            state(&[("n", ch.room.as_str())])
        );
        assert!(left.insert(ch.room.clone()), "two leaves for {}", ch.room);
    }
    assert_eq!(left, HashSet::from(["r1".to_string(), "r2".to_string()]));
    assert_eq!(srv.next_disconnect().await.user, "b");
    srv.wait_until("r3 dropped", |cl| cl.room_count() == 2)
        .await;
    assert_eq!(sorted(srv.client.rooms()), ["r1", "r2"]);

    // An abrupt end (no close frame).
    drop(c);
    let m = a
        .wait_for("c left", |m| member_changed(m).is_some_and(|c| !c.joined))
        .await;
    let ch = member_changed(&m).unwrap();
    assert_eq!(
        (
            ch.room.as_str(),
            ch.member.as_ref().unwrap().user_id.as_str()
        ),
        ("r1", "c")
    );
    assert_eq!(srv.next_disconnect().await.user, "c");
    let ms = srv.client.members("r1").unwrap();
    assert_eq!(ms.members.len(), 1);

    assert_ack(&a.request(leave_req("x1", "r1")).await);
    assert_eq!(srv.client.rooms(), ["r2"]);
    a.close().await;
    srv.wait_until("every room dropped", |cl| {
        cl.room_count() == 0 && cl.rooms().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_names_are_validated() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let long = "x".repeat(257);
    let long_multibyte = "é".repeat(129); // 258 bytes, 129 chars
    for (i, name) in [
        "",
        &long,
        &long_multibyte,
        "a\nb",
        "bell\u{7}",
        "tab\t",
        "del\u{7f}",
    ]
    .into_iter()
    .enumerate()
    {
        let r = a.request(join_req(&format!("j{i}"), name, &[])).await;
        assert_error(&r, Code::InvalidRequest);
    }
    let ok = "y".repeat(256);
    a.join(&ok, &[]).await;
    a.join("ünïcödé room", &[]).await;
    assert_error(
        &a.request(publish_req("p1", "a\nb", "chat", b"")).await,
        Code::InvalidRequest,
    );
    assert_error(
        &a.request(list_req("l1", &long)).await,
        Code::InvalidRequest,
    );
    assert_error(
        &a.request(update_req(
            "u1",
            UpdateState {
                room: "\u{0}".into(),
                room_changes: state(&[("k", "v")]),
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidRequest,
    );
    assert_eq!(
        sorted(srv.client.rooms()),
        sorted(vec![ok, "ünïcödé room".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rooms_per_connection() {
    let srv = TestServer::start(options(|o| o.max_rooms_per_connection = 2)).await;
    let mut a = Peer::connect(&srv, "a").await;
    a.join("r1", &[]).await;
    a.join("r2", &[]).await;
    let r = a.request(join_req("j3", "r3", &[])).await;
    assert_error(&r, Code::TooManyRooms);
    assert_eq!(sorted(srv.client.rooms()), ["r1", "r2"], "no leaked room");
    // Joining a room it is already in is not a new room.
    a.join("r1", &[("again", "yes")]).await;
    assert_eq!(
        member_map(&srv.client.members("r1").unwrap())["a"],
        state(&[("again", "yes")])
    );
    assert_ack(&a.request(leave_req("x1", "r1")).await);
    a.join("r3", &[]).await;
    assert_eq!(sorted(srv.client.rooms()), ["r2", "r3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_members_per_room() {
    let srv = TestServer::start(options(|o| o.max_members_per_room = 2)).await;
    let mut u1 = Peer::connect(&srv, "u1").await;
    let mut u2 = Peer::connect(&srv, "u2").await;
    let mut u3 = Peer::connect(&srv, "u3").await;
    u1.join("r", &[]).await;
    u2.join("r", &[]).await;
    let r = u3.request(join_req("j1", "r", &[])).await;
    assert_error(&r, Code::RoomFull);
    assert_eq!(srv.client.members("r").unwrap().members.len(), 2);
    srv.client.publish("r", marker("full")).unwrap();
    let (before, _) = u1.until_marker().await;
    u1.assert_none(&before, "a refused member's join", |m| {
        member_changed(m).is_some_and(|c| c.member.as_ref().unwrap().user_id == "u3")
    });
    // A room that has space again takes the next member.
    assert_ack(&u2.request(leave_req("x1", "r")).await);
    u3.join("r", &[]).await;
    let m = u1
        .wait_for("u3 joined", |m| member_changed(m).is_some_and(|c| c.joined))
        .await;
    assert_eq!(
        member_changed(&m).unwrap().member.as_ref().unwrap().user_id,
        "u3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_limits() {
    let srv = TestServer::start(options(|o| {
        o.max_state_keys = 2;
        o.max_state_bytes = 32;
    }))
    .await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    let big = "v".repeat(40);
    let r = a
        .request(join_req("j1", "r", &[("a", "1"), ("b", "2"), ("c", "3")]))
        .await;
    assert_error(&r, Code::StateTooLarge);
    let r = a.request(join_req("j2", "r", &[("k", &big)])).await;
    assert_error(&r, Code::StateTooLarge);
    assert!(srv.client.rooms().is_empty(), "no leaked room");
    a.join("r", &[("seat", "1")]).await;
    b.join("r", &[]).await;

    // Room state: too many keys, too many bytes.
    let r = a
        .request(update_req(
            "u1",
            UpdateState {
                room: "r".into(),
                room_changes: state(&[("a", "1"), ("b", "2"), ("c", "3")]),
                ..Default::default()
            },
        ))
        .await;
    assert_error(&r, Code::StateTooLarge);
    let r = a
        .request(update_req(
            "u2",
            UpdateState {
                room: "r".into(),
                room_changes: state(&[("k", &big)]),
                ..Default::default()
            },
        ))
        .await;
    assert_error(&r, Code::StateTooLarge);
    // Member state: 1 key + 2 new = 3 keys. The valid room part of the same
    // request must not be applied either.
    let r = a
        .request(update_req(
            "u3",
            UpdateState {
                room: "r".into(),
                room_changes: state(&[("ok", "1")]),
                member_changes: state(&[("x", "1"), ("y", "2")]),
                ..Default::default()
            },
        ))
        .await;
    assert_error(&r, Code::StateTooLarge);
    assert!(srv.client.room_state("r").unwrap().is_empty());
    assert_eq!(
        member_map(&srv.client.members("r").unwrap())["a"],
        state(&[("seat", "1")])
    );
    assert_eq!(
        srv.client
            .set_room_state("r", state(&[("a", "1"), ("b", "2"), ("c", "3")]), vec![])
            .await,
        Err(RoomError::StateTooLarge)
    );
    srv.client.publish("r", marker("refused")).unwrap();
    for p in [&mut a, &mut b] {
        let (before, _) = p.until_marker().await;
        p.assert_none(&before, "a refused state change", |m| {
            state_changed(m).is_some()
        });
    }
    // At the limit is fine.
    let r = a
        .request(update_req(
            "u4",
            UpdateState {
                room: "r".into(),
                room_changes: state(&[("a", "1"), ("b", "2")]),
                ..Default::default()
            },
        ))
        .await;
    assert_ack(&r);
    assert_eq!(
        srv.client.room_state("r").unwrap(),
        state(&[("a", "1"), ("b", "2")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refuses_some_of_a_burst_and_replies_to_all() {
    let srv = TestServer::start(options(|o| o.max_requests_per_second = 5)).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    b.join("r", &[]).await;
    a.join("r", &[]).await;
    let ids: Vec<String> = (0..30).map(|i| format!("q{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let m = if i % 2 == 0 {
            join_req(id, "r", &[("n", i.to_string().as_str())])
        } else {
            publish_req(id, "r", "chat", i.to_string().as_bytes())
        };
        a.send(&m).await;
    }
    a.send(&list_req("end", "r")).await;
    let mut replies: HashMap<String, Vec<Want>> = HashMap::new();
    loop {
        let m = a.next().await;
        if m.id.is_empty() {
            continue;
        }
        let done = m.id == "end";
        replies.entry(m.id.clone()).or_default().push(kind(&m));
        if done {
            break;
        }
    }
    let (mut acked, mut limited) = (HashSet::new(), 0);
    for id in &ids {
        let got = replies.remove(id).unwrap_or_default();
        assert_eq!(got.len(), 1, "replies to {id}: {got:?}");
        match got[0] {
            Want::Ack => {
                acked.insert(id.clone());
            }
            Want::Err(Code::RateLimited) => limited += 1,
            other => panic!("{id}: unexpected reply {other:?}"),
        }
    }
    replies.remove("end");
    assert!(replies.is_empty(), "unknown replies {replies:?}");
    assert!(limited > 0, "a burst of 30 at 5/s got no RATE_LIMITED");
    assert!(acked.contains("q0"), "the first request is within budget");
    // Exactly the acked publishes were delivered.
    srv.client.publish("r", marker("end")).unwrap();
    let (before, _) = b.until_marker().await;
    let delivered: HashSet<String> = before
        .iter()
        .filter(|m| m.r#type == "chat")
        .map(|m| format!("q{}", String::from_utf8_lossy(&m.payload)))
        .collect();
    let acked_publishes: HashSet<String> = acked
        .iter()
        .filter(|id| id[1..].parse::<usize>().unwrap() % 2 == 1)
        .cloned()
        .collect();
    assert_eq!(delivered, acked_publishes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_events_of_large_rooms_are_batched() {
    let srv = TestServer::start(options(|o| {
        o.room_member_events_batch_above = 3;
        o.event_batch_interval = Duration::from_millis(800);
    }))
    .await;
    let mut base = Vec::new();
    for u in ["a", "b", "c"] {
        let mut p = Peer::connect(&srv, u).await;
        p.join("big", &[]).await;
        base.push(p);
    }
    // Up to 3 members: one MemberChanged per join, at once.
    for (i, p) in base.iter_mut().enumerate() {
        for other in ["a", "b", "c"].iter().skip(i + 1) {
            let m = p
                .wait_for("a small-room join", |m| {
                    member_changed(m).is_some_and(|c| c.member.as_ref().unwrap().user_id == *other)
                })
                .await;
            assert!(member_changed(&m).unwrap().joined);
        }
    }
    let joiners: Vec<String> = (1..=5).map(|i| format!("j{i}")).collect();
    let mut js = Vec::new();
    for u in &joiners {
        js.push(Peer::connect(&srv, u).await);
    }
    // All at once: send every join, then read the acks.
    for j in js.iter_mut() {
        let m = join_req("join", "big", &[("seat", j.user.as_str())]);
        j.send(&m).await;
    }
    for j in js.iter_mut() {
        let id = "join".to_string();
        let r = j.wait_for("join ack", |m| m.id == id && is_reply(m)).await;
        assert_ack(&r);
    }
    for p in base.iter_mut() {
        let mut seen: HashMap<String, bool> = HashMap::new();
        let mut frames = 0;
        while !joiners.iter().all(|j| seen.get(j) == Some(&true)) {
            let m = p.next().await;
            if let Some(c) = member_changed(&m) {
                panic!("{}: single MemberChanged in a large room: {c:?}", p.user);
            }
            let Some(mc) = member_changes(&m) else {
                continue;
            };
            frames += 1;
            assert_eq!(mc.room, "big");
            for c in &mc.changes {
                let member = c.member.as_ref().expect("member");
                if joiners.contains(&member.user_id) {
                    assert_eq!(member.state, state(&[("seat", member.user_id.as_str())]));
                }
                seen.insert(member.user_id.clone(), c.joined);
            }
        }
        assert!(
            frames <= 2,
            "{}: {frames} MemberChanges frames for 5 joins",
            p.user
        );
    }
    assert_eq!(srv.client.members("big").unwrap().members.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_are_separate_worlds_for_rooms() {
    let w = TwoWorlds::start(Options::default()).await;
    let mut u = w.connect("layout", "u").await;
    let mut v = w.connect("layout", "v").await;
    u.join("r", &[]).await;
    v.join("r", &[]).await;
    // Same user id, other world: not a replacement, and no rooms there.
    let mut u2 = w.connect("lobby", "u").await;
    let mut x = w.connect("lobby", "x").await;
    assert!(w.layout.is_connected("u") && w.lobby.is_connected("u"));
    assert_eq!(w.layout.rooms(), ["r"]);
    assert_eq!(w.lobby.room_count(), 0);
    assert!(w.lobby.members("r").is_none());
    assert_error(&u2.request(list_req("l1", "r")).await, Code::NotFound);
    assert_error(
        &u2.request(publish_req("p1", "r", "chat", b"x")).await,
        Code::NotAMember,
    );
    // A room of the same name in the lobby is another room.
    x.join("r", &[]).await;
    let reply = x.request(list_req("l2", "r")).await;
    assert_eq!(
        member_map(members_reply(&reply))
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["x".to_string()]
    );
    assert_eq!(w.layout.members("r").unwrap().members.len(), 2);
    assert_ack(
        &v.request(publish_req("p2", "r", "chat", b"layout only"))
            .await,
    );
    let got = u.wait_for("chat", |m| m.r#type == "chat").await;
    assert_eq!(got.payload.as_ref(), b"layout only");
    w.lobby.publish("r", marker("lobby")).unwrap();
    let (before, _) = x.until_marker().await;
    x.assert_none(&before, "a publish of the other world", |m| {
        m.r#type == "chat"
    });
    w.lobby.send("u", marker("lobby-u")).unwrap();
    let (before, _) = u2.until_marker().await;
    u2.assert_none(&before, "anything of the other world", |m| {
        m.r#type == "chat" || member_changed(m).is_some()
    });
    // Close in one world leaves the other alone.
    assert_eq!(w.lobby.close_room("r", "bye").await, Ok(1));
    assert_eq!(w.layout.rooms(), ["r"]);
}

/// A join storm into a large room: each frame carries at most 32 changes and
/// counts the rest in `omitted`, so bytes per member stay bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_event_batches_are_capped_with_an_omitted_count() {
    let srv = TestServer::start(options(|o| {
        o.room_member_events_batch_above = 1;
        o.event_batch_interval = Duration::from_millis(800);
    }))
    .await;
    let mut observer = Peer::connect(&srv, "observer").await;
    observer.join("huge", &[]).await;
    // 100 joins: even split over three windows, one window exceeds 32.
    let n = 100;
    let mut js = Vec::new();
    for i in 0..n {
        js.push(Peer::connect(&srv, &format!("s{i}")).await);
    }
    for j in js.iter_mut() {
        j.send(&join_req("join", "huge", &[])).await;
    }
    for j in js.iter_mut() {
        let r = j
            .wait_for("join ack", |m| m.id == "join" && is_reply(m))
            .await;
        assert_ack(&r);
    }
    // Every join is accounted for, listed or omitted, and no frame is big.
    let mut accounted = 0usize;
    let mut saw_omitted = false;
    while accounted < n {
        let m = observer.next().await;
        let Some(mc) = member_changes(&m) else {
            continue;
        };
        assert!(
            mc.changes.len() <= 32,
            "{} changes in one frame",
            mc.changes.len()
        );
        saw_omitted |= mc.omitted > 0;
        accounted += mc.changes.len() + mc.omitted as usize;
    }
    assert_eq!(accounted, n);
    assert!(
        saw_omitted,
        "100 joins in at most three windows must overflow 32"
    );
    assert_eq!(srv.client.members("huge").unwrap().members.len(), n + 1);
}

/// `ListMembers` of a room of 5,000 members with 2 KB states each (10 MB in
/// all, over the 4 MiB send queue) is answered in pages that each fit the
/// queue, with exactly one reply per request id, until `next_cursor` is
/// empty: every member exactly once. (Before pagination the one reply was
/// replaced by an `Error`.) `ListActivities` pages the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_replies_are_paged_and_fit_the_queue() {
    use futures::{stream, StreamExt};
    const N: usize = 5_000;
    let opts = options(|o| o.room_member_events = false);
    let srv = TestServer::start(opts).await;
    let users: Vec<String> = (0..N).map(|i| format!("m{i:04}")).collect();
    // Members join server-side (no policy) once connected; their sockets
    // are kept open but not read (nothing is sent to them).
    let socks: Vec<Ws> = stream::iter(users.iter().skip(1))
        .map(|u| srv.connect(u))
        .buffer_unordered(64)
        .collect()
        .await;
    let two_kb = "x".repeat(2048);
    for u in users.iter().skip(1) {
        srv.client
            .join(u, "big", state(&[("bio", &two_kb)]))
            .await
            .unwrap();
        srv.client
            .set_activity(u, Status::Online, &"d".repeat(200))
            .await
            .unwrap();
    }
    let mut lister = Peer::connect(&srv, &users[0]).await;
    lister.join("big", &[("bio", &two_kb)]).await;

    let mut cursor = String::new();
    let mut seen = Vec::new();
    for page in 0.. {
        assert!(page < N, "pages do not end");
        let mut req = list_req(&format!("p{page}"), "big");
        if let Some(Control::ListMembers(l)) = req.control.as_mut() {
            l.cursor = cursor.clone();
        }
        let reply = lister.request(req).await;
        let ms = members_reply(&reply);
        assert!(!ms.members.is_empty());
        assert!(prost::Message::encoded_len(&reply) <= (256 << 10) + 4096);
        seen.extend(ms.members.iter().map(|m| m.user_id.clone()));
        if ms.next_cursor.is_empty() {
            break;
        }
        cursor = ms.next_cursor.clone();
    }
    assert_eq!(seen, users, "every member once, in user id order");

    let mut cursor = String::new();
    let mut listed = 0;
    loop {
        let mut req = list_activities_req("a");
        if let Some(Control::ListActivities(l)) = req.control.as_mut() {
            l.cursor = cursor.clone();
            l.limit = 1_000; // capped at max_list_page_size (100)
        }
        let reply = lister.request(req).await;
        let Some(Control::Activities(a)) = &reply.control else {
            panic!("expected Activities, got {reply:?}");
        };
        assert!(a.activities.len() <= 100);
        listed += a.activities.len();
        if a.next_cursor.is_empty() {
            break;
        }
        cursor = a.next_cursor.clone();
    }
    assert_eq!(listed, N - 1);
    drop(socks);
}
