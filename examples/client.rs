//! A minimal client: connects with a token, sends an `echo`, prints the reply.
//!
//! ```text
//! cargo run --example client -- --url ws://127.0.0.1:8080/ws --user demo --token <JWT>
//! # or mint the token from the server's secret:
//! EDK_WS_JWT_SECRET=s3cret cargo run --example client -- --user demo
//! # or only print a token (e.g. for a browser or the TypeScript client):
//! EDK_WS_JWT_SECRET=s3cret cargo run --example client -- --mint --user alice --ttl 1h
//! ```

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use edk_ws::{JwtAuthenticator, Message};
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Parser, Debug)]
#[command(about = "edk-ws example client")]
struct Args {
    /// Server URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// User id (sent as x-user-id).
    #[arg(long, default_value = "demo")]
    user: String,
    /// JWT; when absent, one is minted from EDK_WS_JWT_SECRET.
    #[arg(long)]
    token: Option<String>,
    /// Text to echo.
    #[arg(long, default_value = "hello")]
    text: String,
    /// Only print a token for `--user`, minted from EDK_WS_JWT_SECRET, and exit.
    #[arg(long)]
    mint: bool,
    /// Lifetime of a minted token.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mint(user: &str, ttl: Duration) -> Result<String, Box<dyn std::error::Error>> {
    let secret = std::env::var("EDK_WS_JWT_SECRET")
        .map_err(|_| "set EDK_WS_JWT_SECRET (the server's secret) to mint a token")?;
    Ok(JwtAuthenticator::new(secret.as_bytes()).issue(user, ttl)?)
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.mint {
        println!("{}", mint(&args.user, args.ttl)?);
        return Ok(());
    }
    let token = match args.token {
        Some(t) => t,
        None => mint(&args.user, args.ttl)?,
    };
    let mut req = args.url.as_str().into_client_request()?;
    req.headers_mut()
        .insert("x-user-id", HeaderValue::from_str(&args.user)?);
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("edk.ws.v1, {token}"))?,
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await?;
    println!("connected: HTTP {}", resp.status());

    let msg = Message {
        id: "1".into(),
        r#type: "echo".into(),
        payload: Bytes::from(args.text.into_bytes()),
        ..Default::default()
    };
    ws.send(WsMessage::Binary(Bytes::from(msg.encode_to_vec())))
        .await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = ws.next().await {
            match frame? {
                WsMessage::Binary(b) => return Ok(Message::decode(b)?),
                WsMessage::Close(f) => return Err(format!("closed by server: {f:?}").into()),
                _ => continue,
            }
        }
        Err::<Message, Box<dyn std::error::Error>>("connection ended".into())
    })
    .await
    .map_err(|_| "no reply within 10 s")??;
    println!(
        "reply: id={} type={} sender={} timestamp_ms={} payload={:?}",
        reply.id,
        reply.r#type,
        reply.sender,
        reply.timestamp_ms,
        String::from_utf8_lossy(&reply.payload)
    );
    ws.close(None).await?;
    Ok(())
}
