//! Rooms: membership with member state, shared room state, publish to
//! members (encoded once), member events, closing a room.
//!
//! Locks are always taken in this order: the room map → one room → a
//! connection's room list → the pending member events. A connection's rooms
//! are left when it ends; an empty room is dropped.
//!
//! Member events: in rooms of up to `room_member_events_batch_above`
//! members, every other member gets one `MemberChanged` per join or leave at
//! once. In larger rooms, changes are coalesced per room for
//! `event_batch_interval` (only the latest change of each user is kept) and
//! every member gets one `MemberChanges` frame per window carrying at most
//! 32 changes, with `omitted` counting the rest — so a mass reconnect of N
//! users costs each member one small frame per window, not N frames or N²
//! bytes in all. A client that sees `omitted > 0` re-lists with ListMembers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::client::Inner;
use crate::codec;
use crate::connection::Connection;
use crate::error::SendReport;
use crate::policy::{RoomSettings, StateChange};
use crate::proto::message::Control;
use crate::proto::{
    Member, MemberChanged, MemberChanges, Members, Message, RoomClosed, StateChanged,
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
}

/// Member changes carried by one `MemberChanges` frame; the rest are
/// counted in `omitted` (bytes per member per window stay bounded).
const MAX_BATCHED_CHANGES: usize = 32;

type RoomRef = Arc<Mutex<Room>>;
/// Coalesced member events: room → user → latest change.
type PendingEvents = HashMap<Arc<str>, HashMap<Arc<str>, MemberChanged>>;

pub(crate) struct Rooms {
    map: RwLock<HashMap<Arc<str>, RoomRef>>,
    /// Coalesced member events of large rooms.
    pending: Mutex<PendingEvents>,
    flush_scheduled: AtomicBool,
}

struct Room {
    members: HashMap<Arc<str>, MemberEntry>,
    state: HashMap<String, String>,
    settings: RoomSettings,
    /// Set when the room left the map (emptied or closed): a join that found
    /// it before that must look again.
    gone: bool,
}

struct MemberEntry {
    conn: Arc<Connection>,
    state: HashMap<String, String>,
    read_only: bool,
}

/// 1–256 bytes with no control characters.
pub(crate) fn valid_room_name(name: &str) -> Result<(), RoomError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(RoomError::InvalidName);
    }
    Ok(())
}

pub(crate) fn check_state(inner: &Inner, state: &HashMap<String, String>) -> Result<(), RoomError> {
    let o = &inner.options;
    let bytes: usize = state.iter().map(|(k, v)| k.len() + v.len()).sum();
    if state.len() > o.max_state_keys || bytes > o.max_state_bytes {
        return Err(RoomError::StateTooLarge);
    }
    Ok(())
}

fn control_frame(control: Control) -> Bytes {
    let mut m = Message {
        control: Some(control),
        ..Default::default()
    };
    codec::encode_outbound(&mut m)
}

impl Room {
    /// Queues `frame` for every member but `skip`; records failures.
    fn deliver(&self, frame: &Bytes, skip: Option<&str>, report: &mut SendReport) {
        for (user, m) in &self.members {
            if Some(&**user) == skip {
                continue;
            }
            match m.conn.push(frame.clone()) {
                Ok(()) => report.queued += 1,
                Err(e) => report.failed.push((user.to_string(), e)),
            }
        }
    }

    fn member(&self, user: &str) -> Member {
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

    fn get(&self, room: &str) -> Option<RoomRef> {
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

    /// Whether `user` is in `room`, and read-only there.
    pub fn membership(&self, room: &str, user: &str) -> Result<bool, RoomError> {
        let r = self.get(room).ok_or(RoomError::NotFound)?;
        let r = r.lock();
        r.members
            .get(user)
            .map(|m| m.read_only)
            .ok_or(RoomError::NotAMember)
    }

    /// Adds `conn` to `room` (creating it), or replaces its member state if
    /// it is already in. Policies are the caller's business.
    pub fn join(
        &self,
        inner: &Arc<Inner>,
        conn: &Arc<Connection>,
        room: &str,
        state: HashMap<String, String>,
        read_only: bool,
    ) -> Result<(), RoomError> {
        valid_room_name(room)?;
        check_state(inner, &state)?;
        if conn.queue.is_closing() {
            return Err(RoomError::NotConnected);
        }
        loop {
            // The policy's settings hook runs with no lock held: it may call
            // back into the WsClient.
            let settings = match self.get(room) {
                Some(_) => None,
                None => {
                    let o = &inner.options;
                    let defaults = RoomSettings {
                        member_events: o.room_member_events,
                        publish_echo: o.room_publish_echo,
                        max_members: o.max_members_per_room,
                    };
                    Some(inner.room_policy().room_settings(room, defaults))
                }
            };
            let room_ref = {
                let mut map = self.map.write();
                match (map.get(room), settings) {
                    (Some(r), _) => r.clone(),
                    (None, None) => continue, // dropped meanwhile: settings first
                    (None, Some(settings)) => {
                        let r = Arc::new(Mutex::new(Room {
                            members: HashMap::new(),
                            state: HashMap::new(),
                            settings,
                            gone: false,
                        }));
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
            if let Some(m) = r.members.get_mut(&*user) {
                if m.conn.id() == conn.id() {
                    m.state = state;
                    m.read_only = read_only;
                    return Ok(());
                }
                // A newer connection of the user is in already: this one is
                // stale (replaced while its join was under way).
                if m.conn.id() > conn.id() {
                    drop(r);
                    return Err(RoomError::NotConnected);
                }
            }
            let replacing = r.members.contains_key(&*user);
            if !replacing && r.settings.max_members > 0 && r.members.len() >= r.settings.max_members
            {
                drop(r);
                self.drop_if_empty(room, &room_ref);
                return Err(RoomError::RoomFull);
            }
            {
                let mut list = conn.rooms.lock();
                let Some(list) = list.as_mut() else {
                    drop(r);
                    self.drop_if_empty(room, &room_ref);
                    return Err(RoomError::NotConnected);
                };
                if list.len() >= inner.options.max_rooms_per_connection {
                    drop(r);
                    self.drop_if_empty(room, &room_ref);
                    return Err(RoomError::TooManyRooms);
                }
                list.push(Arc::from(room));
            }
            // A stale entry of the same user (an older connection that has
            // not finished leaving) is replaced silently.
            if let Some(old) = r.members.insert(
                user.clone(),
                MemberEntry {
                    conn: conn.clone(),
                    state,
                    read_only,
                },
            ) {
                remove_from_list(&old.conn, room);
            }
            if !replacing {
                let change = MemberChanged {
                    room: room.to_owned(),
                    member: Some(r.member(&user)),
                    joined: true,
                };
                self.member_event(inner, room, &r, change, &user);
            }
            return Ok(());
        }
    }

    /// Removes `conn` from `room`; the others get a leave event.
    pub fn leave(
        &self,
        inner: &Arc<Inner>,
        conn: &Arc<Connection>,
        room: &str,
    ) -> Result<(), RoomError> {
        let room_ref = self.get(room).ok_or(RoomError::NotAMember)?;
        {
            let mut r = room_ref.lock();
            match r.members.get(conn.user_id()) {
                Some(m) if m.conn.id() == conn.id() => {}
                _ => return Err(RoomError::NotAMember),
            }
            self.remove_member(inner, room, &mut r, conn.user_id());
        }
        remove_from_list(conn, room);
        self.drop_if_empty(room, &room_ref);
        Ok(())
    }

    /// Leaves every room of an ending connection; no later join can add it.
    pub fn leave_all(&self, inner: &Arc<Inner>, conn: &Arc<Connection>) {
        let Some(list) = conn.rooms.lock().take() else {
            return;
        };
        for room in list {
            let Some(room_ref) = self.get(&room) else {
                continue;
            };
            {
                let mut r = room_ref.lock();
                match r.members.get(conn.user_id()) {
                    Some(m) if m.conn.id() == conn.id() => {}
                    _ => continue,
                }
                self.remove_member(inner, &room, &mut r, conn.user_id());
            }
            self.drop_if_empty(&room, &room_ref);
        }
    }

    fn remove_member(&self, inner: &Arc<Inner>, room: &str, r: &mut Room, user: &str) {
        let Some(entry) = r.members.remove(user) else {
            return;
        };
        let change = MemberChanged {
            room: room.to_owned(),
            member: Some(Member {
                user_id: user.to_owned(),
                state: entry.state,
            }),
            joined: false,
        };
        self.member_event(inner, room, r, change, user);
    }

    /// Drops `room` from the map if it has no members left.
    fn drop_if_empty(&self, room: &str, room_ref: &RoomRef) {
        let mut map = self.map.write();
        let mut r = room_ref.lock();
        if r.members.is_empty() && !r.gone {
            r.gone = true;
            if map.get(room).is_some_and(|x| Arc::ptr_eq(x, room_ref)) {
                map.remove(room);
            }
        }
    }

    /// Sends (or, in large rooms, batches) a member event to the others.
    fn member_event(
        &self,
        inner: &Arc<Inner>,
        room: &str,
        r: &Room,
        change: MemberChanged,
        subject: &str,
    ) {
        if !r.settings.member_events {
            return;
        }
        if r.members.len() > inner.options.room_member_events_batch_above {
            self.pending
                .lock()
                .entry(Arc::from(room))
                .or_default()
                .insert(Arc::from(subject), change);
            self.schedule_flush(inner);
            return;
        }
        let frame = control_frame(Control::MemberChanged(change));
        let mut report = SendReport::default();
        r.deliver(&frame, Some(subject), &mut report);
    }

    fn schedule_flush(&self, inner: &Arc<Inner>) {
        if self.flush_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = inner.clone();
        crate::client::after_window(inner.options.event_batch_interval, move || {
            inner.rooms.flush_member_events()
        });
    }

    /// Sends each large room's coalesced member events as one frame.
    pub fn flush_member_events(&self) {
        // Cleared before taking the batch: a change queued after the take
        // schedules a new flush.
        self.flush_scheduled.store(false, Ordering::Release);
        let pending = std::mem::take(&mut *self.pending.lock());
        for (room, changes) in pending {
            let Some(room_ref) = self.get(&room) else {
                continue;
            };
            let r = room_ref.lock();
            let only = if changes.len() == 1 {
                changes.keys().next().cloned()
            } else {
                None
            };
            let total = changes.len();
            let changes: Vec<MemberChanged> =
                changes.into_values().take(MAX_BATCHED_CHANGES).collect();
            let frame = control_frame(Control::MemberChanges(MemberChanges {
                room: room.to_string(),
                omitted: (total - changes.len()) as u32,
                changes,
            }));
            let mut report = SendReport::default();
            // Nobody is told only about themselves.
            r.deliver(&frame, only.as_deref(), &mut report);
        }
    }

    /// Delivers `msg` to the members of `room`, stamped with the room and
    /// the time, encoded once. With `from`, the sender must be a member and
    /// not read-only, and is skipped unless the room echoes publishes.
    pub fn publish(
        &self,
        room: &str,
        mut msg: Message,
        from: Option<&Arc<Connection>>,
        exclude: &[&str],
    ) -> Result<SendReport, RoomError> {
        let room_ref = self.get(room).ok_or(match from {
            Some(_) => RoomError::NotAMember,
            None => RoomError::NotFound,
        })?;
        let r = room_ref.lock();
        let mut skip = None;
        if let Some(conn) = from {
            match r.members.get(conn.user_id()) {
                Some(m) if m.conn.id() == conn.id() => {
                    if m.read_only {
                        return Err(RoomError::Forbidden("read-only member".into()));
                    }
                }
                _ => return Err(RoomError::NotAMember),
            }
            if !r.settings.publish_echo {
                skip = Some(conn.user_id());
            }
        }
        msg.room = room.to_owned();
        msg.control = None;
        let frame = codec::encode_outbound(&mut msg);
        let mut report = SendReport::default();
        for (user, m) in &r.members {
            if Some(&**user) == skip || exclude.contains(&&**user) {
                continue;
            }
            match m.conn.push(frame.clone()) {
                Ok(()) => report.queued += 1,
                Err(e) => report.failed.push((user.to_string(), e)),
            }
        }
        Ok(report)
    }

    /// Members and state of `room`.
    pub fn members(&self, room: &str) -> Option<Members> {
        let room_ref = self.get(room)?;
        let r = room_ref.lock();
        Some(Members {
            room: room.to_owned(),
            members: r
                .members
                .iter()
                .map(|(u, m)| Member {
                    user_id: u.to_string(),
                    state: m.state.clone(),
                })
                .collect(),
            room_state: r.state.clone(),
        })
    }

    /// The shared state of `room`.
    pub fn room_state(&self, room: &str) -> Option<HashMap<String, String>> {
        Some(self.get(room)?.lock().state.clone())
    }

    /// Applies a state change (by a member, or by the server when `by` is
    /// `None`, which may only touch the room state) and tells every member.
    pub fn update_state(
        &self,
        inner: &Inner,
        room: &str,
        by: Option<&Arc<Connection>>,
        change: StateChange,
    ) -> Result<(), RoomError> {
        let room_ref = self.get(room).ok_or(RoomError::NotFound)?;
        let mut r = room_ref.lock();
        if r.gone {
            return Err(RoomError::NotFound);
        }
        if let Some(conn) = by {
            match r.members.get(conn.user_id()) {
                Some(m) if m.conn.id() == conn.id() => {
                    if m.read_only {
                        return Err(RoomError::Forbidden("read-only member".into()));
                    }
                }
                _ => return Err(RoomError::NotAMember),
            }
        }
        let StateChange {
            room_changes,
            mut room_removed,
            member_changes,
            mut member_removed,
        } = change;
        // Only keys that exist can be removed (and each once): a request
        // cannot make every member receive a megabyte of no-ops.
        dedup_existing(&mut room_removed, &r.state);
        if let Some(conn) = by {
            dedup_existing(&mut member_removed, &r.members[conn.user_id()].state);
        }
        // Compute both new maps first so a refused change changes nothing.
        let new_room = apply(&r.state, &room_changes, &room_removed);
        check_state(inner, &new_room)?;
        let member_part = !member_changes.is_empty() || !member_removed.is_empty();
        let new_member = match (by, member_part) {
            (Some(conn), true) => {
                let cur = &r.members[conn.user_id()].state;
                let s = apply(cur, &member_changes, &member_removed);
                check_state(inner, &s)?;
                Some((conn.user_key(), s))
            }
            _ => None,
        };
        let mut report = SendReport::default();
        if !room_changes.is_empty() || !room_removed.is_empty() {
            r.state = new_room;
            let frame = control_frame(Control::StateChanged(StateChanged {
                room: room.to_owned(),
                user_id: String::new(),
                changes: room_changes,
                removed: room_removed,
            }));
            r.deliver(&frame, None, &mut report);
        }
        if let Some((user, s)) = new_member {
            if let Some(m) = r.members.get_mut(&*user) {
                m.state = s;
            }
            let frame = control_frame(Control::StateChanged(StateChanged {
                room: room.to_owned(),
                user_id: user.to_string(),
                changes: member_changes,
                removed: member_removed,
            }));
            r.deliver(&frame, None, &mut report);
        }
        Ok(())
    }

    /// Closes `room`: every member gets `RoomClosed` and is out. Returns
    /// the number of members it had, or `None` if there was no such room.
    pub fn close(&self, room: &str, reason: &str) -> Option<usize> {
        let room_ref = self.map.write().remove(room)?;
        let mut r = room_ref.lock();
        r.gone = true;
        let frame = control_frame(Control::RoomClosed(RoomClosed {
            room: room.to_owned(),
            reason: reason.to_owned(),
        }));
        let mut report = SendReport::default();
        r.deliver(&frame, None, &mut report);
        let n = r.members.len();
        for (_, m) in r.members.drain() {
            remove_from_list(&m.conn, room);
        }
        Some(n)
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

fn dedup_existing(keys: &mut Vec<String>, state: &HashMap<String, String>) {
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| state.contains_key(k) && seen.insert(k.clone()));
}

fn remove_from_list(conn: &Connection, room: &str) {
    if let Some(list) = conn.rooms.lock().as_mut() {
        if let Some(i) = list.iter().position(|r| &**r == room) {
            list.swap_remove(i);
        }
    }
}
