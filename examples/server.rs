//! The example server: edk-ws mounted at `/ws` in a warp service, with
//! `GET /healthz`, `GET /metrics` (Prometheus text), `GET /asyncapi.json`
//! (the endpoint's AsyncAPI document), `GET /docs` (the same, as a page)
//! and the browser demo page at `/` (see `web/mod.rs`).
//!
//! ```text
//! cargo run --release --example server -- --addr 127.0.0.1:8080
//! ```
//!
//! - `EDK_WS_JWT_SECRET`: HS256 secret for tokens. Unset → development mode:
//!   a random secret, a ready token printed for the user `demo`, browsers
//!   identified by their token (`user_id_from_token`), and the
//!   `GET /dev/token?user=NAME` and `POST /dev/kick?user=NAME` routes.
//! - Every other `EDK_WS_*` variable is read by `Options::from_env()`
//!   (e.g. `EDK_WS_KICK_OUT_NEW_USER_CONN=true`).
//! - Messages: `echo` comes back to its sender; `broadcast` goes to every
//!   connected user, sender included; `direct` goes to the user named in its
//!   `to` metadata (on whichever node that user is). Other types are logged
//!   at debug.
//! - `--redis URL` (or `EDK_WS_REDIS_URL`): several server processes sharing
//!   one Redis behave as one server (see the README's "Scaling out").
//! - `--admin`: `POST /admin/kick/USER`, `POST /admin/send/USER` (a
//!   `send_checked`: answers `Local`, `Forwarded` or 404 not connected),
//!   `POST /admin/close_room/ROOM` and `GET /admin/members/ROOM`
//!   (server-side calls, for tests and operators; off by default, bind to
//!   loopback when on).
//! - A typed route with the application's own `.proto`
//!   (`proto/examples/chat.proto`): `chat.send` (`SendRequest` → `SendReply`;
//!   every connected user gets a `chat.line` message with a `Line`), and
//!   `chat.typing` (fire-and-forget).
//! - `--print-asyncapi`: print the AsyncAPI document and exit (CI validates it).
//! - Rooms and presence with the default policies: anyone may join any
//!   room, publish to it and change its state; activities are on unless
//!   `SERVER_ONLINE_ACTIVITIES_DISABLED=true`.
//! - SIGINT/SIGTERM: clients get close 1001, then the process exits.

#[path = "app/chat.rs"]
mod chat;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use edk_ws::prometheus_client::registry::Registry;
use edk_ws::proto::error::Code;
use edk_ws::{JwtAuthenticator, Message, Options, RouteError, WsClient};
use prost::Message as _;
use rand::Rng;
use tracing::{debug, info, warn};
use warp::Filter;

#[path = "web/mod.rs"]
mod web;

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
    /// Print the endpoint's AsyncAPI document (JSON) and exit.
    #[arg(long)]
    print_asyncapi: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    let options = if dev_mode {
        web::dev_options(options)
    } else {
        options
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
    // Every branch only queues (sends never wait), so the handler does its
    // work when it is called and returns a finished future: nothing is
    // moved into an `async` block, and the client is borrowed, not cloned
    // per message. A handler that awaits would clone what it needs and
    // return `async move { .. }` instead.
    client.subscribe_message_handler(move |conn, msg| {
        match msg.r#type.as_str() {
            // Same id, type, payload and metadata; the sender was stamped on
            // arrival and the timestamp is stamped on the way out.
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
        std::future::ready(())
    });

    add_chat(&client);
    if args.print_asyncapi {
        println!("{}", client.asyncapi());
        return ExitCode::SUCCESS;
    }

    client.subscribe_activity_handler(|a| {
        debug!(user = %a.user_id, status = a.status, detail = %a.detail, "activity changed");
    });

    let health = warp::path("healthz").and(warp::path::end()).map(|| "ok");
    let mut registry = Registry::default();
    client.register_metrics(&mut registry);
    let registry = Arc::new(registry);
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || {
            let mut text = String::new();
            match edk_ws::prometheus_client::encoding::text::encode(&mut text, &registry) {
                Ok(()) => warp::http::Response::builder()
                    .header(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .body(text),
                Err(_) => warp::http::Response::builder()
                    .status(500)
                    .body("metrics encoding failed".to_owned()),
            }
        });
    let c = client.clone();
    let asyncapi = warp::path("asyncapi.json")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || {
            warp::http::Response::builder()
                .header("content-type", "application/json")
                .body(c.asyncapi())
        });
    let c = client.clone();
    let docs = warp::path("docs")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || warp::reply::html(c.asyncapi_html()));
    let routes = warp::path("ws")
        .and(warp::path::end())
        .and(client.handler())
        .or(health)
        .or(metrics)
        .or(asyncapi)
        .or(docs)
        .or(admin_routes(client.clone(), args.admin))
        .or(web::routes(dev_mode.then(|| (jwt.clone(), client.clone()))));

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
    info!(%addr, "listening: ws://{addr}/ws, http://{addr}/docs, http://{addr}/metrics");
    web::announce(&addr, dev_mode);
    // For scripts and tests that bind port 0.
    println!("listening on {addr}");
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
                Ok(_) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => {
                    warp::reply::with_status(e.to_string(), StatusCode::NOT_FOUND).into_response()
                }
            },
        );
    let send = warp::post()
        .and(warp::path!("admin" / "send" / String))
        .and(with())
        .then(|user: String, c: WsClient| async move {
            let msg = Message {
                r#type: "admin".into(),
                ..Default::default()
            };
            match c.send_checked(&user, msg).await {
                Ok(d) => format!("{d:?}").into_response(),
                Err(e) => {
                    warp::reply::with_status(e.to_string(), StatusCode::NOT_FOUND).into_response()
                }
            }
        });
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
    on.and(kick.or(send).unify().or(close).unify().or(members).unify())
        .map(|(), r| r)
}

/// The typed routes of the example chat: `chat.send` (a reply with the
/// line's number; every connected user gets the line as `chat.line`) and
/// `chat.typing` (fire-and-forget, logged).
fn add_chat(client: &WsClient) {
    let seq = Arc::new(AtomicU64::new(0));
    let c = client.clone();
    client.route("chat.send", move |conn, req: chat::SendRequest| {
        let (c, seq) = (c.clone(), seq.clone());
        async move {
            let n = req.text.chars().count();
            if n == 0 || n > 500 {
                return Err(RouteError::new(
                    Code::InvalidRequest,
                    "text must be 1 to 500 characters",
                ));
            }
            let seq = seq.fetch_add(1, Ordering::Relaxed) + 1;
            let line = chat::Line {
                seq,
                from: conn.user_id().to_owned(),
                text: req.text,
            };
            let report = c.broadcast(Message {
                r#type: "chat.line".into(),
                payload: line.encode_to_vec().into(),
                sender: conn.user_id().to_owned(),
                ..Default::default()
            });
            if !report.is_complete() {
                warn!(
                    failed = report.failed.len(),
                    "chat line not delivered to everyone"
                );
            }
            Ok(chat::SendReply { seq })
        }
    });
    client.route_no_reply("chat.typing", |conn, t: chat::Typing| async move {
        debug!(user = conn.user_id(), active = t.active, "typing");
        Ok(())
    });
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
