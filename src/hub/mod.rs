//! The hub: this process's view of the world. It holds the registry (user →
//! connection), the rooms (members, member and room state), presence
//! (activities), the batching ticker of room and presence events, and **the
//! one fan-out function**, [`Hub::deliver`]: every delivery to connections
//! looked up by user, room or "everyone" — `send`, `send_many`, `broadcast`,
//! room publishes, member and state events, presence batches, `close_room`,
//! `kick` — ends in it. (A reply on a connection already in hand, such as a
//! control reply or `Conn::send`, is that connection's own queue push,
//! which is also what `deliver` calls.)
//!
//! The hub is synchronous and never waits on the network. A frame for a
//! recipient that is not here goes to its [`Forward`], which the layer
//! above ([`backplane`](crate::backplane)) installs when other nodes can
//! exist; that layer also does the cluster-wide bookkeeping (claims, room
//! records) and applies what other nodes send through these same hub
//! functions. So the hub can be built and tested without sockets, and a
//! single process never pays for the cluster: with no `Forward` installed
//! a send costs one empty check.
//!
//! Imports: `conn`, `protocol`, `error`, `options`, `metrics` — nothing
//! above it.

mod batch;
pub(crate) mod policy;
// Without the `redis` feature nothing calls the cluster half of these
// (replicas, remote activities); the default build checks it all.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) mod presence;
pub(crate) mod registry;
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) mod replica;
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) mod rooms;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::HeaderMap;

use crate::conn::{Connection, QueueLimits};
use crate::error::{Delivery, SendError, SendReport};
use crate::metrics::Metrics;
use crate::options::Options;
use crate::protocol::close::{code, CloseRequest, DisconnectReason};
use crate::protocol::cluster::ActivityRecord;
use policy::Policy;
use presence::Presence;
use registry::Registry;
use rooms::{MemberMap, RoomError, Rooms};

/// Who a delivery is for.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// One user's connection here.
    User(&'a str),
    /// Several users' connections here.
    Users(&'a [&'a str]),
    /// The local members of a room but `except`. With `from`, the sender
    /// must be a member and not read-only (checked under the room's lock).
    Room {
        room: &'a str,
        from: Option<&'a Connection>,
        except: &'a [&'a str],
    },
    /// Every connection here but `except`'s.
    All { except: Option<&'a str> },
    /// Some of the registry's connections (taken from it), but `except`'s:
    /// a fan-out to everyone done in slices (presence batches).
    Slice {
        conns: &'a [Arc<Connection>],
        except: Option<&'a str>,
    },
    /// The members of a room whose lock the caller holds: room events are
    /// queued under that lock, so every member gets them in the order they
    /// were applied.
    Members {
        members: &'a MemberMap,
        except: Option<&'a str>,
    },
}

/// What is delivered: an encoded `Message` (encoded once, its bytes shared
/// by every recipient), or a close request.
pub(crate) enum Payload {
    Frame(Bytes),
    Close(CloseRequest),
}

/// Where a frame for recipients not on this node goes.
#[allow(dead_code)] // read by a clustered backplane (see `backplane::Backplane`)
#[derive(Debug, Clone, Copy)]
pub(crate) enum Topic<'a> {
    /// The node that holds this user's connection.
    User(&'a str),
    /// Every node with members of this room.
    Room(&'a str),
    /// Every node.
    All,
}

/// The hub's one way out of the process: hands `payload` (encoded once,
/// here) to the other nodes that may serve `topic`, skipping the users in
/// `except`. Never waits on the network: queued for sending, or refused.
pub(crate) trait Forward: Send + Sync {
    fn forward(
        &self,
        topic: Topic<'_>,
        payload: &Payload,
        except: &[&str],
    ) -> Result<(), SendError>;

    /// Hands the activities changed here during one batch window to the
    /// other nodes (at most one call per window).
    fn activities(&self, batch: Vec<ActivityRecord>);
}

/// The process's world; see the module docs.
pub(crate) struct Hub {
    pub options: Options,
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    pub rooms: Rooms,
    pub presence: Presence,
    pub policy: Policy,
    next_conn_id: AtomicU64,
    /// Installed once when other nodes can exist.
    pub(crate) forward: OnceLock<Arc<dyn Forward>>,
}

impl Hub {
    pub fn new(options: Options, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Hub {
            options,
            metrics,
            registry: Registry::new(),
            rooms: Rooms::new(),
            presence: Presence::new(),
            policy: Policy::default(),
            next_conn_id: AtomicU64::new(1),
            forward: OnceLock::new(),
        })
    }

    /// Installs the way to other nodes (once; later calls are ignored).
    pub fn set_forward(&self, forward: Arc<dyn Forward>) {
        let _ = self.forward.set(forward);
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A new connection of `user` (not yet registered) with this hub's
    /// queue limits and counters.
    pub fn new_connection(
        &self,
        id: u64,
        epoch: u64,
        user: Arc<str>,
        headers: HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Arc<Connection> {
        let o = &self.options;
        let limits = QueueLimits {
            messages: o.send_queue_capacity,
            bytes: o.send_queue_max_bytes,
            hard_messages: o.send_queue_hard_capacity,
            hard_bytes: o.send_queue_hard_max_bytes,
        };
        let metrics = self.metrics.clone();
        Arc::new(Connection::new(
            id, epoch, user, headers, peer, limits, metrics,
        ))
    }

    /// Queues `payload` for every local recipient of `target`, and reports
    /// per recipient. A user with no connection here is reported
    /// `NotConnected` (for `User` and `Users`); the layer above decides
    /// whether another node may have them.
    ///
    /// Locks: `All` takes each registry shard's handles under its read lock
    /// and pushes after releasing it; `Room` pushes under the room's lock
    /// (which is what keeps room events in order); encoding is always done
    /// by the caller, before, outside every lock.
    ///
    /// # Errors
    ///
    /// For `Room` only: the room does not exist, or `from` is not a member
    /// or is read-only.
    pub fn deliver(&self, target: Target<'_>, payload: &Payload) -> Result<SendReport, RoomError> {
        let mut report = SendReport::default();
        match target {
            Target::User(user) => self.deliver_user(user, payload, &mut report),
            Target::Users(users) => {
                for user in users {
                    self.deliver_user(user, payload, &mut report);
                }
            }
            Target::Room { room, from, except } => {
                let room_ref = self.rooms.get(room).ok_or(match from {
                    Some(_) => RoomError::NotAMember,
                    None => RoomError::NotFound,
                })?;
                let r = room_ref.lock();
                if let Some(conn) = from {
                    if r.membership_of(conn)? {
                        return Err(RoomError::Forbidden("read-only member".into()));
                    }
                }
                let sender = from.map(Connection::user_id);
                let echo = r.settings.publish_echo;
                for (user, conn) in r.local_members() {
                    if (!echo && Some(user) == sender) || except.contains(&user) {
                        continue;
                    }
                    report.record(user, push(conn, payload));
                }
            }
            Target::All { except } => {
                let mut batch = Vec::new();
                for shard in 0..registry::SHARDS {
                    self.registry.handles(shard, &mut batch);
                    for conn in batch.drain(..) {
                        if Some(conn.user_id()) != except {
                            report.record(conn.user_id(), push(&conn, payload));
                        }
                    }
                }
            }
            Target::Slice { conns, except } => {
                for conn in conns {
                    if Some(conn.user_id()) != except {
                        report.record(conn.user_id(), push(conn, payload));
                    }
                }
            }
            Target::Members { members, except } => {
                for (user, conn) in rooms::local(members) {
                    if Some(user) != except {
                        report.record(user, push(conn, payload));
                    }
                }
            }
        }
        Ok(report)
    }

    fn deliver_user(&self, user: &str, payload: &Payload, report: &mut SendReport) {
        match self.registry.get(user) {
            Some(conn) => report.record(user, push(&conn, payload)),
            None => {
                // In a cluster the caller forwards it: counted only if that
                // fails too.
                if self.forward.get().is_none() {
                    self.metrics.send_failed(SendError::NotConnected);
                }
                report.record(user, Err(SendError::NotConnected));
            }
        }
    }
}

/// The operations that deliver: each resolves its target here and, for
/// recipients that are not, forwards once.
impl Hub {
    /// `Err(ShuttingDown)` (counted) once shutdown began.
    fn open(&self) -> Result<(), SendError> {
        if self.registry.is_closed() {
            self.metrics.send_failed(SendError::ShuttingDown);
            return Err(SendError::ShuttingDown);
        }
        Ok(())
    }

    /// Delivers `payload` to `user`, here or wherever the user is.
    pub fn send(&self, user: &str, payload: Payload) -> Result<Delivery, SendError> {
        self.open()?;
        self.send_to(user, payload)
    }

    /// Delivers `payload` to `user`'s connection here only.
    pub fn send_local(&self, user: &str, payload: &Payload) -> Result<Delivery, SendError> {
        self.open()?;
        self.deliver(Target::User(user), payload)
            .map_or(Err(SendError::NotConnected), SendReport::single)
            .map(|()| Delivery::Local)
    }

    fn send_to(&self, user: &str, payload: Payload) -> Result<Delivery, SendError> {
        let local = self
            .deliver(Target::User(user), &payload)
            .map_or(Err(SendError::NotConnected), SendReport::single);
        match (local, self.forward.get()) {
            (Ok(()), _) => Ok(Delivery::Local),
            (Err(SendError::NotConnected), Some(f)) => f
                .forward(Topic::User(user), &payload, &[])
                .map(|()| Delivery::Forwarded)
                .inspect_err(|e| self.metrics.send_failed(*e)),
            (Err(e), _) => Err(e),
        }
    }

    /// Delivers `frame` to each of `users`.
    pub fn send_many(&self, users: &[&str], frame: Bytes) -> SendReport {
        let payload = Payload::Frame(frame);
        let mut report = SendReport::default();
        if let Err(e) = self.open() {
            for u in users {
                report.record(u, Err(e));
            }
            return report;
        }
        report = self
            .deliver(Target::Users(users), &payload)
            .unwrap_or_default();
        if let Some(f) = self.forward.get() {
            let mut forwarded = 0;
            report.failed.retain_mut(|(user, e)| {
                if *e != SendError::NotConnected {
                    return true;
                }
                match f.forward(Topic::User(user), &payload, &[]) {
                    Ok(()) => {
                        forwarded += 1;
                        false
                    }
                    Err(fe) => {
                        self.metrics.send_failed(fe);
                        *e = fe;
                        true
                    }
                }
            });
            report.forwarded = forwarded;
        }
        report
    }

    /// Delivers `frame` to every connected user.
    pub fn broadcast(&self, frame: Bytes) -> SendReport {
        let mut report = SendReport::default();
        if self.registry.is_closed() {
            self.registry
                .for_each(|c| report.record(c.user_id(), Err(SendError::ShuttingDown)));
            let failed = report.failed.len() as u64;
            self.metrics.sends_failed(SendError::ShuttingDown, failed);
            return report;
        }
        let payload = Payload::Frame(frame);
        let all = Target::All { except: None };
        report = self.deliver(all, &payload).unwrap_or_default();
        if let Some(f) = self.forward.get() {
            match f.forward(Topic::All, &payload, &[]) {
                Ok(()) => report.forwarded = 1,
                Err(e) => report.failed.push(("*".to_owned(), e)),
            }
        }
        report
    }

    /// Closes `user`'s connection with 4002 and `reason`.
    pub fn kick(&self, user: &str, reason: &str) -> Result<Delivery, SendError> {
        let kick = CloseRequest::new(code::KICKED, reason, DisconnectReason::Kicked);
        self.send_to(user, Payload::Close(kick))
    }

    /// Publishes `frame` (an encoded message with `room` set) to the
    /// members of `room`; with `from`, the sender must be a member.
    pub fn publish(
        &self,
        room: &str,
        frame: Bytes,
        from: Option<&Connection>,
        except: &[&str],
    ) -> Result<SendReport, RoomError> {
        let payload = Payload::Frame(frame);
        let report = self.deliver(Target::Room { room, from, except }, &payload)?;
        // One publish for the other nodes, only when some member is on one.
        let remote = || self.rooms.has_remote_members(room);
        if let Some(f) = self.forward.get().filter(|_| remote()) {
            if let Err(e) = f.forward(Topic::Room(room), &payload, except) {
                tracing::warn!(room, error = %e, "publish not handed to the other nodes");
            }
        }
        Ok(report)
    }
}

/// One page of a list reply, taken from `entries` (what follows the
/// cursor, in key order) with `item` making each entry: at most `limit`
/// items, and no more once `max_bytes` of encoded items are reached (the
/// first is always taken). The next cursor is the last item's key, or
/// empty when nothing is left.
pub(crate) fn list_page<'a, V: 'a, T: prost::Message>(
    entries: impl Iterator<Item = (&'a Arc<str>, V)>,
    limit: usize,
    max_bytes: usize,
    item: impl Fn(&str, V) -> T,
) -> (Vec<T>, String) {
    let mut entries = entries.peekable();
    let (mut page, mut bytes, mut last) = (Vec::new(), 0, None);
    for (key, value) in entries.by_ref() {
        let t = item(key, value);
        bytes += t.encoded_len() + 4;
        page.push(t);
        last = Some(key);
        if page.len() >= limit || bytes >= max_bytes {
            break;
        }
    }
    let next = match (entries.peek(), last) {
        (Some(_), Some(key)) => key.to_string(),
        _ => String::new(),
    };
    (page, next)
}

/// The one push: a frame into the connection's queue, or a close request.
fn push(conn: &Connection, payload: &Payload) -> Result<(), SendError> {
    match payload {
        Payload::Frame(frame) => conn.push(frame.clone()),
        Payload::Close(req) => match conn.request_close(req.clone()) {
            true => Ok(()),
            false => Err(SendError::Closed),
        },
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Hubs and socket-less connections for unit tests.
    use super::*;

    pub fn hub(options: Options) -> Arc<Hub> {
        Hub::new(options.sanitized(), Arc::new(Metrics::default()))
    }

    /// A registered connection of `user` with no socket behind it.
    pub fn connect(hub: &Hub, user: &str) -> Arc<Connection> {
        let id = hub.next_conn_id();
        let conn = hub.new_connection(id, id, Arc::from(user), HeaderMap::new(), None);
        assert!(matches!(
            hub.registry.admit(conn.clone(), false),
            registry::Admission::Admitted { .. }
        ));
        conn
    }

    /// Decoded messages queued for `conn` so far (taken).
    pub fn drain(conn: &Connection) -> Vec<crate::protocol::proto::Message> {
        use prost::Message as _;
        conn.queue
            .take()
            .msgs
            .into_iter()
            .map(|b| crate::protocol::proto::Message::decode(b).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn frame(s: &'static str) -> Payload {
        Payload::Frame(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn user_users_and_all() {
        let hub = hub(Options::default());
        let a = connect(&hub, "a");
        let b = connect(&hub, "b");
        let r = hub.deliver(Target::User("a"), &frame("1")).unwrap();
        assert_eq!(r.queued, 1);
        let r = hub.deliver(Target::User("nobody"), &frame("1")).unwrap();
        assert_eq!(r.single(), Err(SendError::NotConnected));
        let r = hub
            .deliver(Target::Users(&["a", "b", "c"]), &frame("2"))
            .unwrap();
        assert_eq!(r.queued, 2);
        assert_eq!(r.failed, vec![("c".to_owned(), SendError::NotConnected)]);
        let r = hub
            .deliver(Target::All { except: Some("b") }, &frame("3"))
            .unwrap();
        assert_eq!(r.queued, 1);
        assert_eq!(a.queue.take().msgs.len(), 3);
        assert_eq!(b.queue.take().msgs.len(), 1);
        assert_eq!(hub.metrics.snapshot().send_failed, 2);
    }

    #[test]
    fn close_payload_is_first_request_wins() {
        use crate::protocol::close::{code, DisconnectReason};
        let hub = hub(Options::default());
        let a = connect(&hub, "a");
        let kick = Payload::Close(CloseRequest::new(
            code::KICKED,
            "bye",
            DisconnectReason::Kicked,
        ));
        assert_eq!(
            hub.deliver(Target::User("a"), &kick).unwrap().single(),
            Ok(())
        );
        assert_eq!(
            hub.deliver(Target::User("a"), &kick).unwrap().single(),
            Err(SendError::Closed)
        );
        assert_eq!(a.queue.close_reason(), Some(DisconnectReason::Kicked));
    }
}
