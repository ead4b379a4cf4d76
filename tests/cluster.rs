//! Several `examples/server` processes sharing one Redis behave as one
//! server (the README's "Scaling out"). Each test starts its own
//! `redis-server` (so it can kill, stop and restart it) and its own nodes,
//! and drives them with real WebSocket clients. Bounds are generous for a
//! busy 2-core CI machine; the measured figures are printed (`--nocapture`).
mod cluster_util;
mod common;
mod rooms_util;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cluster_util::*;
use common::*;
use edk_ws::proto::error::Code;
use edk_ws::proto::message::Control;
use edk_ws::Status;
use futures::future::join_all;
use rooms_util::*;

fn direct(id: &str, to: &str) -> edk_ws::Message {
    let mut m = msg(id, "direct", id.as_bytes());
    m.metadata.insert("to".into(), to.into());
    m
}

/// The next application message (not a control event), skipping the rest.
async fn next_app(p: &mut Peer) -> edk_ws::Message {
    p.wait_for("an application message", |m| {
        m.control.is_none() && !m.r#type.is_empty()
    })
    .await
}

/// 1. A thousand direct messages from a user on one node to a user on
///    another all arrive, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_send_is_complete_and_ordered() {
    let (_redis, nodes) = cluster(2, &[]).await;
    let mut a = Peer::new("a", nodes[0].connect("a").await);
    let mut b = Peer::new("b", nodes[1].connect("b").await);
    let started = Instant::now();
    for i in 0..1000 {
        a.send(&direct(&i.to_string(), "b")).await;
    }
    for i in 0..1000 {
        let m = next_app(&mut b).await;
        assert_eq!(m.id, i.to_string(), "message {i} out of order");
        assert_eq!(m.sender, "a");
    }
    println!("1,000 cross-node messages in {:?}", started.elapsed());
}

/// 2. A broadcast reaches each of 300 users spread over 3 nodes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_user_on_every_node_once() {
    let (_redis, nodes) = cluster(3, &[]).await;
    let mut peers = Vec::new();
    for i in 0..300 {
        let u = format!("u{i:03}");
        peers.push(Peer::new(&u, nodes[i % 3].connect(&u).await));
    }
    peers[0].send(&msg("first", "broadcast", b"1")).await;
    peers[0].send(&msg("second", "broadcast", b"2")).await;
    for p in &mut peers {
        let m = next_app(p).await;
        assert_eq!(m.id, "first", "{} got {} first", p.user, m.id);
        let m = next_app(p).await;
        assert_eq!(m.id, "second", "{} got a duplicate or nothing", p.user);
    }
}

/// 3. A user connecting on another node replaces the old connection (4001,
///    fast), and later sends reach only the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_across_nodes() {
    let (_redis, nodes) = cluster(3, &[]).await;
    let mut old = nodes[0].connect("u").await;
    let mut sender = Peer::new("s", nodes[2].connect("s").await);
    let started = Instant::now();
    let mut new = Peer::new("u", nodes[1].connect("u").await);
    let (code, _) = expect_close(&mut old).await;
    let took = started.elapsed();
    assert_eq!(code, 4001);
    println!("old connection closed 4001 {took:?} after the new handshake started");
    assert!(took < Duration::from_secs(2), "replace took {took:?}");
    sender.send(&direct("after", "u")).await;
    assert_eq!(next_app(&mut new).await.id, "after");
}

/// 3b. What a send tells its caller: queued here, handed to the node that
///     holds the user, or connected nowhere; and a kick reaches the user on
///     another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_results_and_kick_across_nodes() {
    let (_redis, nodes) = cluster(2, &[]).await;
    let mut u = nodes[1].connect("u").await;
    assert_eq!(
        nodes[1].admin("POST", "/admin/send/u").await,
        (200, "Local".into())
    );
    assert_eq!(
        nodes[0].admin("POST", "/admin/send/u").await,
        (200, "Forwarded".into())
    );
    let (status, body) = nodes[0].admin("POST", "/admin/send/nobody").await;
    assert_eq!((status, body.as_str()), (404, "user is not connected"));
    for _ in 0..2 {
        assert_eq!(recv(&mut u).await.r#type, "admin");
    }
    assert_eq!(nodes[0].admin("POST", "/admin/kick/u").await.0, 204);
    assert_eq!(expect_close(&mut u).await.0, 4002);
}

/// 4. Fifty rounds of three simultaneous handshakes for one user on three
///    nodes: exactly one survivor each round; in refuse mode exactly one 101
///    and the rest 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_handshakes_leave_one_survivor() {
    let (_redis, nodes) = cluster(3, &[]).await;
    for round in 0..50 {
        let user = format!("race{round}");
        let socks: Vec<Ws> = join_all(nodes.iter().map(|n| n.connect(&user))).await;
        // Two of them are closed 4001; the third (the last claim) stays:
        // once the two closes were seen, a direct message reaches it.
        let mut readers: futures::stream::FuturesUnordered<_> = socks
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| async move {
                (
                    i,
                    tokio::time::timeout(Duration::from_secs(10), fate(&mut s)).await,
                )
            })
            .collect();
        use futures::StreamExt;
        let mut closed = Vec::new();
        while closed.len() < 2 {
            match readers.next().await {
                Some((i, Ok(Fate::Closed(code)))) => closed.push((i, code)),
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert!(
            closed.iter().all(|(_, c)| *c == 4001),
            "round {round}: {closed:?}"
        );
        let mut check = Peer::new(
            "c",
            nodes[round % 3].connect(&format!("check{round}")).await,
        );
        check.send(&direct("alive?", &user)).await;
        match readers.next().await {
            Some((_, Ok(Fate::Alive))) => {}
            other => panic!("round {round}: the survivor: {other:?}"),
        }
    }
    drop(nodes);
    let (_redis, nodes) = cluster(3, &[("EDK_WS_KICK_OUT_NEW_USER_CONN", "true")]).await;
    for round in 0..50 {
        let user = format!("refuse{round}");
        let results = join_all(nodes.iter().map(|n| n.try_connect(&user))).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.as_u16() == 409))
            .count();
        assert_eq!((ok, conflicts), (1, 2), "round {round}: {results:?}");
    }
}

#[derive(Debug)]
enum Fate {
    /// Closed with this code (1006: the stream just ended).
    Closed(u16),
    /// Received the `alive?` direct message.
    Alive,
}

/// Reads until a close frame or the `alive?` message.
async fn fate(ws: &mut Ws) -> Fate {
    use futures::StreamExt;
    use prost::Message as _;
    use tokio_tungstenite::tungstenite::Message as M;
    while let Some(item) = ws.next().await {
        match item {
            Ok(M::Close(f)) => return Fate::Closed(f.map(|f| u16::from(f.code)).unwrap_or(1005)),
            Ok(M::Binary(b)) => {
                if edk_ws::Message::decode(b).is_ok_and(|m| m.id == "alive?") {
                    return Fate::Alive;
                }
            }
            Ok(_) => continue,
            Err(_) => return Fate::Closed(1006),
        }
    }
    Fate::Closed(1006)
}

/// 5. A hundred concurrent joins across nodes with a member limit of 10:
///    exactly ten succeed, and every node lists the same ten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_limit_holds_cluster_wide() {
    let (_redis, nodes) = cluster(3, &[("EDK_WS_MAX_MEMBERS_PER_ROOM", "10")]).await;
    let mut peers = Vec::new();
    for i in 0..100 {
        let u = format!("j{i:02}");
        peers.push(Peer::new(&u, nodes[i % 3].connect(&u).await));
    }
    let replies = join_all(peers.iter_mut().map(|p| async {
        let id = p.next_id();
        let r = p.request(join_req(&id, "limited", &[])).await;
        (p.user.clone(), error_code(&r))
    }))
    .await;
    let joined: Vec<String> = replies
        .iter()
        .filter(|(_, e)| e.is_none())
        .map(|(u, _)| u.clone())
        .collect();
    assert_eq!(joined.len(), 10, "{replies:?}");
    assert!(replies
        .iter()
        .all(|(_, e)| e.is_none() || *e == Some(Code::RoomFull)));
    let mut lists = Vec::new();
    for node in 0..3 {
        let member = peers
            .iter_mut()
            .enumerate()
            .find(|(i, p)| i % 3 == node && joined.contains(&p.user))
            .map(|(_, p)| p);
        if let Some(p) = member {
            let id = p.next_id();
            let r = p.request(list_req(&id, "limited")).await;
            let mut users: Vec<String> = members_reply(&r)
                .members
                .iter()
                .map(|m| m.user_id.clone())
                .collect();
            users.sort();
            lists.push(users);
        }
    }
    let mut want = joined.clone();
    want.sort();
    assert!(!lists.is_empty());
    for l in &lists {
        assert_eq!(*l, want);
    }
}

/// 6. Member and state events, publishes and close_room reach members on
///    every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_work_across_nodes() {
    let (_redis, nodes) = cluster(3, &[]).await;
    let mut a = Peer::new("a", nodes[0].connect("a").await);
    let mut b = Peer::new("b", nodes[1].connect("b").await);
    let mut c = Peer::new("c", nodes[2].connect("c").await);
    a.join("r", &[("seat", "1")]).await;
    b.join("r", &[("seat", "2")]).await;
    let ev = a
        .wait_for("b joined", |m| member_changed(m).is_some_and(|c| c.joined))
        .await;
    assert_eq!(
        member_changed(&ev)
            .unwrap()
            .member
            .as_ref()
            .unwrap()
            .user_id,
        "b"
    );
    c.join("r", &[]).await;
    for p in [&mut a, &mut b] {
        p.wait_for("c joined", |m| {
            member_changed(m).is_some_and(|x| x.joined && x.member.as_ref().unwrap().user_id == "c")
        })
        .await;
    }
    // Room state and member state, from node 1, seen on 0 and 2.
    let id = b.next_id();
    let r = b
        .request(update_req(
            &id,
            edk_ws::proto::UpdateState {
                room: "r".into(),
                room_changes: state(&[("topic", "chess")]),
                member_changes: state(&[("seat", "9")]),
                ..Default::default()
            },
        ))
        .await;
    assert_ack(&r);
    for p in [&mut a, &mut c] {
        p.wait_for("room state", |m| {
            state_changed(m).is_some_and(|s| {
                s.user_id.is_empty() && s.changes.get("topic").map(String::as_str) == Some("chess")
            })
        })
        .await;
        p.wait_for("member state", |m| {
            state_changed(m).is_some_and(|s| s.user_id == "b")
        })
        .await;
    }
    // Everyone lists the same members and state.
    for p in [&mut a, &mut b, &mut c] {
        let id = p.next_id();
        let r = p.request(list_req(&id, "r")).await;
        let ms = members_reply(&r);
        let m = member_map(ms);
        assert_eq!(m.len(), 3, "{} sees {m:?}", p.user);
        assert_eq!(m["b"], state(&[("seat", "9")]));
        assert_eq!(ms.room_state, state(&[("topic", "chess")]));
    }
    // A re-join with a new member state is told on every node, as an
    // UpdateState of member state would be.
    b.join("r", &[("seat", "7")]).await;
    for p in [&mut a, &mut c] {
        p.wait_for("b's state after a re-join", |m| {
            state_changed(m).is_some_and(|s| {
                s.user_id == "b" && s.changes.get("seat").map(String::as_str) == Some("7")
            })
        })
        .await;
    }
    // A publish from node 2 reaches the members on 0 and 1 (not the sender).
    let id = c.next_id();
    assert_ack(&c.request(publish_req(&id, "r", "chat", b"hi")).await);
    for p in [&mut a, &mut b] {
        let m = p.wait_for("the publish", |m| m.r#type == "chat").await;
        assert_eq!((m.sender.as_str(), m.room.as_str()), ("c", "r"));
    }
    // A leave is seen everywhere.
    let id = a.next_id();
    assert_ack(&a.request(leave_req(&id, "r")).await);
    for p in [&mut b, &mut c] {
        p.wait_for("a left", |m| {
            member_changed(m)
                .is_some_and(|x| !x.joined && x.member.as_ref().unwrap().user_id == "a")
        })
        .await;
    }
    // close_room on node 0 (which has no member left) closes it everywhere.
    let (status, body) = nodes[0].admin("POST", "/admin/close_room/r").await;
    assert_eq!((status, body.as_str()), (200, "2"));
    for p in [&mut b, &mut c] {
        p.wait_for("room closed", |m| {
            matches!(&m.control, Some(Control::RoomClosed(_)))
        })
        .await;
        let id = p.next_id();
        assert_error(&p.request(list_req(&id, "r")).await, Code::NotFound);
    }
}

/// 7. An activity set on one node is seen on the others within two batch
///    windows (+ margin); a disconnect turns it offline everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_across_nodes() {
    let (_redis, nodes) = cluster(3, &[]).await;
    let mut a = Peer::new("a", nodes[0].connect("a").await);
    let mut b = Peer::new("b", nodes[1].connect("b").await);
    let mut c = Peer::new("c", nodes[2].connect("c").await);
    let started = Instant::now();
    let id = a.next_id();
    assert_ack(
        &a.request(set_activity_req(&id, Status::Busy, "coding"))
            .await,
    );
    for p in [&mut b, &mut c] {
        let m = p
            .wait_for("a busy", |m| {
                activity_of(m, "a").is_some_and(|x| status_of(x) == Status::Busy)
            })
            .await;
        assert_eq!(activity_of(&m, "a").unwrap().detail, "coding");
    }
    let took = started.elapsed();
    println!("activity seen on the other nodes after {took:?} (window 100 ms)");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let id = c.next_id();
    let r = c.request(list_activities_req(&id)).await;
    assert!(activity_of(&r, "a").is_some());
    a.close().await;
    for p in [&mut b, &mut c] {
        p.wait_for("a offline", |m| {
            activity_of(m, "a").is_some_and(|x| status_of(x) == Status::Offline)
        })
        .await;
    }
}

/// 8. A node killed with SIGKILL: its users' leaves and offline reach the
///    others within the lease (+ margin), and they can reconnect elsewhere
///    at once (in refuse mode, once the lease ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_cleaned_up() {
    for refuse in [false, true] {
        let env = [(
            "EDK_WS_KICK_OUT_NEW_USER_CONN",
            if refuse { "true" } else { "false" },
        )];
        let (_redis, mut nodes) = cluster(2, &env).await;
        let mut watcher = Peer::new("w", nodes[0].connect("w").await);
        watcher.join("room", &[]).await;
        let mut doomed = Vec::new();
        for i in 0..50 {
            let u = format!("d{i:02}");
            let mut p = Peer::new(&u, nodes[1].connect(&u).await);
            p.join("room", &[]).await;
            let id = p.next_id();
            assert_ack(&p.request(set_activity_req(&id, Status::Online, "")).await);
            doomed.push(p);
        }
        // Everyone's join and activity reached the watcher first.
        let mut online: HashSet<String> = HashSet::new();
        while online.len() < 50 {
            let m = watcher.next().await;
            if let Some(a) = activities(&m) {
                online.extend(
                    a.activities
                        .iter()
                        .filter(|a| a.status != 0)
                        .map(|a| a.user_id.clone()),
                );
            }
        }
        let killed = Instant::now();
        nodes[1].kill();
        let mut left: HashSet<String> = HashSet::new();
        let mut offline: HashSet<String> = HashSet::new();
        while left.len() < 50 || offline.len() < 50 {
            let m = watcher.next_within(Duration::from_secs(30)).await;
            if let Some(c) = member_changed(&m).filter(|c| !c.joined) {
                left.insert(c.member.as_ref().unwrap().user_id.clone());
            }
            if let Some(cs) = member_changes(&m) {
                left.extend(
                    cs.changes
                        .iter()
                        .filter(|c| !c.joined)
                        .map(|c| c.member.as_ref().unwrap().user_id.clone()),
                );
            }
            if let Some(a) = activities(&m) {
                offline.extend(
                    a.activities
                        .iter()
                        .filter(|a| a.status == 0)
                        .map(|a| a.user_id.clone()),
                );
            }
        }
        let took = killed.elapsed();
        println!("refuse={refuse}: 50 leaves and offline {took:?} after kill -9 (lease 10 s)");
        assert!(took < Duration::from_secs(20), "{took:?}");
        // They reconnect on the surviving node.
        let r = nodes[0].try_connect("d00").await;
        assert!(r.is_ok(), "refuse={refuse}: {:?}", r.err());
        drop(doomed);
    }
}

/// 9. Redis killed, then restarted empty 3 s later: connections stay open,
///    cross-node requests fail fast, new handshakes get 503; afterwards
///    cross-node delivery and rooms come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_and_recovery() {
    let (mut redis, nodes) = cluster(2, &[]).await;
    let mut a = Peer::new("a", nodes[0].connect("a").await);
    let mut b = Peer::new("b", nodes[1].connect("b").await);
    a.join("r", &[("k", "a")]).await;
    b.join("r", &[("k", "b")]).await;
    let id = a.next_id();
    assert_ack(&a.request(set_activity_req(&id, Status::Playing, "x")).await);
    redis.kill();
    // A cross-node request fails fast (once the node noticed) with UNAVAILABLE.
    let mut worst = Duration::ZERO;
    let mut unavailable = false;
    for i in 0..20 {
        let id = format!("j{i}");
        let t = Instant::now();
        let r = a.request(join_req(&id, "other", &[])).await;
        worst = worst.max(t.elapsed());
        if error_code(&r) == Some(Code::Unavailable) {
            unavailable = true;
            break;
        }
    }
    println!("requests during the outage: slowest reply {worst:?}");
    assert!(unavailable, "no UNAVAILABLE during the outage");
    assert!(worst < Duration::from_secs(1), "a request hung {worst:?}");
    // New handshakes are refused with 503.
    let t = Instant::now();
    assert_eq!(
        nodes[1].try_connect("late").await.err().map(|s| s.as_u16()),
        Some(503)
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // Local traffic goes on; nobody was disconnected.
    a.send(&msg("e1", "echo", b"x")).await;
    assert_eq!(next_app(&mut a).await.id, "e1");
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage lasts 3 s (by design)
    redis.restart().await;
    let back = Instant::now();
    // Cross-node delivery is back.
    let mut n = 0;
    loop {
        n += 1;
        a.send(&direct(&format!("d{n}"), "b")).await;
        match tokio::time::timeout(Duration::from_millis(200), next_app(&mut b)).await {
            Ok(m) => {
                assert!(m.id.starts_with('d'));
                break;
            }
            Err(_) => assert!(
                back.elapsed() < Duration::from_secs(10),
                "no delivery after Redis came back"
            ),
        }
    }
    println!(
        "cross-node delivery back {:?} after Redis restarted",
        back.elapsed()
    );
    // Rooms and presence are consistent again (re-announced to the empty Redis).
    eventually("room re-announced", Duration::from_secs(10), async || {
        let id = b.next_id();
        let r = b.request(list_req(&id, "r")).await;
        !is_error(&r) && member_map(members_reply(&r)).len() == 2
    })
    .await;
    let c = nodes[1].connect("c").await;
    let mut c = Peer::new("c", c);
    eventually(
        "activity re-announced",
        Duration::from_secs(10),
        async || {
            let id = c.next_id();
            let r = c.request(list_activities_req(&id)).await;
            activity_of(&r, "a").is_some_and(|x| status_of(x) == Status::Playing)
        },
    )
    .await;
    println!(
        "rooms and presence consistent {:?} after Redis restarted",
        back.elapsed()
    );
    // And a new join crosses nodes again.
    c.join("r", &[]).await;
    a.wait_for("c joined", |m| {
        member_changed(m).is_some_and(|x| x.joined && x.member.as_ref().unwrap().user_id == "c")
    })
    .await;
}

fn is_error(m: &edk_ws::Message) -> bool {
    matches!(m.control, Some(Control::Error(_)))
}

/// 10. Redis stopped (SIGSTOP) for 2 s: no request or handshake hangs past
///     its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_never_hangs_a_call() {
    let (redis, nodes) = cluster(2, &[]).await;
    let mut a = Peer::new("a", nodes[0].connect("a").await);
    redis.signal("-STOP");
    let t = Instant::now();
    let r = a.request(join_req("j1", "r", &[])).await;
    let join_took = t.elapsed();
    let t = Instant::now();
    let h = nodes[1].try_connect("x").await;
    let handshake_took = t.elapsed();
    redis.signal("-CONT");
    println!(
        "stalled Redis: join reply {join_took:?} ({:?}), handshake {handshake_took:?} ({:?})",
        error_code(&r),
        h.as_ref().err()
    );
    assert_eq!(error_code(&r), Some(Code::Unavailable));
    assert!(join_took < Duration::from_secs(1), "{join_took:?}");
    assert_eq!(h.err().map(|s| s.as_u16()), Some(503));
    assert!(
        handshake_took < Duration::from_secs(1),
        "{handshake_took:?}"
    );
    // And it recovers.
    eventually("joins work again", Duration::from_secs(10), async || {
        let id = a.next_id();
        error_code(&a.request(join_req(&id, "r", &[])).await).is_none()
    })
    .await;
}

/// 11. Redis kills the pub/sub connections: delivery is back within a
///     second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_connection_killed_by_the_server() {
    let (redis, nodes) = cluster(2, &[]).await;
    let mut a = Peer::new("a", nodes[0].connect("a").await);
    let mut b = Peer::new("b", nodes[1].connect("b").await);
    a.send(&direct("before", "b")).await;
    assert_eq!(next_app(&mut b).await.id, "before");
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_ne!(killed, "0", "no pub/sub client killed");
    let t = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        a.send(&direct(&format!("after{n}"), "b")).await;
        if tokio::time::timeout(Duration::from_millis(100), next_app(&mut b))
            .await
            .is_ok()
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "delivery not back");
    }
    println!(
        "delivery back {:?} after CLIENT KILL TYPE pubsub",
        t.elapsed()
    );
}

/// 12. A node stopped gracefully: the others see its users leave at once
///     (well before any lease could expire).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_releases_at_once() {
    let (_redis, mut nodes) = cluster(2, &[]).await;
    let mut w = Peer::new("w", nodes[0].connect("w").await);
    w.join("r", &[]).await;
    let mut g = Peer::new("g", nodes[1].connect("g").await);
    g.join("r", &[]).await;
    w.wait_for("g joined", |m| member_changed(m).is_some_and(|x| x.joined))
        .await;
    let t = Instant::now();
    nodes[1].terminate();
    w.wait_for("g left", |m| member_changed(m).is_some_and(|x| !x.joined))
        .await;
    let took = t.elapsed();
    println!("leave seen {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The user may connect on the other node at once (claim released),
    // even in refuse mode: g's old node says it released everything.
    assert!(nodes[0].try_connect("g").await.is_ok());
    drop(g);
    nodes[1].stop().await;
}

/// A Redis that requires an ACL user and password: the URL's credentials
/// are used; wrong ones leave the backplane down (handshakes 503), never a
/// node that pretends to be clustered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_an_acl_user() {
    let acl = [
        "--user", "default", "off", "--user", "edk", "on", ">s3cret", "~*", "&*", "+@all",
    ];
    let redis = Redis::start_with(&acl, "edk:s3cret").await;
    let a_node = Node::start(&redis, "n0", &[]).await;
    let b_node = Node::start(&redis, "n1", &[]).await;
    let mut a = Peer::new("a", a_node.connect("a").await);
    let mut b = Peer::new("b", b_node.connect("b").await);
    a.send(&direct("hi", "b")).await;
    assert_eq!(next_app(&mut b).await.id, "hi");
    let bad = format!("redis://edk:wrong@127.0.0.1:{}", redis.port);
    let lost = Node::start_at(&bad, "n2", &[]).await;
    assert_eq!(
        lost.try_connect("c").await.err().map(|s| s.as_u16()),
        Some(503)
    );
}
