//! Subscribed message and disconnect handlers: called in subscription order,
//! each call isolated so that a panicking handler is caught and logged.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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

    /// Calls the message handlers with `msg`, up to their first await. With
    /// one handler (the usual case) what is left is that handler's own
    /// future, awaited as is: a message costs no allocation or copy of a
    /// future here. With several, they run one after the other in
    /// subscription order, each isolated from panics; the last gets the
    /// message itself and the others a clone (cheap: the payload is shared
    /// `Bytes`).
    pub fn call(&self, conn: &Conn, msg: Message) -> Called {
        let list = self.message.load();
        match list.as_slice() {
            [] => Called::Done(0),
            [(_, h)] => call_isolated(|| h(conn.clone(), msg)),
            _ => {
                let list = arc_swap::Guard::into_inner(list);
                let conn = conn.clone();
                Called::Many(Box::pin(async move {
                    let mut panics = 0;
                    let n = list.len();
                    let mut msg = Some(msg);
                    for (i, (_, h)) in list.iter().enumerate() {
                        let m = if i + 1 == n { msg.take() } else { msg.clone() };
                        let Some(m) = m else { break };
                        if !run_isolated(|| h(conn.clone(), m)).await {
                            panics += 1;
                        }
                    }
                    panics
                }))
            }
        }
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

/// What calling the message handlers left to await (see
/// [`Handlers::call`]): a future returning how many handlers panicked. It
/// is a plain enum, not an `async` block, so that awaiting it adds little
/// to the state of the connection's task.
pub(crate) enum Called {
    /// Nothing: there are no handlers, or the only one panicked when called
    /// (the count of panics).
    Done(u64),
    /// The only handler's future; a panic in it is caught.
    One(BoxFuture<'static, ()>),
    /// Several handlers, run in order; the future returns how many panicked.
    Many(BoxFuture<'static, u64>),
}

impl Future for Called {
    type Output = u64;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        match &mut *self {
            Called::Done(panics) => Poll::Ready(*panics),
            Called::One(fut) => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(())) => Poll::Ready(0),
                    Err(p) => {
                        tracing::error!(panic = panic_text(&*p), "handler panicked");
                        // Never polled again: it panicked.
                        *self = Called::Done(1);
                        Poll::Ready(1)
                    }
                }
            }
            Called::Many(fut) => fut.as_mut().poll(cx),
        }
    }
}

/// Calls a handler and awaits its future, catching a panic in either.
/// Returns `false` when it panicked.
async fn run_isolated(call: impl FnOnce() -> BoxFuture<'static, ()>) -> bool {
    call_isolated(call).await == 0
}

/// Calls a handler, catching a panic in the call (logged; `Done(1)`); what
/// is left to await is its future, whose panics [`Called`] catches.
fn call_isolated(call: impl FnOnce() -> BoxFuture<'static, ()>) -> Called {
    match std::panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(fut) => Called::One(fut),
        Err(p) => {
            tracing::error!(panic = panic_text(&*p), "handler panicked");
            Called::Done(1)
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(|s| s.as_str()))
        .unwrap_or("non-string panic payload")
}
