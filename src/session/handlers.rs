//! Subscribed message and disconnect handlers: called in subscription order,
//! each call isolated so that a panicking handler is caught and logged.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::conn::Conn;
use crate::protocol::close::DisconnectReason;
use crate::protocol::proto::Message;
use crate::subscribers::{Subscribers, Subscription};

type MessageFn = dyn Fn(Conn, Message) -> BoxFuture<'static, ()> + Send + Sync;
type DisconnectFn = dyn Fn(Conn, DisconnectReason) -> BoxFuture<'static, ()> + Send + Sync;

pub(crate) struct Handlers {
    message: Arc<Subscribers<MessageFn>>,
    disconnect: Arc<Subscribers<DisconnectFn>>,
}

impl Handlers {
    pub fn new() -> Self {
        Handlers {
            message: Subscribers::new(),
            disconnect: Subscribers::new(),
        }
    }

    pub fn add_message<F, Fut>(&self, f: F) -> Subscription
    where
        F: Fn(Conn, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.message.add(Arc::new(move |c, m| f(c, m).boxed()))
    }

    pub fn add_disconnect<F, Fut>(&self, f: F) -> Subscription
    where
        F: Fn(Conn, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.disconnect.add(Arc::new(move |c, r| f(c, r).boxed()))
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
