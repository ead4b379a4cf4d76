//! Room replicas: in a cluster, a room's membership and state live in Redis
//! and every change is decided there (by the backplane's scripts), each with
//! the room's next version. A node keeps a replica of a room while it has
//! local members and applies the changes here **in version order**, under
//! the room's lock, telling its local members exactly as a single process
//! would (`MemberChanged`/`MemberChanges`, `StateChanged`, `RoomClosed`).
//!
//! A change whose version is not the next one is refused: `Already` (an
//! older or duplicate event, e.g. one this node applied when its own write
//! returned) or `Gap` (events were lost: the caller reloads a snapshot with
//! [`Hub::install_room`], which tells local members to re-list).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::policy::{RoomSettings, StateChange};
use super::rooms::{remove_from_list, MemberEntry, Room, RoomRef};
use super::{Hub, Payload, Target};
use crate::conn::Connection;
use crate::protocol::codec;
use crate::protocol::proto::message::Control;
use crate::protocol::proto::{MemberChanged, MemberChanges};

/// What applying a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// It was the next version: applied, local members told.
    Done,
    /// The replica is at this version or later already: nothing to do.
    Already,
    /// Versions are missing before it (or there is no replica): reload.
    Gap,
}

/// A member as the cluster knows it.
#[derive(Clone)]
pub(crate) struct MemberUpdate {
    pub user: Arc<str>,
    /// Its connection, when it is on this node (and still registered).
    pub conn: Option<Arc<Connection>>,
    /// The node it is on, when that is another one.
    pub node: Option<Arc<str>>,
    pub epoch: u64,
    pub state: HashMap<String, String>,
    pub read_only: bool,
}

impl MemberUpdate {
    fn into_entry(self) -> (Arc<str>, MemberEntry) {
        let entry = MemberEntry {
            conn: self.conn,
            node: self.node,
            epoch: self.epoch,
            state: self.state,
            read_only: self.read_only,
        };
        (self.user, entry)
    }
}

/// A room as read from the cluster at `version`.
#[derive(Clone)]
pub(crate) struct RoomSnapshot {
    pub members: Vec<MemberUpdate>,
    pub state: HashMap<String, String>,
    pub settings: RoomSettings,
    pub version: u64,
}

impl Hub {
    /// The replica's version, if this node has a replica of `room`.
    pub fn room_version(&self, room: &str) -> Option<u64> {
        Some(self.rooms.get(room)?.lock().version)
    }

    /// Rooms of which this node keeps a replica.
    pub fn replicated_rooms(&self) -> Vec<String> {
        self.rooms.names()
    }

    /// Runs `f` on the replica of `room` if `version` is its next version
    /// (creating the replica with `create` when there is none).
    fn apply_next(
        &self,
        room: &str,
        version: u64,
        create: Option<&RoomSettings>,
        f: impl FnOnce(&mut Room),
    ) -> Applied {
        let room_ref: RoomRef = {
            let existing = self.rooms.get(room);
            match (existing, create) {
                (Some(r), _) => r,
                (None, Some(settings)) if version == 1 => {
                    let mut map = self.rooms.map.write();
                    map.entry(Arc::from(room))
                        .or_insert_with(|| Arc::new(Mutex::new(Room::new(settings.clone()))))
                        .clone()
                }
                (None, _) => return Applied::Gap,
            }
        };
        let mut r = room_ref.lock();
        if version <= r.version {
            return Applied::Already;
        }
        if version > r.version + 1 || r.gone {
            return Applied::Gap;
        }
        r.version = version;
        f(&mut r);
        drop(r);
        self.rooms.drop_if_empty(room, &room_ref);
        Applied::Done
    }

    /// A member joined, or joined again (its state replaced).
    pub fn apply_join(
        self: &Arc<Self>,
        room: &str,
        m: MemberUpdate,
        version: u64,
        settings: Option<&RoomSettings>,
    ) -> Applied {
        self.apply_next(room, version, settings, |r| {
            if let Some(conn) = &m.conn {
                let mut list = conn.rooms.lock();
                if let Some(list) = list.as_mut() {
                    if !list.iter().any(|x| &**x == room) {
                        list.push(Arc::from(room));
                    }
                }
            }
            let epoch = m.epoch;
            let (user, entry) = m.into_entry();
            match r.members.insert(user.clone(), entry) {
                Some(old) if old.epoch == epoch => {
                    self.member_state_replaced(room, r, &user, &old.state);
                }
                Some(old) => {
                    // A newer connection of the user took the seat.
                    if let Some(c) = old.conn {
                        remove_from_list(&c, room);
                    }
                }
                None => {
                    let change = MemberChanged {
                        room: room.to_owned(),
                        member: Some(r.member(&user)),
                        joined: true,
                    };
                    self.member_event(room, r, change, &user);
                }
            }
        })
    }

    /// A member left (or its connection ended).
    pub fn apply_leave(self: &Arc<Self>, room: &str, user: &str, version: u64) -> Applied {
        self.apply_next(room, version, None, |r| {
            if let Some(c) = r.members.get(user).and_then(|m| m.conn.clone()) {
                remove_from_list(&c, room);
            }
            self.remove_member(room, r, user);
            r.version = version; // remove_member counts a local change
        })
    }

    /// Room state and/or `user`'s member state changed.
    pub fn apply_state(
        &self,
        room: &str,
        user: Option<&str>,
        change: StateChange,
        version: u64,
    ) -> Applied {
        self.apply_next(room, version, None, |r| {
            self.commit_change(room, r, user, change)
        })
    }

    /// The room was closed: local members get `RoomClosed`.
    pub fn apply_close(&self, room: &str, reason: &str, version: u64) -> Applied {
        self.apply_next(room, version, None, |r| self.closed(room, r, reason))
    }

    /// Every member on `node` (which died) left.
    pub fn apply_reap(self: &Arc<Self>, room: &str, node: &str, version: u64) -> Applied {
        self.apply_next(room, version, None, |r| {
            let gone: Vec<Arc<str>> = r
                .members
                .iter()
                .filter(|(_, m)| m.node.as_deref() == Some(node))
                .map(|(u, _)| u.clone())
                .collect();
            for user in gone {
                self.remove_member(room, r, &user);
            }
            r.version = version;
        })
    }

    /// Replaces this node's replica of `room` with `snap` (a first load, or
    /// a reload after a gap). On a reload, local members get a
    /// `MemberChanges` with `omitted > 0`, the protocol's "re-list" signal,
    /// since changes may have been missed.
    /// With `force` (Redis lost its data and versions restarted) the
    /// snapshot is installed even if the replica looks newer.
    pub fn install_room(&self, room: &str, snap: RoomSnapshot, force: bool) {
        let room_ref = {
            let mut map = self.rooms.map.write();
            map.entry(Arc::from(room))
                .or_insert_with(|| Arc::new(Mutex::new(Room::new(snap.settings.clone()))))
                .clone()
        };
        let mut r = room_ref.lock();
        let reload = r.version > 0 || !r.members.is_empty();
        if reload && !force && snap.version <= r.version {
            return; // the replica is as new already
        }
        let old = std::mem::take(&mut r.members);
        for m in snap.members {
            let (user, entry) = m.into_entry();
            r.members.insert(user, entry);
        }
        // Local connections that are no longer members leave their list.
        for (user, m) in old {
            if let Some(c) = m.conn {
                if r.members.get(&user).is_none_or(|n| n.conn.is_none()) {
                    remove_from_list(&c, room);
                }
            }
        }
        r.state = snap.state;
        r.settings = snap.settings;
        r.version = snap.version;
        r.gone = false;
        if reload {
            let frame = Payload::Frame(codec::encode_control(
                String::new(),
                Control::MemberChanges(MemberChanges {
                    room: room.to_owned(),
                    changes: Vec::new(),
                    omitted: r.members.len().max(1) as u32,
                }),
            ));
            let everyone = Target::Members {
                members: &r.members,
                except: None,
            };
            let _ = self.deliver(everyone, &frame);
        }
    }

    /// Drops the replica of `room` when no member is connected here any
    /// more; returns whether it did (the caller stops listening to it).
    pub fn drop_replica_if_remote(&self, room: &str) -> bool {
        let mut map = self.rooms.map.write();
        let Some(room_ref) = map.get(room).cloned() else {
            return true;
        };
        let mut r = room_ref.lock();
        if r.local_members().next().is_some() {
            return false;
        }
        r.gone = true;
        map.remove(room);
        true
    }
}
