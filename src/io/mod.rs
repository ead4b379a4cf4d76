//! Bytes under the WebSocket, at the bottom of the crate beside
//! [`protocol`](crate::protocol): the socket recovered from hyper's upgrade
//! (`transport`: TCP_NODELAY however the listener was bound), the writer's
//! coalescing output buffer (`outbuf`), and a listener helper ([`bind`]).
//! Imports nothing else of the crate.

mod listener;
pub(crate) mod outbuf;
pub(crate) mod transport;
pub(crate) mod ws_read;

pub use listener::bind;
