//! The two Redis connections of a node and their health: a command
//! connection (scripts, reads; every call bounded by `redis_timeout`) and a
//! pub/sub connection (RESP3 pushes). While either is down the backplane is
//! **down**: every cross-node operation fails at once with `Unavailable`
//! instead of waiting, and a supervisor reconnects with a capped backoff,
//! re-subscribes every channel this node needs (from its own list — the
//! client library is not trusted to do it silently) and then runs the
//! recovery (see `mod.rs`).
//!
//! Publishes go through one queue and one task, which sends them in order,
//! pipelined: two messages to one user leave in the order they were sent.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, PushInfo, RedisResult};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use crate::backplane::BackplaneError;
use crate::logs::LogBudget;

/// One message for the publisher task.
pub(crate) struct Out {
    pub channel: String,
    /// `SPUBLISH` (a user's or room's channel) rather than `PUBLISH`.
    pub sharded: bool,
    pub bytes: Vec<u8>,
}

/// Publishes that may wait for the publisher task; more are refused.
const QUEUE: usize = 65_536;

pub(crate) struct Link {
    client: redis::Client,
    timeout: Duration,
    cmd: ArcSwapOption<MultiplexedConnection>,
    sub: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// A handle on the pub/sub connection for a `PING` that tells a Redis
    /// that is down from a command that waited behind a busy node's queue.
    probe: ArcSwapOption<MultiplexedConnection>,
    up: AtomicBool,
    down: Notify,
    out: mpsc::Sender<Out>,
    out_rx: Mutex<Option<mpsc::Receiver<Out>>>,
    /// Channels this node listens to, and how many local reasons it has
    /// (connections of a user, members of a room); `true`: sharded.
    interest: Mutex<HashMap<String, (usize, bool)>>,
    /// Publishes that failed (counted; at most once across an outage).
    pub publish_errors: AtomicU64,
    /// Calls that took longer than the timeout while Redis still answered
    /// (the node was busy): they failed, the backplane stayed up.
    pub slow_calls: AtomicU64,
    log: LogBudget,
}

impl Link {
    /// # Errors
    ///
    /// The URL is not a Redis URL.
    pub fn new(url: &str, timeout: Duration) -> RedisResult<Self> {
        let info = url.into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let (out, rx) = mpsc::channel(QUEUE);
        Ok(Link {
            client,
            timeout,
            cmd: ArcSwapOption::empty(),
            sub: tokio::sync::Mutex::new(None),
            probe: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            down: Notify::new(),
            out,
            out_rx: Mutex::new(Some(rx)),
            interest: Mutex::new(HashMap::new()),
            publish_errors: AtomicU64::new(0),
            slow_calls: AtomicU64::new(0),
            log: LogBudget::new(2),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Marks the backplane down (once) and wakes the supervisor.
    pub fn mark_down(&self, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            warn!(
                why,
                "backplane (Redis) down: cross-node operations fail until it is back"
            );
            self.down.notify_one();
        }
    }

    /// Runs `f` on the command connection within the timeout; any failure
    /// marks the backplane down.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, BackplaneError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(con) = self.cmd.load_full().filter(|_| self.is_up()) else {
            return Err(BackplaneError::Unavailable);
        };
        match tokio::time::timeout(self.timeout, f((*con).clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    self.mark_down(&e.to_string());
                } else if self.log.admit().is_some() {
                    warn!(error = %e, "Redis refused a command");
                }
                Err(BackplaneError::Unavailable)
            }
            Err(_) => {
                // Slow is not down: on a busy node a call can wait behind
                // its own queue. Redis is down only if it misses a PING too.
                if self.answers_ping().await {
                    self.slow_calls.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.log.admit() {
                        warn!(suppressed, "a Redis call took longer than redis_timeout (Redis answers: this node is busy); it failed");
                    }
                } else {
                    self.mark_down("a Redis call timed out and Redis missed a PING");
                }
                Err(BackplaneError::Unavailable)
            }
        }
    }

    /// Whether Redis answers a `PING` within the timeout (on the pub/sub
    /// connection, which no command queue delays).
    async fn answers_ping(&self) -> bool {
        let Some(con) = self.probe.load_full() else {
            return false;
        };
        let mut con = (*con).clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut con);
        matches!(tokio::time::timeout(self.timeout, ping).await, Ok(Ok(_)))
    }

    /// Queues a publish (never waits).
    pub fn publish(&self, out: Out) -> Result<(), BackplaneError> {
        if !self.is_up() {
            return Err(BackplaneError::Unavailable);
        }
        self.out.try_send(out).map_err(|_| {
            self.publish_errors.fetch_add(1, Ordering::Relaxed);
            BackplaneError::Unavailable
        })
    }

    /// Adds a reason to listen to `channel`; subscribes on the first.
    /// Every `watch` (even a failed one) is paired with an `unwatch`.
    /// (Un)subscriptions are serialized on the pub/sub connection's lock,
    /// so a subscribe and an unsubscribe of one channel cannot cross.
    pub async fn watch(&self, channel: &str, sharded: bool) -> Result<(), BackplaneError> {
        let mut sub = self.sub.lock().await;
        let first = {
            let mut i = self.interest.lock();
            let e = i.entry(channel.to_owned()).or_insert((0, sharded));
            e.0 += 1;
            e.0 == 1
        };
        if !first {
            return Ok(());
        }
        // On failure the interest stays (the reconnect subscribes it); a
        // caller that gives up calls `unwatch`.
        let cmd = if sharded { "SSUBSCRIBE" } else { "SUBSCRIBE" };
        self.sub_command(&mut sub, cmd, channel).await
    }

    /// Drops a reason to listen to `channel`; unsubscribes after the last.
    pub async fn unwatch(&self, channel: &str) {
        let mut sub = self.sub.lock().await;
        let last = {
            let mut i = self.interest.lock();
            match i.get_mut(channel) {
                Some(e) if e.0 > 1 => {
                    e.0 -= 1;
                    None
                }
                Some(_) => i.remove(channel).map(|(_, sharded)| sharded),
                None => None,
            }
        };
        if let Some(sharded) = last {
            let cmd = if sharded {
                "SUNSUBSCRIBE"
            } else {
                "UNSUBSCRIBE"
            };
            // A failure marks the backplane down; the reconnect subscribes
            // from the list, which no longer has it.
            let _ = self.sub_command(&mut sub, cmd, channel).await;
        }
    }

    /// One (un)subscribe, one channel per command (the library matches one
    /// confirmation per command), within the timeout.
    async fn sub_command(
        &self,
        sub: &mut Option<MultiplexedConnection>,
        cmd: &str,
        channel: &str,
    ) -> Result<(), BackplaneError> {
        let Some(con) = sub.as_mut().filter(|_| self.is_up()) else {
            return Err(BackplaneError::Unavailable);
        };
        let r = tokio::time::timeout(
            self.timeout,
            redis::cmd(cmd)
                .arg(channel)
                .query_async::<redis::Value>(con),
        )
        .await;
        match r {
            Ok(Ok(_)) => Ok(()),
            _ => {
                self.mark_down("a (un)subscribe failed");
                Err(BackplaneError::Unavailable)
            }
        }
    }

    /// Connects both connections and subscribes every channel of interest
    /// plus `always`. Pushes go to `pushes`.
    pub async fn connect(
        &self,
        always: &[String],
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> RedisResult<()> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(self.timeout));
        let cmd = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut sub = self
            .client
            .get_multiplexed_async_connection_with_config(&config.set_push_sender(pushes))
            .await?;
        let channels: Vec<(String, bool)> = {
            let i = self.interest.lock();
            let mut v: Vec<_> = always.iter().map(|c| (c.clone(), false)).collect();
            v.extend(i.iter().map(|(c, (_, sharded))| (c.clone(), *sharded)));
            v
        };
        for chunk in channels.chunks(512) {
            let mut pipe = redis::pipe();
            for (c, sharded) in chunk {
                pipe.cmd(if *sharded { "SSUBSCRIBE" } else { "SUBSCRIBE" })
                    .arg(c)
                    .ignore();
            }
            pipe.query_async::<()>(&mut sub).await?;
        }
        debug!(channels = channels.len(), "subscribed");
        self.cmd.store(Some(std::sync::Arc::new(cmd)));
        self.probe.store(Some(std::sync::Arc::new(sub.clone())));
        *self.sub.lock().await = Some(sub);
        Ok(())
    }

    /// Forgets both connections (after an outage).
    pub async fn disconnect(&self) {
        self.cmd.store(None);
        self.probe.store(None);
        *self.sub.lock().await = None;
    }

    pub fn set_up(&self) {
        self.up.store(true, Ordering::Release);
    }

    /// Waits until something marks the backplane down.
    pub async fn wait_down(&self) {
        loop {
            let notified = self.down.notified();
            if !self.is_up() {
                return;
            }
            notified.await;
        }
    }

    /// The publisher: sends queued publishes in order, pipelined. Runs once.
    pub async fn publisher(&self) {
        let Some(mut rx) = self.out_rx.lock().take() else {
            return;
        };
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 256).await > 0 {
            let n = batch.len() as u64;
            let mut pipe = redis::pipe();
            for o in batch.drain(..) {
                pipe.cmd(if o.sharded { "SPUBLISH" } else { "PUBLISH" })
                    .arg(o.channel)
                    .arg(o.bytes)
                    .ignore();
            }
            let sent = self
                .call(|mut con| async move { pipe.query_async::<()>(&mut con).await })
                .await;
            if sent.is_err() {
                self.publish_errors.fetch_add(n, Ordering::Relaxed);
                if let Some(suppressed) = self.log.admit() {
                    warn!(
                        lost = n,
                        suppressed, "cross-node publishes lost: Redis unavailable"
                    );
                }
            }
        }
    }
}
