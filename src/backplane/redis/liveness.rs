//! Keeping the node in the cluster: the supervisor (connect, re-subscribe,
//! recover after an outage), the heartbeat (node table, reaping dead
//! nodes) and the graceful goodbye.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{inbox, scripts, Shared};
use crate::protocol::cluster::{self, envelope::Body, room_event, ActivityRecord};
use crate::protocol::codec;
use crate::protocol::proto::{Activity, Status};

/// Reconnect backoff: doubles from the first step up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(20);
const BACKOFF_CAP: Duration = Duration::from_millis(100);

/// Connects, recovers, waits for an outage, and again, for ever.
pub(super) async fn supervise(s: Arc<Shared>, up: oneshot::Sender<()>) {
    let mut up = Some(up);
    let mut backoff = BACKOFF_FIRST;
    let always = [s.keys.all_channel()];
    loop {
        if s.stopping.load(Ordering::Acquire) {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if let Err(e) = s.link.connect(&always, tx).await {
            s.link.disconnect().await;
            if backoff == BACKOFF_FIRST {
                warn!(error = %e, "cannot reach Redis; retrying");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
            continue;
        }
        tokio::spawn(inbox::run(s.clone(), rx));
        s.link.set_up();
        if let Err(e) = recover(&s).await {
            warn!(error = %e, "recovery after reconnecting failed; reconnecting");
            s.link.mark_down("recovery failed");
            s.link.disconnect().await;
            continue;
        }
        backoff = BACKOFF_FIRST;
        info!(node = %s.node, "backplane (Redis) up");
        if let Some(tx) = up.take() {
            let _ = tx.send(());
        }
        s.link.wait_down().await;
        s.link.disconnect().await;
    }
}

/// After (re)connecting: announce this node again if Redis lost its data,
/// retry the cleanups of the outage, and reload every replica.
async fn recover(s: &Arc<Shared>) -> Result<(), crate::backplane::BackplaneError> {
    s.link
        .call(|mut con| async move { scripts::load_all(&mut con).await })
        .await?;
    let key = s.keys.incarnation();
    let fresh = format!("{:x}", codec::now_ms());
    let incarnation = s
        .link
        .call(|mut con| async move {
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(fresh)
                .arg("NX")
                .query_async(&mut con)
                .await?;
            redis::cmd("GET")
                .arg(&key)
                .query_async::<String>(&mut con)
                .await
        })
        .await?;
    let lost = {
        let mut known = s.incarnation.lock();
        let lost = known.as_ref().is_some_and(|k| *k != incarnation);
        *known = Some(incarnation);
        lost
    };
    beat(s).await?;
    if lost {
        warn!("Redis lost its data: announcing this node's users, rooms and activities again");
        announce(s).await?;
    }
    s.run_cleanups().await;
    reload_all(s, lost).await
}

/// Reloads every room replica and the cluster's activities.
async fn reload_all(s: &Arc<Shared>, force: bool) -> Result<(), crate::backplane::BackplaneError> {
    let Some(hub) = s.hub() else { return Ok(()) };
    for room in hub.replicated_rooms() {
        s.load_room(&room, force).await?;
    }
    let mut records = Vec::new();
    for b in 0..super::keys::BUCKETS {
        let [bucket, _, _] = s.keys.bucket(b);
        let values = s
            .link
            .call(|mut con| async move {
                redis::cmd("HVALS")
                    .arg(bucket)
                    .query_async::<Vec<Vec<u8>>>(&mut con)
                    .await
            })
            .await?;
        records.extend(
            values
                .into_iter()
                .filter_map(|v| ActivityRecord::decode(&v[..]).ok()),
        );
    }
    hub.install_presence(records);
    Ok(())
}

/// Writes this node's claims, memberships, room state and activities again
/// (Redis lost them, or this node was reaped while alive).
async fn announce(s: &Arc<Shared>) -> Result<(), crate::backplane::BackplaneError> {
    let Some(hub) = s.hub() else { return Ok(()) };
    let mut conns = Vec::new();
    hub.registry.for_each(|c| conns.push(c.clone()));
    for c in &conns {
        let own = s.keys.owner(c.user_id());
        let users = s.keys.node_users(&s.node);
        let (node, user, id, epoch) = (s.node.clone(), c.user_id().to_owned(), c.id(), c.epoch());
        s.link
            .call(|mut con| async move {
                scripts::ANNOUNCE
                    .key(&own)
                    .arg(&*node)
                    .arg(id)
                    .arg(epoch)
                    .invoke_async::<i64>(&mut con)
                    .await?;
                redis::cmd("SADD")
                    .arg(users)
                    .arg(user)
                    .query_async::<()>(&mut con)
                    .await
            })
            .await?;
    }
    let backplane = super::RedisBackplane { s: s.clone() };
    for room in hub.replicated_rooms() {
        let Some(local) = hub.rooms.local_snapshot(&room) else {
            continue;
        };
        for (conn, state, read_only) in &local.members {
            let record = crate::backplane::MemberRecord {
                user: conn.user_id(),
                conn: conn.id(),
                epoch: conn.epoch(),
                state,
                read_only: *read_only,
            };
            use crate::backplane::Backplane as _;
            let _ = backplane.room_join(&room, record, &local.settings).await;
        }
        if !local.state.is_empty() {
            let k = s.keys.room(&room);
            let state: Vec<(String, String)> = local.state.into_iter().collect();
            s.link
                .call(|mut con| async move {
                    // Only if nobody restored it first.
                    let empty: bool = redis::cmd("EXISTS")
                        .arg(&k.state)
                        .query_async::<i64>(&mut con)
                        .await?
                        == 0;
                    if empty {
                        redis::cmd("HSET")
                            .arg(&k.state)
                            .arg(state)
                            .query_async::<()>(&mut con)
                            .await?;
                    }
                    Ok(())
                })
                .await?;
        }
    }
    let mut records = Vec::new();
    for (activity, epoch) in hub.local_activities() {
        use crate::backplane::Backplane as _;
        backplane.activity_set(&activity, epoch).await?;
        records.push(ActivityRecord {
            activity: Some(activity),
            node: String::new(),
            epoch,
        });
    }
    // The others may have reloaded before this: tell them, too.
    if !records.is_empty() {
        use crate::backplane::Backplane as _;
        backplane.publish_activities(records);
    }
    Ok(())
}

/// One heartbeat: refreshes this node in the node table and learns which
/// nodes are dead; announces this node if it had been reaped.
async fn beat(s: &Arc<Shared>) -> Result<Vec<String>, crate::backplane::BackplaneError> {
    let nodes = s.keys.nodes();
    let (node, lease) = (s.node.clone(), s.lease.as_millis() as u64);
    let (new, dead) = s
        .link
        .call(|mut con| async move {
            scripts::HEARTBEAT
                .key(&nodes)
                .arg(&*node)
                .arg(lease)
                .invoke_async::<(i64, Vec<String>)>(&mut con)
                .await
        })
        .await?;
    *s.dead.write() = dead.clone();
    let first = !s.announced.swap(true, Ordering::AcqRel);
    if new == 1 && !first {
        warn!("this node was taken for dead (reaped): announcing it again");
        announce(s).await?;
        reload_all(s, false).await?;
    }
    Ok(dead)
}

/// Beats every fifth of the lease and reaps the nodes that stopped.
pub(super) async fn heartbeat(s: Arc<Shared>) {
    let every = s.lease / 5;
    loop {
        tokio::time::sleep(every).await;
        if s.stopping.load(Ordering::Acquire) {
            return;
        }
        if !s.link.is_up() {
            continue;
        }
        let Ok(dead) = beat(&s).await else { continue };
        // Cleanups whose call failed while Redis stayed up (a slow call).
        s.run_cleanups().await;
        for node in dead {
            if *node != *s.node {
                reap(&s, &node, true).await.ok();
            }
        }
    }
}

/// Removes everything `node` held: its claims, its members (with leave
/// events) and its activities (offline events). With `lock`, only if this
/// node wins the right to reap it.
async fn reap(
    s: &Arc<Shared>,
    node: &str,
    lock: bool,
) -> Result<(), crate::backplane::BackplaneError> {
    if lock {
        let key = s.keys.reap_lock(node);
        let me = s.node.clone();
        let won: Option<String> = s
            .link
            .call(|mut con| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(&*me)
                    .arg("NX")
                    .arg("PX")
                    .arg(30_000)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        if won.is_none() {
            return Ok(());
        }
    }
    let (users_key, rooms_key) = (s.keys.node_users(node), s.keys.node_rooms(node));
    let (users, rooms): (Vec<String>, Vec<String>) = {
        let (u, r) = (users_key.clone(), rooms_key.clone());
        s.link
            .call(|mut con| async move {
                redis::pipe()
                    .smembers(u)
                    .smembers(r)
                    .query_async(&mut con)
                    .await
            })
            .await?
    };
    for user in &users {
        let own = s.keys.owner(user);
        let n = node.to_owned();
        s.link
            .call(|mut con| async move {
                scripts::RELEASE_NODE
                    .key(&own)
                    .arg(n)
                    .invoke_async::<i64>(&mut con)
                    .await
            })
            .await?;
    }
    for channel in &rooms {
        // The rooms set holds room channels (`P:{r:R}`): the keys derive.
        let Some(room) = channel
            .strip_prefix(&format!("{}:{{r:", s.keys.prefix()))
            .and_then(|r| r.strip_suffix('}'))
        else {
            continue;
        };
        let env = s.room_event(
            room,
            room_event::Change::Reaped(cluster::Reaped {
                node: node.to_owned(),
            }),
            None,
        );
        let k = s.keys.room(room);
        let n = node.to_owned();
        s.link
            .call(|mut con| async move {
                scripts::ROOM_REAP
                    .key(k.all().as_slice())
                    .arg(n)
                    .arg(env)
                    .invoke_async::<Vec<i64>>(&mut con)
                    .await
            })
            .await?;
    }
    let mut offline = Vec::new();
    for b in 0..super::keys::BUCKETS {
        let keys = s.keys.bucket(b);
        let n = node.to_owned();
        let gone: Vec<String> = s
            .link
            .call(|mut con| async move {
                scripts::ACTIVITY_REAP
                    .key(keys.as_slice())
                    .arg(n)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        offline.extend(gone.into_iter().map(|user| ActivityRecord {
            activity: Some(Activity {
                user_id: user,
                status: Status::Offline as i32,
                detail: String::new(),
                since_ms: codec::now_ms(),
            }),
            node: node.to_owned(),
            epoch: u64::MAX,
        }));
    }
    let nodes = s.keys.nodes();
    let n = node.to_owned();
    s.link
        .call(|mut con| async move {
            redis::pipe()
                .del(&[users_key, rooms_key])
                .ignore()
                .zrem(nodes, n)
                .ignore()
                .query_async::<()>(&mut con)
                .await
        })
        .await?;
    if !offline.is_empty() {
        let bytes = s.envelope(Body::Activities(cluster::ActivityBatch {
            activities: offline.clone(),
        }));
        let _ = s.link.publish(super::Out {
            channel: s.keys.all_channel(),
            sharded: false,
            bytes,
        });
        if let Some(hub) = s.hub() {
            hub.apply_remote_activities(offline.clone());
        }
    }
    s.dead.write().retain(|n| n != node);
    info!(
        node,
        users = users.len(),
        rooms = rooms.len(),
        activities = offline.len(),
        "reaped a dead node"
    );
    Ok(())
}

/// A graceful goodbye: whatever this node still holds is released now,
/// it leaves the node table, and the others are told.
pub(super) async fn leave_cluster(s: &Arc<Shared>) {
    if !s.link.is_up() {
        return;
    }
    let _ = reap(s, &s.node.clone(), false).await;
    let bytes = s.envelope(Body::NodeBye(cluster::NodeBye {
        node: s.node.to_string(),
    }));
    // Sent directly (not queued): the process may end right after.
    let channel = s.keys.all_channel();
    let _ = s
        .link
        .call(|mut con| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(bytes)
                .query_async::<()>(&mut con)
                .await
        })
        .await;
}
