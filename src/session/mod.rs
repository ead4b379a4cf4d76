//! Sessions: the HTTP server under the routes (`serve`: deadlines and caps
//! before the upgrade), the warp handshake filter (`handshake`, with the
//! pure header checks in `checks`: HTTP refusals, then the 101), the
//! connection task (`task`: reader, single writer, heartbeat,
//! finish), the module's own request handling (`control`: one reply per
//! request id), typed routes (`routes`) and the application's handlers
//! (`handlers`).
//!
//! Imports the layers below (`backplane`, `hub`, `conn`, `protocol`, `io`);
//! only the `WsClient` facade sits above.

pub(crate) mod budget;
pub(crate) mod checks;
pub(crate) mod control;
pub(crate) mod handlers;
pub(crate) mod handshake;
pub(crate) mod routes;
pub(crate) mod serve;
pub(crate) mod task;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::backplane::Node;
use crate::hub::Hub;
use handlers::Handlers;
use routes::Routes;

/// One endpoint (one `WsClient`): its node, token checker, handlers and
/// connection tasks.
pub(crate) struct Endpoint {
    pub node: Node,
    pub auth: Box<dyn Authenticator>,
    pub handlers: Handlers,
    /// Typed routes, by message `type`.
    pub routes: Routes,
    /// Every connection task, from admission to its end: shutdown waits for
    /// them.
    pub tasks: TaskTracker,
    /// Cancelled when shutdown's deadline passes: every connection stops
    /// at once.
    pub cut: CancellationToken,
    /// The conformance test mode (feature `fuzzing`): no identity checks
    /// (each connection gets a fresh user id) and binary frames echoed as
    /// they came, undecoded.
    pub anonymous_echo: bool,
}

impl Endpoint {
    pub fn new(node: Node, auth: Box<dyn Authenticator>) -> Self {
        Endpoint {
            node,
            auth,
            handlers: Handlers::new(),
            routes: Routes::new(),
            tasks: TaskTracker::new(),
            cut: CancellationToken::new(),
            anonymous_echo: false,
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.node.hub
    }
}
