//! Presence over real sockets: SetActivity / ListActivities, propagation
//! to the other users, going offline on disconnect, the server API,
//! batching under a burst, the disabled switch and separate worlds.
// The shared harness is not ours to change; its `Event` enum trips this lint.
#[allow(clippy::large_enum_variant)]
mod common;
mod rooms_util;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use edk_ws::proto::error::Code;
use edk_ws::{Activity, ActivityError, Message, Options, Status};
use rooms_util::*;
use tokio::sync::mpsc;

fn options(f: impl FnOnce(&mut Options)) -> Options {
    let mut o = Options::default();
    f(&mut o);
    o
}

/// The Activities of a ListActivities reply, as user → (status, detail).
fn listed(m: &Message) -> HashMap<String, (Status, String)> {
    let acts = activities(m).unwrap_or_else(|| panic!("expected Activities, got {m:?}"));
    let mut out = HashMap::new();
    for a in &acts.activities {
        assert!(a.since_ms > 0, "{a:?}");
        let prev = out.insert(a.user_id.clone(), (status_of(a), a.detail.clone()));
        assert!(prev.is_none(), "{} listed twice", a.user_id);
    }
    out
}

fn entry(status: Status, detail: &str) -> (Status, String) {
    (status, detail.to_string())
}

/// Waits for an Activities event that carries `user` with `status`.
async fn wait_activity(p: &mut Peer, user: &str, status: Status) -> Activity {
    p.take_activity(user, |a| status_of(a) == status).await
}

/// An activity handler that forwards every call.
fn recorder() -> (
    impl Fn(&Activity) + Send + Sync + 'static,
    mpsc::UnboundedReceiver<Activity>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        move |a: &Activity| {
            let _ = tx.send(a.clone());
        },
        rx,
    )
}

async fn next_change(rx: &mut mpsc::UnboundedReceiver<Activity>) -> Activity {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for an activity handler call")
        .expect("handler channel closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_never_reported_is_offline() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    let r = b.request(list_activities_req("l1")).await;
    assert!(listed(&r).is_empty(), "{r:?}");
    assert!(srv.client.activity("a").is_none());
    assert!(srv.client.activities().is_empty());
    assert_ack(&a.request(set_activity_req("s1", Status::Online, "")).await);
    let r = a.request(list_activities_req("l2")).await;
    assert_eq!(
        listed(&r),
        HashMap::from([("a".to_string(), entry(Status::Online, ""))])
    );
    assert!(srv.client.activity("b").is_none(), "b never reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_activity_propagates_to_every_other_user() {
    let srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    let mut c = Peer::connect(&srv, "c").await;

    let mut m = set_activity_req("s1", Status::Playing, "chess");
    m.sender = "mallory".into();
    let r = a.request(m).await;
    assert_ack(&r);
    assert_eq!(r.id, "s1");
    for p in [&mut b, &mut c] {
        let act = wait_activity(p, "a", Status::Playing).await;
        assert_eq!(act.user_id, "a");
        assert_eq!(act.detail, "chess");
        assert!(act.since_ms > 1_600_000_000_000, "{act:?}");
    }
    let server_view = srv.client.activity("a").expect("a is online");
    assert_eq!(status_of(&server_view), Status::Playing);
    assert_eq!(server_view.detail, "chess");
    assert!(server_view.since_ms > 0);

    assert_ack(
        &b.request(set_activity_req("s2", Status::Busy, "meeting"))
            .await,
    );
    for p in [&mut a, &mut c] {
        let act = wait_activity(p, "b", Status::Busy).await;
        assert_eq!(act.detail, "meeting");
    }
    let r = c.request(list_activities_req("l1")).await;
    assert_eq!(
        listed(&r),
        HashMap::from([
            ("a".to_string(), entry(Status::Playing, "chess")),
            ("b".to_string(), entry(Status::Busy, "meeting")),
        ])
    );
    assert_eq!(srv.client.activities().len(), 2);

    // A new status replaces the old one.
    assert_ack(&a.request(set_activity_req("s3", Status::Away, "")).await);
    let act = wait_activity(&mut c, "a", Status::Away).await;
    assert_eq!(act.detail, "");

    // STATUS_OFFLINE clears it.
    assert_ack(&b.request(set_activity_req("s4", Status::Offline, "")).await);
    for p in [&mut a, &mut c] {
        wait_activity(p, "b", Status::Offline).await;
    }
    assert!(srv.client.activity("b").is_none());
    let r = c.request(list_activities_req("l2")).await;
    assert_eq!(
        listed(&r),
        HashMap::from([("a".to_string(), entry(Status::Away, ""))])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_turns_the_user_offline() {
    let mut srv = TestServer::start(Options::default()).await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;
    let mut c = Peer::connect(&srv, "c").await;
    assert_ack(&a.request(set_activity_req("s1", Status::Away, "brb")).await);
    assert_ack(&c.request(set_activity_req("s1", Status::Online, "")).await);
    wait_activity(&mut b, "a", Status::Away).await;
    wait_activity(&mut b, "c", Status::Online).await;

    // Clean close.
    a.close().await;
    let act = wait_activity(&mut b, "a", Status::Offline).await;
    assert_eq!(act.user_id, "a");
    assert!(act.since_ms > 0);
    assert_eq!(srv.next_disconnect().await.user, "a");
    assert!(srv.client.activity("a").is_none());

    // Abrupt end.
    drop(c);
    wait_activity(&mut b, "c", Status::Offline).await;
    assert!(srv.client.activity("c").is_none());
    assert!(srv.client.activities().is_empty());
    let r = b.request(list_activities_req("l1")).await;
    assert!(listed(&r).is_empty(), "{r:?}");

    // Coming back does not restore the old activity.
    let _a = Peer::connect(&srv, "a").await;
    let r = b.request(list_activities_req("l2")).await;
    assert!(listed(&r).is_empty(), "{r:?}");
    assert!(srv.client.activity("a").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reads_sets_and_subscribes() {
    let (handler, mut rx) = recorder();
    let srv = TestServer::start_with(Options::default(), |c| {
        c.subscribe_activity_handler(handler);
    })
    .await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;

    assert_ack(&a.request(set_activity_req("s1", Status::Busy, "x")).await);
    let got = next_change(&mut rx).await;
    assert_eq!(
        (got.user_id.as_str(), status_of(&got), got.detail.as_str()),
        ("a", Status::Busy, "x")
    );

    srv.client
        .set_activity("b", Status::Away, "lunch")
        .await
        .expect("set_activity");
    let got = next_change(&mut rx).await;
    assert_eq!(
        (got.user_id.as_str(), status_of(&got), got.detail.as_str()),
        ("b", Status::Away, "lunch")
    );
    let act = wait_activity(&mut a, "b", Status::Away).await;
    assert_eq!(act.detail, "lunch");
    assert!(act.since_ms > 0);
    let view = srv.client.activity("b").expect("b is away");
    assert_eq!(
        (status_of(&view), view.detail.as_str()),
        (Status::Away, "lunch")
    );
    let mut all: Vec<String> = srv
        .client
        .activities()
        .into_iter()
        .map(|a| a.user_id)
        .collect();
    all.sort();
    assert_eq!(all, ["a", "b"]);
    let r = b.request(list_activities_req("l1")).await;
    assert_eq!(
        listed(&r),
        HashMap::from([
            ("a".to_string(), entry(Status::Busy, "x")),
            ("b".to_string(), entry(Status::Away, "lunch")),
        ])
    );
    assert_eq!(
        srv.client.set_activity("ghost", Status::Online, "").await,
        Err(ActivityError::NotConnected)
    );

    srv.client
        .set_activity("b", Status::Offline, "")
        .await
        .unwrap();
    let got = next_change(&mut rx).await;
    assert_eq!(
        (got.user_id.as_str(), status_of(&got)),
        ("b", Status::Offline)
    );
    wait_activity(&mut a, "b", Status::Offline).await;
    assert!(srv.client.activity("b").is_none());

    a.close().await;
    let got = next_change(&mut rx).await;
    assert_eq!(
        (got.user_id.as_str(), status_of(&got)),
        ("a", Status::Offline)
    );
    assert!(srv.client.activities().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_reaches_an_observer_in_at_most_two_frames() {
    let srv = TestServer::start(options(|o| {
        o.event_batch_interval = Duration::from_millis(800)
    }))
    .await;
    let mut observer = Peer::connect(&srv, "observer").await;
    let mut users = Vec::new();
    for i in 0..20 {
        users.push(Peer::connect(&srv, &format!("u{i:02}")).await);
    }
    // All at once: every SetActivity is sent before any reply is read.
    for u in users.iter_mut() {
        let detail = format!("game of {}", u.user);
        u.send(&set_activity_req("s", Status::Playing, &detail))
            .await;
    }
    for u in users.iter_mut() {
        let r = u.wait_for("the ack", |m| m.id == "s" && is_reply(m)).await;
        assert_ack(&r);
    }
    let mut seen: HashMap<String, (Status, String)> = HashMap::new();
    let mut frames = 0;
    while seen.len() < 20 {
        let m = observer.next().await;
        let Some(acts) = activities(&m) else {
            panic!("observer got {m:?}");
        };
        frames += 1;
        for a in &acts.activities {
            assert!(a.since_ms > 0);
            seen.insert(a.user_id.clone(), (status_of(a), a.detail.clone()));
        }
    }
    assert!(
        frames <= 2,
        "20 changes took {frames} Activities frames (want at most 2)"
    );
    for u in &users {
        assert_eq!(
            seen[&u.user],
            entry(Status::Playing, &format!("game of {}", u.user))
        );
    }
    assert_eq!(srv.client.activities().len(), 20);
}

#[test]
fn the_disabled_switch_reads_server_online_activities_disabled() {
    let on = Options::from_lookup(|k| {
        (k == "SERVER_ONLINE_ACTIVITIES_DISABLED").then(|| "true".to_string())
    })
    .unwrap();
    assert!(on.online_activities_disabled);
    let off = Options::from_lookup(|k| {
        (k == "SERVER_ONLINE_ACTIVITIES_DISABLED").then(|| "false".to_string())
    })
    .unwrap();
    assert!(!off.online_activities_disabled);
    assert!(!Options::default().online_activities_disabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_activities_are_refused_and_nothing_propagates() {
    let opts = Options::from_lookup(|k| {
        (k == "SERVER_ONLINE_ACTIVITIES_DISABLED").then(|| "1".to_string())
    })
    .unwrap();
    assert!(opts.online_activities_disabled);
    let (handler, mut rx) = recorder();
    let srv = TestServer::start_with(opts, |c| {
        c.subscribe_activity_handler(handler);
    })
    .await;
    let mut a = Peer::connect(&srv, "a").await;
    let mut b = Peer::connect(&srv, "b").await;

    let r = a
        .request(set_activity_req("s1", Status::Playing, "chess"))
        .await;
    assert_error(&r, Code::ActivitiesDisabled);
    assert_eq!(r.id, "s1");
    let r = b.request(list_activities_req("l1")).await;
    assert_error(&r, Code::ActivitiesDisabled);
    assert_eq!(r.id, "l1");
    assert_eq!(
        srv.client.set_activity("a", Status::Online, "").await,
        Err(ActivityError::Disabled)
    );
    assert!(srv.client.activities().is_empty());
    assert!(srv.client.activity("a").is_none());
    // Handlers run when a change is recorded, before the reply: none was.
    assert!(rx.try_recv().is_err(), "an activity change was recorded");

    srv.client.send("b", marker("after")).unwrap();
    let (before, _) = b.until_marker().await;
    b.assert_none(&before, "an Activities frame", |m| activities(m).is_some());

    // Rooms still work on such a server.
    a.join("r", &[]).await;
    b.join("r", &[]).await;
    a.close().await;
    let m = b
        .wait_for("a left", |m| member_changed(m).is_some_and(|c| !c.joined))
        .await;
    assert_eq!(
        member_changed(&m).unwrap().member.as_ref().unwrap().user_id,
        "a"
    );
    srv.client.send("b", marker("after close")).unwrap();
    let (before, _) = b.until_marker().await;
    b.assert_none(&before, "an Activities frame", |m| activities(m).is_some());
    assert!(rx.try_recv().is_err(), "an activity change was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_are_separate_worlds_for_activities() {
    let w = TwoWorlds::start(Options::default()).await;
    let (lobby_handler, mut lobby_rx) = recorder();
    w.lobby.subscribe_activity_handler(lobby_handler);
    let (layout_handler, mut layout_rx) = recorder();
    w.layout.subscribe_activity_handler(layout_handler);

    let mut u = w.connect("layout", "u").await;
    let mut o = w.connect("layout", "o").await;
    let mut u2 = w.connect("lobby", "u").await;
    let mut x = w.connect("lobby", "x").await;

    assert_ack(
        &u.request(set_activity_req("s1", Status::Playing, "layout game"))
            .await,
    );
    assert_eq!(next_change(&mut layout_rx).await.user_id, "u");
    wait_activity(&mut o, "u", Status::Playing).await;
    assert!(
        lobby_rx.try_recv().is_err(),
        "the lobby saw a layout change"
    );
    assert!(w.lobby.activity("u").is_none());
    assert!(w.lobby.activities().is_empty());
    let r = x.request(list_activities_req("l1")).await;
    assert!(listed(&r).is_empty(), "{r:?}");
    w.lobby.send("x", marker("x")).unwrap();
    let (before, _) = x.until_marker().await;
    x.assert_none(&before, "an Activities frame", |m| activities(m).is_some());

    // The same user id has its own activity in each world.
    assert_ack(
        &u2.request(set_activity_req("s2", Status::Busy, "lobby"))
            .await,
    );
    wait_activity(&mut x, "u", Status::Busy).await;
    let layout_view = w.layout.activity("u").unwrap();
    assert_eq!(
        (status_of(&layout_view), layout_view.detail.as_str()),
        (Status::Playing, "layout game")
    );
    let r = o.request(list_activities_req("l2")).await;
    assert_eq!(
        listed(&r),
        HashMap::from([("u".to_string(), entry(Status::Playing, "layout game"))])
    );

    // Leaving one world leaves the other alone.
    u.close().await;
    wait_activity(&mut o, "u", Status::Offline).await;
    assert!(w.layout.activity("u").is_none());
    let lobby_view = w.lobby.activity("u").expect("still busy in the lobby");
    assert_eq!(status_of(&lobby_view), Status::Busy);
    assert!(w.lobby.is_connected("u"));
}
