//! Subscribed message and disconnect handlers: called in subscription order,
//! each call isolated so that a panicking handler is caught and logged.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::RwLock;

use crate::close::DisconnectReason;
use crate::connection::Conn;
use crate::proto::Message;

type MessageFn = dyn Fn(Conn, Message) -> BoxFuture<'static, ()> + Send + Sync;
type DisconnectFn = dyn Fn(Conn, DisconnectReason) -> BoxFuture<'static, ()> + Send + Sync;

/// Subscribed handlers by subscription id, in order; readers take a snapshot.
type Entries<F> = Arc<[(u64, Arc<F>)]>;

struct List<F: ?Sized> {
    entries: RwLock<Entries<F>>,
}

impl<F: ?Sized> List<F> {
    fn new() -> Self {
        List {
            entries: RwLock::new(Arc::from(Vec::new())),
        }
    }
    fn add(&self, id: u64, f: Arc<F>) {
        let mut e = self.entries.write();
        let mut v: Vec<_> = e.iter().cloned().collect();
        v.push((id, f));
        *e = Arc::from(v);
    }
    fn remove(&self, id: u64) -> bool {
        let mut e = self.entries.write();
        let before = e.len();
        let v: Vec<_> = e.iter().filter(|(i, _)| *i != id).cloned().collect();
        let removed = v.len() != before;
        *e = Arc::from(v);
        removed
    }
    fn snapshot(&self) -> Entries<F> {
        self.entries.read().clone()
    }
}

pub(crate) struct Handlers {
    next_id: AtomicU64,
    message: List<MessageFn>,
    disconnect: List<DisconnectFn>,
}

impl Handlers {
    pub fn new() -> Self {
        Handlers {
            next_id: AtomicU64::new(1),
            message: List::new(),
            disconnect: List::new(),
        }
    }

    pub fn add_message<F, Fut>(self: &Arc<Self>, f: F) -> Subscription
    where
        F: Fn(Conn, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Relaxed);
        self.message.add(id, Arc::new(move |c, m| f(c, m).boxed()));
        Subscription {
            id,
            kind: Kind::Message,
            handlers: Arc::downgrade(self),
        }
    }

    pub fn add_disconnect<F, Fut>(self: &Arc<Self>, f: F) -> Subscription
    where
        F: Fn(Conn, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Relaxed);
        self.disconnect
            .add(id, Arc::new(move |c, r| f(c, r).boxed()));
        Subscription {
            id,
            kind: Kind::Disconnect,
            handlers: Arc::downgrade(self),
        }
    }

    /// Runs every message handler in order; returns how many panicked.
    pub async fn on_message(&self, conn: &Conn, msg: Message) -> u64 {
        let list = self.message.snapshot();
        let mut panics = 0;
        let n = list.len();
        let mut msg = Some(msg);
        for (i, (_, h)) in list.iter().enumerate() {
            // The last handler gets the message itself, the others a clone
            // (cheap: the payload is shared `Bytes`).
            let m = if i + 1 == n { msg.take() } else { msg.clone() };
            let Some(m) = m else { break };
            if !run_isolated(|| h(conn.clone(), m)).await {
                panics += 1;
            }
        }
        panics
    }

    /// Runs every disconnect handler in order; returns how many panicked.
    pub async fn on_disconnect(&self, conn: &Conn, reason: DisconnectReason) -> u64 {
        let list = self.disconnect.snapshot();
        let mut panics = 0;
        for (_, h) in list.iter() {
            if !run_isolated(|| h(conn.clone(), reason)).await {
                panics += 1;
            }
        }
        panics
    }
}

/// Calls a handler and awaits its future, catching a panic in either.
/// Returns `false` when it panicked.
async fn run_isolated(call: impl FnOnce() -> BoxFuture<'static, ()>) -> bool {
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(f) => f,
        Err(p) => {
            tracing::error!(panic = panic_text(&*p), "handler panicked");
            return false;
        }
    };
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(()) => true,
        Err(p) => {
            tracing::error!(panic = panic_text(&*p), "handler panicked");
            false
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(|s| s.as_str()))
        .unwrap_or("non-string panic payload")
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Message,
    Disconnect,
}

/// A subscribed handler. Dropping it keeps the handler subscribed; call
/// [`Subscription::unsubscribe`] to remove it.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    kind: Kind,
    handlers: Weak<Handlers>,
}

impl Subscription {
    /// Removes the handler: it is not called for messages or disconnects
    /// that start after this returns. Returns `false` if it was already gone.
    pub fn unsubscribe(self) -> bool {
        let Some(h) = self.handlers.upgrade() else {
            return false;
        };
        match self.kind {
            Kind::Message => h.message.remove(self.id),
            Kind::Disconnect => h.disconnect.remove(self.id),
        }
    }
}
