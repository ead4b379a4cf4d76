//! Client requests handled by the module itself — a message with `control`
//! set, or with `room` set (a publish) — and their replies.
//!
//! Every request with a non-empty `id` gets exactly one reply with that id:
//! `Ack`, `Members`, `Activities` or `Error`. A failed request with an empty
//! id still gets its `Error` (with an empty id); a successful one gets
//! nothing.

use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use governor::{DefaultDirectRateLimiter, Quota};
use tracing::debug;

use super::Endpoint;
use crate::conn::Conn;
use crate::error::SendError;
use crate::hub::policy::{JoinDecision, StateChange};
use crate::hub::presence::ActivityError;
use crate::hub::rooms::{valid_room_name, RoomError};
use crate::options::Options;
use crate::protocol::codec;
use crate::protocol::proto::error::Code;
use crate::protocol::proto::message::Control;
use crate::protocol::proto::{Ack, Error, Message, Status};

/// The longest activity `detail`, in bytes.
const MAX_DETAIL_BYTES: usize = 256;

/// Whether a decoded message is for the module rather than for handlers.
pub(crate) fn is_request(msg: &Message) -> bool {
    msg.control.is_some() || !msg.room.is_empty()
}

/// Per-connection request budget, created on the first request (idle
/// connections pay nothing).
#[derive(Default)]
pub(crate) struct Limiter(Option<Box<DefaultDirectRateLimiter>>);

impl Limiter {
    fn allow(&mut self, per_second: u32) -> bool {
        let Some(rate) = NonZeroU32::new(per_second) else {
            return true;
        };
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        self.0
            .get_or_insert_with(|| {
                Box::new(super::budget::limiter(
                    Quota::per_second(rate).allow_burst(burst),
                ))
            })
            .check()
            .is_ok()
    }
}

struct ReqError {
    code: Code,
    message: String,
}

impl ReqError {
    fn new(code: Code, message: impl Into<String>) -> Self {
        ReqError {
            code,
            message: message.into(),
        }
    }
}

impl From<RoomError> for ReqError {
    fn from(e: RoomError) -> Self {
        let code = match &e {
            RoomError::InvalidName => Code::InvalidRequest,
            RoomError::NotFound => Code::NotFound,
            RoomError::NotAMember => Code::NotAMember,
            RoomError::Forbidden(_) => Code::Forbidden,
            RoomError::RoomFull => Code::RoomFull,
            RoomError::TooManyRooms => Code::TooManyRooms,
            RoomError::StateTooLarge => Code::StateTooLarge,
            RoomError::NotConnected => Code::InvalidRequest,
            RoomError::Unavailable => Code::Unavailable,
        };
        ReqError::new(code, e.to_string())
    }
}

impl From<ActivityError> for ReqError {
    fn from(e: ActivityError) -> Self {
        match e {
            ActivityError::Disabled => activities_disabled(),
            ActivityError::NotConnected => ReqError::new(Code::InvalidRequest, e.to_string()),
            ActivityError::Unavailable => ReqError::new(Code::Unavailable, e.to_string()),
        }
    }
}

/// The most entries one list reply may carry: the request's `limit`
/// (0 = no preference) capped by `max_list_page_size`.
fn page_limit(o: &Options, requested: u32) -> usize {
    match requested as usize {
        0 => o.max_list_page_size,
        n => n.min(o.max_list_page_size),
    }
}

/// The byte budget of one list reply: 256 KiB, or a quarter of the send
/// queue when that is smaller, so a reply always fits the queue.
fn page_bytes(o: &Options) -> usize {
    (256 << 10).min(o.send_queue_max_bytes / 4).max(1)
}

/// Handles one request and sends its reply.
pub(crate) async fn handle(
    inner: &Arc<Endpoint>,
    conn: &Conn,
    limiter: &mut Limiter,
    msg: Message,
) {
    let id = msg.id.clone();
    let result = if limiter.allow(inner.hub().options.max_requests_per_second) {
        // A panicking policy hook must not cost the request its reply, nor
        // the connection its life.
        match AssertUnwindSafe(dispatch(inner, conn, msg))
            .catch_unwind()
            .await
        {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(
                    user = conn.user_id(),
                    "request handling panicked (a room policy hook?)"
                );
                inner
                    .hub()
                    .metrics
                    .handler_panics
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(ReqError::new(Code::Internal, "internal error"))
            }
        }
    } else {
        Err(ReqError::new(Code::RateLimited, "too many requests"))
    };
    let control = match result {
        Ok(None) if id.is_empty() => return,
        Ok(None) => Control::Ack(Ack {}),
        Ok(Some(reply)) => reply,
        Err(e) => {
            debug!(id = %id, code = ?e.code, message = %e.message, "request refused");
            Control::Error(Error {
                code: e.code as i32,
                message: e.message,
            })
        }
    };
    let frame = codec::encode_control(id.clone(), control);
    send_reply(conn, id, frame);
}

/// Queues the reply `frame` to the request `id`. A reply larger than the
/// whole send queue is replaced by `Error{INTERNAL}`, so the request still
/// gets exactly one reply.
pub(crate) fn send_reply(conn: &Conn, id: String, frame: bytes::Bytes) {
    match conn.send_encoded(frame) {
        Ok(()) => {}
        Err(SendError::TooLarge) => {
            // Still exactly one reply: say why the real one cannot come.
            let why = "reply larger than the send queue (send_queue_max_bytes)";
            reply_error(conn, id, Code::Internal, why);
        }
        Err(e) => debug!(error = %e, "reply not delivered"),
    }
}

/// Sends an `Error` reply outside request handling (e.g. a message over the
/// inbound budget).
pub(crate) fn reply_error(conn: &Conn, id: String, code: Code, message: &str) {
    let err = Control::Error(Error {
        code: code as i32,
        message: message.to_owned(),
    });
    if let Err(e) = conn.send_encoded(codec::encode_control(id, err)) {
        debug!(error = %e, "error reply not delivered");
    }
}

/// Runs a request; `Ok(None)` means a plain `Ack`.
async fn dispatch(
    inner: &Arc<Endpoint>,
    conn: &Conn,
    mut msg: Message,
) -> Result<Option<Control>, ReqError> {
    let c = &conn.0;
    let (node, hub) = (&inner.node, inner.hub());
    let o = &hub.options;
    match msg.control.take() {
        None => {
            let room = std::mem::take(&mut msg.room);
            valid_room_name(&room)?;
            let read_only = hub
                .rooms
                .membership(&room, c)
                .map_err(not_found_is_not_member)?;
            if read_only {
                return Err(RoomError::Forbidden("read-only member".into()).into());
            }
            hub.policy
                .get()
                .on_publish(conn, &room, &msg)
                .await
                .map_err(|why| ReqError::new(Code::Forbidden, why))?;
            // Encoded once, before any lock; the room is checked again
            // (membership) under its lock as the frame is queued.
            msg.room.clone_from(&room);
            let frame = codec::encode_outbound(&mut msg);
            let report = hub.publish(&room, frame, Some(c), &[])?;
            if !report.failed.is_empty() {
                debug!(
                    room,
                    failed = report.failed.len(),
                    "publish not queued for some members"
                );
            }
            Ok(None)
        }
        Some(Control::Join(j)) => {
            valid_room_name(&j.room)?;
            let mut state = j.state;
            hub.check_state(&state)?;
            match hub.policy.get().on_join(conn, &j.room, &mut state).await {
                JoinDecision::Deny(why) => Err(ReqError::new(Code::Forbidden, why)),
                JoinDecision::Allow { read_only } => {
                    node.join(c, &j.room, state, read_only).await?;
                    Ok(None)
                }
            }
        }
        Some(Control::Leave(l)) => {
            valid_room_name(&l.room)?;
            node.leave(c, &l.room).await?;
            Ok(None)
        }
        Some(Control::ListMembers(l)) => {
            valid_room_name(&l.room)?;
            hub.rooms.membership(&l.room, c)?;
            let page = hub
                .rooms
                .members_page(&l.room, &l.cursor, page_limit(o, l.limit), page_bytes(o))
                .ok_or(RoomError::NotFound)?;
            Ok(Some(Control::Members(page)))
        }
        Some(Control::UpdateState(u)) => {
            valid_room_name(&u.room)?;
            if hub.rooms.membership(&u.room, c)? {
                return Err(RoomError::Forbidden("read-only member".into()).into());
            }
            let mut change = StateChange {
                room_changes: u.room_changes,
                room_removed: u.room_removed,
                member_changes: u.member_changes,
                member_removed: u.member_removed,
            };
            if change.is_empty() {
                return Err(ReqError::new(Code::InvalidRequest, "no change"));
            }
            hub.policy
                .get()
                .on_state_change(conn, &u.room, &mut change)
                .await
                .map_err(|why| ReqError::new(Code::Forbidden, why))?;
            node.update_state(&u.room, Some(c), change).await?;
            Ok(None)
        }
        Some(Control::SetActivity(s)) => {
            if o.online_activities_disabled {
                return Err(activities_disabled());
            }
            let status = Status::try_from(s.status)
                .map_err(|_| ReqError::new(Code::InvalidRequest, "unknown status"))?;
            if s.detail.len() > MAX_DETAIL_BYTES {
                return Err(ReqError::new(Code::InvalidRequest, "detail over 256 bytes"));
            }
            node.set_activity(c, status, s.detail).await?;
            Ok(None)
        }
        Some(Control::ListActivities(l)) => {
            if o.online_activities_disabled {
                return Err(activities_disabled());
            }
            let page = hub
                .presence
                .page(&l.cursor, page_limit(o, l.limit), page_bytes(o));
            Ok(Some(Control::Activities(page)))
        }
        Some(_) => Err(ReqError::new(
            Code::InvalidRequest,
            "not a request (server-to-client control)",
        )),
    }
}

fn not_found_is_not_member(e: RoomError) -> RoomError {
    match e {
        RoomError::NotFound => RoomError::NotAMember,
        e => e,
    }
}

fn activities_disabled() -> ReqError {
    ReqError::new(
        Code::ActivitiesDisabled,
        "activities are disabled on this server",
    )
}
