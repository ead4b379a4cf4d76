//! A TCP listener for warp with `TCP_NODELAY` on every accepted socket.
//!
//! warp never sets `TCP_NODELAY`, and after the upgrade the socket is hidden
//! behind hyper's upgrade type, so the library cannot set it per connection.
//! On Linux (and the BSDs) the option set on a listening socket is inherited
//! by the sockets it accepts: bind through [`bind`] and pass the listener to
//! `warp::serve(routes).incoming(listener)`.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Binds `addr` with `SO_REUSEADDR` and `TCP_NODELAY` (inherited by accepted
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
