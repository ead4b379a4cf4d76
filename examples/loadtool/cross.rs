//! `cross`: cross-node sends. N pairs: `a_i` connected to `--url` (node
//! A), `b_i` to `--peer-url` (node B); `a_i` sends `direct` messages
//! (`metadata["to"] = b_i`) that the server hands to the node holding
//! `b_i`. The payload carries the send time (this process's clock), so
//! `b_i` measures one-way latency. `--rate` > 0: an open loop at that total
//! rate, each pair at `rate / pairs` with staggered phases (how late the
//! load tool itself sent is reported as `send_lag_ms`); `--rate 0`: as
//! fast as possible with at most `--window` messages in flight per pair.
//! Every loop is bounded by `--duration` and `--drain`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edk_ws::proto::message::Control;
use edk_ws::Message;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use prost::Message as _;
use serde_json::json;
use tokio::sync::{watch, Barrier, Semaphore};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{encode, new_hist, open_all, payload, pct, read_header, Ctx};

/// The `cross` subcommand's flags.
#[derive(clap::Args, Debug)]
pub(crate) struct Cross {
    /// The node the receivers connect to.
    #[arg(long)]
    pub peer_url: String,
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Messages per second over all pairs; 0 = as fast as possible with
    /// `--window` in flight per pair.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Messages in flight per pair when `--rate 0`.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Payload bytes (at least 16: sequence and send time).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long to wait for the last deliveries after sending.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
}

/// Sequence number of the one unmeasured message each pair exchanges
/// before the run (the path is known to work when timing starts).
const WARM_UP: u64 = 0;

fn direct(to: &str, seq: u64, ctx: &Ctx, size: usize) -> WsMessage {
    let m = Message {
        r#type: "direct".into(),
        metadata: HashMap::from([("to".to_owned(), to.to_owned())]),
        payload: payload(seq, ctx.now_ns(), size),
        ..Default::default()
    };
    encode(&m)
}

/// What one receiver saw.
struct Received {
    got: u64,
    out_of_order: u64,
    hist: Histogram<u64>,
}

pub(crate) async fn cross(ctx: Arc<Ctx>, x: Cross) -> Result<serde_json::Value, String> {
    let pairs = x.pairs.max(1);
    let size = x.size.max(16);
    let peer = ctx.at(&x.peer_url)?;
    // Receivers first: each is claimed and listening on node B before a
    // sender names it.
    let receivers = open_all(&peer, peer.requests("xb", pairs)?, "receivers").await?;
    let senders = open_all(&ctx, ctx.requests("xa", pairs)?, "senders").await?;

    let delivered = Arc::new(AtomicU64::new(0));
    let last_delivery = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Senders (once warmed up) and this task.
    let barrier = Arc::new(Barrier::new(pairs + 1));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();

    let mut rx_tasks = Vec::with_capacity(pairs);
    let mut tx_tasks = Vec::with_capacity(pairs);
    for (i, (a, mut b)) in senders.into_iter().zip(receivers).enumerate() {
        let to = format!("xb-{i}");
        let window = Arc::new(Semaphore::new(x.window.max(1)));
        let (warm_tx, warm_rx) = tokio::sync::oneshot::channel::<()>();

        // Receiver b_i.
        let (ctx_b, delivered_b, last_b, window_b) = (
            ctx.clone(),
            delivered.clone(),
            last_delivery.clone(),
            window.clone(),
        );
        let mut stop_b = stop_rx.clone();
        rx_tasks.push(tokio::spawn(async move {
            let mut r = Received {
                got: 0,
                out_of_order: 0,
                hist: new_hist(),
            };
            let mut warm = Some(warm_tx);
            let mut last_seq = WARM_UP;
            loop {
                tokio::select! {
                    f = b.next() => match f {
                        Some(Ok(WsMessage::Binary(bytes))) => {
                            let now = ctx_b.now_ns();
                            let Ok(m) = Message::decode(bytes) else { continue };
                            if m.r#type != "direct" {
                                continue;
                            }
                            let Some((seq, sent)) = read_header(&m.payload) else { continue };
                            if seq == WARM_UP {
                                if let Some(w) = warm.take() {
                                    let _ = w.send(());
                                }
                                continue;
                            }
                            r.got += 1;
                            if seq <= last_seq {
                                r.out_of_order += 1;
                            }
                            last_seq = last_seq.max(seq);
                            let _ = r.hist.record((now.saturating_sub(sent) / 1000).max(1));
                            delivered_b.fetch_add(1, Ordering::Relaxed);
                            last_b.fetch_max(now, Ordering::Relaxed);
                            window_b.add_permits(1);
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                    _ = stop_b.changed() => break,
                }
            }
            let _ = b.close(None).await;
            r
        }));

        // Sender a_i: its own reads (Error replies, pings) in a task.
        let (mut sink, mut source) = a.split();
        let (errors_a, first_a, mut stop_a) =
            (errors.clone(), first_error.clone(), stop_rx.clone());
        let reader = tokio::spawn(async move {
            loop {
                tokio::select! {
                    f = source.next() => match f {
                        Some(Ok(WsMessage::Binary(bytes))) => {
                            if let Ok(m) = Message::decode(bytes) {
                                if let Some(Control::Error(e)) = m.control {
                                    errors_a.fetch_add(1, Ordering::Relaxed);
                                    first_a.lock().get_or_insert(format!("{e:?}"));
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                    _ = stop_a.changed() => break,
                }
            }
        });
        let (ctx_a, barrier_a) = (ctx.clone(), barrier.clone());
        let (rate, duration) = (x.rate, x.duration);
        tx_tasks.push(tokio::spawn(async move {
            let mut lag = new_hist();
            let mut sent = 0u64;
            // Warm-up: one message through the whole path, bounded.
            let warm = async {
                sink.send(direct(&to, WARM_UP, &ctx_a, size)).await.ok()?;
                tokio::time::timeout(Duration::from_secs(10), warm_rx)
                    .await
                    .ok()?
                    .ok()
            };
            let warmed = warm.await.is_some();
            barrier_a.wait().await;
            if !warmed {
                return (
                    sent,
                    lag,
                    sink,
                    reader,
                    Some(format!("pair {i}: warm-up message not delivered")),
                );
            }
            let start = tokio::time::Instant::now();
            let end = start + duration;
            // Open loop (rate > 0): the next slot of this pair's schedule.
            // Closed loop: a free place in the window.
            let iv = (rate > 0.0).then(|| Duration::from_secs_f64(pairs as f64 / rate));
            let mut next =
                start + iv.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / pairs as f64));
            loop {
                match iv {
                    Some(iv) => {
                        if next >= end {
                            break;
                        }
                        tokio::time::sleep_until(next).await;
                        let _ = lag.record(next.elapsed().as_micros().max(1) as u64);
                        next += iv;
                    }
                    None => {
                        if tokio::time::Instant::now() >= end {
                            break;
                        }
                        match tokio::time::timeout_at(end, window.acquire()).await {
                            Ok(Ok(p)) => p.forget(),
                            _ => break,
                        }
                    }
                }
                if sink
                    .send(direct(&to, sent + 1, &ctx_a, size))
                    .await
                    .is_err()
                {
                    let failure = Some(format!("pair {i}: send failed"));
                    return (sent, lag, sink, reader, failure);
                }
                sent += 1;
            }
            (sent, lag, sink, reader, None)
        }));
    }

    let pb = ctx.progress(pairs as u64, "senders done");
    barrier.wait().await;
    let started = Instant::now();
    let first_send = ctx.now_ns();
    ctx.cpu.start();
    let mut sent = 0u64;
    let mut lag = new_hist();
    let mut failures = Vec::new();
    let mut held = Vec::with_capacity(pairs);
    for t in tx_tasks {
        let (s, h, sink, reader, failure) = t.await.map_err(|e| e.to_string())?;
        sent += s;
        let _ = lag.add(&h);
        failures.extend(failure);
        held.push((sink, reader));
        pb.inc(1);
    }
    let send_s = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    if let Some(f) = failures.iter().find(|f| f.contains("warm-up")) {
        // The path does not work: there is nothing to measure.
        let _ = stop_tx.send(true);
        return Err(format!(
            "{f} ({} of {pairs} pairs): is node B on the same Redis?",
            failures.len()
        ));
    }
    // Drain: until everything sent arrived, bounded.
    let drain_until = Instant::now() + x.drain;
    while delivered.load(Ordering::Relaxed) < sent && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ctx.cpu.stop();
    let _ = stop_tx.send(true);
    let mut hist = new_hist();
    let (mut got, mut out_of_order) = (0u64, 0u64);
    for t in rx_tasks {
        let r = t.await.map_err(|e| e.to_string())?;
        got += r.got;
        out_of_order += r.out_of_order;
        let _ = hist.add(&r.hist);
    }
    for (mut sink, reader) in held {
        let _ = reader.await;
        let _ = sink.close().await;
    }
    let span_s = last_delivery
        .load(Ordering::Relaxed)
        .saturating_sub(first_send)
        .max(1) as f64
        / 1e9;
    let error = failures
        .first()
        .cloned()
        .or_else(|| first_error.lock().clone());
    Ok(json!({
        "pairs": pairs, "rate": x.rate, "window": if x.rate > 0.0 { None } else { Some(x.window.max(1)) },
        "size": size, "duration_s": send_s,
        "sent": sent, "delivered": got, "missing": sent.saturating_sub(got),
        "out_of_order": out_of_order,
        "errors": errors.load(Ordering::Relaxed) + failures.len() as u64,
        "first_error": error,
        "send_rate": sent as f64 / send_s,
        "msgs_per_s": got as f64 / span_s,
        "latency_ms": {"p50": pct(&hist, 0.5), "p99": pct(&hist, 0.99), "p999": pct(&hist, 0.999), "max": hist.max() as f64 / 1000.0},
        "send_lag_ms": {"p50": pct(&lag, 0.5), "p99": pct(&lag, 0.99), "max": lag.max() as f64 / 1000.0},
    }))
}
