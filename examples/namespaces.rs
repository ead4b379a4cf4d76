//! Two namespaces on one warp server: `/layout` and `/lobby` are two
//! `WsClient`s — separate users, rooms, activities and handlers (like
//! 2-IMMERSE's websocket-service namespaces).
//!
//! ```text
//! EDK_WS_JWT_SECRET=s3cret cargo run --example namespaces -- --addr 127.0.0.1:8081
//! ```
//! A user connected to `/lobby` is invisible to `/layout`: a room joined in
//! one does not exist in the other, and activities set in one are not seen
//! by the users of the other.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use edk_ws::{JwtAuthenticator, Options, WsClient};
use warp::Filter;

#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let secret = std::env::var("EDK_WS_JWT_SECRET").unwrap_or_else(|_| "dev-secret".into());
    let jwt = JwtAuthenticator::new(secret.as_bytes());

    // Each named, so that their log lines say which one (`ns=lobby`).
    let layout = WsClient::new(Options::from_env()?.with_name("layout".into()), jwt.clone());
    // The lobby announces who is around: member events on, activities on.
    let lobby = WsClient::new(Options::from_env()?.with_name("lobby".into()), jwt.clone());

    let routes = warp::path("layout")
        .and(warp::path::end())
        .and(layout.handler())
        .or(warp::path("lobby")
            .and(warp::path::end())
            .and(lobby.handler()));

    let listener = edk_ws::bind(args.addr)?;
    let addr = listener.local_addr()?;
    println!("namespaces: ws://{addr}/layout and ws://{addr}/lobby");
    println!(
        "token for user 'demo': {}",
        jwt.issue("demo", Duration::from_secs(3600))?
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        // Served with the limits and counters of `layout` (see `edk_ws::serve`).
        edk_ws::serve(routes, listener, &layout)
            .graceful(async {
                let _ = rx.await;
            })
            .run(),
    );
    tokio::signal::ctrl_c().await?;
    let deadline = Duration::from_secs(5);
    tokio::join!(layout.shutdown(deadline), lobby.shutdown(deadline));
    let _ = tx.send(());
    let _ = server.await;
    Ok(())
}
