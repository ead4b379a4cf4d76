//! Real processes for the cluster tests: a `redis-server` of the test's own
//! (from PATH, free port, nothing on disk, so a test can kill, stop and
//! restart it) and `examples/server` processes joined to it with `--redis`.
//! A test must never pass without Redis: a missing `redis-server` panics.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

use crate::common::{Ws, SECRET};

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits (bounded) until something accepts on `port`.
async fn accepting(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nothing accepts on port {port}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The test's own Redis.
pub struct Redis {
    pub port: u16,
    /// Extra `redis-server` arguments (e.g. an ACL user).
    args: Vec<String>,
    /// `user:password@` in its URL, when it requires one.
    auth: String,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_with(&[], "").await
    }

    /// With extra server arguments and `user:password` for the URL.
    pub async fn start_with(args: &[&str], auth: &str) -> Redis {
        let port = free_port();
        let mut r = Redis {
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            auth: if auth.is_empty() {
                String::new()
            } else {
                format!("{auth}@")
            },
            child: None,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server is needed on PATH for the cluster tests ({e}); .ci/run installs it")
            });
        self.child = Some(child);
        accepting(self.port, Duration::from_secs(10)).await;
        // Accepting is not yet serving: wait for a PONG.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]) != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}127.0.0.1:{}", self.auth, self.port)
    }

    /// Runs a command with redis-cli; its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-u", &self.url()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

/// One `examples/server` process of the cluster.
pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    child: Option<Child>,
}

/// The example server binary, built by `cargo test` beside the tests (a
/// filtered run such as `cargo test --test cluster` does not rebuild it:
/// `cargo build --examples` first).
fn server_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join("server");
    assert!(
        bin.exists(),
        "{} missing: run the tests with `cargo test`",
        bin.display()
    );
    bin
}

impl Node {
    /// Starts a node joined to `redis` with these extra `EDK_WS_*`
    /// variables; returns once it serves.
    pub async fn start(redis: &Redis, id: &str, env: &[(&str, &str)]) -> Node {
        Self::start_at(&redis.url(), id, env).await
    }

    /// Like [`Node::start`], with this Redis URL.
    pub async fn start_at(redis_url: &str, id: &str, env: &[(&str, &str)]) -> Node {
        let port = free_port();
        let mut cmd = Command::new(server_bin());
        cmd.args(["--addr", &format!("127.0.0.1:{port}"), "--admin"])
            .args(["--redis", redis_url])
            .env("EDK_WS_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
            .env("EDK_WS_NODE_ID", id)
            .env(
                "RUST_LOG",
                std::env::var("CLUSTER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start examples/server");
        accepting(port, Duration::from_secs(20)).await;
        Node {
            id: id.to_owned(),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A handshake for `user`: the socket, or the refusal's status.
    pub async fn try_connect(&self, user: &str) -> Result<Ws, StatusCode> {
        let token = edk_ws::JwtAuthenticator::new(SECRET)
            .issue(user, Duration::from_secs(3600))
            .unwrap();
        let mut req = self.url().into_client_request().unwrap();
        let h = req.headers_mut();
        h.insert("x-user-id", HeaderValue::from_str(user).unwrap());
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("edk.ws.v1, {token}")).unwrap(),
        );
        match tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(req),
        )
        .await
        {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => Err(r.status()),
            Ok(Err(e)) => panic!("handshake for {user} failed: {e}"),
            Err(_) => panic!("handshake for {user} timed out"),
        }
    }

    pub async fn connect(&self, user: &str) -> Ws {
        self.try_connect(user)
            .await
            .unwrap_or_else(|s| panic!("{user} refused on {}: {s}", self.id))
    }

    /// An admin call (`/admin/...`): status and body.
    pub async fn admin(&self, method: &str, path: &str) -> (u16, String) {
        use tokio::io::AsyncWriteExt;
        let mut s = TcpStream::connect(self.addr).await.expect("admin connect");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(s).lines();
        let status = lines.next_line().await.unwrap().unwrap_or_default();
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut body = Vec::new();
        let mut in_body = false;
        while let Ok(Some(l)) = lines.next_line().await {
            if in_body {
                body.push(l);
            } else if l.is_empty() {
                in_body = true;
            }
        }
        (code, body.join("\n"))
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, without waiting.
    pub fn terminate(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
    }

    /// SIGTERM, and waits for the process to end (bounded).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts Redis and `n` nodes (`n0`, `n1`, …) with the same extra env.
pub async fn cluster(n: usize, env: &[(&str, &str)]) -> (Redis, Vec<Node>) {
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Node::start(&redis, &format!("n{i}"), env).await);
    }
    (redis, nodes)
}

/// Waits until `cond` holds (polled, bounded by `within`).
pub async fn eventually(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
