//! Micro-benchmarks of the hot paths, each beside a baseline run in the same
//! process:
//! - decoding a `Message` (payload shared with the frame) vs a copying decode;
//! - encoding a broadcast once for N recipients vs once per recipient;
//! - `send` to one of 10,000 users (registry lookup + queue push);
//! - room publish to 1,000 members (no sockets) vs 1,000 single sends;
//! - the cost rule's walk of a 1 MiB frame of ~100,000 tiny `metadata`
//!   entries (refused) vs decoding that frame, and vs decoding a plain
//!   1 MiB payload.
//!
//! Socket-less connections come from
//! `WsClient::bench_attach` (feature `bench`), and their queues are drained
//! in the loop: `cargo bench --features bench --bench hot_paths`.

use std::collections::HashMap;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edk_ws::bench as codec;
use edk_ws::{JwtAuthenticator, Message, Options, WsClient};
use prost::Message as _;

fn sample(payload: usize) -> Message {
    Message {
        id: "42".into(),
        r#type: "chat.send".into(),
        payload: Bytes::from(vec![7u8; payload]),
        metadata: HashMap::from([("trace".to_string(), "abc123".to_string())]),
        sender: "alice".into(),
        timestamp_ms: 1_700_000_000_000,
        ..Default::default()
    }
}

fn client() -> WsClient {
    let options = Options::default()
        .with_send_queue_capacity(1 << 20)
        .with_send_queue_max_bytes(usize::MAX >> 1);
    WsClient::new(options, JwtAuthenticator::new(b"bench"))
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for size in [64usize, 4096] {
        let frame = Bytes::from(sample(size).encode_to_vec());
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_with_input(BenchmarkId::new("shared_bytes", size), &frame, |b, f| {
            b.iter(|| codec::decode_inbound(black_box(f.clone()), "alice"))
        });
        g.bench_with_input(
            BenchmarkId::new("baseline_from_slice", size),
            &frame,
            |b, f| b.iter(|| Message::decode(black_box(&f[..]))),
        );
    }
    g.finish();
}

fn encode_broadcast(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_for_recipients");
    let n = 10_000u64;
    g.throughput(Throughput::Elements(n));
    let msg = sample(256);
    g.bench_function("once_shared", |b| {
        b.iter(|| {
            let mut m = msg.clone();
            let frame = codec::encode_outbound(&mut m);
            let mut v = Vec::with_capacity(n as usize);
            for _ in 0..n {
                v.push(frame.clone());
            }
            black_box(v)
        })
    });
    g.bench_function("baseline_per_recipient", |b| {
        b.iter(|| {
            let mut v = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let mut m = msg.clone();
                v.push(codec::encode_outbound(&mut m));
            }
            black_box(v)
        })
    });
    g.finish();
}

fn send_lookup(c: &mut Criterion) {
    let client = client();
    let users: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let conns: Vec<_> = users.iter().map(|u| client.bench_attach(u)).collect();
    let msg = sample(64);
    let mut g = c.benchmark_group("send");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("send_one_of_10k_users", |b| {
        b.iter(|| {
            i = (i + 7919) % users.len();
            client.send(&users[i], msg.clone()).ok();
            (conns[i].1)();
        })
    });
    let mut i = 0usize;
    g.bench_function("baseline_conn_send_no_lookup", |b| {
        b.iter(|| {
            i = (i + 7919) % users.len();
            conns[i].0.send(msg.clone()).ok();
            (conns[i].1)();
        })
    });
    g.finish();
}

fn room_publish(c: &mut Criterion) {
    let client = client();
    let n = 1_000usize;
    let users: Vec<String> = (0..n).map(|i| format!("member-{i}")).collect();
    let conns: Vec<_> = users.iter().map(|u| client.bench_attach(u)).collect();
    for u in &users {
        futures::executor::block_on(client.join(u, "bench-room", HashMap::new())).expect("join");
    }
    for c in &conns {
        (c.1)();
    }
    let msg = sample(64);
    let mut g = c.benchmark_group("room_publish_1000");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("publish", |b| {
        b.iter(|| {
            client.publish("bench-room", msg.clone()).ok();
            for c in &conns {
                (c.1)();
            }
        })
    });
    g.bench_function("baseline_send_each", |b| {
        b.iter(|| {
            for u in &users {
                client.send(u, msg.clone()).ok();
            }
            for c in &conns {
                (c.1)();
            }
        })
    });
    g.finish();
}

/// The heavy message: what refusing it costs now (the walk stops
/// at the 65th entry), what decoding it used to cost, and a plain 1 MiB
/// payload for scale.
fn heavy_metadata(c: &mut Criterion) {
    let heavy = Message {
        metadata: (0..100_000)
            .map(|i| (i.to_string(), String::new()))
            .collect(),
        ..Default::default()
    };
    let heavy = Bytes::from(heavy.encode_to_vec());
    let plain = Bytes::from(sample(1 << 20).encode_to_vec());
    let limits = codec::Limits::new(64, 16 << 10, 64);
    let mut g = c.benchmark_group("heavy_metadata_1MiB");
    g.bench_function("cost_walk_refuses", |b| {
        b.iter(|| assert!(codec::scan(black_box(&heavy), &limits).is_err()))
    });
    g.bench_function("cost_walk_plain_payload", |b| {
        b.iter(|| assert!(codec::scan(black_box(&plain), &limits).is_ok()))
    });
    g.bench_function("baseline_decode_heavy", |b| {
        b.iter(|| codec::decode_inbound(black_box(heavy.clone()), "alice").unwrap())
    });
    g.bench_function("baseline_decode_plain_payload", |b| {
        b.iter(|| codec::decode_inbound(black_box(plain.clone()), "alice").unwrap())
    });
    g.finish();
}

criterion_group!(
    benches,
    decode,
    encode_broadcast,
    send_lookup,
    room_publish,
    counters,
    heavy_metadata
);
criterion_main!(benches);

/// Counting one inbound message, as the reader does (per-thread slot, the
/// handling time sampled 1 in 16), beside the shared atomics it replaced
/// (two `fetch_add` on counters every core writes) and a clock read per
/// message; alone, and while another thread counts on the same endpoint
/// (the contended case: 2 cores here).
fn counters(c: &mut Criterion) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let mut g = c.benchmark_group("count_message_in");
    g.throughput(Throughput::Elements(1));
    let per_thread = edk_ws::bench::Counters::default();
    let shared = (AtomicU64::new(0), AtomicU64::new(0));
    let shared_count = |s: &(AtomicU64, AtomicU64)| {
        s.0.fetch_add(1, Relaxed);
        s.1.fetch_add(64, Relaxed);
    };
    for contended in [false, true] {
        let tag = if contended { "contended" } else { "alone" };
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            if contended {
                scope.spawn(|| {
                    while !stop.load(Relaxed) {
                        for _ in 0..1024 {
                            per_thread.received(64);
                            shared_count(&shared);
                        }
                    }
                });
            }
            g.bench_function(BenchmarkId::new("per_thread_sampled", tag), |b| {
                b.iter(|| per_thread.received(black_box(64)))
            });
            g.bench_function(BenchmarkId::new("baseline_shared_atomics", tag), |b| {
                b.iter(|| shared_count(black_box(&shared)))
            });
            g.bench_function(BenchmarkId::new("baseline_clock_every_message", tag), |b| {
                b.iter(|| black_box(std::time::Instant::now()).elapsed())
            });
            stop.store(true, Relaxed);
        });
    }
    g.finish();
    black_box(per_thread.messages_in());
}
