//! `proto/ws.proto` is the reference: every error code it lists for a
//! request (its `Errors:` line, published as `x-errors` in the AsyncAPI
//! document) is produced here by a real client against a real server, and
//! the server produces no code that is not listed for that request. Also
//! the order guarantee (own StateChanged before the Ack) and "no reply to
//! an application type". `UNAVAILABLE` needs a clustered server with its
//! backplane down: it cannot be produced by a single node (checked apart).

mod common;
mod rooms_util;

use std::collections::{BTreeSet, HashMap};

use edk_ws::proto::error::Code;
use edk_ws::proto::message::Control;
use edk_ws::proto::{SetActivity, UpdateState};
use edk_ws::{Conn, JoinDecision, Message, Options, RoomPolicy, StateChange};

use common::*;
use rooms_util::*;

/// Refuses or panics on purpose: room "deny"/"panic" on join, state key
/// "locked" refused and "panic" panics, publish type "deny"/"panic".
struct Rules;

#[edk_ws::async_trait]
impl RoomPolicy for Rules {
    async fn on_join(
        &self,
        _c: &Conn,
        room: &str,
        _s: &mut HashMap<String, String>,
    ) -> JoinDecision {
        match room {
            "deny" => JoinDecision::Deny("not here".into()),
            "panic" => panic!("join hook bug (on purpose)"),
            _ => JoinDecision::Allow { read_only: false },
        }
    }

    async fn on_state_change(
        &self,
        _c: &Conn,
        _room: &str,
        change: &mut StateChange,
    ) -> Result<(), String> {
        if change.room_changes.contains_key("panic") {
            panic!("state hook bug (on purpose)");
        }
        match change.room_changes.contains_key("locked") {
            true => Err("locked".into()),
            false => Ok(()),
        }
    }

    async fn on_publish(&self, _c: &Conn, _room: &str, msg: &Message) -> Result<(), String> {
        match msg.r#type.as_str() {
            "panic" => panic!("publish hook bug (on purpose)"),
            "deny" => Err("no".into()),
            _ => Ok(()),
        }
    }
}

/// `(request, code)` pairs produced.
type Produced = BTreeSet<(String, String)>;

fn code_name(c: Code) -> String {
    c.as_str_name().trim_start_matches("CODE_").to_owned()
}

async fn expect(p: &mut Peer, produced: &mut Produced, verb: &str, req: Message, code: Code) {
    let r = p.request(req).await;
    assert_error(&r, code);
    produced.insert((verb.to_owned(), code_name(code)));
}

/// Sends 10 `make(i)` requests at once; at least one must be refused
/// RATE_LIMITED (budget: 1 a second, bursts of 2).
async fn expect_limited(
    p: &mut Peer,
    produced: &mut Produced,
    verb: &str,
    make: impl Fn(String) -> Message,
) {
    let ids: Vec<String> = (0..10).map(|_| p.next_id()).collect();
    for id in &ids {
        p.send(&make(id.clone())).await;
    }
    let mut limited = 0;
    for id in &ids {
        let r = p.wait_for("a reply", |m| &m.id == id && is_reply(m)).await;
        if error_code(&r) == Some(Code::RateLimited) {
            limited += 1;
        }
    }
    assert!(
        limited > 0,
        "{verb}: 10 requests at once, none rate limited"
    );
    produced.insert((verb.to_owned(), "RATE_LIMITED".to_owned()));
}

fn update(room: &str, changes: &[(&str, &str)]) -> UpdateState {
    UpdateState {
        room: room.into(),
        room_changes: state(changes),
        ..Default::default()
    }
}

fn bad_status(id: &str) -> Message {
    ctl(
        id,
        Control::SetActivity(SetActivity {
            status: 99,
            detail: String::new(),
        }),
    )
}

/// Every listed `(request, code)` of the document.
fn listed(doc: &serde_json::Value) -> Produced {
    let mut out = Produced::new();
    for (key, m) in doc["components"]["messages"].as_object().unwrap() {
        for code in m["x-errors"].as_array().into_iter().flatten() {
            if m["x-protobuf-message"]
                .as_str()
                .is_some_and(|n| n.starts_with("edk.ws.v1."))
            {
                out.insert((key.clone(), code.as_str().unwrap().to_owned()));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_listed_error_code_is_produced_and_none_other() {
    let mut produced = Produced::new();
    let opts = Options::default()
        .with_max_members_per_room(2)
        .with_max_rooms_per_connection(3)
        .with_max_state_keys(2);
    let srv = TestServer::start_with(opts, |c| c.set_room_policy(Rules)).await;
    let mut a = Peer::connect(&srv, "alice").await;
    let mut b = Peer::connect(&srv, "bob").await;
    let mut c = Peer::connect(&srv, "carol").await;
    let mut d = Peer::connect(&srv, "dave").await;
    a.join("r1", &[]).await;
    b.join("full", &[]).await;
    c.join("full", &[]).await;
    let p = &mut produced;

    // Join.
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "join",
        join_req(&id, "", &[]),
        Code::InvalidRequest,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "join",
        join_req(&id, "deny", &[]),
        Code::Forbidden,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "join",
        join_req(&id, "panic", &[]),
        Code::Internal,
    )
    .await;
    let id = a.next_id();
    let big = [("k1", "v"), ("k2", "v"), ("k3", "v")];
    expect(
        &mut a,
        p,
        "join",
        join_req(&id, "r2", &big),
        Code::StateTooLarge,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "join",
        join_req(&id, "full", &[]),
        Code::RoomFull,
    )
    .await;
    for room in ["d1", "d2", "d3"] {
        d.join(room, &[]).await;
    }
    let id = d.next_id();
    expect(
        &mut d,
        p,
        "join",
        join_req(&id, "d4", &[]),
        Code::TooManyRooms,
    )
    .await;

    // Leave.
    let id = a.next_id();
    expect(&mut a, p, "leave", leave_req(&id, ""), Code::InvalidRequest).await;
    let id = a.next_id();
    expect(&mut a, p, "leave", leave_req(&id, "full"), Code::NotAMember).await;

    // ListMembers.
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "listMembers",
        list_req(&id, ""),
        Code::InvalidRequest,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "listMembers",
        list_req(&id, "ghost"),
        Code::NotFound,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "listMembers",
        list_req(&id, "full"),
        Code::NotAMember,
    )
    .await;

    // UpdateState.
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "updateState",
        update_req(&id, update("r1", &[])),
        Code::InvalidRequest,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "updateState",
        update_req(&id, update("ghost", &[("k", "v")])),
        Code::NotFound,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "updateState",
        update_req(&id, update("full", &[("k", "v")])),
        Code::NotAMember,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "updateState",
        update_req(&id, update("r1", &[("locked", "v")])),
        Code::Forbidden,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "updateState",
        update_req(&id, update("r1", &big)),
        Code::StateTooLarge,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "updateState",
        update_req(&id, update("r1", &[("panic", "v")])),
        Code::Internal,
    )
    .await;

    // Room publish.
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "publish",
        publish_req(&id, "a\u{7}b", "t", b""),
        Code::InvalidRequest,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "publish",
        publish_req(&id, "full", "t", b""),
        Code::NotAMember,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "publish",
        publish_req(&id, "r1", "deny", b""),
        Code::Forbidden,
    )
    .await;
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "publish",
        publish_req(&id, "r1", "panic", b""),
        Code::Internal,
    )
    .await;

    // SetActivity.
    let id = a.next_id();
    expect(
        &mut a,
        p,
        "setActivity",
        bad_status(&id),
        Code::InvalidRequest,
    )
    .await;
    let id = a.next_id();
    let long = "x".repeat(257);
    expect(
        &mut a,
        p,
        "setActivity",
        set_activity_req(&id, edk_ws::Status::Online, &long),
        Code::InvalidRequest,
    )
    .await;

    // Activities off.
    let off = TestServer::start(Options::default().with_online_activities_disabled(true)).await;
    let mut e = Peer::connect(&off, "erin").await;
    let id = e.next_id();
    expect(
        &mut e,
        p,
        "setActivity",
        set_activity_req(&id, edk_ws::Status::Online, ""),
        Code::ActivitiesDisabled,
    )
    .await;
    let id = e.next_id();
    expect(
        &mut e,
        p,
        "listActivities",
        list_activities_req(&id),
        Code::ActivitiesDisabled,
    )
    .await;

    // Rate limits: one connection per request kind (the budget is per connection).
    let slow = TestServer::start(Options::default().with_max_requests_per_second(1)).await;
    let mut u = Peer::connect(&slow, "u-join").await;
    expect_limited(&mut u, p, "join", |id| join_req(&id, "r", &[])).await;
    let mut u = Peer::connect(&slow, "u-leave").await;
    expect_limited(&mut u, p, "leave", |id| leave_req(&id, "r")).await;
    let mut u = Peer::connect(&slow, "u-list").await;
    expect_limited(&mut u, p, "listMembers", |id| list_req(&id, "r")).await;
    let mut u = Peer::connect(&slow, "u-update").await;
    expect_limited(&mut u, p, "updateState", |id| {
        update_req(&id, update("r", &[("k", "v")]))
    })
    .await;
    let mut u = Peer::connect(&slow, "u-publish").await;
    expect_limited(&mut u, p, "publish", |id| publish_req(&id, "r", "t", b"")).await;
    let mut u = Peer::connect(&slow, "u-set").await;
    expect_limited(&mut u, p, "setActivity", |id| {
        set_activity_req(&id, edk_ws::Status::Busy, "")
    })
    .await;
    let mut u = Peer::connect(&slow, "u-acts").await;
    expect_limited(&mut u, p, "listActivities", |id| list_activities_req(&id)).await;

    // The document and the server agree.
    let doc: serde_json::Value = serde_json::from_str(&srv.client.asyncapi()).unwrap();
    let listed = listed(&doc);
    let not_produced: Vec<_> = listed
        .difference(&produced)
        .filter(|(_, code)| code != "UNAVAILABLE")
        .collect();
    assert!(
        not_produced.is_empty(),
        "listed in ws.proto, never produced: {not_produced:?}"
    );
    let not_listed: Vec<_> = produced.difference(&listed).collect();
    assert!(
        not_listed.is_empty(),
        "produced, not listed in ws.proto: {not_listed:?}"
    );
}

/// UNAVAILABLE is listed (for the cross-node requests) and documented, but
/// only a clustered server whose backplane is down sends it.
#[test]
fn unavailable_is_documented_for_cross_node_requests() {
    let client = edk_ws::WsClient::new(Options::default(), edk_ws::JwtAuthenticator::new(b"k"));
    let doc: serde_json::Value = serde_json::from_str(&client.asyncapi()).unwrap();
    let with: BTreeSet<String> = listed(&doc)
        .into_iter()
        .filter(|(_, c)| c == "UNAVAILABLE")
        .map(|(verb, _)| verb)
        .collect();
    let want: BTreeSet<String> = ["join", "leave", "updateState", "setActivity", "publish"]
        .map(String::from)
        .into();
    assert_eq!(with, want);
    let schema = &doc["components"]["schemas"]["edk.ws.v1.Error.Code"];
    assert!(schema["description"]
        .as_str()
        .unwrap()
        .contains("`CODE_UNAVAILABLE` (11)"));
}

#[tokio::test]
async fn a_requester_gets_its_own_state_changed_before_its_ack() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "alice").await;
    a.join("r", &[]).await;
    let id = a.next_id();
    let u = UpdateState {
        room: "r".into(),
        room_changes: state(&[("topic", "x")]),
        member_changes: state(&[("mood", "y")]),
        ..Default::default()
    };
    a.send(&update_req(&id, u)).await;
    let first = a.next().await;
    let second = a.next().await;
    let third = a.next().await;
    assert!(
        state_changed(&first).is_some_and(|s| s.user_id.is_empty()),
        "{first:?}"
    );
    assert!(
        state_changed(&second).is_some_and(|s| s.user_id == "alice"),
        "{second:?}"
    );
    assert_eq!(third.id, id);
    assert_ack(&third);
}

#[tokio::test]
async fn an_application_type_nobody_handles_gets_no_reply() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "alice").await;
    a.send(&msg("u1", "nobody.handles.this", b"x")).await;
    let id = a.next_id();
    a.send(&list_activities_req(&id)).await;
    // Requests are handled in order: had "u1" been answered, its reply
    // would come first.
    let next = a.next().await;
    assert_eq!(next.id, id, "{next:?}");
}
