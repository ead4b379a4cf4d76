//! Presence: user activities (online, busy, away, playing), visible to every
//! other connected user of the same [`WsClient`](crate::WsClient).
//!
//! A connected user who never reported is offline to others. An activity
//! belongs to the connection that set it: when that connection ends, the
//! user goes offline (a replacing connection reports afresh).
//!
//! Changes are batched: they collect for `event_batch_interval`, keeping only
//! the latest state of each user, and then every connected user gets one
//! `Activities` frame (encoded once) with all of them — except a user whose
//! only change in the batch is their own. So N users changing at once cost
//! each recipient one frame per window, not N.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::client::Inner;
use crate::codec;
use crate::connection::Connection;
use crate::proto::message::Control;
use crate::proto::{Activities, Activity, Message, Status};

/// Why the server could not set an activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActivityError {
    /// Activities are off (`online_activities_disabled`).
    #[error("activities are disabled")]
    Disabled,
    /// The user has no connection here.
    #[error("user is not connected")]
    NotConnected,
}

type ActivityFn = dyn Fn(&Activity) + Send + Sync;

/// Activities carried by one batch frame; the rest wait for the next
/// window (deferred, not dropped), so a frame stays far below any queue
/// limit whatever the storm.
const MAX_PER_BATCH: usize = 256;

pub(crate) struct Presence {
    /// Non-offline activities: user → (connection that set it, activity).
    current: RwLock<HashMap<Arc<str>, (u64, Activity)>>,
    /// Changes waiting for the next batch: user → latest.
    pending: Mutex<HashMap<Arc<str>, Activity>>,
    flush_scheduled: AtomicBool,
    handlers: RwLock<Vec<Arc<ActivityFn>>>,
}

impl Presence {
    pub fn new() -> Self {
        Presence {
            current: RwLock::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            flush_scheduled: AtomicBool::new(false),
            handlers: RwLock::new(Vec::new()),
        }
    }

    pub fn subscribe(&self, f: Arc<ActivityFn>) {
        self.handlers.write().push(f);
    }

    /// Sets `conn`'s user activity (offline clears it) and propagates it.
    pub fn set(&self, inner: &Arc<Inner>, conn: &Connection, status: Status, detail: String) {
        let user = conn.user_key();
        let activity = Activity {
            user_id: user.to_string(),
            status: status as i32,
            detail,
            since_ms: codec::now_ms(),
        };
        {
            let mut cur = self.current.write();
            // Checked under the lock `disconnected` takes: an ending (or
            // replaced) connection cannot leave an activity behind.
            if conn.ended.load(Ordering::SeqCst) || conn.queue.is_closing() {
                return;
            }
            if cur.get(&*user).is_some_and(|(id, _)| *id > conn.id()) {
                return; // a newer connection of the user owns it
            }
            if status == Status::Offline {
                if cur.remove(&*user).is_none() {
                    return; // already offline: nothing to tell
                }
            } else {
                cur.insert(user.clone(), (conn.id(), activity.clone()));
            }
        }
        self.changed(inner, user, activity);
    }

    /// The connection ended: if it set the user's activity, the user goes
    /// offline.
    pub fn disconnected(&self, inner: &Arc<Inner>, conn: &Connection) {
        let removed = {
            let mut cur = self.current.write();
            match cur.get(conn.user_id()) {
                Some((id, _)) if *id == conn.id() => cur.remove(conn.user_id()).is_some(),
                _ => false,
            }
        };
        if removed {
            let activity = Activity {
                user_id: conn.user_id().to_owned(),
                status: Status::Offline as i32,
                detail: String::new(),
                since_ms: codec::now_ms(),
            };
            self.changed(inner, conn.user_key(), activity);
        }
    }

    fn changed(&self, inner: &Arc<Inner>, user: Arc<str>, activity: Activity) {
        // A snapshot: a handler may subscribe or set activities itself.
        let handlers: Vec<_> = self.handlers.read().clone();
        for h in handlers {
            let a = &activity;
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(a))).is_err() {
                tracing::error!("activity handler panicked");
            }
        }
        self.pending.lock().insert(user, activity);
        self.schedule(inner);
    }

    /// Arranges a flush after one batch window, unless one is arranged.
    fn schedule(&self, inner: &Arc<Inner>) {
        if self.flush_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = inner.clone();
        crate::client::after_window(inner.options.event_batch_interval, move || {
            inner.presence.flush(&inner)
        });
    }

    /// Sends the pending batch to every connected user.
    pub fn flush(&self, inner: &Arc<Inner>) {
        self.flush_scheduled.store(false, Ordering::Release);
        let (pending, more) = {
            let mut p = self.pending.lock();
            if p.len() <= MAX_PER_BATCH {
                (std::mem::take(&mut *p), false)
            } else {
                let keys: Vec<Arc<str>> = p.keys().take(MAX_PER_BATCH).cloned().collect();
                let batch: HashMap<_, _> = keys
                    .into_iter()
                    .filter_map(|k| p.remove(&k).map(|a| (k, a)))
                    .collect();
                (batch, true)
            }
        };
        if more {
            self.schedule(inner);
        }
        if pending.is_empty() {
            return;
        }
        let only = if pending.len() == 1 {
            pending.keys().next().cloned()
        } else {
            None
        };
        let mut msg = Message {
            control: Some(Control::Activities(Activities {
                activities: pending.into_values().collect(),
            })),
            ..Default::default()
        };
        let frame = codec::encode_outbound(&mut msg);
        let mut dropped = 0u32;
        inner.registry.for_each(|c| {
            if only.as_deref() == Some(c.user_id()) {
                return;
            }
            if c.push(frame.clone()).is_err() {
                dropped += 1;
            }
        });
        if dropped > 0 {
            tracing::debug!(dropped, "activity batch not queued for some connections");
        }
    }

    /// Every non-offline activity.
    pub fn list(&self) -> Vec<Activity> {
        self.current
            .read()
            .values()
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// `user`'s activity (offline when unknown).
    pub fn get(&self, user: &str) -> Option<Activity> {
        self.current.read().get(user).map(|(_, a)| a.clone())
    }
}
