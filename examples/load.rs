//! The edk-ws load tool: drives a server with real tokio-tungstenite
//! clients over loopback and reports throughput, latency, memory and
//! handshake rate.
//!
//! ```text
//! cargo run --release --example load -- --url ws://127.0.0.1:8080/ws echo --conns 100 --duration 10s
//! cargo run --release --example load -- --url ws://127.0.0.1:8080/ws fanout --members 10000 --rate 10
//! cargo run --release --example load -- --url ws://127.0.0.1:8080/ws idle --conns 15000 --server-pid PID
//! cargo run --release --example load -- --url ws://127.0.0.1:8080/ws connect --conns 5000
//! ```
//!
//! Scale-out (several nodes sharing one Redis; see `loadtool/`):
//!
//! ```text
//! load --url ws://127.0.0.1:8081/ws cross --peer-url ws://127.0.0.1:8082/ws --pairs 100 --rate 10000
//! load --url ws://127.0.0.1:8081/ws fanout --members 3000 --rate 0 \
//!     --member-urls ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws,ws://127.0.0.1:8083/ws
//! load --cpu-pid server=PID_A --cpu-pid server=PID_B --cpu-pid redis=PID_R ...
//! ```
//!
//! `--target edk` (default) speaks the edk-ws protocol: `echo` messages, room
//! join and publish, activities. `--target raw` is for the benchmark peers
//! (examples/bare_server.rs, bench/node/server.js): the same bytes, but no
//! join or activity requests (they have no rooms); for `fanout` give the
//! peer's `/room` URL, for the rest its `/echo` URL.
//!
//! Every connection carries `x-user-id` and `Sec-WebSocket-Protocol:
//! edk.ws.v1, <JWT>` (minted before any timing starts from `--secret` /
//! `EDK_WS_JWT_SECRET`). Connections are spread over several source
//! addresses 127.0.0.x (one address runs out of ports near 28k). Targets
//! must be loopback addresses, and every loop is bounded in count and time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, Subcommand, ValueEnum};
use edk_ws::proto::message::Control;
use edk_ws::proto::{Join, SetActivity};
use edk_ws::{JwtAuthenticator, Message, Status};
use futures::stream::{self, SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message as _;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

#[path = "loadtool/cpu.rs"]
mod cpu;
#[path = "loadtool/cross.rs"]
mod cross;
#[path = "loadtool/spread.rs"]
mod spread;

/// Usable ephemeral ports per source address (32768–60999).
const PORTS_PER_SOURCE: usize = 28_000;

#[derive(Parser, Debug)]
#[command(about = "edk-ws load tool (loopback only)")]
struct Cli {
    /// WebSocket URL of the server under test (loopback only).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Protocol spoken: edk (rooms, activities) or raw (benchmark peers).
    #[arg(long, global = true, value_enum, default_value_t = Target::Edk)]
    target: Target,
    /// JWT secret of the server (HS256).
    #[arg(
        long,
        global = true,
        env = "EDK_WS_JWT_SECRET",
        default_value = "bench-secret"
    )]
    secret: String,
    /// Source addresses 127.0.0.2.. to spread connections over (0 = enough
    /// for the connection count).
    #[arg(long, global = true, default_value_t = 0)]
    sources: usize,
    /// Handshakes in flight while opening connections.
    #[arg(long, global = true, default_value_t = 256)]
    connect_concurrency: usize,
    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
    /// A label stored in the JSON (e.g. the server's name).
    #[arg(long, global = true, default_value = "")]
    label: String,
    /// No progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    /// ROLE=PID of a process whose CPU time over the measured phase is
    /// reported per unit of work (`cpu_by_process`); repeatable, roles
    /// are summed (e.g. `--cpu-pid server=1 --cpu-pid server=2 --cpu-pid redis=3`).
    /// Role `server` also gives `cpu_us_per_msg`: its CPU µs per echo,
    /// delivery or handshake (echo: from the start barrier until every
    /// connection has done its last echo, closes excluded; fanout: publish
    /// and drain; connect: the handshakes; idle: no window, it measures memory).
    #[arg(long = "cpu-pid", global = true, value_parser = cpu::parse_cpu_pid)]
    cpu_pid: Vec<(String, u32)>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    Edk,
    Raw,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N connections, one message in flight each (closed loop).
    Echo {
        #[arg(long, default_value_t = 100)]
        conns: usize,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Echoes per connection, then close (0: connect and close); the
        /// duration still bounds the run.
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
        messages: Option<u64>,
    },
    /// N members of one room and a publisher.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// Publishes per second; 0 = as fast as possible.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Messages to publish (bounded).
        #[arg(long, default_value_t = 50)]
        messages: usize,
        /// Payload bytes (at least 16: sequence and send time).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// How long to wait for the last deliveries after publishing.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        drain: Duration,
        /// Members connect round-robin to these URLs (comma-separated; the
        /// nodes of a cluster) instead of `--url`; the publisher stays on
        /// `--url`.
        #[arg(long, value_delimiter = ',')]
        member_urls: Vec<String>,
    },
    /// Cross-node sends: pairs a_i on `--url`, b_i on `--peer-url`; a_i
    /// sends `direct` messages to b_i (one-way latency, throughput).
    Cross(cross::Cross),
    /// Open N authenticated connections (edk: each joins a room of
    /// `--room-size` and sets an activity), hold them, and report the
    /// server's resident memory per connection.
    Idle {
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// The server's pid (its /proc/PID/status is read).
        #[arg(long)]
        server_pid: u32,
        /// Members per room.
        #[arg(long, default_value_t = 50)]
        room_size: usize,
        /// Quiet time that counts as settled before measuring.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        settle: Duration,
        /// Longest wait for the server to settle.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        settle_limit: Duration,
    },
    /// Handshakes per second (JWT verified by the server), holding every
    /// connection until all are open.
    Connect {
        #[arg(long, default_value_t = 2000)]
        conns: usize,
        /// Handshakes in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
}

#[derive(Clone)]
struct Ctx {
    server: SocketAddr,
    url: String,
    target: Target,
    sources: Vec<Ipv4Addr>,
    connect_concurrency: usize,
    quiet: bool,
    jwt: JwtAuthenticator,
    t0: Instant,
    /// CPU time of other processes over the measured phase (`--cpu-pid`).
    cpu: cpu::CpuMeter,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn source(&self, i: usize) -> Ipv4Addr {
        self.sources[i % self.sources.len()]
    }

    fn progress(&self, len: u64, what: &str) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(len);
        pb.set_style(
            ProgressStyle::with_template("{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_message(what.to_owned());
        pb
    }

    /// Requests (with pre-minted tokens) for users `prefix-0..n`.
    fn requests(&self, prefix: &str, n: usize) -> Result<Vec<Request<()>>, String> {
        (0..n)
            .map(|i| {
                let user = format!("{prefix}-{i}");
                let token = self
                    .jwt
                    .issue(&user, Duration::from_secs(3600))
                    .map_err(|e| e.to_string())?;
                let mut req = self
                    .url
                    .as_str()
                    .into_client_request()
                    .map_err(|e| e.to_string())?;
                let h = req.headers_mut();
                h.insert(
                    "x-user-id",
                    HeaderValue::from_str(&user).map_err(|e| e.to_string())?,
                );
                h.insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_str(&format!("edk.ws.v1, {token}"))
                        .map_err(|e| e.to_string())?,
                );
                Ok(req)
            })
            .collect()
    }
}

fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(16 << 10)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

async fn open(ctx: &Ctx, req: Request<()>, i: usize) -> Result<Ws, String> {
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(IpAddr::V4(ctx.source(i)), 0))
        .map_err(|e| format!("bind {}: {e}", ctx.source(i)))?;
    let stream = sock
        .connect(ctx.server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(client_config()))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// Opens connections for `reqs` with bounded concurrency; returns them in
/// order, failing on the first error.
async fn open_all(ctx: &Arc<Ctx>, reqs: Vec<Request<()>>, what: &str) -> Result<Vec<Ws>, String> {
    let pb = ctx.progress(reqs.len() as u64, what);
    let results: Vec<(usize, Result<Ws, String>)> = stream::iter(reqs.into_iter().enumerate())
        .map(|(i, req)| {
            let ctx = ctx.clone();
            let pb = pb.clone();
            async move {
                let r = tokio::time::timeout(Duration::from_secs(30), open(&ctx, req, i))
                    .await
                    .unwrap_or_else(|_| Err("handshake timed out".into()));
                pb.inc(1);
                (i, r)
            }
        })
        .buffer_unordered(ctx.connect_concurrency.max(1))
        .collect()
        .await;
    pb.finish_and_clear();
    let mut out: Vec<Option<Ws>> = (0..results.len()).map(|_| None).collect();
    for (i, r) in results {
        out[i] = Some(r.map_err(|e| format!("connection {i}: {e}"))?);
    }
    Ok(out.into_iter().flatten().collect())
}

fn encode(m: &Message) -> WsMessage {
    WsMessage::Binary(Bytes::from(m.encode_to_vec()))
}

/// Sends a control request with an id and waits for its reply (skipping
/// events); `Err` on an Error reply.
async fn request(ws: &mut Ws, id: &str, control: Control) -> Result<(), String> {
    let m = Message {
        id: id.to_owned(),
        control: Some(control),
        ..Default::default()
    };
    ws.send(encode(&m)).await.map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no reply to {id}"))?;
        match frame {
            Some(Ok(WsMessage::Binary(b))) => {
                let r = Message::decode(b).map_err(|e| e.to_string())?;
                if r.id == id {
                    return match r.control {
                        Some(Control::Error(e)) => Err(format!("{id}: error {e:?}")),
                        _ => Ok(()),
                    };
                }
            }
            Some(Ok(WsMessage::Close(f))) => return Err(format!("closed: {f:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection ended".into()),
        }
    }
}

fn payload(seq: u64, send_ns: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(16));
    b.put_u64(seq);
    b.put_u64(send_ns);
    b.resize(size.max(16), 0xab);
    b.freeze()
}

fn read_header(p: &[u8]) -> Option<(u64, u64)> {
    if p.len() < 16 {
        return None;
    }
    let seq = u64::from_be_bytes(p[0..8].try_into().ok()?);
    let ns = u64::from_be_bytes(p[8..16].try_into().ok()?);
    Some((seq, ns))
}

/// Minimum, median and maximum of `v`, and its coefficient of variation
/// (standard deviation / mean).
fn spread(v: &mut [f64]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    json!({
        "min": v[0], "median": v[v.len() / 2], "max": v[v.len() - 1],
        "cv": if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
    })
}

fn new_hist() -> Histogram<u64> {
    // microseconds, up to 10 minutes, 3 significant figures (constant, valid)
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn pct(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

// ---------------------------------------------------------------- echo

async fn echo(
    ctx: Arc<Ctx>,
    conns: usize,
    size: usize,
    duration: Duration,
    messages: Option<u64>,
) -> Result<serde_json::Value, String> {
    let reqs = ctx.requests("echo", conns)?;
    let socks = open_all(&ctx, reqs, "connecting").await?;
    let barrier = Arc::new(Barrier::new(conns + 1));
    // Every connection is done echoing (closes excluded from the measured
    // phase: the CPU window ends here).
    let done = Arc::new(Barrier::new(conns + 1));
    let mut tasks = Vec::with_capacity(conns);
    for mut ws in socks {
        let ctx = ctx.clone();
        let barrier = barrier.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let mut count = 0u64;
            let mut errors = 0u64;
            barrier.wait().await;
            let end = tokio::time::Instant::now() + duration;
            let mut seq = 0u64;
            while tokio::time::Instant::now() < end && messages.is_none_or(|n| seq < n) {
                seq += 1;
                let sent = Instant::now();
                let m = Message {
                    r#type: "echo".into(),
                    payload: payload(seq, ctx.now_ns(), size),
                    ..Default::default()
                };
                if ws.send(encode(&m)).await.is_err() {
                    errors += 1;
                    break;
                }
                let got = tokio::time::timeout_at(end + Duration::from_secs(5), async {
                    loop {
                        match ws.next().await {
                            Some(Ok(WsMessage::Binary(_))) => return true,
                            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return false,
                            Some(Ok(_)) => {}
                        }
                    }
                })
                .await
                .unwrap_or(false);
                if !got {
                    errors += 1;
                    break;
                }
                let _ = hist.record(sent.elapsed().as_micros().max(1) as u64);
                count += 1;
            }
            done.wait().await;
            let _ = ws.close(None).await;
            (count, errors, hist)
        }));
    }
    let pb = ctx.progress(duration.as_secs().max(1), "echo (s)");
    barrier.wait().await;
    ctx.cpu.start();
    let start = Instant::now();
    let ticker = {
        let pb = pb.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            t.tick().await;
            loop {
                t.tick().await;
                pb.inc(1);
            }
        })
    };
    done.wait().await;
    let elapsed = start.elapsed().as_secs_f64();
    ctx.cpu.stop();
    let mut hist = new_hist();
    let (mut total, mut errors) = (0u64, 0u64);
    // Per connection: how many echoes it made and its own median RTT. In a
    // closed loop a connection served faster also makes more echoes, so it
    // weighs more in the pooled percentiles: how evenly the server serves
    // its connections moves the pooled p50 at an unchanged mean.
    let (mut counts, mut medians) = (Vec::with_capacity(conns), Vec::with_capacity(conns));
    for t in tasks {
        let (c, e, h) = t.await.map_err(|e| e.to_string())?;
        total += c;
        errors += e;
        counts.push(c as f64);
        if !h.is_empty() {
            medians.push(pct(&h, 0.5));
        }
        let _ = hist.add(&h);
    }
    ticker.abort();
    pb.finish_and_clear();
    Ok(json!({
        "conns": conns, "size": size, "duration_s": elapsed,
        "messages": total, "errors": errors,
        "msgs_per_s": total as f64 / elapsed,
        "rtt_ms": {"p50": pct(&hist, 0.5), "p99": pct(&hist, 0.99), "p999": pct(&hist, 0.999), "max": hist.max() as f64 / 1000.0, "mean": hist.mean() / 1000.0},
        "per_conn": {
            "msgs": spread(&mut counts),
            "rtt_p50_ms": spread(&mut medians),
        },
    }))
}

// ---------------------------------------------------------------- fanout

const ROOM: &str = "bench-fanout";

async fn fanout(
    ctx: Arc<Ctx>,
    members: usize,
    rate: f64,
    messages: usize,
    size: usize,
    drain: Duration,
    member_urls: &[String],
) -> Result<serde_json::Value, String> {
    let mut reqs = ctx.requests("fan", members + 1)?;
    let pub_req = reqs.pop().ok_or("no publisher request")?;
    let mut socks = if member_urls.is_empty() {
        open_all(&ctx, reqs, "members").await?
    } else {
        spread::open_spread(&ctx, member_urls, "fan", members, "members").await?
    };
    let mut publisher = open(&ctx, pub_req, members).await?;
    if ctx.target == Target::Edk {
        let pb = ctx.progress(members as u64 + 1, "joining");
        let joins = stream::iter(socks.iter_mut().enumerate())
            .map(|(i, ws)| {
                let pb = pb.clone();
                async move {
                    let r = request(
                        ws,
                        &format!("j{i}"),
                        Control::Join(Join {
                            room: ROOM.into(),
                            state: Default::default(),
                        }),
                    )
                    .await;
                    pb.inc(1);
                    r
                }
            })
            .buffer_unordered(ctx.connect_concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        joins.into_iter().collect::<Result<Vec<_>, _>>()?;
        request(
            &mut publisher,
            "jp",
            Control::Join(Join {
                room: ROOM.into(),
                state: Default::default(),
            }),
        )
        .await?;
        pb.finish_and_clear();
    }
    let last_delivery = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let frames = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(members);
    for mut ws in socks {
        let ctx = ctx.clone();
        let last = last_delivery.clone();
        let delivered = delivered.clone();
        let frames = frames.clone();
        // Members read from the start (join events included), so what is
        // measured is steady state, not a backlog left by the joins.
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let mut seen = vec![false; messages];
            let mut got = 0usize;
            let stop = async {
                loop {
                    match ws.next().await {
                        Some(Ok(WsMessage::Binary(b))) => {
                            frames.fetch_add(1, Ordering::Relaxed);
                            let now = ctx.now_ns();
                            let Ok(m) = Message::decode(b) else { continue };
                            let Some((seq, sent)) = read_header(&m.payload) else {
                                continue;
                            };
                            let Some(slot) = seen.get_mut(seq as usize) else {
                                continue;
                            };
                            if *slot {
                                continue;
                            }
                            *slot = true;
                            got += 1;
                            delivered.fetch_add(1, Ordering::Relaxed);
                            last.fetch_max(now, Ordering::Relaxed);
                            let _ = hist.record((now.saturating_sub(sent) / 1000).max(1));
                            if got == messages {
                                return;
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    }
                }
            };
            // Bounded: the whole scenario's drain limit applies per member.
            let _ = tokio::time::timeout(drain + Duration::from_secs(600), stop).await;
            (got, hist, ws)
        }));
    }
    // Settle: no frame for 500 ms (bounded by 60 s) before publishing.
    let settle_limit = Instant::now() + Duration::from_secs(60);
    let mut last_count = frames.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while Instant::now() < settle_limit && quiet_since.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = frames.load(Ordering::Relaxed);
        if now != last_count {
            last_count = now;
            quiet_since = Instant::now();
        }
    }
    let pb = ctx.progress(messages as u64, "publishing");
    ctx.cpu.start();
    let first_send = ctx.now_ns();
    let interval = if rate > 0.0 {
        Some(Duration::from_secs_f64(1.0 / rate))
    } else {
        None
    };
    let mut next = tokio::time::Instant::now();
    for seq in 0..messages {
        if let Some(iv) = interval {
            tokio::time::sleep_until(next).await;
            next += iv;
        }
        let m = Message {
            r#type: "bench".into(),
            room: if ctx.target == Target::Edk {
                ROOM.into()
            } else {
                String::new()
            },
            payload: payload(seq as u64, ctx.now_ns(), size),
            ..Default::default()
        };
        publisher
            .send(encode(&m))
            .await
            .map_err(|e| format!("publish: {e}"))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    let expected = (members * messages) as u64;
    let pb = ctx.progress(expected, "deliveries");
    let drain_until = tokio::time::Instant::now() + drain;
    while delivered.load(Ordering::Relaxed) < expected && tokio::time::Instant::now() < drain_until
    {
        pb.set_position(delivered.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctx.cpu.stop();
    pb.finish_and_clear();
    let mut hist = new_hist();
    let mut total = 0u64;
    let mut open = Vec::new();
    for t in tasks {
        if t.is_finished() {
            let (got, h, ws) = t.await.map_err(|e| e.to_string())?;
            total += got as u64;
            let _ = hist.add(&h);
            open.push(ws);
        } else {
            t.abort();
        }
    }
    let total = total.max(delivered.load(Ordering::Relaxed).min(expected));
    let span_ns = last_delivery
        .load(Ordering::Relaxed)
        .saturating_sub(first_send)
        .max(1);
    let _ = publisher.close(None).await;
    for mut ws in open {
        let _ = ws.close(None).await;
    }
    Ok(json!({
        "members": members, "rate": rate, "messages": messages, "size": size,
        "deliveries": total, "missing": expected.saturating_sub(total),
        "deliveries_per_s": total as f64 / (span_ns as f64 / 1e9),
        "latency_ms": {"p50": pct(&hist, 0.5), "p99": pct(&hist, 0.99), "max": hist.max() as f64 / 1000.0},
    }))
}

// ---------------------------------------------------------------- idle

fn rss_kib(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

async fn idle(
    ctx: Arc<Ctx>,
    conns: usize,
    pid: u32,
    room_size: usize,
    settle: Duration,
    settle_limit: Duration,
) -> Result<serde_json::Value, String> {
    let reqs = ctx.requests("idle", conns)?;
    let before = rss_kib(pid)?;
    let frames = Arc::new(AtomicU64::new(0));
    let room_size = room_size.max(1);
    let pb = ctx.progress(conns as u64, "connecting");
    // Each connection: open, (edk) join a room and set an activity, then
    // keep reading like a real client (answering pings, taking events).
    let opened = stream::iter(reqs.into_iter().enumerate())
        .map(|(i, req)| {
            let ctx = ctx.clone();
            let pb = pb.clone();
            let frames = frames.clone();
            async move {
                let mut ws = tokio::time::timeout(Duration::from_secs(60), open(&ctx, req, i))
                    .await
                    .unwrap_or_else(|_| Err("handshake timed out".into()))
                    .map_err(|e| format!("connection {i}: {e}"))?;
                if ctx.target == Target::Edk {
                    let room = format!("idle-{}", i / room_size);
                    request(
                        &mut ws,
                        &format!("j{i}"),
                        Control::Join(Join {
                            room,
                            state: Default::default(),
                        }),
                    )
                    .await?;
                    let activity = SetActivity {
                        status: Status::Online as i32,
                        detail: String::new(),
                    };
                    request(&mut ws, &format!("a{i}"), Control::SetActivity(activity)).await?;
                }
                let (sink, mut source): (SplitSink<Ws, WsMessage>, SplitStream<Ws>) = ws.split();
                let reader = tokio::spawn(async move {
                    while let Some(Ok(_)) = source.next().await {
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                });
                pb.inc(1);
                Ok::<_, String>((sink, reader))
            }
        })
        .buffer_unordered(ctx.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    pb.finish_and_clear();
    let mut sinks = Vec::with_capacity(conns);
    let mut holders = Vec::with_capacity(conns);
    for r in opened {
        let (sink, reader) = r?;
        sinks.push(sink);
        holders.push(reader);
    }
    // Settled: no frame arrived for `settle`, bounded by `settle_limit`.
    let limit = Instant::now() + settle_limit;
    let mut last = frames.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while Instant::now() < limit && quiet_since.elapsed() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = frames.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let settled = quiet_since.elapsed() >= settle;
    let after = rss_kib(pid)?;
    let alive = holders.iter().filter(|h| !h.is_finished()).count();
    for mut s in sinks {
        let _ = s.close().await;
    }
    for h in holders {
        h.abort();
    }
    let per_conn = (after.saturating_sub(before) as f64 * 1024.0) / conns as f64;
    Ok(json!({
        "conns": conns, "alive": alive, "settled": settled, "frames_received": last,
        "rss_before_kib": before, "rss_after_kib": after,
        "bytes_per_conn": per_conn,
    }))
}

// ---------------------------------------------------------------- connect

async fn connect(
    ctx: Arc<Ctx>,
    conns: usize,
    concurrency: usize,
) -> Result<serde_json::Value, String> {
    let reqs = ctx.requests("conn", conns)?;
    let pb = ctx.progress(conns as u64, "handshakes");
    ctx.cpu.start();
    let start = Instant::now();
    let results: Vec<(Result<Ws, String>, Duration)> = stream::iter(reqs.into_iter().enumerate())
        .map(|(i, req)| {
            let ctx = ctx.clone();
            let pb = pb.clone();
            async move {
                let began = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(30), open(&ctx, req, i))
                    .await
                    .unwrap_or_else(|_| Err("handshake timed out".into()));
                let took = began.elapsed();
                pb.inc(1);
                (r, took)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = start.elapsed().as_secs_f64();
    ctx.cpu.stop();
    pb.finish_and_clear();
    let mut ok = Vec::new();
    let mut failures = 0u64;
    let mut first_error = None;
    // Latency of each successful handshake (TCP connect to upgrade answer).
    let mut hist = new_hist();
    for (r, took) in results {
        match r {
            Ok(ws) => {
                let _ = hist.record(took.as_micros().max(1) as u64);
                ok.push(ws);
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let opened = ok.len();
    for mut ws in ok {
        let _ = ws.close(None).await;
    }
    Ok(json!({
        "conns": conns, "concurrency": concurrency, "opened": opened, "failures": failures,
        "first_error": first_error, "duration_s": elapsed,
        "handshakes_per_s": opened as f64 / elapsed,
        "handshake_ms": {"p50": pct(&hist, 0.5), "p99": pct(&hist, 0.99), "max": hist.max() as f64 / 1000.0},
    }))
}

// ---------------------------------------------------------------- main

fn open_files_limit() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn connection_count(s: &Scenario) -> usize {
    match s {
        Scenario::Echo { conns, .. }
        | Scenario::Idle { conns, .. }
        | Scenario::Connect { conns, .. } => *conns,
        Scenario::Fanout { members, .. } => members + 1,
        Scenario::Cross(x) => 2 * x.pairs,
    }
}

fn server_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or("only ws:// URLs are supported")?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = hostport
        .parse()
        .map_err(|_| format!("{hostport}: give a numeric loopback address like 127.0.0.1:8080"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr}: only loopback targets are allowed"));
    }
    Ok(addr)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let server = server_addr(&cli.url)?;
    let n = connection_count(&cli.scenario);
    if let Some(limit) = open_files_limit() {
        let need = n as u64 + 64;
        if need > limit {
            return Err(format!(
                "{n} connections need about {need} open files, but this process may open only {limit} (ulimit -n; the hard limit here is 20,000). Lower the count, or run several load processes."
            ));
        }
    }
    let sources = if cli.sources == 0 {
        n.div_ceil(PORTS_PER_SOURCE).max(1) + 1
    } else {
        cli.sources
    };
    if sources > 250 {
        return Err("at most 250 source addresses (127.0.0.2-127.0.0.251)".into());
    }
    if n > sources * PORTS_PER_SOURCE {
        return Err(format!(
            "{n} connections over {sources} source addresses exceeds ~{PORTS_PER_SOURCE} ports each: raise --sources"
        ));
    }
    let ctx = Arc::new(Ctx {
        server,
        url: cli.url.clone(),
        target: cli.target,
        sources: (0..sources)
            .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
            .collect(),
        connect_concurrency: cli.connect_concurrency,
        quiet: cli.quiet,
        jwt: JwtAuthenticator::new(cli.secret.as_bytes()),
        t0: Instant::now(),
        cpu: cpu::CpuMeter::new(cli.cpu_pid),
    });
    let meter = ctx.cpu.clone();
    let (name, mut result) = match cli.scenario {
        Scenario::Echo {
            conns,
            size,
            duration,
            messages,
        } => ("echo", echo(ctx, conns, size, duration, messages).await?),
        Scenario::Fanout {
            members,
            rate,
            messages,
            size,
            drain,
            member_urls,
        } => (
            "fanout",
            fanout(
                ctx,
                members,
                rate,
                messages,
                size.max(16),
                drain,
                &member_urls,
            )
            .await?,
        ),
        Scenario::Cross(x) => ("cross", cross::cross(ctx, x).await?),
        Scenario::Idle {
            conns,
            server_pid,
            room_size,
            settle,
            settle_limit,
        } => (
            "idle",
            idle(ctx, conns, server_pid, room_size, settle, settle_limit).await?,
        ),
        Scenario::Connect { conns, concurrency } => {
            ("connect", connect(ctx, conns, concurrency).await?)
        }
    };
    if let Some(cpu) = meter.report(cpu::units(&result)) {
        // The figure bench/run reports: server CPU per unit of work.
        if let Some(per) = cpu.get("server_us_per_unit").filter(|v| !v.is_null()) {
            result["cpu_us_per_msg"] = per.clone();
        }
        result["cpu_by_process"] = cpu;
    }
    let out = json!({
        "scenario": name,
        "target": format!("{:?}", cli.target).to_lowercase(),
        "label": cli.label,
        "url": cli.url,
        "result": result,
    });
    println!("{}", table(name, &out["result"]));
    if let Some(path) = cli.json {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&out).unwrap_or_default(),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn table(name: &str, r: &serde_json::Value) -> String {
    let mut s = format!("{name}\n");
    if let Some(obj) = r.as_object() {
        for (k, v) in obj {
            match v.as_object() {
                Some(inner) => {
                    for (k2, v2) in inner {
                        s.push_str(&format!("  {:<22} {}\n", format!("{k}.{k2}"), fmt(v2)));
                    }
                }
                None => s.push_str(&format!("  {k:<22} {}\n", fmt(v))),
            }
        }
    }
    s
}

fn fmt(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(f) if v.is_f64() => format!("{f:.2}"),
        _ => v.to_string(),
    }
}
