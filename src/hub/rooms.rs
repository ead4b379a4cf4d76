//! Rooms: membership with member state, shared room state, publishes to
//! members (through [`Hub::deliver`]), member events, closing a room.
//!
//! Locks are always taken in this order: the room map → one room → a
//! connection's room list → the pending member events. A connection's rooms
//! are left when it ends; an empty room is dropped.
//!
//! **Order.** Every change to a room (join, leave, state) is applied and
//! its event queued to the members while the room's lock is held, and
//! queues are FIFO: every member receives a room's member and state events
//! in the order the server applied them. Encoding a publish (up to
//! `max_message_size`) happens before the lock; events are small (bounded
//! by `max_state_bytes`).
//!
//! Member events: in rooms of up to `room_member_events_batch_above`
//! members, every other member gets one `MemberChanged` per join or leave at
//! once. In larger rooms, changes are coalesced per room for
//! `event_batch_interval` (only the latest change of each user is kept) and
//! every member gets one `MemberChanges` frame per window carrying at most
//! 32 changes, with `omitted` counting the rest — so a mass reconnect of N
//! users costs each member one small frame per window, not N frames or N²
//! bytes in all. A client that sees `omitted > 0` re-lists with ListMembers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::policy::{RoomSettings, StateChange};
use super::{Hub, Payload, Target};
use crate::conn::Connection;
use crate::protocol::codec;
use crate::protocol::proto::message::Control;
use crate::protocol::proto::{
    Member, MemberChanged, MemberChanges, Members, RoomClosed, StateChanged,
};

/// Why a room operation failed. Clients get it as an `Error` reply with the
/// matching code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// Room name empty, over 256 bytes, or with control characters.
    #[error("invalid room name")]
    InvalidName,
    /// No such room.
    #[error("room not found")]
    NotFound,
    /// The user is not a member of the room.
    #[error("not a member of the room")]
    NotAMember,
    /// A policy refused, or the member is read-only.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The room is at its member limit.
    #[error("room is full")]
    RoomFull,
    /// The connection is at its room limit.
    #[error("too many rooms")]
    TooManyRooms,
    /// A state map would exceed the key or byte limit.
    #[error("state too large")]
    StateTooLarge,
    /// The user has no connection here.
    #[error("user is not connected")]
    NotConnected,
    /// The room lives in the cluster and the backplane (Redis) cannot be
    /// reached; nothing was changed.
    #[error("backplane unavailable")]
    Unavailable,
}

/// Member changes carried by one `MemberChanges` frame; the rest are
/// counted in `omitted` (bytes per member per window stay bounded).
const MAX_BATCHED_CHANGES: usize = 32;

pub(super) type RoomRef = Arc<Mutex<Room>>;
/// Coalesced member events: room → user → latest change.
type PendingEvents = HashMap<Arc<str>, HashMap<Arc<str>, MemberChanged>>;
/// A room's members by user id (ordered: list pages are keyed by user id).
pub(crate) type MemberMap = BTreeMap<Arc<str>, MemberEntry>;

pub(crate) struct Rooms {
    pub(super) map: RwLock<HashMap<Arc<str>, RoomRef>>,
    /// Coalesced member events of large rooms.
    pending: Mutex<PendingEvents>,
    flush_scheduled: AtomicBool,
}

pub(crate) struct Room {
    pub(super) members: MemberMap,
    pub(super) state: HashMap<String, String>,
    pub settings: RoomSettings,
    /// Set when the room left the map (emptied or closed): a join that found
    /// it before that must look again.
    pub(super) gone: bool,
    /// Changes applied so far. In a cluster, the room's version in Redis
    /// (replicas apply changes in version order; see `hub::replica`).
    pub(super) version: u64,
}

/// A room as this node holds it (see [`Rooms::local_snapshot`]).
pub(crate) struct LocalRoom {
    pub members: Vec<(Arc<Connection>, HashMap<String, String>, bool)>,
    pub settings: RoomSettings,
    pub state: HashMap<String, String>,
}

/// One member: its user id is the map's key.
pub(crate) struct MemberEntry {
    /// The member's connection, when the member is connected to this node.
    pub(super) conn: Option<Arc<Connection>>,
    /// The node the member is connected to, when it is another one.
    pub(super) node: Option<Arc<str>>,
    /// The epoch of the member's connection (see `conn.rs`).
    pub(super) epoch: u64,
    pub(super) state: HashMap<String, String>,
    pub(super) read_only: bool,
}

/// The members of `members` connected here, with their connections.
pub(crate) fn local(members: &MemberMap) -> impl Iterator<Item = (&str, &Arc<Connection>)> {
    members
        .iter()
        .filter_map(|(user, m)| Some((&**user, m.conn.as_ref()?)))
}

/// 1–256 bytes with no control characters.
pub(crate) fn valid_room_name(name: &str) -> Result<(), RoomError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(RoomError::InvalidName);
    }
    Ok(())
}

fn event(control: Control) -> Payload {
    Payload::Frame(codec::encode_control(String::new(), control))
}

impl Room {
    pub(super) fn new(settings: RoomSettings) -> Self {
        Room {
            members: BTreeMap::new(),
            state: HashMap::new(),
            settings,
            gone: false,
            version: 0,
        }
    }

    /// Whether `conn` itself (not another connection of its user) is a
    /// member, and read-only.
    pub fn membership_of(&self, conn: &Connection) -> Result<bool, RoomError> {
        match self.members.get(conn.user_id()) {
            Some(m) if m.conn.as_ref().is_some_and(|c| c.id() == conn.id()) => Ok(m.read_only),
            _ => Err(RoomError::NotAMember),
        }
    }

    /// Changes applied so far (the cluster's version of the room).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// `user`'s member state once `change` (validated) is applied, and
    /// whether the member is read-only; `None` when the change has no
    /// member part or `user` is not a member.
    pub fn member_state_after(
        &self,
        user: &str,
        change: &StateChange,
    ) -> Option<(HashMap<String, String>, bool)> {
        if change.member_changes.is_empty() && change.member_removed.is_empty() {
            return None;
        }
        let m = self.members.get(user)?;
        let state = apply(&m.state, &change.member_changes, &change.member_removed);
        Some((state, m.read_only))
    }

    /// The members connected here, with their connections.
    pub fn local_members(&self) -> impl Iterator<Item = (&str, &Arc<Connection>)> {
        local(&self.members)
    }

    pub(super) fn member(&self, user: &str) -> Member {
        Member {
            user_id: user.to_owned(),
            state: self
                .members
                .get(user)
                .map(|m| m.state.clone())
                .unwrap_or_default(),
        }
    }
}

impl Rooms {
    pub fn new() -> Self {
        Rooms {
            map: RwLock::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            flush_scheduled: AtomicBool::new(false),
        }
    }

    pub(crate) fn get(&self, room: &str) -> Option<RoomRef> {
        self.map.read().get(room).cloned()
    }

    /// Number of rooms.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Names of all rooms.
    pub fn names(&self) -> Vec<String> {
        self.map.read().keys().map(|k| k.to_string()).collect()
    }

    /// Whether `conn` is in `room`, and read-only there.
    pub fn membership(&self, room: &str, conn: &Connection) -> Result<bool, RoomError> {
        let r = self.get(room).ok_or(RoomError::NotFound)?;
        let r = r.lock();
        r.membership_of(conn)
    }

    /// Drops `room` from the map if it has no members left.
    pub(super) fn drop_if_empty(&self, room: &str, room_ref: &RoomRef) {
        let mut map = self.map.write();
        let mut r = room_ref.lock();
        if r.members.is_empty() && !r.gone {
            r.gone = true;
            if map.get(room).is_some_and(|x| Arc::ptr_eq(x, room_ref)) {
                map.remove(room);
            }
        }
    }

    /// The members of `room` connected here (connection, state,
    /// read-only), its settings and state: what this node writes again
    /// after the cluster lost it.
    pub fn local_snapshot(&self, room: &str) -> Option<LocalRoom> {
        let room_ref = self.get(room)?;
        let r = room_ref.lock();
        Some(LocalRoom {
            members: r
                .members
                .values()
                .filter_map(|m| Some((m.conn.clone()?, m.state.clone(), m.read_only)))
                .collect(),
            settings: r.settings.clone(),
            state: r.state.clone(),
        })
    }

    /// Whether some member of `room` is connected to another node.
    pub fn has_remote_members(&self, room: &str) -> bool {
        self.get(room)
            .is_some_and(|r| r.lock().members.values().any(|m| m.conn.is_none()))
    }

    /// The shared state of `room`.
    pub fn room_state(&self, room: &str) -> Option<HashMap<String, String>> {
        Some(self.get(room)?.lock().state.clone())
    }

    /// Every member of `room` (with state) and its shared state.
    pub fn members(&self, room: &str) -> Option<Members> {
        let room_ref = self.get(room)?;
        let r = room_ref.lock();
        Some(Members {
            room: room.to_owned(),
            members: r.members.keys().map(|u| r.member(u)).collect(),
            room_state: r.state.clone(),
            next_cursor: String::new(),
        })
    }

    /// One page of `room`'s members after `cursor` (a user id; empty = from
    /// the start): at most `limit` members and, past the first, no more
    /// than `max_bytes` of encoded members. The room state rides on the
    /// first page only. `next_cursor` is empty on the last page.
    pub fn members_page(
        &self,
        room: &str,
        cursor: &str,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Members> {
        let room_ref = self.get(room)?;
        let r = room_ref.lock();
        let first = cursor.is_empty();
        let after = if first {
            Bound::Unbounded
        } else {
            Bound::Excluded(cursor)
        };
        let rest = r.members.range::<str, _>((after, Bound::Unbounded));
        let (members, next_cursor) =
            super::list_page(rest, limit, max_bytes, |user, _| r.member(user));
        Some(Members {
            room: room.to_owned(),
            members,
            room_state: if first {
                r.state.clone()
            } else {
                HashMap::new()
            },
            next_cursor,
        })
    }
}

impl Hub {
    /// `state` within `max_state_keys` keys and `max_state_bytes` bytes.
    pub(crate) fn check_state(&self, state: &HashMap<String, String>) -> Result<(), RoomError> {
        let o = &self.options;
        let bytes: usize = state.iter().map(|(k, v)| k.len() + v.len()).sum();
        if state.len() > o.max_state_keys || bytes > o.max_state_bytes {
            return Err(RoomError::StateTooLarge);
        }
        Ok(())
    }

    /// Adds `conn` to `room` (creating it), or replaces its member state if
    /// it is already in. Policies are the caller's business.
    pub fn join(
        self: &Arc<Self>,
        conn: &Arc<Connection>,
        room: &str,
        state: HashMap<String, String>,
        read_only: bool,
    ) -> Result<(), RoomError> {
        valid_room_name(room)?;
        self.check_state(&state)?;
        if conn.is_closing() {
            return Err(RoomError::NotConnected);
        }
        let rooms = &self.rooms;
        loop {
            // The policy's settings hook runs with no lock held: it may call
            // back into the WsClient.
            let settings = match rooms.get(room) {
                Some(_) => None,
                None => {
                    let o = &self.options;
                    let defaults = RoomSettings {
                        member_events: o.room_member_events,
                        publish_echo: o.room_publish_echo,
                        max_members: o.max_members_per_room,
                    };
                    Some(self.policy.get().room_settings(room, defaults))
                }
            };
            let room_ref = {
                let mut map = rooms.map.write();
                match (map.get(room), settings) {
                    (Some(r), _) => r.clone(),
                    (None, None) => continue, // dropped meanwhile: settings first
                    (None, Some(settings)) => {
                        let r = Arc::new(Mutex::new(Room::new(settings)));
                        map.insert(Arc::from(room), r.clone());
                        r
                    }
                }
            };
            let mut r = room_ref.lock();
            if r.gone {
                continue; // emptied or closed meanwhile: look again
            }
            let user = conn.user_key();
            let mut replacing = false;
            if let Some(m) = r.members.get_mut(&*user) {
                match &m.conn {
                    Some(c) if c.id() == conn.id() => {
                        // A re-join: the new member state replaces the old,
                        // and everyone is told as for an `UpdateState`.
                        let old = std::mem::replace(&mut m.state, state);
                        m.read_only = read_only;
                        self.member_state_replaced(room, &r, &user, &old);
                        return Ok(());
                    }
                    // A newer connection of the user is in already: this
                    // one is stale (replaced while its join was under way).
                    Some(c) if c.epoch() > conn.epoch() => {
                        drop(r);
                        return Err(RoomError::NotConnected);
                    }
                    _ => replacing = true,
                }
            }
            if !replacing && r.settings.max_members > 0 && r.members.len() >= r.settings.max_members
            {
                drop(r);
                rooms.drop_if_empty(room, &room_ref);
                return Err(RoomError::RoomFull);
            }
            {
                let mut list = conn.rooms.lock();
                let Some(list) = list.as_mut() else {
                    drop(r);
                    rooms.drop_if_empty(room, &room_ref);
                    return Err(RoomError::NotConnected);
                };
                if list.len() >= self.options.max_rooms_per_connection {
                    drop(r);
                    rooms.drop_if_empty(room, &room_ref);
                    return Err(RoomError::TooManyRooms);
                }
                list.push(Arc::from(room));
            }
            // A stale entry of the same user (an older connection that has
            // not finished leaving) is replaced silently.
            let entry = MemberEntry {
                conn: Some(conn.clone()),
                node: None,
                epoch: conn.epoch(),
                state,
                read_only,
            };
            r.version += 1;
            if let Some(old) = r.members.insert(user.clone(), entry) {
                if let Some(old) = old.conn {
                    remove_from_list(&old, room);
                }
            }
            if !replacing {
                let change = MemberChanged {
                    room: room.to_owned(),
                    member: Some(r.member(&user)),
                    joined: true,
                };
                self.member_event(room, &r, change, &user);
            }
            return Ok(());
        }
    }

    /// Removes `conn` from `room`; the others get a leave event.
    pub fn leave(self: &Arc<Self>, conn: &Arc<Connection>, room: &str) -> Result<(), RoomError> {
        let room_ref = self.rooms.get(room).ok_or(RoomError::NotAMember)?;
        {
            let mut r = room_ref.lock();
            r.membership_of(conn)?;
            self.remove_member(room, &mut r, conn.user_id());
        }
        remove_from_list(conn, room);
        self.rooms.drop_if_empty(room, &room_ref);
        Ok(())
    }

    /// Leaves every room of an ending connection; no later join can add it.
    pub fn leave_all(self: &Arc<Self>, conn: &Arc<Connection>) {
        let Some(list) = conn.rooms.lock().take() else {
            return;
        };
        for room in list {
            let Some(room_ref) = self.rooms.get(&room) else {
                continue;
            };
            {
                let mut r = room_ref.lock();
                if r.membership_of(conn).is_err() {
                    continue;
                }
                self.remove_member(&room, &mut r, conn.user_id());
            }
            self.rooms.drop_if_empty(&room, &room_ref);
        }
    }

    pub(super) fn remove_member(self: &Arc<Self>, room: &str, r: &mut Room, user: &str) {
        let Some(entry) = r.members.remove(user) else {
            return;
        };
        r.version += 1;
        let change = MemberChanged {
            room: room.to_owned(),
            member: Some(Member {
                user_id: user.to_owned(),
                state: entry.state,
            }),
            joined: false,
        };
        self.member_event(room, r, change, user);
    }

    /// `user`'s member state was replaced (a re-join): every member gets the
    /// `StateChanged` an `UpdateState` would have caused, under the room's
    /// lock; nothing when the state is the same.
    pub(super) fn member_state_replaced(
        &self,
        room: &str,
        r: &Room,
        user: &str,
        old: &HashMap<String, String>,
    ) {
        let Some(m) = r.members.get(user) else { return };
        let (changes, removed) = diff(old, &m.state);
        if changes.is_empty() && removed.is_empty() {
            return;
        }
        let frame = event(Control::StateChanged(StateChanged {
            room: room.to_owned(),
            user_id: user.to_owned(),
            changes,
            removed,
        }));
        let everyone = Target::Members {
            members: &r.members,
            except: None,
        };
        let _ = self.deliver(everyone, &frame);
    }

    /// Sends (or, in large rooms, batches) a member event to the others,
    /// under the room's lock.
    pub(super) fn member_event(
        self: &Arc<Self>,
        room: &str,
        r: &Room,
        change: MemberChanged,
        subject: &str,
    ) {
        if !r.settings.member_events {
            return;
        }
        if r.members.len() > self.options.room_member_events_batch_above {
            self.rooms
                .pending
                .lock()
                .entry(Arc::from(room))
                .or_default()
                .insert(Arc::from(subject), change);
            self.schedule_flush(|h| &h.rooms.flush_scheduled, |h| h.flush_member_events());
            return;
        }
        let frame = event(Control::MemberChanged(change));
        let _ = self.deliver(
            Target::Members {
                members: &r.members,
                except: Some(subject),
            },
            &frame,
        );
    }

    /// Sends each large room's coalesced member events as one frame.
    pub fn flush_member_events(&self) {
        // Cleared before taking the batch: a change queued after the take
        // schedules a new flush.
        self.rooms.flush_scheduled.store(false, Ordering::Release);
        let pending = std::mem::take(&mut *self.rooms.pending.lock());
        for (room, changes) in pending {
            let Some(room_ref) = self.rooms.get(&room) else {
                continue;
            };
            let only = if changes.len() == 1 {
                changes.keys().next().cloned()
            } else {
                None
            };
            let total = changes.len();
            let changes: Vec<MemberChanged> =
                changes.into_values().take(MAX_BATCHED_CHANGES).collect();
            let frame = event(Control::MemberChanges(MemberChanges {
                room: room.to_string(),
                omitted: (total - changes.len()) as u32,
                changes,
            }));
            let r = room_ref.lock();
            // Nobody is told only about themselves.
            let _ = self.deliver(
                Target::Members {
                    members: &r.members,
                    except: only.as_deref(),
                },
                &frame,
            );
        }
    }

    /// Applies a state change (by a member, or by the server when `by` is
    /// `None`, which may only touch the room state) and tells every member.
    pub fn update_state(
        &self,
        room: &str,
        by: Option<&Arc<Connection>>,
        change: StateChange,
    ) -> Result<(), RoomError> {
        let room_ref = self.rooms.get(room).ok_or(RoomError::NotFound)?;
        let mut r = room_ref.lock();
        let change = self.validate_change(&r, by.map(|c| &**c), change)?;
        r.version += 1;
        self.commit_change(room, &mut r, by.map(|c| c.user_id()), change);
        Ok(())
    }

    /// Checks a state change against the room as it is now (`by` must be a
    /// writable member; the server may only touch the room state) and
    /// returns it trimmed: only existing keys are removed, each once, so a
    /// request cannot make every member receive a megabyte of no-ops. Both
    /// resulting maps are checked against the limits, so a refused change
    /// changes nothing.
    pub(crate) fn validate_change(
        &self,
        r: &Room,
        by: Option<&Connection>,
        change: StateChange,
    ) -> Result<StateChange, RoomError> {
        if r.gone {
            return Err(RoomError::NotFound);
        }
        if let Some(conn) = by {
            if r.membership_of(conn)? {
                return Err(RoomError::Forbidden("read-only member".into()));
            }
        }
        let StateChange {
            room_changes,
            mut room_removed,
            mut member_changes,
            mut member_removed,
        } = change;
        dedup_existing(&mut room_removed, &r.state);
        self.check_state(&apply(&r.state, &room_changes, &room_removed))?;
        match by.and_then(|c| r.members.get(c.user_id())) {
            Some(m) => {
                dedup_existing(&mut member_removed, &m.state);
                self.check_state(&apply(&m.state, &member_changes, &member_removed))?;
            }
            None => {
                member_changes.clear();
                member_removed.clear();
            }
        }
        Ok(StateChange {
            room_changes,
            room_removed,
            member_changes,
            member_removed,
        })
    }

    /// Applies a validated change (the member part to `user`'s state) and
    /// tells every member, under the room's lock: one `StateChanged` for the
    /// room state, one for the member state.
    pub(super) fn commit_change(
        &self,
        room: &str,
        r: &mut Room,
        user: Option<&str>,
        change: StateChange,
    ) {
        let StateChange {
            room_changes,
            room_removed,
            member_changes,
            member_removed,
        } = change;
        if !room_changes.is_empty() || !room_removed.is_empty() {
            r.state = apply(&r.state, &room_changes, &room_removed);
            let frame = event(Control::StateChanged(StateChanged {
                room: room.to_owned(),
                user_id: String::new(),
                changes: room_changes,
                removed: room_removed,
            }));
            let everyone = Target::Members {
                members: &r.members,
                except: None,
            };
            let _ = self.deliver(everyone, &frame);
        }
        let Some(user) = user else { return };
        if member_changes.is_empty() && member_removed.is_empty() {
            return;
        }
        let Some(m) = r.members.get_mut(user) else {
            return;
        };
        m.state = apply(&m.state, &member_changes, &member_removed);
        let frame = event(Control::StateChanged(StateChanged {
            room: room.to_owned(),
            user_id: user.to_owned(),
            changes: member_changes,
            removed: member_removed,
        }));
        let everyone = Target::Members {
            members: &r.members,
            except: None,
        };
        let _ = self.deliver(everyone, &frame);
    }

    /// Closes `room`: every member gets `RoomClosed` and is out. Returns
    /// the number of members it had, or `None` if there was no such room.
    pub fn close_room(&self, room: &str, reason: &str) -> Option<usize> {
        let room_ref = self.rooms.map.write().remove(room)?;
        let mut r = room_ref.lock();
        r.gone = true;
        let n = r.members.len();
        self.closed(room, &mut r, reason);
        Some(n)
    }

    /// Tells every member `room` was closed and empties it (under its lock).
    pub(super) fn closed(&self, room: &str, r: &mut Room, reason: &str) {
        let frame = event(Control::RoomClosed(RoomClosed {
            room: room.to_owned(),
            reason: reason.to_owned(),
        }));
        let everyone = Target::Members {
            members: &r.members,
            except: None,
        };
        let _ = self.deliver(everyone, &frame);
        for (_, m) in std::mem::take(&mut r.members) {
            if let Some(conn) = m.conn {
                remove_from_list(&conn, room);
            }
        }
    }
}

fn apply(
    cur: &HashMap<String, String>,
    changes: &HashMap<String, String>,
    removed: &[String],
) -> HashMap<String, String> {
    let mut s = cur.clone();
    for k in removed {
        s.remove(k);
    }
    for (k, v) in changes {
        s.insert(k.clone(), v.clone());
    }
    s
}

/// What turns state `old` into `new`: the keys set (added or with another
/// value) and the keys removed (sorted).
fn diff(
    old: &HashMap<String, String>,
    new: &HashMap<String, String>,
) -> (HashMap<String, String>, Vec<String>) {
    let changes = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut removed: Vec<String> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    removed.sort();
    (changes, removed)
}

fn dedup_existing(keys: &mut Vec<String>, state: &HashMap<String, String>) {
    let mut seen = HashSet::new();
    keys.retain(|k| state.contains_key(k) && seen.insert(k.clone()));
}

pub(crate) fn remove_from_list(conn: &Connection, room: &str) {
    if let Some(list) = conn.rooms.lock().as_mut() {
        if let Some(i) = list.iter().position(|r| &**r == room) {
            list.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::testing::{connect, drain, hub};
    use crate::options::Options;
    use crate::protocol::proto::Message;
    use bytes::Bytes;
    use prost::Message as _;
    use std::time::Duration;

    fn control(m: &Message) -> &Control {
        m.control.as_ref().expect("a control message")
    }

    fn state(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn join_and_leave_tell_the_others_in_order() {
        let hub = hub(Options::default());
        let (a, b) = (connect(&hub, "a"), connect(&hub, "b"));
        hub.join(&a, "r", state(&[("k", "1")]), false).unwrap();
        hub.join(&b, "r", HashMap::new(), false).unwrap();
        hub.leave(&b, "r").unwrap();
        assert!(drain(&b).is_empty(), "nobody is told about themselves");
        let got: Vec<_> = drain(&a)
            .iter()
            .map(|m| match control(m) {
                Control::MemberChanged(c) => (c.member.as_ref().unwrap().user_id.clone(), c.joined),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(got, [("b".to_owned(), true), ("b".to_owned(), false)]);
        assert_eq!(hub.leave(&b, "r"), Err(RoomError::NotAMember));
        hub.leave_all(&a);
        assert_eq!(hub.rooms.len(), 0, "an empty room is dropped");
        assert_eq!(
            hub.join(&a, "r", HashMap::new(), false),
            Err(RoomError::NotConnected)
        );
    }

    /// A re-join with another member state tells every member, the
    /// joiner included, exactly as an `UpdateState` of member state does;
    /// one with the same state tells nobody.
    #[test]
    fn rejoin_with_a_new_state_emits_state_changed() {
        let hub = hub(Options::default());
        let (a, b) = (connect(&hub, "a"), connect(&hub, "b"));
        hub.join(&a, "r", state(&[("k", "1"), ("gone", "x")]), false)
            .unwrap();
        hub.join(&b, "r", HashMap::new(), false).unwrap();
        drain(&a);
        hub.join(&a, "r", state(&[("k", "2"), ("new", "y")]), false)
            .unwrap();
        for c in [&a, &b] {
            let msgs = drain(c);
            assert_eq!(msgs.len(), 1);
            match control(&msgs[0]) {
                Control::StateChanged(s) => {
                    assert_eq!((s.room.as_str(), s.user_id.as_str()), ("r", "a"));
                    assert_eq!(s.changes, state(&[("k", "2"), ("new", "y")]));
                    assert_eq!(s.removed, ["gone"]);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        hub.join(&a, "r", state(&[("k", "2"), ("new", "y")]), false)
            .unwrap();
        assert!(drain(&b).is_empty(), "the same state again is no change");
        let m = hub.rooms.members("r").unwrap();
        let a_state = &m.members.iter().find(|m| m.user_id == "a").unwrap().state;
        assert_eq!(a_state, &state(&[("k", "2"), ("new", "y")]));
    }

    #[test]
    fn publish_checks_membership_under_the_lock_and_skips_the_sender() {
        let hub = hub(Options::default());
        let (a, b, c) = (connect(&hub, "a"), connect(&hub, "b"), connect(&hub, "c"));
        hub.join(&a, "r", HashMap::new(), false).unwrap();
        hub.join(&b, "r", HashMap::new(), true).unwrap();
        drain(&a);
        let frame = Bytes::from_static(b"\x12\x01x"); // type = "x"
        let r = hub.publish("r", frame.clone(), Some(&a), &[]).unwrap();
        assert_eq!(r.queued, 1);
        assert!(drain(&a).is_empty());
        assert_eq!(drain(&b).len(), 1);
        assert_eq!(
            hub.publish("r", frame.clone(), Some(&b), &[]),
            Err(RoomError::Forbidden("read-only member".into()))
        );
        assert_eq!(
            hub.publish("r", frame.clone(), Some(&c), &[]),
            Err(RoomError::NotAMember)
        );
        let r = hub.publish("r", frame.clone(), None, &["b"]).unwrap();
        assert_eq!((r.queued, drain(&a).len(), drain(&b).len()), (1, 1, 0));
        assert_eq!(
            hub.publish("nope", frame, None, &[]),
            Err(RoomError::NotFound)
        );
    }

    #[test]
    fn state_events_reach_every_member_in_the_order_applied() {
        let hub = hub(Options::default());
        let (a, b) = (connect(&hub, "a"), connect(&hub, "b"));
        hub.join(&a, "r", HashMap::new(), false).unwrap();
        hub.join(&b, "r", HashMap::new(), false).unwrap();
        drain(&a);
        for i in 0..20 {
            let change = StateChange {
                room_changes: state(&[("n", &i.to_string())]),
                member_changes: state(&[("m", &i.to_string())]),
                ..Default::default()
            };
            hub.update_state("r", Some(if i % 2 == 0 { &a } else { &b }), change)
                .unwrap();
        }
        for conn in [&a, &b] {
            let seen: Vec<String> = drain(conn)
                .iter()
                .filter_map(|m| match control(m) {
                    Control::StateChanged(s) if s.user_id.is_empty() => {
                        Some(s.changes["n"].clone())
                    }
                    _ => None,
                })
                .collect();
            let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
            assert_eq!(seen, want);
        }
        assert_eq!(hub.rooms.room_state("r").unwrap()["n"], "19");
        let too_big = StateChange {
            room_changes: state(&[("x", &"y".repeat(20 << 10))]),
            ..Default::default()
        };
        assert_eq!(
            hub.update_state("r", None, too_big),
            Err(RoomError::StateTooLarge)
        );
    }

    #[test]
    fn limits_and_stale_joins() {
        let hub = hub(Options::default()
            .with_max_members_per_room(1)
            .with_max_rooms_per_connection(1));
        let (a, b) = (connect(&hub, "a"), connect(&hub, "b"));
        hub.join(&a, "r", HashMap::new(), false).unwrap();
        assert_eq!(
            hub.join(&b, "r", HashMap::new(), false),
            Err(RoomError::RoomFull)
        );
        assert_eq!(
            hub.join(&a, "s", HashMap::new(), false),
            Err(RoomError::TooManyRooms)
        );
        assert_eq!(hub.rooms.len(), 1, "refused joins leave no empty room");
        assert_eq!(
            hub.join(&a, "", HashMap::new(), false),
            Err(RoomError::InvalidName)
        );
        // A connection of `a` older than the member's cannot join over it.
        let old = hub.new_connection(99, 0, Arc::from("a"), http::HeaderMap::new(), None);
        assert_eq!(
            hub.join(&old, "r", HashMap::new(), false),
            Err(RoomError::NotConnected)
        );
    }

    #[test]
    fn close_room_tells_everyone_and_empties_it() {
        let hub = hub(Options::default());
        let (a, b) = (connect(&hub, "a"), connect(&hub, "b"));
        hub.join(&a, "r", HashMap::new(), false).unwrap();
        hub.join(&b, "r", HashMap::new(), false).unwrap();
        drain(&a);
        assert_eq!(hub.close_room("r", "bye"), Some(2));
        for c in [&a, &b] {
            let msgs = drain(c);
            assert!(matches!(control(&msgs[0]), Control::RoomClosed(r) if r.reason == "bye"));
            assert!(c.rooms.lock().as_ref().unwrap().is_empty());
        }
        assert_eq!(hub.close_room("r", "again"), None);
    }

    /// 5,000 members with 2 KB states (10 MB in all) are listed in pages
    /// that each fit a send queue of 4 MiB, every member exactly once, in
    /// user id order, the room state on the first page only.
    #[test]
    fn member_pages_are_bounded_and_complete() {
        let hub = hub(Options::default());
        let two_kb = "s".repeat(2048);
        let conns: Vec<_> = (0..5_000)
            .map(|i| connect(&hub, &format!("user-{i:05}")))
            .collect();
        for c in &conns {
            hub.join(c, "big", state(&[("bio", &two_kb)]), false)
                .unwrap();
        }
        hub.update_state(
            "big",
            None,
            StateChange {
                room_changes: state(&[("topic", "t")]),
                ..Default::default()
            },
        )
        .unwrap();
        let (limit, max_bytes) = (100, 256 << 10);
        let mut cursor = String::new();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = hub
                .rooms
                .members_page("big", &cursor, limit, max_bytes)
                .unwrap();
            assert!(
                page.encoded_len() <= max_bytes + 4096,
                "page of {} bytes",
                page.encoded_len()
            );
            assert_eq!(page.room_state.contains_key("topic"), pages == 0);
            assert!(page.members.len() <= limit);
            seen.extend(page.members.iter().map(|m| m.user_id.clone()));
            pages += 1;
            if page.next_cursor.is_empty() {
                break;
            }
            cursor = page.next_cursor;
        }
        let want: Vec<String> = (0..5_000).map(|i| format!("user-{i:05}")).collect();
        assert_eq!(seen, want);
        assert!(pages >= 40, "2 KB states need byte-bounded pages ({pages})");
    }

    /// Server-side room calls from a thread with no tokio runtime, in a room
    /// big enough for batched member events, must not deadlock (they once
    /// flushed the batch synchronously while holding the room's lock).
    #[test]
    fn batched_joins_without_a_runtime_do_not_deadlock() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let hub = hub(Options::default().with_room_member_events_batch_above(2));
            let conns: Vec<_> = (0..10).map(|i| connect(&hub, &format!("u{i}"))).collect();
            for c in &conns {
                hub.join(c, "big", HashMap::new(), false).unwrap();
            }
            let _ = tx.send(hub.rooms.members("big").map(|m| m.members.len()));
        });
        let members = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server-side joins deadlocked");
        assert_eq!(members, Some(10));
    }
}
