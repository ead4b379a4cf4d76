//! What arrives from the other nodes (RESP3 pushes on the pub/sub
//! connection), applied to the hub.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::Shared;
use crate::hub::policy::StateChange;
use crate::hub::replica::Applied;
use crate::hub::{Payload, Target};
use crate::protocol::close::{CloseRequest, DisconnectReason};
use crate::protocol::cluster::{self, envelope::Body, room_event, Envelope, WIRE_VERSION};

/// Reads the pushes of one pub/sub connection until it drops.
pub(super) async fn run(s: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<PushInfo>) {
    let mut warned_versions: HashMap<String, u32> = HashMap::new();
    while let Some(push) = rx.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let Some(Value::BulkString(bytes)) = push.data.into_iter().nth(1) else {
                    continue;
                };
                match Envelope::decode(&bytes[..]) {
                    Ok(env) if env.version == WIRE_VERSION => handle(&s, env),
                    Ok(env) => {
                        if warned_versions
                            .insert(env.origin.clone(), env.version)
                            .is_none()
                        {
                            warn!(origin = %env.origin, version = env.version, ours = WIRE_VERSION,
                                "ignoring a node that speaks another cluster wire version");
                        }
                    }
                    Err(e) => debug!(error = %e, "undecodable cluster envelope"),
                }
            }
            PushKind::Disconnection => {
                s.link.mark_down("the pub/sub connection dropped");
                return;
            }
            _ => {}
        }
    }
    s.link.mark_down("the pub/sub connection ended");
}

fn handle(s: &Arc<Shared>, env: Envelope) {
    let Some(hub) = s.hub() else { return };
    let own = *env.origin == *s.node;
    match env.body {
        Some(Body::Deliver(d)) if !own => {
            let payload = Payload::Frame(d.frame);
            let except: Vec<&str> = d.exclude.iter().map(String::as_str).collect();
            let target = if !d.user.is_empty() {
                Target::User(&d.user)
            } else if !d.room.is_empty() {
                Target::Room {
                    room: &d.room,
                    from: None,
                    except: &except,
                }
            } else {
                Target::All {
                    except: except.first().copied(),
                }
            };
            let _ = hub.deliver(target, &payload);
        }
        Some(Body::Close(c)) if !own => close(s, c),
        Some(Body::RoomEvent(ev)) => {
            let room = ev.room.clone();
            {
                let mut loading = s.loading.lock();
                if let Some(buffer) = loading.get_mut(&room) {
                    buffer.push((env.room_version, env.origin, ev));
                    return;
                }
            }
            apply_room_event(s, env.room_version, &env.origin, ev);
            s.wake(&room);
        }
        Some(Body::Activities(batch)) if !own => {
            let records = batch
                .activities
                .into_iter()
                .map(|mut r| {
                    r.node.clone_from(&env.origin);
                    r
                })
                .collect();
            hub.apply_remote_activities(records);
        }
        _ => {}
    }
}

/// A close for a user's connection here: exactly the connection named, or
/// (no node named: a kick) whichever connection the user has.
fn close(s: &Shared, c: cluster::Close) {
    let Some(hub) = s.hub() else { return };
    debug!(
        user = c.user,
        node = c.node,
        conn = c.conn,
        epoch = c.epoch,
        "close from another node"
    );
    let reason = if c.code == u32::from(crate::protocol::close::code::KICKED) {
        DisconnectReason::Kicked
    } else {
        DisconnectReason::Replaced
    };
    let req = CloseRequest::new(c.code as u16, &c.reason, reason);
    if c.node.is_empty() {
        let _ = hub.deliver(Target::User(&c.user), &Payload::Close(req));
        return;
    }
    if *c.node != *s.node {
        return;
    }
    match hub.registry.get(&c.user) {
        Some(conn) if conn.id() == c.conn => {
            conn.request_close(req);
        }
        // Not registered yet (its handshake is still under way): fence it.
        _ => {
            let mut f = s.fences.lock();
            let e = f.entry(Arc::from(c.user.as_str())).or_default();
            *e = (*e).max(c.epoch);
        }
    }
}

/// Applies one room event at `version` to the replica; a gap reloads it.
pub(super) fn apply_room_event(
    s: &Arc<Shared>,
    version: u64,
    origin: &str,
    ev: cluster::RoomEvent,
) {
    let Some(hub) = s.hub() else { return };
    if hub.room_version(&ev.room).is_none() && !s.watched.lock().contains(&ev.room) {
        return; // not ours to replicate
    }
    let room = ev.room;
    let settings = ev.settings.map(super::from_wire_settings);
    let applied = match ev.change {
        Some(room_event::Change::Join(m)) => {
            let m = s.member_update(m);
            hub.apply_join(&room, m, version, settings.as_ref())
        }
        Some(room_event::Change::Leave(l)) => hub.apply_leave(&room, &l.user, version),
        Some(room_event::Change::State(u)) => {
            let change = StateChange {
                room_changes: u.room_changes,
                room_removed: u.room_removed,
                member_changes: u.member_changes,
                member_removed: u.member_removed,
            };
            let user = (!u.user.is_empty()).then_some(u.user.as_str());
            hub.apply_state(&room, user, change, version)
        }
        Some(room_event::Change::Closed(c)) => hub.apply_close(&room, &c.reason, version),
        Some(room_event::Change::Reaped(r)) => hub.apply_reap(&room, &r.node, version),
        None => Applied::Already,
    };
    debug!(room, version, origin, ?applied, "room event");
    if applied == Applied::Gap {
        debug!(
            room,
            version, origin, "room events missing: reloading the replica"
        );
        let s = s.clone();
        tokio::spawn(async move {
            let _ = s.load_room(&room, false).await;
        });
    }
}
