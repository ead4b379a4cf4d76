//! The benchmark floor: a bare tokio-tungstenite server with no framework —
//! no auth, no protobuf decoding, no registry — on the same runtime flavour
//! and buffer settings as edk-ws (4 KiB read buffer, 16 KiB write buffer,
//! TCP_NODELAY, one coalescing writer task per connection).
//!
//! - `/echo`: every binary message is sent back as is.
//! - `/room`: every binary message is sent to every other `/room` client
//!   (a plain loop over per-connection queues).
//!
//! It echoes the first offered subprotocol so that the load tool's handshake
//! (which offers `edk.ws.v1, <token>`) is the same byte for byte.
//!
//! ```text
//! cargo run --release --example bare_server -- --addr 127.0.0.1:9001
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use parking_lot::RwLock;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    addr: SocketAddr,
}

type Room = Arc<RwLock<HashMap<u64, mpsc::Sender<Bytes>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(args.addr)?;
    let listener = socket.listen(4096)?;
    eprintln!(
        "bare tokio-tungstenite server on {}",
        listener.local_addr()?
    );
    let room: Room = Arc::default();
    let ids = Arc::new(AtomicU64::new(1));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let room = room.clone();
        let id = ids.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(stream, room, id));
    }
}

// The callback type is tungstenite's (its error response is large).
#[allow(clippy::result_large_err)]
async fn serve(stream: TcpStream, room: Room, id: u64) {
    let config = WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(16 << 10)
        .max_message_size(Some(1 << 20));
    let mut path = String::new();
    let callback = |req: &Request, mut resp: Response| {
        path = req.uri().path().to_owned();
        if let Some(first) = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|p| HeaderValue::from_str(p.trim()).ok())
        {
            resp.headers_mut().insert("sec-websocket-protocol", first);
        }
        Ok(resp)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let broadcast = path == "/room";
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::Binary(first)).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::Binary(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    if broadcast {
        room.write().insert(id, tx.clone());
    }
    while let Some(Ok(msg)) = source.next().await {
        let Message::Binary(b) = msg else { continue };
        if broadcast {
            for (other, q) in room.read().iter() {
                if *other != id {
                    let _ = q.try_send(b.clone());
                }
            }
        } else if tx.send(b).await.is_err() {
            break;
        }
    }
    room.write().remove(&id);
    drop(tx);
    let _ = writer.await;
}
