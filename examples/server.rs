//! The example server: edk-ws mounted at `/ws` in a warp service, with
//! `GET /healthz`.
//!
//! ```text
//! cargo run --release --example server -- --addr 127.0.0.1:8080
//! ```
//!
//! - `EDK_WS_JWT_SECRET`: HS256 secret for tokens. Unset → development mode:
//!   a random secret, and a ready token printed for the user `demo`.
//! - Every other `EDK_WS_*` variable is read by `Options::from_env()`
//!   (e.g. `EDK_WS_KICK_OUT_NEW_USER_CONN=true`).
//! - Messages: `echo` comes back to its sender; `broadcast` goes to every
//!   connected user, sender included. Other types are logged at debug.
//! - Rooms and presence with the default policies: anyone may join any
//!   room, publish to it and change its state; activities are on unless
//!   `SERVER_ONLINE_ACTIVITIES_DISABLED=true`.
//! - SIGINT/SIGTERM: clients get close 1001, then the process exits.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use edk_ws::{JwtAuthenticator, Options, WsClient};
use rand::Rng;
use tracing::{debug, info, warn};
use warp::Filter;

#[derive(Parser, Debug)]
#[command(about = "edk-ws example server")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// How long shutdown waits for connections to close.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_deadline: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let options = match Options::from_env() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (secret, dev_mode) = match std::env::var("EDK_WS_JWT_SECRET") {
        Ok(s) if !s.is_empty() => (s.into_bytes(), false),
        _ => {
            let bytes: [u8; 32] = rand::rng().random();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            (hex.into_bytes(), true)
        }
    };
    let jwt = JwtAuthenticator::new(&secret);
    let client = WsClient::new(options, jwt.clone());

    let c = client.clone();
    client.subscribe_message_handler(move |conn, msg| {
        let c = c.clone();
        async move {
            match msg.r#type.as_str() {
                // Same id, type, payload and metadata; the sender was stamped
                // on arrival and the timestamp is stamped on the way out.
                "echo" => {
                    if let Err(e) = conn.send(msg) {
                        debug!(error = %e, "echo not delivered");
                    }
                }
                "broadcast" => {
                    let report = c.broadcast(msg);
                    if !report.is_complete() {
                        warn!(failed = report.failed.len(), "broadcast partly failed");
                    }
                }
                other => debug!(r#type = other, user = conn.user_id(), "ignored message"),
            }
        }
    });

    client.subscribe_activity_handler(|a| {
        debug!(user = %a.user_id, status = a.status, detail = %a.detail, "activity changed");
    });

    let health = warp::path("healthz").and(warp::path::end()).map(|| "ok");
    let routes = warp::path("ws")
        .and(warp::path::end())
        .and(client.handler())
        .or(health);

    let listener = match edk_ws::bind(args.addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.addr);
            return ExitCode::from(1);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(%addr, "listening: ws://{addr}/ws, http://{addr}/healthz");
    if dev_mode {
        warn!("EDK_WS_JWT_SECRET is not set: DEVELOPMENT MODE with a random secret");
        match jwt.issue("demo", Duration::from_secs(24 * 3600)) {
            Ok(token) => {
                println!("development token for user 'demo' (valid 24h):\n{token}");
                println!(
                    "try: cargo run --example client -- --url ws://{addr}/ws --user demo --token {token}"
                );
            }
            Err(e) => warn!(error = %e, "could not issue a development token"),
        }
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The crate's serving path: handshake deadline, pending-connection caps,
    // bounded request heads, quiet logs (see the README's "Serving").
    let server = tokio::spawn(
        edk_ws::serve(routes, listener, &client)
            .graceful(async {
                let _ = stop_rx.await;
            })
            .run(),
    );

    shutdown_signal().await;
    info!("signal received: closing connections");
    let report = client.shutdown(args.shutdown_deadline).await;
    info!(
        closed = report.closed,
        unfinished = report.unfinished,
        "connections closed"
    );
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
