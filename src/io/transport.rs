//! The byte stream under a connection, recovered from hyper's upgrade.
//!
//! warp serves each TCP connection with hyper-util's `auto` builder, which
//! hides the socket behind a private wrapper; hyper-util's
//! [`downcast`](hyper_util::server::conn::auto::upgrade::downcast) gets it
//! back. With the [`TcpStream`] in hand the library turns `TCP_NODELAY` on
//! however the user bound the listener (warp never does, and Nagle's
//! algorithm with the client's delayed ACKs stalls small frames by up to
//! 40 ms), and reads and writes the socket without hyper's boxed,
//! dynamically dispatched upgrade type in between.
//!
//! A Unix socket (warp's `incoming(UnixListener)`) is taken back the same
//! way; it has no Nagle delay. A server that hands over something else (a
//! custom acceptor, TLS) still works through the upgraded IO; that, and a
//! TCP socket on which the option could not be set, is counted in
//! [`MetricsSnapshot::tcp_nodelay_unavailable`](crate::MetricsSnapshot)
//! and logged once.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp;
#[cfg(unix)]
use tokio::net::unix;
use tokio::net::TcpStream;
use tracing::{debug, warn};

/// The connection's stream: the TCP socket itself, or hyper's upgraded IO.
pub(crate) enum Transport {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    Upgraded(TokioIo<Upgraded>),
}

/// What the upgrade left: the stream, bytes the client sent after its
/// handshake that hyper already read, and whether small frames may be held
/// back by Nagle's algorithm (a TCP socket without `TCP_NODELAY`, or a
/// stream of unknown kind).
pub(crate) struct Recovered {
    pub stream: Transport,
    /// A copy: hyper's `Bytes` would keep its whole read buffer (several
    /// KiB) alive for as long as the connection lives.
    pub read_ahead: Vec<u8>,
    pub nagle_possible: bool,
}

static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// Takes the socket out of hyper's upgrade (see the module docs).
pub(crate) fn recover(upgraded: Upgraded) -> Recovered {
    use hyper_util::server::conn::auto::upgrade::downcast;
    // warp's own server (`run`, `incoming`, `graceful`): the auto builder.
    let upgraded = match downcast::<TokioIo<TcpStream>>(upgraded) {
        Ok(parts) => return tcp(parts.io.into_inner(), parts.read_buf),
        Err(upgraded) => upgraded,
    };
    // A hand-rolled hyper http1 server over a tokio TcpStream.
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => return tcp(parts.io.into_inner(), parts.read_buf),
        Err(upgraded) => upgraded,
    };
    #[cfg(unix)]
    let upgraded = match downcast::<TokioIo<tokio::net::UnixStream>>(upgraded) {
        Ok(parts) => {
            return Recovered {
                stream: Transport::Unix(parts.io.into_inner()),
                read_ahead: parts.read_buf.to_vec(),
                nagle_possible: false,
            }
        }
        Err(upgraded) => upgraded,
    };
    if !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
        warn!("the server's connections are neither tokio TcpStreams nor UnixStreams: TCP_NODELAY cannot be set (small frames may be delayed)");
    }
    Recovered {
        stream: Transport::Upgraded(TokioIo::new(upgraded)),
        read_ahead: Vec::new(),
        nagle_possible: true,
    }
}

fn tcp(stream: TcpStream, read_ahead: Bytes) -> Recovered {
    // Read back, so what is reported is the socket's real state.
    let nodelay = stream.set_nodelay(true).and_then(|()| stream.nodelay());
    if let Err(e) = &nodelay {
        debug!(error = %e, "could not set TCP_NODELAY");
    }
    Recovered {
        stream: Transport::Tcp(stream),
        read_ahead: read_ahead.to_vec(),
        nagle_possible: !matches!(nodelay, Ok(true)),
    }
}

impl Transport {
    /// The reading and the writing half, used by two tasks without a lock
    /// between them (TCP and Unix sockets); hyper's upgraded IO is split
    /// with tokio's generic (locking) `split`.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Transport::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            #[cfg(unix)]
            Transport::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
            Transport::Upgraded(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadHalf::Upgraded(r), WriteHalf::Upgraded(w))
            }
        }
    }
}

/// The reading half of a [`Transport`].
pub(crate) enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    #[cfg(unix)]
    Unix(unix::OwnedReadHalf),
    Upgraded(tokio::io::ReadHalf<TokioIo<Upgraded>>),
}

/// The writing half of a [`Transport`]; dropping it ends the stream for
/// writing (FIN) on TCP and Unix sockets.
pub(crate) enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    #[cfg(unix)]
    Unix(unix::OwnedWriteHalf),
    Upgraded(tokio::io::WriteHalf<TokioIo<Upgraded>>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            ReadHalf::Unix(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::Upgraded(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            WriteHalf::Unix(s) => Pin::new(s).poll_write(cx, buf),
            WriteHalf::Upgraded(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            WriteHalf::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WriteHalf::Upgraded(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            WriteHalf::Unix(s) => s.is_write_vectored(),
            WriteHalf::Upgraded(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            WriteHalf::Unix(s) => Pin::new(s).poll_flush(cx),
            WriteHalf::Upgraded(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            WriteHalf::Unix(s) => Pin::new(s).poll_shutdown(cx),
            WriteHalf::Upgraded(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
