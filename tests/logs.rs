//! Log hygiene (issue 11): a refused handshake is visible at info with its
//! status and reason, rate-limited; peers are printed as addresses; two
//! `WsClient`s are told apart by their `ns` (option `name`).
//!
//! One test in its own binary: it installs a log subscriber for the test's
//! thread (a current-thread runtime, so the servers' tasks log there too)
//! and the refusal budget is process-wide.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use edk_ws::{JwtAuthenticator, Options, WsClient};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use warp::Filter;

const WAIT: Duration = Duration::from_secs(10);

/// Everything logged, and a wake-up on every write.
#[derive(Clone, Default)]
struct Captured {
    text: Arc<Mutex<String>>,
    wrote: Arc<Notify>,
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.lock().push_str(&String::from_utf8_lossy(buf));
        self.wrote.notify_waiters();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let text = self.text.lock();
        text.lines()
            .filter(|l| pred(l))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until a logged line satisfies `pred`; returns it.
    async fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                let woken = self.wrote.notified();
                if let Some(l) = self.lines(&pred).into_iter().next() {
                    return l;
                }
                woken.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no log line {what}; log:\n{}", self.text.lock()))
    }
}

async fn connect(url: &str, user: Option<&str>, token: &str) -> Result<(), u16> {
    let mut req = url.into_client_request().unwrap();
    if let Some(u) = user {
        req.headers_mut()
            .insert("x-user-id", HeaderValue::from_str(u).unwrap());
    }
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("edk.ws.v1, {token}")).unwrap(),
    );
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((ws, _))) => {
            // Keep the connection open for the rest of the test.
            std::mem::forget(ws);
            Ok(())
        }
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => Err(r.status().as_u16()),
        other => panic!("handshake failed without a status: {other:?}"),
    }
}

#[tokio::test]
async fn refusals_peers_and_namespaces_are_readable_in_the_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let jwt = JwtAuthenticator::new(b"log-secret");
    let lobby = WsClient::new(Options::default().with_name("lobby".into()), jwt.clone());
    let layout = WsClient::new(Options::default().with_name("layout".into()), jwt.clone());
    let routes = warp::path("lobby")
        .and(lobby.handler())
        .or(warp::path("layout").and(layout.handler()));
    let listener = edk_ws::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    let url = |ns: &str| format!("ws://{addr}/{ns}");
    let token = |u: &str| jwt.issue(u, Duration::from_secs(600)).unwrap();

    connect(&url("lobby"), Some("alice"), &token("alice"))
        .await
        .unwrap();
    connect(&url("layout"), Some("bob"), &token("bob"))
        .await
        .unwrap();
    let alice = captured
        .wait_line("for alice's connection", |l| {
            l.contains("connected") && l.contains("user=alice")
        })
        .await;
    let bob = captured
        .wait_line("for bob's connection", |l| {
            l.contains("connected") && l.contains("user=bob")
        })
        .await;
    assert!(alice.contains("ns=lobby"), "{alice}");
    assert!(bob.contains("ns=layout"), "{bob}");
    assert!(alice.contains("peer=127.0.0.1:"), "{alice}");

    // A refused handshake: status, reason and detail at info, in a span
    // naming the endpoint and the peer.
    assert_eq!(
        connect(&url("layout"), Some("carol"), "not.a.jwt").await,
        Err(401)
    );
    let refused = captured
        .wait_line("for the refusal", |l| l.contains("handshake refused"))
        .await;
    for part in [
        " INFO ",
        "status=401",
        "reason=\"invalid token\"",
        "detail=",
        "ns=layout",
        "peer=127.0.0.1:",
    ] {
        assert!(refused.contains(part), "{part:?} missing in {refused}");
    }

    // A flood of refusals is cut to a few lines a second, and a later line
    // says how many were suppressed.
    let flood = 300;
    for _ in 0..flood {
        assert_eq!(connect(&url("lobby"), None, "x").await, Err(401));
    }
    let written = captured.lines(|l| l.contains("handshake refused")).len();
    assert!(written < flood / 2, "{written} refusal lines for {flood}");
    let mut more = 0;
    let told = tokio::time::timeout(WAIT, async {
        loop {
            assert_eq!(connect(&url("lobby"), None, "x").await, Err(401));
            more += 1;
            let told =
                captured.lines(|l| l.contains("handshake refused") && l.contains("suppressed="));
            if let Some(l) = told.into_iter().next() {
                return l;
            }
        }
    })
    .await
    .expect("no line ever reported suppressed refusals");
    assert!(told.contains("status=401"), "{told}");
    assert!(more > 0);

    // Lines outside any connection name their endpoint too.
    layout.shutdown(Duration::from_millis(200)).await;
    captured
        .wait_line("for layout's shutdown", |l| {
            l.contains("shutting down") && l.contains("ns=layout")
        })
        .await;

    let log = captured.text.lock().clone();
    assert!(!log.contains("Some("), "an Option was logged:\n{log}");
}
