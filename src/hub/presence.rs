//! Presence: user activities (online, busy, away, playing), visible to every
//! other connected user of the same [`WsClient`](crate::WsClient).
//!
//! A connected user who never reported is offline to others. An activity
//! belongs to the connection that set it: when that connection ends, the
//! user goes offline (a replacing connection reports afresh).
//!
//! Changes are batched: they collect for `event_batch_interval`, keeping only
//! the latest state of each user, and then every connected user gets one
//! `Activities` frame (encoded once, through [`Hub::deliver`]) with all of
//! them — except a user whose only change in the batch is their own. So N
//! users changing at once cost each recipient one frame per window, not N.
//!
//! **The cost rule.** Everyone sees everyone, so presence costs grow with
//! users²: N users each changing once cost N² activity entries delivered.
//! They are spread so that they never starve message traffic: a window
//! carries at most 256 changes (the rest wait for the next windows, so a
//! storm of N changes settles in ⌈N/256⌉ windows), and its one frame is
//! pushed to the connections in slices of 256 with a yield to the runtime
//! between slices. Per window that is at most N pushes of one frame of
//! ≤ 256 entries (≈ 12 KiB), done in ⌈N/256⌉ short steps.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::{Mutex, RwLock};

use super::{Hub, Payload, Target};
use crate::conn::Connection;
use crate::protocol::cluster::ActivityRecord;
use crate::protocol::codec;
use crate::protocol::proto::message::Control;
use crate::protocol::proto::{Activities, Activity, Status};
use crate::subscribers::{Subscribers, Subscription};

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
    /// The backplane (Redis) cannot be reached; nothing was changed.
    #[error("backplane unavailable")]
    Unavailable,
}

pub(crate) type ActivityFn = dyn Fn(&Activity) + Send + Sync;

/// Activities carried by one batch frame; the rest wait for the next
/// window (deferred, not dropped), so a frame stays far below any queue
/// limit whatever the storm.
const MAX_PER_BATCH: usize = 256;

/// Connections one slice of a presence fan-out pushes to before it yields.
pub(crate) const SLICE: usize = 256;

/// Who set an activity: the connection (here; `None` when on another
/// node) and its ownership epoch.
#[derive(Clone, Copy)]
struct SetBy {
    conn: Option<u64>,
    epoch: u64,
}

pub(crate) struct Presence {
    /// Non-offline activities by user (ordered: list pages are keyed by
    /// user id).
    current: RwLock<BTreeMap<Arc<str>, (SetBy, Activity)>>,
    /// Changes waiting for the next batch: user → latest.
    pending: Mutex<HashMap<Arc<str>, Activity>>,
    /// Changes made here waiting for the next batch to the other nodes
    /// (only when there can be other nodes).
    outgoing: Mutex<Vec<ActivityRecord>>,
    flush_scheduled: AtomicBool,
    handlers: Arc<Subscribers<ActivityFn>>,
}

impl Presence {
    pub fn new() -> Self {
        Presence {
            current: RwLock::new(BTreeMap::new()),
            pending: Mutex::new(HashMap::new()),
            outgoing: Mutex::new(Vec::new()),
            flush_scheduled: AtomicBool::new(false),
            handlers: Subscribers::new(),
        }
    }

    pub fn subscribe(&self, f: Arc<ActivityFn>) -> Subscription {
        self.handlers.add(f)
    }

    /// How many users have a non-offline activity.
    pub fn len(&self) -> usize {
        self.current.read().len()
    }

    /// Every non-offline activity.
    pub fn list(&self) -> Vec<Activity> {
        self.current
            .read()
            .values()
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// One page of activities after `cursor` (a user id; empty = from the
    /// start): at most `limit` entries and, past the first, no more than
    /// `max_bytes` encoded. `next_cursor` is empty on the last page.
    pub fn page(&self, cursor: &str, limit: usize, max_bytes: usize) -> Activities {
        let cur = self.current.read();
        let after = match cursor {
            "" => Bound::Unbounded,
            c => Bound::Excluded(c),
        };
        let rest = cur.range::<str, _>((after, Bound::Unbounded));
        let (activities, next_cursor) =
            super::list_page(rest, limit, max_bytes, |_, (_, a)| a.clone());
        Activities {
            activities,
            next_cursor,
        }
    }

    /// `user`'s activity (offline when unknown).
    pub fn get(&self, user: &str) -> Option<Activity> {
        self.current.read().get(user).map(|(_, a)| a.clone())
    }
}

impl Hub {
    /// Sets `conn`'s user activity (offline clears it) and propagates it.
    pub fn set_activity(self: &Arc<Self>, conn: &Connection, status: Status, detail: String) {
        let user = conn.user_key();
        let activity = Activity {
            user_id: user.to_string(),
            status: status as i32,
            detail,
            since_ms: codec::now_ms(),
        };
        {
            let mut cur = self.presence.current.write();
            // Checked under the lock `activity_gone` takes: an ending (or
            // replaced) connection cannot leave an activity behind.
            if conn.is_closing() {
                return;
            }
            if cur
                .get(&*user)
                .is_some_and(|(by, _)| by.epoch > conn.epoch())
            {
                return; // a newer connection of the user owns it
            }
            if status == Status::Offline {
                if cur.remove(&*user).is_none() {
                    return; // already offline: nothing to tell
                }
            } else {
                let by = SetBy {
                    conn: Some(conn.id()),
                    epoch: conn.epoch(),
                };
                cur.insert(user.clone(), (by, activity.clone()));
            }
        }
        self.activity_changed(user, activity, Some(conn.epoch()));
    }

    /// The connection ended: if it set the user's activity, the user goes
    /// offline.
    pub fn activity_gone(self: &Arc<Self>, conn: &Connection) {
        let removed = {
            let mut cur = self.presence.current.write();
            match cur.get(conn.user_id()) {
                Some((by, _)) if by.conn == Some(conn.id()) => cur.remove(conn.user_id()).is_some(),
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
            self.activity_changed(conn.user_key(), activity, Some(conn.epoch()));
        }
    }

    /// Activities changed on other nodes (their batches, or the offline
    /// records of a dead node): applied unless a newer epoch of the user
    /// set the current one, and batched to the local users like local
    /// changes.
    pub fn apply_remote_activities(self: &Arc<Self>, records: Vec<ActivityRecord>) {
        for rec in records {
            let Some(activity) = rec.activity else {
                continue;
            };
            let user: Arc<str> = Arc::from(activity.user_id.as_str());
            {
                let mut cur = self.presence.current.write();
                if cur.get(&*user).is_some_and(|(by, _)| by.epoch > rec.epoch) {
                    continue;
                }
                if activity.status == Status::Offline as i32 {
                    if cur.remove(&*user).is_none() {
                        continue;
                    }
                } else {
                    let by = SetBy {
                        conn: None,
                        epoch: rec.epoch,
                    };
                    cur.insert(user.clone(), (by, activity.clone()));
                }
            }
            self.activity_changed(user, activity, None);
        }
    }

    /// Replaces every activity set on other nodes with `records` (a load or
    /// reload of the cluster's activities); differences are batched to the
    /// local users.
    pub fn install_presence(self: &Arc<Self>, records: Vec<ActivityRecord>) {
        let mut fresh: HashMap<Arc<str>, ActivityRecord> = records
            .into_iter()
            .filter_map(|r| {
                let user = Arc::from(r.activity.as_ref()?.user_id.as_str());
                Some((user, r))
            })
            .collect();
        let mut changes = Vec::new();
        {
            let cur = self.presence.current.read();
            for (user, (by, a)) in cur.iter() {
                match fresh.get(user) {
                    _ if by.conn.is_some() => {
                        fresh.remove(user); // set here: this node's is authoritative
                    }
                    Some(r) if r.activity.as_ref() == Some(a) => {
                        fresh.remove(user);
                    }
                    Some(_) => {}
                    None => changes.push(ActivityRecord {
                        activity: Some(Activity {
                            user_id: user.to_string(),
                            status: Status::Offline as i32,
                            detail: String::new(),
                            since_ms: codec::now_ms(),
                        }),
                        node: String::new(),
                        epoch: by.epoch,
                    }),
                }
            }
        }
        changes.extend(fresh.into_values());
        self.apply_remote_activities(changes);
    }

    /// The activities set by this node's connections, with their epochs
    /// (to write them again after the cluster lost them).
    pub fn local_activities(&self) -> Vec<(Activity, u64)> {
        let cur = self.presence.current.read();
        cur.values()
            .filter(|(by, _)| by.conn.is_some())
            .map(|(by, a)| (a.clone(), by.epoch))
            .collect()
    }

    fn activity_changed(self: &Arc<Self>, user: Arc<str>, activity: Activity, local: Option<u64>) {
        for (_, h) in self.presence.handlers.snapshot().iter() {
            let a = &activity;
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(a))).is_err() {
                tracing::error!("activity handler panicked");
            }
        }
        if let (Some(epoch), Some(_)) = (local, self.forward.get()) {
            self.presence.outgoing.lock().push(ActivityRecord {
                activity: Some(activity.clone()),
                node: String::new(),
                epoch,
            });
        }
        self.presence.pending.lock().insert(user, activity);
        self.schedule_sliced_flush(|h| &h.presence.flush_scheduled, Hub::flush_presence);
    }

    /// Sends the pending batch to every connected user, in slices of
    /// [`SLICE`] connections with a yield between them (see the module
    /// docs: the cost rule).
    pub fn flush_presence(self: Arc<Self>) -> BoxFuture<'static, ()> {
        async move { self.flush_presence_now().await }.boxed()
    }

    async fn flush_presence_now(self: Arc<Self>) {
        let p = &self.presence;
        p.flush_scheduled.store(false, Ordering::Release);
        if let Some(f) = self.forward.get() {
            let outgoing = std::mem::take(&mut *p.outgoing.lock());
            if !outgoing.is_empty() {
                f.activities(outgoing);
            }
        }
        let (pending, more) = {
            let mut p = p.pending.lock();
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
            self.schedule_sliced_flush(|h| &h.presence.flush_scheduled, Hub::flush_presence);
        }
        if pending.is_empty() {
            return;
        }
        let only = if pending.len() == 1 {
            pending.keys().next().cloned()
        } else {
            None
        };
        let frame = Payload::Frame(codec::encode_control(
            String::new(),
            Control::Activities(Activities {
                activities: pending.into_values().collect(),
                next_cursor: String::new(),
            }),
        ));
        let except = only.as_deref();
        let failed = self.deliver_all_in_slices(except, &frame).await;
        if failed > 0 {
            tracing::debug!(
                dropped = failed,
                "activity batch not queued for some connections"
            );
        }
    }

    /// Delivers `payload` to every connection here but `except`'s, in
    /// slices of [`SLICE`] connections, yielding to other tasks (message
    /// traffic) after each. Returns how many were not queued.
    async fn deliver_all_in_slices(&self, except: Option<&str>, payload: &Payload) -> usize {
        let (mut handles, mut failed) = (Vec::new(), 0);
        for shard in 0..super::registry::SHARDS {
            self.registry.handles(shard, &mut handles);
            for conns in handles.chunks(SLICE) {
                let target = Target::Slice { conns, except };
                if let Ok(report) = self.deliver(target, payload) {
                    failed += report.failed.len();
                }
                tokio::task::yield_now().await;
            }
            handles.clear();
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::testing::{connect, drain, hub};
    use crate::options::Options;
    use prost::Message as _;
    use std::time::Duration;

    fn batch(m: &[crate::protocol::proto::Message]) -> Vec<(String, i32)> {
        m.iter()
            .flat_map(|m| match &m.control {
                Some(Control::Activities(a)) => a.activities.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .map(|a| (a.user_id, a.status))
            .collect()
    }

    /// A hub whose batch window never passes on its own: flushed by hand.
    fn manual() -> Arc<Hub> {
        hub(Options::default().with_event_batch_interval(Duration::from_secs(86_400)))
    }

    #[test]
    fn batches_reach_the_others_once_per_flush() {
        let hub = manual();
        let (a, b) = (connect(&hub, "a"), connect(&hub, "b"));
        hub.set_activity(&a, Status::Busy, "x".into());
        hub.set_activity(&a, Status::Online, "y".into());
        futures::executor::block_on(hub.clone().flush_presence());
        assert!(drain(&a).is_empty(), "a change of one's own is not echoed");
        assert_eq!(batch(&drain(&b)), [("a".to_owned(), Status::Online as i32)]);
        hub.set_activity(&b, Status::Away, String::new());
        hub.activity_gone(&a);
        futures::executor::block_on(hub.clone().flush_presence());
        let mut got = batch(&drain(&b));
        got.sort();
        assert_eq!(
            got,
            [
                ("a".to_owned(), Status::Offline as i32),
                ("b".to_owned(), Status::Away as i32)
            ]
        );
        assert_eq!(hub.presence.list().len(), 1);
    }

    /// A batch reaches every connection, in slices that each end with a
    /// yield to the runtime (so message traffic is not starved).
    #[test]
    fn the_fan_out_yields_between_slices() {
        let hub = manual();
        let conns: Vec<_> = (0..3 * SLICE)
            .map(|i| connect(&hub, &format!("u{i}")))
            .collect();
        hub.set_activity(&conns[0], Status::Online, String::new());
        let mut flush = hub.clone().flush_presence();
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut yields = 0;
        while flush.as_mut().poll(&mut cx).is_pending() {
            yields += 1;
            assert!(yields < 1_000, "the flush never ends");
        }
        assert!(yields >= 3, "{yields} yields for {} connections", 3 * SLICE);
        assert!(drain(&conns[0]).is_empty());
        for c in &conns[1..] {
            assert_eq!(batch(&drain(c)), [("u0".to_owned(), Status::Online as i32)]);
        }
    }

    #[test]
    fn the_newer_connection_owns_the_activity() {
        let hub = manual();
        let old = connect(&hub, "u");
        let new = connect(&hub, "u"); // higher epoch, replaces `old`
        hub.set_activity(&new, Status::Playing, "chess".into());
        hub.set_activity(&old, Status::Away, String::new());
        assert_eq!(
            hub.presence.get("u").unwrap().status,
            Status::Playing as i32
        );
        hub.activity_gone(&old); // the old one ending does not take it away
        assert!(hub.presence.get("u").is_some());
        hub.activity_gone(&new);
        assert!(hub.presence.get("u").is_none());
    }

    #[test]
    fn activity_pages_cover_everyone_once() {
        let hub = manual();
        let conns: Vec<_> = (0..1_000)
            .map(|i| connect(&hub, &format!("u{i:04}")))
            .collect();
        for c in &conns {
            hub.set_activity(c, Status::Online, "d".repeat(200));
        }
        let (mut cursor, mut seen) = (String::new(), Vec::new());
        loop {
            let page = hub.presence.page(&cursor, 100, 8 << 10);
            assert!(page.activities.len() <= 100 && page.encoded_len() < (8 << 10) + 1024);
            seen.extend(page.activities.into_iter().map(|a| a.user_id));
            if page.next_cursor.is_empty() {
                break;
            }
            cursor = page.next_cursor;
        }
        let want: Vec<String> = (0..1_000).map(|i| format!("u{i:04}")).collect();
        assert_eq!(seen, want);
    }
}
