//! [`RedisBackplane`]: several instances sharing one Redis behave as one
//! server.
//!
//! - **Delivery.** A frame is encoded once at the origin and published as
//!   bytes in an [`Envelope`]: to a user's sharded channel (the node holding
//!   the user listens to it), to a room's sharded channel (nodes with members
//!   listen), or to `P:all` (broadcasts, activity batches). Local recipients
//!   are served by the hub directly, never through Redis; a node ignores its
//!   own envelopes (room events excepted: see below). Delivery across nodes
//!   is **at most once**: a message published while a node's pub/sub
//!   connection is down is not replayed.
//! - **One connection per user.** A handshake subscribes to the user's
//!   channel, then runs the claim script on the user's record, which bumps
//!   an epoch and records {node, conn, epoch} (in refuse mode the conflict is
//!   decided in the same script). The previous owner's node is told to close
//!   exactly that connection; a close that arrives before its connection is
//!   registered fences the epoch, so the late handshake closes at once.
//! - **Rooms.** Membership, member state and room state live in Redis with
//!   a version; joins, leaves, state changes (compare-and-set on the
//!   version) and closes are scripts that publish their event from inside
//!   the script with the new version, so every replica applies events in
//!   order (`hub::replica`); a gap means events were lost and the replica is
//!   reloaded. A node keeps a replica only while it has local members.
//! - **Presence.** Activities live in 16 bucket hashes with their epoch and
//!   node; each node publishes at most one batch of its changes per window.
//! - **Liveness.** Every node beats on a sorted set every fifth of the lease;
//!   a node silent for a lease is dead and one survivor reaps it (its claims,
//!   members and activities, with leave and offline events).
//! - **Outage.** Every call is bounded by `redis_timeout`; a failure marks
//!   the backplane down, after which cross-node operations fail at once, new
//!   handshakes get 503 (unless `redis_admit_when_down`), and local traffic
//!   goes on. The supervisor reconnects (capped backoff), re-subscribes,
//!   re-announces this node's records if Redis lost its data (its
//!   `incarnation` changed), retries the cleanups that failed meanwhile and
//!   reloads every replica.

mod inbox;
pub(crate) mod keys;
mod link;
mod liveness;
mod scripts;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{Backplane, BackplaneError, BackplaneStats, Claim, ClaimError, MemberRecord};
use crate::hub::policy::{RoomSettings, StateChange};
use crate::hub::replica::{MemberUpdate, RoomSnapshot};
use crate::hub::rooms::RoomError;
use crate::hub::{Hub, Payload, Topic};
use crate::options::Options;
use crate::protocol::cluster::{self, envelope::Body, room_event, ActivityRecord, Envelope};
use crate::protocol::codec;
use crate::protocol::proto::{Activity, Status};
use keys::Keys;
use link::{Link, Out};

/// Room events that arrived while their room was loading: (version, origin, event).
type Buffered = Vec<(u64, String, cluster::RoomEvent)>;
/// Writers waiting for a replica to reach a version.
type Waiters = Vec<(u64, oneshot::Sender<()>)>;

/// Cleanups that failed while Redis was down, retried when it is back.
enum Cleanup {
    Release {
        user: String,
        epoch: u64,
    },
    Leave {
        room: String,
        user: String,
        epoch: u64,
    },
    Offline {
        user: String,
        epoch: u64,
    },
}

pub(crate) struct Shared {
    node: Arc<str>,
    keys: Keys,
    link: Link,
    lease: Duration,
    admit_when_down: bool,
    hub: OnceLock<Arc<Hub>>,
    seq: AtomicU64,
    /// Users whose connection with an epoch up to this one must close on
    /// registration (a close arrived first).
    fences: Mutex<HashMap<Arc<str>, u64>>,
    /// Rooms this node listens to (it has, or is getting, a replica).
    watched: Mutex<HashSet<String>>,
    /// Rooms being (re)loaded: events that arrive meanwhile wait here.
    loading: Mutex<HashMap<String, Buffered>>,
    /// Writers waiting for a room's replica to reach a version.
    waiters: Mutex<HashMap<String, Waiters>>,
    /// Nodes whose lease ran out and that are not reaped yet, from the
    /// last heartbeat.
    dead: RwLock<Vec<String>>,
    /// Redis's incarnation when last seen: a new one means it lost its data.
    incarnation: Mutex<Option<String>>,
    cleanups: Mutex<Vec<Cleanup>>,
    started: AtomicBool,
    /// Set after the first heartbeat.
    announced: AtomicBool,
    stopping: AtomicBool,
}

/// The Redis backplane; see the module docs.
pub(crate) struct RedisBackplane {
    s: Arc<Shared>,
}

fn default_node_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".to_owned());
    let salt = RandomState::new().hash_one(std::time::SystemTime::now()) as u16;
    format!("{host}-{}-{salt:04x}", std::process::id())
}

impl RedisBackplane {
    /// # Errors
    ///
    /// The URL is not a Redis URL (nothing is connected yet).
    pub fn new(url: &str, o: &Options) -> redis::RedisResult<Self> {
        let node = o.node_id.clone().unwrap_or_else(default_node_id);
        Ok(RedisBackplane {
            s: Arc::new(Shared {
                node: Arc::from(node.as_str()),
                keys: Keys::new(&o.redis_prefix),
                link: Link::new(url, o.redis_timeout)?,
                lease: o.node_lease,
                admit_when_down: o.redis_admit_when_down,
                hub: OnceLock::new(),
                seq: AtomicU64::new(1),
                fences: Mutex::new(HashMap::new()),
                watched: Mutex::new(HashSet::new()),
                loading: Mutex::new(HashMap::new()),
                waiters: Mutex::new(HashMap::new()),
                dead: RwLock::new(Vec::new()),
                incarnation: Mutex::new(None),
                cleanups: Mutex::new(Vec::new()),
                started: AtomicBool::new(false),
                announced: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
            }),
        })
    }
}

impl Shared {
    fn hub(&self) -> Option<&Arc<Hub>> {
        self.hub.get()
    }

    fn envelope(&self, body: Body) -> Vec<u8> {
        Envelope {
            version: cluster::WIRE_VERSION,
            origin: self.node.to_string(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            sent_ms: codec::now_ms(),
            room_version: 0,
            body: Some(body),
        }
        .encode_to_vec()
    }

    fn room_event(
        &self,
        room: &str,
        change: room_event::Change,
        settings: Option<&RoomSettings>,
    ) -> Vec<u8> {
        self.envelope(Body::RoomEvent(cluster::RoomEvent {
            room: room.to_owned(),
            change: Some(change),
            settings: settings.map(to_wire_settings),
        }))
    }

    /// The publish of `payload` for `topic`: its channel and envelope
    /// (`None`: nothing to send, e.g. a close for a room).
    fn out(&self, topic: Topic<'_>, payload: &Payload, except: &[&str]) -> Option<Out> {
        let (channel, sharded) = match topic {
            Topic::User(u) => (self.keys.user_channel(u), true),
            Topic::Room(r) => (self.keys.room_channel(r), true),
            Topic::All => (self.keys.all_channel(), false),
        };
        let body = match payload {
            Payload::Frame(frame) => Body::Deliver(cluster::Deliver {
                frame: frame.clone(),
                exclude: except.iter().map(|u| u.to_string()).collect(),
                user: match topic {
                    Topic::User(u) => u.to_owned(),
                    _ => String::new(),
                },
                room: match topic {
                    Topic::Room(r) => r.to_owned(),
                    _ => String::new(),
                },
            }),
            Payload::Close(req) => match topic {
                Topic::User(u) => Body::Close(cluster::Close {
                    user: u.to_owned(),
                    code: req.code as u32,
                    reason: req.text.clone(),
                    ..Default::default()
                }),
                _ => return None,
            },
        };
        Some(Out {
            channel,
            sharded,
            bytes: self.envelope(body),
        })
    }

    fn member_record(&self, m: &MemberRecord<'_>) -> cluster::Member {
        cluster::Member {
            user: m.user.to_owned(),
            node: self.node.to_string(),
            conn: m.conn,
            epoch: m.epoch,
            state: m.state.clone(),
            read_only: m.read_only,
        }
    }

    /// A member as read from Redis or an event, with its local connection
    /// resolved when it is on this node.
    fn member_update(&self, m: cluster::Member) -> MemberUpdate {
        let here = *m.node == *self.node;
        let conn = here
            .then(|| self.hub()?.registry.get(&m.user))
            .flatten()
            .filter(|c| c.id() == m.conn);
        MemberUpdate {
            user: Arc::from(m.user.as_str()),
            node: (!here || conn.is_none()).then(|| Arc::from(m.node.as_str())),
            conn,
            epoch: m.epoch,
            state: m.state,
            read_only: m.read_only,
        }
    }

    /// Starts listening to `room` and loads its replica, once.
    async fn watch_room(self: &Arc<Self>, room: &str) -> Result<(), BackplaneError> {
        if !self.watched.lock().insert(room.to_owned()) {
            return Ok(());
        }
        self.loading.lock().insert(room.to_owned(), Vec::new());
        let watched = self.link.watch(&self.keys.room_channel(room), true).await;
        let loaded = match watched {
            Ok(()) => self.load_room(room, false).await,
            Err(e) => Err(e),
        };
        if loaded.is_err() {
            self.loading.lock().remove(room);
            self.watched.lock().remove(room);
            self.link.unwatch(&self.keys.room_channel(room)).await;
        }
        loaded
    }

    /// Reads `room` from Redis and installs it as this node's replica
    /// (`force`: even if the replica looks newer, after Redis lost its
    /// data), then applies the events that arrived meanwhile.
    async fn load_room(self: &Arc<Self>, room: &str, force: bool) -> Result<(), BackplaneError> {
        self.loading.lock().entry(room.to_owned()).or_default();
        let k = self.keys.room(room);
        let read = self
            .link
            .call(|mut con| async move {
                redis::pipe()
                    .hgetall(&k.members)
                    .hgetall(&k.state)
                    .hget(&k.config, "settings")
                    .get(&k.version)
                    .query_async::<(
                        HashMap<String, Vec<u8>>,
                        HashMap<String, String>,
                        Option<Vec<u8>>,
                        Option<u64>,
                    )>(&mut con)
                    .await
            })
            .await;
        let Some(hub) = self.hub() else {
            return Ok(());
        };
        let (members, state, settings, version) = match read {
            Ok(r) => r,
            Err(e) => {
                self.loading.lock().remove(room);
                return Err(e);
            }
        };
        let settings = settings
            .and_then(|b| cluster::RoomSettings::decode(&b[..]).ok())
            .map(from_wire_settings)
            .unwrap_or_else(|| default_settings(&hub.options));
        let snap = RoomSnapshot {
            members: members
                .into_values()
                .filter_map(|b| cluster::Member::decode(&b[..]).ok())
                .map(|m| self.member_update(m))
                .collect(),
            state,
            settings,
            version: version.unwrap_or(0),
        };
        let mut loading = self.loading.lock();
        hub.install_room(room, snap, force);
        let mut buffered = loading.remove(room).unwrap_or_default();
        buffered.sort_by_key(|(v, _, _)| *v);
        for (v, origin, ev) in buffered {
            inbox::apply_room_event(self, v, &origin, ev);
        }
        drop(loading);
        self.wake(room);
        Ok(())
    }

    /// Wakes the writers waiting for versions of `room` it has reached.
    fn wake(&self, room: &str) {
        let Some(v) = self.hub().and_then(|h| h.room_version(room)) else {
            return;
        };
        let mut w = self.waiters.lock();
        if let Some(list) = w.get_mut(room) {
            let (ready, rest): (Vec<_>, Vec<_>) =
                std::mem::take(list).into_iter().partition(|(t, _)| *t <= v);
            *list = rest;
            for (_, tx) in ready {
                let _ = tx.send(());
            }
            if list.is_empty() {
                w.remove(room);
            }
        }
    }

    fn later(&self, c: Cleanup) {
        self.cleanups.lock().push(c);
    }
}

fn to_wire_settings(s: &RoomSettings) -> cluster::RoomSettings {
    cluster::RoomSettings {
        member_events: s.member_events,
        publish_echo: s.publish_echo,
        max_members: s.max_members as u64,
    }
}

fn from_wire_settings(s: cluster::RoomSettings) -> RoomSettings {
    RoomSettings {
        member_events: s.member_events,
        publish_echo: s.publish_echo,
        max_members: s.max_members as usize,
    }
}

fn default_settings(o: &Options) -> RoomSettings {
    RoomSettings {
        member_events: o.room_member_events,
        publish_echo: o.room_publish_echo,
        max_members: o.max_members_per_room,
    }
}

/// The first integer of a script's reply.
fn first(v: &[i64]) -> i64 {
    v.first().copied().unwrap_or(0)
}

#[async_trait]
impl Backplane for RedisBackplane {
    fn node_id(&self) -> &str {
        &self.s.node
    }

    fn is_clustered(&self) -> bool {
        true
    }

    fn is_up(&self) -> bool {
        self.s.link.is_up()
    }

    fn stats(&self) -> BackplaneStats {
        BackplaneStats {
            publish_errors: self.s.link.publish_errors.load(Ordering::Relaxed),
            slow_calls: self.s.link.slow_calls.load(Ordering::Relaxed),
        }
    }

    async fn start(&self, hub: Arc<Hub>, wait: Duration) {
        let s = &self.s;
        if s.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = s.hub.set(hub);
        let (up_tx, up_rx) = oneshot::channel();
        tokio::spawn(liveness::supervise(s.clone(), up_tx));
        tokio::spawn({
            let s = s.clone();
            async move { s.link.publisher().await }
        });
        tokio::spawn(liveness::heartbeat(s.clone()));
        if tokio::time::timeout(wait, up_rx).await.is_err() {
            warn!(node = %s.node, "backplane not up yet: handshakes get 503 until it is");
        }
    }

    async fn stop(&self) {
        let s = &self.s;
        s.stopping.store(true, Ordering::Release);
        liveness::leave_cluster(s).await;
    }

    fn publish(
        &self,
        topic: Topic<'_>,
        payload: &Payload,
        except: &[&str],
    ) -> Result<(), BackplaneError> {
        match self.s.out(topic, payload, except) {
            Some(out) => self.s.link.publish(out),
            None => Ok(()),
        }
    }

    async fn publish_confirmed(
        &self,
        topic: Topic<'_>,
        payload: &Payload,
    ) -> Result<usize, BackplaneError> {
        let Some(out) = self.s.out(topic, payload, &[]) else {
            return Ok(0);
        };
        self.s
            .link
            .call(|mut con| async move {
                redis::cmd(if out.sharded { "SPUBLISH" } else { "PUBLISH" })
                    .arg(out.channel)
                    .arg(out.bytes)
                    .query_async::<usize>(&mut con)
                    .await
            })
            .await
    }

    fn publish_activities(&self, batch: Vec<ActivityRecord>) {
        let s = &self.s;
        let activities = batch
            .into_iter()
            .map(|mut r| {
                r.node = s.node.to_string();
                r
            })
            .collect();
        let bytes = s.envelope(Body::Activities(cluster::ActivityBatch { activities }));
        let out = Out {
            channel: s.keys.all_channel(),
            sharded: false,
            bytes,
        };
        if s.link.publish(out).is_err() {
            s.link.publish_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn claim(&self, user: &str, conn: u64, refuse_new: bool) -> Result<Claim, ClaimError> {
        let s = &self.s;
        let channel = s.keys.user_channel(user);
        // Listening before claiming: a close for this claim published by a
        // later claim elsewhere cannot be missed.
        let watched = s.link.watch(&channel, true).await;
        let claimed = match watched {
            Ok(()) => {
                let dead = s.dead.read().clone();
                let own = s.keys.owner(user);
                let node = s.node.clone();
                s.link
                    .call(|mut con| async move {
                        let mut inv = scripts::CLAIM.key(&own);
                        inv.arg(&*node).arg(conn).arg(u8::from(refuse_new));
                        for n in &dead {
                            inv.arg(n);
                        }
                        inv.invoke_async::<(String, String, String, String)>(&mut con)
                            .await
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        let (epoch, prev_node, prev_conn, prev_epoch) = match claimed {
            Ok(r) if r.0 == "-1" => {
                s.link.unwatch(&channel).await;
                return Err(ClaimError::Conflict);
            }
            Ok(r) => r,
            Err(_) => {
                if !s.admit_when_down {
                    s.link.unwatch(&channel).await;
                }
                return Err(ClaimError::Unavailable);
            }
        };
        let epoch: u64 = epoch.parse().unwrap_or(0);
        tracing::debug!(user, conn, epoch, prev_node, prev_conn, prev_epoch, "claimed");
        let users = s.keys.node_users(&s.node);
        let u = user.to_owned();
        let _ = s
            .link
            .call(|mut con| async move {
                redis::cmd("SADD")
                    .arg(users)
                    .arg(u)
                    .query_async::<()>(&mut con)
                    .await
            })
            .await;
        // Told even if it may be dead: a close to a dead node is harmless.
        if !prev_node.is_empty() && *prev_node != *s.node {
            let bytes = s.envelope(Body::Close(cluster::Close {
                user: user.to_owned(),
                node: prev_node,
                conn: prev_conn.parse().unwrap_or(0),
                epoch: prev_epoch.parse().unwrap_or(0),
                code: crate::protocol::close::code::REPLACED as u32,
                reason: "replaced by a new connection".to_owned(),
            }));
            let _ = s.link.publish(Out {
                channel,
                sharded: true,
                bytes,
            });
        }
        Ok(Claim { epoch })
    }

    fn fenced(&self, user: &str, epoch: u64) -> bool {
        self.s
            .fences
            .lock()
            .get(user)
            .is_some_and(|fenced| *fenced >= epoch)
    }

    async fn release(&self, user: &str, _conn: u64, epoch: u64) {
        let s = &self.s;
        if s.release_record(user, epoch).await.is_err() {
            s.later(Cleanup::Release {
                user: user.to_owned(),
                epoch,
            });
        }
        s.link.unwatch(&s.keys.user_channel(user)).await;
        let mut f = s.fences.lock();
        if f.get(user).is_some_and(|e| *e <= epoch) {
            f.remove(user);
        }
    }

    async fn room_join(
        &self,
        room: &str,
        member: MemberRecord<'_>,
        settings: &RoomSettings,
    ) -> Result<u64, RoomError> {
        let s = &self.s;
        s.watch_room(room)
            .await
            .map_err(|_| RoomError::Unavailable)?;
        let record = s.member_record(&member);
        let env = s.room_event(
            room,
            room_event::Change::Join(record.clone()),
            Some(settings),
        );
        let k = s.keys.room(room);
        let node = s.node.clone();
        let (user, epoch) = (member.user.to_owned(), member.epoch);
        let wire_settings = to_wire_settings(settings).encode_to_vec();
        let max = settings.max_members;
        let rooms = s.keys.node_rooms(&s.node);
        let r = s
            .link
            .call(|mut con| async move {
                let r = scripts::ROOM_JOIN
                    .key(k.all().as_slice())
                    .arg(&user)
                    .arg(epoch)
                    .arg(&*node)
                    .arg(record.encode_to_vec())
                    .arg(max)
                    .arg(wire_settings)
                    .arg(env)
                    .invoke_async::<(String, Vec<u8>)>(&mut con)
                    .await?;
                redis::cmd("SADD")
                    .arg(rooms)
                    .arg(&k.channel)
                    .query_async::<()>(&mut con)
                    .await?;
                Ok(r)
            })
            .await
            .map_err(|_| RoomError::Unavailable)?;
        match r.0.as_str() {
            "-1" => Err(RoomError::NotConnected),
            "-2" => Err(RoomError::RoomFull),
            v => v.parse().map_err(|_| RoomError::Unavailable),
        }
    }

    async fn room_leave(&self, room: &str, user: &str, epoch: u64) -> Result<u64, RoomError> {
        let s = &self.s;
        let env = s.room_event(
            room,
            room_event::Change::Leave(cluster::Leave {
                user: user.to_owned(),
            }),
            None,
        );
        let k = s.keys.room(room);
        let u = user.to_owned();
        let r = s
            .link
            .call(|mut con| async move {
                scripts::ROOM_LEAVE
                    .key(k.all().as_slice())
                    .arg(u)
                    .arg(epoch)
                    .arg(env)
                    .invoke_async::<Vec<i64>>(&mut con)
                    .await
            })
            .await;
        match r {
            Ok(v) if first(&v) < 0 => Err(RoomError::NotAMember),
            Ok(v) => Ok(first(&v) as u64),
            Err(_) => {
                s.later(Cleanup::Leave {
                    room: room.to_owned(),
                    user: user.to_owned(),
                    epoch,
                });
                Err(RoomError::Unavailable)
            }
        }
    }

    async fn room_update(
        &self,
        room: &str,
        expected: u64,
        by: Option<MemberRecord<'_>>,
        member_part: bool,
        change: &StateChange,
    ) -> Result<Option<u64>, RoomError> {
        let s = &self.s;
        let env = s.room_event(
            room,
            room_event::Change::State(cluster::StateUpdate {
                user: by.as_ref().map(|m| m.user.to_owned()).unwrap_or_default(),
                room_changes: change.room_changes.clone(),
                room_removed: change.room_removed.clone(),
                member_changes: change.member_changes.clone(),
                member_removed: change.member_removed.clone(),
            }),
            None,
        );
        let record = match (&by, member_part) {
            (Some(m), true) => s.member_record(m).encode_to_vec(),
            _ => Vec::new(),
        };
        let (user, epoch) = by.map(|m| (m.user.to_owned(), m.epoch)).unwrap_or_default();
        let k = s.keys.room(room);
        let pairs: Vec<(String, String)> = change
            .room_changes
            .iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect();
        let removed = change.room_removed.clone();
        let r = s
            .link
            .call(|mut con| async move {
                let mut inv = scripts::ROOM_UPDATE.key(k.all().as_slice());
                inv.arg(expected)
                    .arg(&user)
                    .arg(epoch)
                    .arg(record)
                    .arg(env)
                    .arg(pairs.len());
                for (a, b) in &pairs {
                    inv.arg(a).arg(b);
                }
                for key in &removed {
                    inv.arg(key);
                }
                inv.invoke_async::<Vec<i64>>(&mut con).await
            })
            .await
            .map_err(|_| RoomError::Unavailable)?;
        match first(&r) {
            -1 => Err(RoomError::NotAMember),
            -3 => Ok(None),
            -4 => Err(RoomError::NotFound),
            v => Ok(Some(v as u64)),
        }
    }

    async fn room_close(&self, room: &str, reason: &str) -> Result<(u64, usize), RoomError> {
        let s = &self.s;
        let env = s.room_event(
            room,
            room_event::Change::Closed(cluster::Closed {
                reason: reason.to_owned(),
            }),
            None,
        );
        let k = s.keys.room(room);
        let r = s
            .link
            .call(|mut con| async move {
                scripts::ROOM_CLOSE
                    .key(k.all().as_slice())
                    .arg(env)
                    .invoke_async::<Vec<i64>>(&mut con)
                    .await
            })
            .await
            .map_err(|_| RoomError::Unavailable)?;
        match r.as_slice() {
            [-4, ..] => Err(RoomError::NotFound),
            [v, n] => Ok((*v as u64, *n as usize)),
            _ => Err(RoomError::Unavailable),
        }
    }

    async fn room_caught_up(&self, room: &str, version: u64) -> bool {
        let s = &self.s;
        for attempt in 0..2 {
            let (tx, rx) = oneshot::channel();
            s.waiters
                .lock()
                .entry(room.to_owned())
                .or_default()
                .push((version, tx));
            s.wake(room);
            let bound = s.link_timeout() * 4;
            if tokio::time::timeout(bound, rx).await.is_ok() {
                return true;
            }
            if attempt == 0 && s.load_room(room, false).await.is_err() {
                break;
            }
        }
        s.hub()
            .and_then(|h| h.room_version(room))
            .is_some_and(|v| v >= version)
    }

    async fn room_unwatch(&self, room: &str) {
        let s = &self.s;
        if !s.watched.lock().remove(room) {
            return;
        }
        s.link.unwatch(&s.keys.room_channel(room)).await;
        let rooms = s.keys.node_rooms(&s.node);
        let ch = s.keys.room_channel(room);
        let _ = s
            .link
            .call(|mut con| async move {
                redis::cmd("SREM")
                    .arg(rooms)
                    .arg(ch)
                    .query_async::<()>(&mut con)
                    .await
            })
            .await;
    }

    async fn activity_set(&self, activity: &Activity, epoch: u64) -> Result<bool, BackplaneError> {
        let s = &self.s;
        let offline = activity.status == Status::Offline as i32;
        let keys = s.keys.activity(&activity.user_id);
        let record = ActivityRecord {
            activity: Some(activity.clone()),
            node: s.node.to_string(),
            epoch,
        }
        .encode_to_vec();
        let (node, user) = (s.node.clone(), activity.user_id.clone());
        let r = s
            .link
            .call(|mut con| async move {
                scripts::ACTIVITY_SET
                    .key(keys.as_slice())
                    .arg(&user)
                    .arg(epoch)
                    .arg(&*node)
                    .arg(record)
                    .arg(u8::from(offline))
                    .invoke_async::<i64>(&mut con)
                    .await
            })
            .await;
        match r {
            Ok(written) => Ok(written == 1),
            Err(e) => {
                if offline {
                    s.later(Cleanup::Offline {
                        user: activity.user_id.clone(),
                        epoch,
                    });
                }
                Err(e)
            }
        }
    }
}

impl Shared {
    fn link_timeout(&self) -> Duration {
        self.link.timeout()
    }

    /// Gives up `user`'s claim with `epoch` in Redis (if still ours).
    async fn release_record(&self, user: &str, epoch: u64) -> Result<(), BackplaneError> {
        let own = self.keys.owner(user);
        let users = self.keys.node_users(&self.node);
        let (node, u) = (self.node.clone(), user.to_owned());
        self.link
            .call(|mut con| async move {
                scripts::RELEASE
                    .key(&own)
                    .arg(&*node)
                    .arg(epoch)
                    .invoke_async::<i64>(&mut con)
                    .await?;
                redis::cmd("SREM")
                    .arg(users)
                    .arg(u)
                    .query_async::<()>(&mut con)
                    .await
            })
            .await
    }

    /// Retries the cleanups that failed while Redis was down.
    async fn run_cleanups(self: &Arc<Self>) {
        let backplane = RedisBackplane { s: self.clone() };
        let list = std::mem::take(&mut *self.cleanups.lock());
        if !list.is_empty() {
            info!(
                count = list.len(),
                "retrying cleanups that failed during the outage"
            );
        }
        for c in list {
            match c {
                Cleanup::Release { user, epoch } => {
                    if self.release_record(&user, epoch).await.is_err() {
                        self.later(Cleanup::Release { user, epoch });
                    }
                }
                Cleanup::Leave { room, user, epoch } => {
                    let _ = backplane.room_leave(&room, &user, epoch).await;
                }
                Cleanup::Offline { user, epoch } => {
                    let a = Activity {
                        user_id: user,
                        status: Status::Offline as i32,
                        detail: String::new(),
                        since_ms: codec::now_ms(),
                    };
                    let _ = backplane.activity_set(&a, epoch).await;
                }
            }
        }
    }
}
