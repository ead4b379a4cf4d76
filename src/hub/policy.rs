//! Room policy hooks: who may join (and as what), which state changes are
//! accepted, who may publish, and per-room settings.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;

use crate::conn::Conn;
use crate::protocol::proto::Message;

/// What the join hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinDecision {
    /// Let the connection in; a read-only member may neither publish nor
    /// change state (`FORBIDDEN`).
    Allow {
        /// Mark the member read-only.
        read_only: bool,
    },
    /// Refuse (`FORBIDDEN` with this text).
    Deny(String),
}

/// A requested state change, as seen (and possibly rewritten) by
/// [`RoomPolicy::on_state_change`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// Room state keys to set.
    pub room_changes: HashMap<String, String>,
    /// Room state keys to remove.
    pub room_removed: Vec<String>,
    /// The requester's member state keys to set.
    pub member_changes: HashMap<String, String>,
    /// The requester's member state keys to remove.
    pub member_removed: Vec<String>,
}

impl StateChange {
    /// `true` when nothing would change.
    pub fn is_empty(&self) -> bool {
        self.room_changes.is_empty()
            && self.room_removed.is_empty()
            && self.member_changes.is_empty()
            && self.member_removed.is_empty()
    }
}

/// Settings of one room, fixed when the room is created (first join).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomSettings {
    /// Send `MemberChanged` to the other members on join and leave.
    pub member_events: bool,
    /// Deliver a member's publish back to itself too.
    pub publish_echo: bool,
    /// Member limit (`ROOM_FULL` beyond); 0 = none.
    pub max_members: usize,
}

/// Server-side rules for rooms. Every method has a permissive default:
/// anyone may join, change state and publish.
///
/// ```
/// use edk_ws::{async_trait, Conn, JoinDecision, RoomPolicy, StateChange};
/// use std::collections::HashMap;
///
/// /// Users whose id starts with "guest-" may watch but not speak, and the
/// /// room state key "owner" cannot be changed by clients.
/// struct Rules;
///
/// #[async_trait]
/// impl RoomPolicy for Rules {
///     async fn on_join(&self, conn: &Conn, _room: &str, _state: &mut HashMap<String, String>) -> JoinDecision {
///         JoinDecision::Allow { read_only: conn.user_id().starts_with("guest-") }
///     }
///     async fn on_state_change(&self, _conn: &Conn, _room: &str, change: &mut StateChange) -> Result<(), String> {
///         if change.room_changes.contains_key("owner") || change.room_removed.iter().any(|k| k == "owner") {
///             return Err("owner is set by the server".into());
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait RoomPolicy: Send + Sync + 'static {
    /// A connection asks to join `room` with member `state` (which the hook
    /// may rewrite).
    async fn on_join(
        &self,
        _conn: &Conn,
        _room: &str,
        _state: &mut HashMap<String, String>,
    ) -> JoinDecision {
        JoinDecision::Allow { read_only: false }
    }

    /// A member asks to change state; rewrite `change` to transform it, or
    /// return `Err(text)` to refuse (`FORBIDDEN`).
    async fn on_state_change(
        &self,
        _conn: &Conn,
        _room: &str,
        _change: &mut StateChange,
    ) -> Result<(), String> {
        Ok(())
    }

    /// A member publishes `msg` to `room`; `Err(text)` refuses (`FORBIDDEN`).
    async fn on_publish(&self, _conn: &Conn, _room: &str, _msg: &Message) -> Result<(), String> {
        Ok(())
    }

    /// Settings for a room being created; `defaults` come from the options.
    fn room_settings(&self, _room: &str, defaults: RoomSettings) -> RoomSettings {
        defaults
    }
}

/// The default policy: everything allowed.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl RoomPolicy for AllowAll {}

/// The policy in force: read lock-free on every request, replaced whole.
pub(crate) struct Policy(ArcSwap<Box<dyn RoomPolicy>>);

impl Default for Policy {
    fn default() -> Self {
        Policy(ArcSwap::from_pointee(Box::new(AllowAll)))
    }
}

impl Policy {
    /// The current policy (kept alive across the hook's await).
    pub fn get(&self) -> Arc<Box<dyn RoomPolicy>> {
        self.0.load_full()
    }

    pub fn set(&self, policy: impl RoomPolicy) {
        self.0.store(Arc::new(Box::new(policy)));
    }
}
