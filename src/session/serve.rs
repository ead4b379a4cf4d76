//! The serving path ([`Server`], started by [`serve`](crate::serve)): the
//! HTTP server under the warp routes, on hyper-util's `auto` builder with a
//! timer, so that nothing before the upgrade can hold the server.
//!
//! What `warp::serve` lacks, and this adds (limits from [`Options`]):
//!
//! - **A handshake deadline** (`handshake_timeout`, 10 s): a connection
//!   gets that long from accept to send a complete request head and be
//!   upgraded. A silent connection, or one still sending its head (a byte
//!   every few seconds), is closed at the deadline. One whose request the
//!   application is answering is closed after that answer, and stops
//!   counting as pending. hyper's own header timer (the same duration) and
//!   the deadline also close idle keep-alive connections.
//! - **A bounded request head** (`max_header_bytes`, 16 KiB): hyper reads no
//!   more before the head is complete and answers 431, so a pending
//!   connection holds at most that much.
//! - **Caps on pending connections** (accepted, not upgraded, within their
//!   deadline): `max_pending_handshakes` in all and
//!   `max_pending_handshakes_per_ip` per source address (an IPv6 /64 is
//!   one address), so one address with hundreds of half-open sockets
//!   cannot lock out the others. A connection over a cap is answered 503
//!   and closed at once (best effort: the client may see a reset), so the
//!   open files stay bounded too.
//! - **Quiet logs**: a malformed request (400/431, answered by hyper) is
//!   counted and logged at warn, at most 10 lines a second (warp's server
//!   logs each at error); timeouts, resets and refusals are counted and
//!   logged at debug (refusals at warn, rate-limited).
//! - **Graceful shutdown** ([`Server::graceful`]): stop accepting, close
//!   idle connections, let answers in flight finish, for at most
//!   `handshake_timeout`. Upgraded WebSockets belong to the
//!   [`WsClient`](crate::WsClient): call its `shutdown` first.
//!
//! The socket is served as `TokioIo<TcpStream>`, which `io/transport.rs`
//! takes back after the upgrade (`TCP_NODELAY`). Since warp's own remote
//! address is private to warp, the peer address rides in a request
//! extension of ours: read it with [`remote_addr`] (`warp::addr::remote()`
//! yields `None` under this server).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use warp::reply::Reply;
use warp::Filter;

use crate::logs::LogBudget;
use crate::metrics::Metrics;
use crate::options::Options;

/// The peer address of a request served by [`Server`] (a request
/// extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub SocketAddr);

/// A warp filter extracting the client's address: under [`serve`](crate::serve)
/// and under `warp::serve` alike (`warp::addr::remote()` only knows warp's
/// own server).
pub fn remote_addr() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Copy {
    warp::ext::optional::<PeerAddr>()
        .and(warp::addr::remote())
        .map(|ours: Option<PeerAddr>, warps: Option<SocketAddr>| ours.map(|p| p.0).or(warps))
}

/// Answer to a connection over a pending cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
content-length: 0\r\nretry-after: 1\r\n\r\n";

/// An HTTP server for warp routes with the limits of the module docs.
/// Made by [`serve`](crate::serve); run it with [`Server::run`].
#[must_use = "a Server does nothing until `run` is awaited"]
pub struct Server<F> {
    routes: F,
    listener: TcpListener,
    options: Options,
    metrics: Arc<Metrics>,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<F> std::fmt::Debug for Server<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl<F> Server<F>
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    pub(crate) fn new(
        routes: F,
        listener: TcpListener,
        options: Options,
        metrics: Arc<Metrics>,
    ) -> Self {
        Server {
            routes,
            listener,
            options,
            metrics,
            shutdown: None,
        }
    }

    /// Stops when `signal` completes: no more accepts, idle connections
    /// closed, answers in flight finished (for at most `handshake_timeout`,
    /// then the rest are cut); then [`run`](Server::run) returns.
    pub fn graceful(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Serves until the shutdown signal (forever without one).
    pub async fn run(self) {
        let Server {
            routes,
            listener,
            options,
            metrics,
            shutdown,
        } = self;
        let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
        let mut builder = Builder::new(TokioExecutor::new());
        let header_bytes = u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(options.handshake_timeout)
            .max_buf_size(options.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(header_bytes);
        let shared = Arc::new(Shared {
            builder,
            pending: Pending::default(),
            options,
            metrics,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        loop {
            let (tcp, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                },
            };
            let Some(slot) = shared.admit(&tcp, peer) else {
                continue;
            };
            let s = shared.clone();
            shared
                .tasks
                .spawn(s.serve_conn(tcp, peer, slot, warp::service(routes.clone())));
        }
        drop(listener);
        debug!("server stopping: closing connections");
        shared.stop.cancel();
        shared.tasks.close();
        let limit = shared.options.handshake_timeout + Duration::from_secs(1);
        let _ = tokio::time::timeout(limit, shared.tasks.wait()).await;
    }
}

/// Accept errors: a refused or reset connection is nothing; running out of
/// file descriptors (or another resource) pauses accepting briefly, so
/// the loop does not spin, and is logged (rate-limited).
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    static LOG: LazyLock<LogBudget> = LazyLock::new(|| LogBudget::new(1));
    if let Some(suppressed) = LOG.admit() {
        warn!(error = %e, suppressed, "accept failed: pausing 100 ms");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// What every connection task of one server shares.
struct Shared {
    builder: Builder<TokioExecutor>,
    pending: Pending,
    options: Options,
    metrics: Arc<Metrics>,
    /// Cancelled on shutdown.
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Shared {
    /// Takes a pending slot for a new connection, or answers 503 and drops
    /// it.
    fn admit(self: &Arc<Self>, tcp: &TcpStream, peer: SocketAddr) -> Option<Slot> {
        let o = &self.options;
        let key = IpKey::of(peer.ip());
        match self.pending.take(
            key,
            o.max_pending_handshakes,
            o.max_pending_handshakes_per_ip,
        ) {
            Ok(()) => {
                self.metrics.pending_handshakes.fetch_add(1, Relaxed);
                Some(Slot {
                    shared: self.clone(),
                    key,
                    held: true,
                })
            }
            Err(cap) => {
                let counter = match cap {
                    Cap::Total => &self.metrics.pending_cap_refused,
                    Cap::PerIp => &self.metrics.pending_ip_cap_refused,
                };
                counter.fetch_add(1, Relaxed);
                static LOG: LazyLock<LogBudget> = LazyLock::new(|| LogBudget::new(1));
                if let Some(suppressed) = LOG.admit() {
                    warn!(%peer, ?cap, suppressed, "pending-handshake cap reached: answering 503");
                }
                // Best effort, never waits: a fresh socket's buffer is empty.
                let _ = tcp.try_write(REFUSAL);
                None
            }
        }
    }

    async fn serve_conn<S>(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        mut slot: Slot,
        routes: S,
    ) where
        S: tower_service::Service<
                http::Request<Incoming>,
                Response = warp::reply::Response,
                Error = Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        // Set when a request head is complete (the routes are called).
        let started = Arc::new(AtomicBool::new(false));
        let seen = started.clone();
        let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            seen.store(true, Relaxed);
            req.extensions_mut().insert(PeerAddr(peer));
            routes.clone().call(req)
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), svc);
        tokio::pin!(conn);
        let deadline = tokio::time::sleep(self.options.handshake_timeout);
        tokio::pin!(deadline);
        let result = tokio::select! {
            r = conn.as_mut() => Some(r),
            () = &mut deadline => None,
            () = self.stop.cancelled() => None,
        };
        let result = match result {
            Some(r) => r,
            None if !started.load(Relaxed) => {
                // Silent, or still sending its first request head: cut.
                self.metrics.handshake_timeouts.fetch_add(1, Relaxed);
                debug!(%peer, "handshake timeout: closing");
                return;
            }
            None => {
                // A request is in the application's hands (or the
                // connection idles between requests): no more requests;
                // closed now if idle, else after the answer.
                conn.as_mut().graceful_shutdown();
                slot.release();
                tokio::select! {
                    r = conn.as_mut() => r,
                    () = self.stop.cancelled() => {
                        let grace = self.options.handshake_timeout;
                        match tokio::time::timeout(grace, conn.as_mut()).await {
                            Ok(r) => r,
                            Err(_) => return,
                        }
                    }
                }
            }
        };
        if let Err(e) = result {
            self.connection_error(peer, &*e);
        }
    }

    fn connection_error(&self, peer: SocketAddr, e: &(dyn std::error::Error + 'static)) {
        let Some(h) = e.downcast_ref::<hyper::Error>() else {
            debug!(%peer, error = %e, "connection ended with an error");
            return;
        };
        if h.is_timeout() {
            self.metrics.handshake_timeouts.fetch_add(1, Relaxed);
            debug!(%peer, "request head timeout: closed");
        } else if h.is_parse() || h.is_parse_too_large() || h.is_parse_version_h2() {
            self.metrics.malformed_requests.fetch_add(1, Relaxed);
            static LOG: LazyLock<LogBudget> = LazyLock::new(|| LogBudget::new(10));
            if let Some(suppressed) = LOG.admit() {
                warn!(%peer, error = %h, suppressed, "malformed HTTP request");
            }
        } else {
            debug!(%peer, error = %h, "connection ended with an error");
        }
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    Total,
    PerIp,
}

/// A source address as the per-address cap counts it: an IPv4 address,
/// or the /64 of an IPv6 one (a host usually has a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpKey {
    V4(u32),
    V6(u64),
}

impl IpKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(v4.into()),
                None => IpKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Pending connections, in all and per address.
#[derive(Default)]
struct Pending(Mutex<PendingCounts>);

#[derive(Default)]
struct PendingCounts {
    total: usize,
    per_ip: HashMap<IpKey, usize>,
}

impl Pending {
    fn take(&self, key: IpKey, max_total: usize, max_per_ip: usize) -> Result<(), Cap> {
        let mut p = self.0.lock();
        if p.total >= max_total {
            return Err(Cap::Total);
        }
        let n = p.per_ip.entry(key).or_insert(0);
        if *n >= max_per_ip {
            return Err(Cap::PerIp);
        }
        *n += 1;
        p.total += 1;
        Ok(())
    }

    fn give_back(&self, key: IpKey) {
        let mut p = self.0.lock();
        p.total = p.total.saturating_sub(1);
        if let std::collections::hash_map::Entry::Occupied(mut e) = p.per_ip.entry(key) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// A pending slot, given back when the connection upgrades, ends or
/// passes its deadline.
struct Slot {
    shared: Arc<Shared>,
    key: IpKey,
    held: bool,
}

impl Slot {
    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            self.shared.pending.give_back(self.key);
            self.shared.metrics.pending_handshakes.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_address_and_in_all() {
        let p = Pending::default();
        let a = IpKey::of("10.0.0.1".parse().unwrap());
        let b = IpKey::of("10.0.0.2".parse().unwrap());
        assert_eq!(p.take(a, 3, 2), Ok(()));
        assert_eq!(p.take(a, 3, 2), Ok(()));
        assert_eq!(p.take(a, 3, 2), Err(Cap::PerIp));
        assert_eq!(p.take(b, 3, 2), Ok(()));
        assert_eq!(p.take(b, 3, 2), Err(Cap::Total));
        p.give_back(a);
        p.give_back(a);
        assert!(!p.0.lock().per_ip.contains_key(&a), "no empty entries kept");
        assert_eq!(p.take(b, 3, 2), Ok(()));
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        let x = IpKey::of("2001:db8:1:2::1".parse().unwrap());
        let y = IpKey::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let z = IpKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(x, y);
        assert_ne!(x, z);
        let mapped = IpKey::of("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped, IpKey::of("10.0.0.1".parse().unwrap()));
    }
}
