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
//!   connected user, sender included; `direct` goes to the user named in its
//!   `to` metadata (on whichever node that user is). Other types are logged
//!   at debug.
//! - `--redis URL` (or `EDK_WS_REDIS_URL`): several server processes sharing
//!   one Redis behave as one server (see the README's "Scaling out").
//! - `--admin`: `POST /admin/kick/USER`, `POST /admin/close_room/ROOM` and
//!   `GET /admin/members/ROOM` (server-side calls, for tests and operators;
//!   off by default, bind to loopback when on).
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
    /// Redis shared by the instances of one cluster (unset: this process
    /// alone). Overrides EDK_WS_REDIS_URL.
    #[arg(long)]
    redis: Option<String>,
    /// Serve the /admin routes (server-side kick, close_room, members).
    #[arg(long)]
    admin: bool,
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

    let mut options = match Options::from_env() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(url) = args.redis.clone() {
        options.redis_url = Some(url);
    }
    let (secret, dev_mode) = match std::env::var("EDK_WS_JWT_SECRET") {
        Ok(s) if !s.is_empty() => (s.into_bytes(), false),
        _ => {
            let bytes: [u8; 32] = rand::rng().random();
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            (hex.into_bytes(), true)
        }
    };
    let jwt = JwtAuthenticator::new(&secret);
    let clustered = options.redis_url.is_some();
    let client = match WsClient::connect(options, jwt.clone()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if clustered {
        info!(node = client.node_id(), "clustered over Redis");
    }

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
                "direct" => {
                    let to = msg.metadata.get("to").cloned().unwrap_or_default();
                    if let Err(e) = c.send(&to, msg) {
                        debug!(error = %e, to, "direct message not delivered");
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
        .or(health)
        .or(admin_routes(client.clone(), args.admin));

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
    let server = tokio::spawn(
        warp::serve(routes)
            .incoming(listener)
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

/// Server-side calls over HTTP, for tests and operators (`--admin` only).
fn admin_routes(
    client: WsClient,
    enabled: bool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    use warp::http::StatusCode;
    use warp::Reply;
    let on = warp::any().and_then(move || async move {
        if enabled {
            Ok(())
        } else {
            Err(warp::reject::not_found())
        }
    });
    let with = move || {
        let c = client.clone();
        warp::any().map(move || c.clone())
    };
    let kick = warp::post()
        .and(warp::path!("admin" / "kick" / String))
        .and(with())
        .map(
            |user: String, c: WsClient| match c.kick(&user, "kicked by admin") {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => {
                    warp::reply::with_status(e.to_string(), StatusCode::NOT_FOUND).into_response()
                }
            },
        );
    let close = warp::post()
        .and(warp::path!("admin" / "close_room" / String))
        .and(with())
        .then(|room: String, c: WsClient| async move {
            match c.close_room(&room, "closed by admin").await {
                Ok(n) => n.to_string().into_response(),
                Err(e) => {
                    warp::reply::with_status(e.to_string(), StatusCode::NOT_FOUND).into_response()
                }
            }
        });
    let members = warp::get()
        .and(warp::path!("admin" / "members" / String))
        .and(with())
        .map(|room: String, c: WsClient| match c.members(&room) {
            Some(m) => {
                let mut users: Vec<String> = m.members.into_iter().map(|m| m.user_id).collect();
                users.sort();
                users.join("\n").into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        });
    on.and(kick.or(close).unify().or(members).unify())
        .map(|(), r| r)
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
