//! The example server (`examples/server.rs`), run as its own process:
//! real traffic over real sockets, then `GET /metrics` checked against what
//! the test did, and `GET /asyncapi.json` and `GET /docs`.

#[path = "../examples/app/chat.rs"]
mod chat;
mod common;
mod rooms_util;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edk_ws::JwtAuthenticator;
use futures::SinkExt;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use common::*;
use rooms_util::*;

const SECRET: &str = "example-server-test-secret";

/// The example's binary, built by `cargo test` with the other targets
/// (built here when a single test target was asked for).
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().unwrap().parent().unwrap();
    let bin = debug.join("examples").join("server");
    if !bin.exists() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let ok = Command::new(cargo)
            .args(["build", "--example", "server"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "could not build the example server");
    }
    bin
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let mut child = Command::new(server_binary())
        .args(["--addr", "127.0.0.1:0", "--shutdown-deadline", "2s"])
        .env("EDK_WS_JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the example server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        // Bounded: the server prints this line right after binding.
        let line = lines.next().expect("server exited").expect("read stdout");
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.parse().unwrap();
        }
    };
    Server { child, addr }
}

async fn connect(addr: SocketAddr, user: &str, token: &str) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("x-user-id", HeaderValue::from_str(user).unwrap());
    h.insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("edk.ws.v1, {token}")).unwrap(),
    );
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => Err(r.status().as_u16()),
        other => panic!("handshake failed: {other:?}"),
    }
}

/// `GET path` over a plain socket: (status, content-type, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, ctype, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// The samples of a text exposition: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, ctype, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(body.ends_with("# EOF\n"));
    samples(&body)
}

fn v(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("no sample {key}"))
}

#[tokio::test]
async fn metrics_after_real_traffic_match_what_the_clients_did() {
    let srv = start();
    let jwt = JwtAuthenticator::new(SECRET.as_bytes());
    let token = |u: &str| jwt.issue(u, Duration::from_secs(600)).unwrap();
    let ns = "{namespace=\"ws\"}";
    let before = scrape(srv.addr).await;
    assert_eq!(v(&before, &format!("edk_ws_connections{ns}")), 0.0);

    // Two users; one refused handshake (bad token).
    let mut alice = Peer::new(
        "alice",
        connect(srv.addr, "alice", &token("alice")).await.unwrap(),
    );
    let mut bob = Peer::new(
        "bob",
        connect(srv.addr, "bob", &token("bob")).await.unwrap(),
    );
    assert_eq!(
        connect(srv.addr, "mallory", "garbage").await.err(),
        Some(401)
    );

    // alice: 3 echoes (frames she sends are counted in, their echoes out).
    let mut sent_bytes = 0;
    for i in 0..3 {
        let m = msg(&format!("e{i}"), "echo", &vec![b'x'; 100 * (i + 1)]);
        sent_bytes += m.encoded_len();
        alice.send(&m).await;
        let r = alice.wait_for("echo", |r| r.id == format!("e{i}")).await;
        assert_eq!(r.payload.len(), 100 * (i + 1));
    }
    // bob joins a room (1 request) and uses the typed route (1 message).
    let id = bob.next_id();
    let j = join_req(&id, "lobby", &[]);
    sent_bytes += j.encoded_len();
    assert_ack(&bob.request(j).await);
    let send = msg(
        "c1",
        "chat.send",
        &chat::SendRequest { text: "hi".into() }.encode_to_vec(),
    );
    sent_bytes += send.encoded_len();
    bob.send(&send).await;
    let reply = bob.wait_for("the chat reply", |r| r.id == "c1").await;
    assert_eq!(chat::SendReply::decode(reply.payload).unwrap().seq, 1);
    // Both get the chat line.
    alice
        .wait_for("chat.line", |r| r.r#type == "chat.line")
        .await;
    bob.wait_for("chat.line", |r| r.r#type == "chat.line").await;

    // A third user sends a text frame: closed 1003 (protocol error).
    let mut carol = connect(srv.addr, "carol", &token("carol")).await.unwrap();
    carol.send(WsMessage::Text("hi".into())).await.unwrap();
    assert_eq!(expect_close(&mut carol).await.0, 1003);

    // Wait for carol's end to be counted (the metric is the event).
    let deadline = tokio::time::Instant::now() + WAIT;
    let m = loop {
        let m = scrape(srv.addr).await;
        let key = "edk_ws_disconnects_total{namespace=\"ws\",reason=\"protocol_error\"}";
        if m.get(key) == Some(&1.0) {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "carol's disconnect never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(v(&m, &format!("edk_ws_connections{ns}")), 2.0);
    assert_eq!(v(&m, &format!("edk_ws_handshakes_accepted_total{ns}")), 3.0);
    assert_eq!(
        v(
            &m,
            "edk_ws_handshakes_refused_total{namespace=\"ws\",status=\"401\"}"
        ),
        1.0
    );
    assert_eq!(
        v(
            &m,
            "edk_ws_handshakes_refused_total{namespace=\"ws\",status=\"409\"}"
        ),
        0.0
    );
    assert_eq!(
        v(
            &m,
            "edk_ws_handshake_duration_seconds_count{namespace=\"ws\"}"
        ),
        3.0
    );
    // In: 3 echoes + join + chat.send (the text frame is not a message).
    assert_eq!(v(&m, &format!("edk_ws_messages_received_total{ns}")), 5.0);
    assert_eq!(
        v(&m, &format!("edk_ws_received_bytes_total{ns}")),
        sent_bytes as f64
    );
    // Out: 3 echoes + the Ack + the chat reply + 2 chat lines.
    assert_eq!(v(&m, &format!("edk_ws_messages_sent_total{ns}")), 7.0);
    assert!(v(&m, &format!("edk_ws_sent_bytes_total{ns}")) > 600.0);
    assert_eq!(v(&m, &format!("edk_ws_rooms{ns}")), 1.0);
    assert_eq!(v(&m, &format!("edk_ws_room_members{ns}")), 1.0);
    assert_eq!(v(&m, &format!("edk_ws_activities{ns}")), 0.0);
    assert_eq!(v(&m, &format!("edk_ws_queued_messages{ns}")), 0.0);
    assert_eq!(v(&m, &format!("edk_ws_handler_panics_total{ns}")), 0.0);
    // Hardening counters are exported too (none triggered here).
    assert_eq!(
        v(
            &m,
            "edk_ws_inbound_over_budget_total{namespace=\"ws\",outcome=\"dropped\"}"
        ),
        0.0
    );
    assert_eq!(
        v(&m, &format!("edk_ws_messages_over_entry_limits_total{ns}")),
        0.0
    );
    assert_eq!(
        v(&m, &format!("edk_ws_slow_consumer_closes_total{ns}")),
        0.0
    );
    assert_eq!(
        v(
            &m,
            "edk_ws_send_failures_total{namespace=\"ws\",kind=\"queue_full\"}"
        ),
        0.0
    );
    // Every handled message is in one kind; the count is sampled (1 in 16
    // per thread), so at most the messages handled, at least one.
    let timed: f64 = ["request", "route", "handlers"]
        .iter()
        .map(|k| v(&m, &format!("edk_ws_message_handling_duration_seconds_count{{namespace=\"ws\",kind=\"{k}\"}}")))
        .sum();
    assert!((1.0..=5.0).contains(&timed), "{timed}");
    let batches = v(&m, "edk_ws_send_batch_messages_count{namespace=\"ws\"}");
    assert!((1.0..=7.0).contains(&batches), "{batches}");

    // The document and its page.
    let (status, ctype, body) = get(srv.addr, "/asyncapi.json").await;
    assert_eq!((status, ctype.as_str()), (200, "application/json"));
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["channels"]["ws"]["address"], "/ws");
    assert!(doc["operations"]["route.chat.send"].is_object());
    let (status, ctype, page) = get(srv.addr, "/docs").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    for must in [
        "<h2 id=\"requests\">",
        "chat.send",
        "Slow consumer",
        "4003",
        "ROOM_FULL",
        "<code>max_message_size</code>",
    ] {
        assert!(page.contains(must), "/docs lacks {must}");
    }
    alice.close().await;
    bob.close().await;
}
