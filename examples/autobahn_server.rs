//! The conformance (Autobahn) test server: the module's own connection
//! loop — reader, send queue, single writer, output buffer — in a mode
//! that echoes every binary frame as it came, with no identity checks
//! (the `kosoku` runner cannot send headers or subprotocols; each
//! connection gets a fresh anonymous user id). Served by `edk_ws::serve`.
//! Not for production: it needs the hidden `fuzzing` feature.
//!
//! ```text
//! cargo run --features fuzzing --example autobahn_server -- 127.0.0.1:9002
//! ```
//!
//! `fuzz/autobahn` runs it against the Autobahn cases.

use std::net::SocketAddr;

use edk_ws::{Options, WsClient};
use warp::Filter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into())
        .parse()?;
    // Autobahn's largest messages are 16 MiB; they are echoed whole.
    let options = Options::default()
        .with_max_message_size(16 << 20)
        .with_send_queue_max_bytes(64 << 20)
        .with_send_queue_hard_max_bytes(64 << 20);
    let ws = WsClient::conformance_echo(options);
    let routes = warp::any().and(ws.handler());
    let listener = edk_ws::bind(addr)?;
    eprintln!("autobahn echo server on ws://{}/", listener.local_addr()?);
    edk_ws::serve(routes, listener, &ws).run().await;
    Ok(())
}
