//! [`serve`]: the way to serve routes that mount a [`WsClient`] handler —
//! a hardened replacement for `warp::serve(routes).incoming(listener)`.
//! See [`Server`] for what it adds; the server itself lives in
//! `session/serve.rs`.

use tokio::net::TcpListener;
use warp::reply::Reply;
use warp::Filter;

use crate::client::WsClient;
use crate::session::serve::Server;

/// Serves `routes` on `listener` with the limits of `ws`'s options, counting
/// into `ws`'s metrics. Unlike `warp::serve`, a connection gets at most
/// `handshake_timeout` (10 s) to send its request head and be upgraded,
/// a request head at most `max_header_bytes` (16 KiB), and at most
/// `max_pending_handshakes` (4096) connections — `max_pending_handshakes_per_ip`
/// (256) per address — may be pending at once; malformed requests are
/// counted and logged rate-limited. Graceful shutdown:
/// [`Server::graceful`].
///
/// Routes that mount several `WsClient`s may be served with any of them:
/// the limits and counters are that one's. Read the client's address with
/// [`remote_addr`](crate::remote_addr) (warp's own filter sees none here).
///
/// ```no_run
/// use edk_ws::{JwtAuthenticator, Options, WsClient};
/// use warp::Filter;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let ws = WsClient::new(Options::from_env()?, JwtAuthenticator::new(b"secret"));
/// let routes = warp::path("ws").and(warp::path::end()).and(ws.handler());
/// let listener = edk_ws::bind("127.0.0.1:8080".parse()?)?;
/// let stop = async { let _ = tokio::signal::ctrl_c().await; };
/// edk_ws::serve(routes, listener, &ws).graceful(stop).run().await;
/// ws.shutdown(std::time::Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
pub fn serve<F>(routes: F, listener: TcpListener, ws: &WsClient) -> Server<F>
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    Server::new(routes, listener, ws.options().clone(), ws.metrics_handle())
}
