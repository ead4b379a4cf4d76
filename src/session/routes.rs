//! Typed routes: the messages of one application `type`, decoded as the
//! application's prost type, handled, and answered with the same id.
//!
//! Where an inbound message goes (see `task::on_frame`): a module request
//! (`control` or `room` set) to the module; otherwise, when its `type` has
//! a route, to that route **only**; otherwise to the subscribed message
//! handlers. A route's reply (or error) is queued on the requesting
//! connection before the next message of that connection is read.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use prost_reflect::{MessageDescriptor, ReflectMessage};

use super::control;
use super::Endpoint;
use crate::conn::Conn;
use crate::protocol::codec;
use crate::protocol::proto::error::Code;
use crate::protocol::proto::message::Control;
use crate::protocol::proto::{Error, Message};

/// A typed route's refusal: sent to the client as an `Error` with this code
/// and message, and the request's id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
#[non_exhaustive]
pub struct RouteError {
    /// The `Error.code` sent.
    pub code: Code,
    /// The `Error.message` sent.
    pub message: String,
}

impl RouteError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RouteError {
            code,
            message: message.into(),
        }
    }
}

/// What a route's handler produced: the encoded reply payload, or none.
type Outcome = Result<Option<Bytes>, RouteError>;
type CallFn = dyn Fn(Conn, Bytes) -> BoxFuture<'static, Outcome> + Send + Sync;

/// One route.
pub(crate) struct Route {
    /// The `type` it serves.
    pub name: String,
    /// The request payload's message.
    pub request: MessageDescriptor,
    /// The reply payload's message; `None` for a route without replies.
    pub reply: Option<MessageDescriptor>,
    call: Box<CallFn>,
}

impl Route {
    /// A route answering `Ok(Resp)` with a reply of the same id.
    pub fn with_reply<Req, Resp, F, Fut>(name: &str, handler: F) -> Route
    where
        Req: ReflectMessage + Default + 'static,
        Resp: ReflectMessage + Default + 'static,
        F: Fn(Conn, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RouteError>> + Send + 'static,
    {
        let request = Req::default().descriptor();
        let call = move |conn: Conn, payload: Bytes| match decode::<Req>(payload) {
            Ok(req) => handler(conn, req)
                .map(|r| r.map(|resp| Some(Bytes::from(resp.encode_to_vec()))))
                .boxed(),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        };
        Route {
            name: name.to_owned(),
            reply: Some(Resp::default().descriptor()),
            request,
            call: Box::new(call),
        }
    }

    /// A route that sends nothing back on success.
    pub fn without_reply<Req, F, Fut>(name: &str, handler: F) -> Route
    where
        Req: ReflectMessage + Default + 'static,
        F: Fn(Conn, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RouteError>> + Send + 'static,
    {
        let request = Req::default().descriptor();
        let call = move |conn: Conn, payload: Bytes| match decode::<Req>(payload) {
            Ok(req) => handler(conn, req).map(|r| r.map(|()| None)).boxed(),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        };
        Route {
            name: name.to_owned(),
            reply: None,
            request,
            call: Box::new(call),
        }
    }

    /// Handles one message of this route's type: decode, call, answer. A
    /// panicking handler is caught, counted and answered `INTERNAL`.
    pub async fn handle(&self, inner: &Endpoint, conn: &Conn, msg: Message) {
        let Message {
            id,
            r#type,
            payload,
            ..
        } = msg;
        let call = || (self.call)(conn.clone(), payload);
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
            Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
            Err(p) => Err(p),
        };
        let outcome = outcome.unwrap_or_else(|_| {
            tracing::error!(route = %r#type, user = conn.user_id(), "route handler panicked");
            inner
                .hub()
                .metrics
                .handler_panics
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(RouteError::new(Code::Internal, "internal error"))
        });
        let frame = match outcome {
            Ok(None) => return,
            Ok(Some(payload)) => codec::encode_outbound(&mut Message {
                id: id.clone(),
                r#type,
                payload,
                ..Default::default()
            }),
            Err(e) => {
                tracing::debug!(id = %id, code = ?e.code, message = %e.message, "route refused");
                codec::encode_control(
                    id.clone(),
                    Control::Error(Error {
                        code: e.code as i32,
                        message: e.message,
                    }),
                )
            }
        };
        control::send_reply(conn, id, frame);
    }
}

fn decode<Req: ReflectMessage + Default>(payload: Bytes) -> Result<Req, RouteError> {
    Req::decode(payload).map_err(|e| {
        RouteError::new(
            Code::InvalidRequest,
            format!(
                "payload is not a valid {}: {e}",
                Req::default().descriptor().full_name()
            ),
        )
    })
}

/// The routes of an endpoint, by `type`: read lock-free per message.
pub(crate) struct Routes(ArcSwap<HashMap<String, Arc<Route>>>);

impl Routes {
    pub fn new() -> Self {
        Routes(ArcSwap::from_pointee(HashMap::new()))
    }

    /// The route of `ty`, if any.
    #[inline]
    pub fn get(&self, ty: &str) -> Option<Arc<Route>> {
        let map = self.0.load();
        if map.is_empty() {
            return None;
        }
        map.get(ty).cloned()
    }

    /// Adds `route`, replacing the route of the same name.
    pub fn insert(&self, route: Route) {
        let route = Arc::new(route);
        self.0.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(route.name.clone(), route.clone());
            m
        });
    }

    /// Removes the route of `name`; `false` if there was none.
    pub fn remove(&self, name: &str) -> bool {
        let before = self.0.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(name);
            m
        });
        before.contains_key(name)
    }

    /// Every route, by name.
    pub fn list(&self) -> Vec<Arc<Route>> {
        let mut v: Vec<_> = self.0.load().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}
