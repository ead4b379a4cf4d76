//! A TCP listener for warp: `SO_REUSEADDR`, a deep backlog and
//! `TCP_NODELAY` on every accepted socket.
//!
//! WebSocket connections get `TCP_NODELAY` from the library whatever
//! listener the server uses (see `transport.rs`). Binding through [`bind`]
//! also gives it to the plain HTTP routes served beside them: on Linux (and
//! the BSDs) the option set on a listening socket is inherited by the
//! sockets it accepts. Pass the listener to [`serve`](crate::serve) (or
//! `warp::serve(routes).incoming(listener)`).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Binds `addr` with `SO_REUSEADDR`, `TCP_NODELAY` (inherited by accepted
/// sockets) and a 4096-entry backlog. Must be called inside a tokio runtime.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let listener = edk_ws::bind("127.0.0.1:0".parse().unwrap())?;
/// println!("listening on {}", listener.local_addr()?);
/// # Ok(()) }
/// ```
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay() {
        let l = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        assert!(server.nodelay().unwrap());
        drop(client);
    }
}
