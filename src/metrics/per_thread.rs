//! Counters on the per-message path, kept per worker thread and summed when
//! read (`WsClient::metrics`, a Prometheus scrape).
//!
//! Every thread that counts gets its own [`Slot`] (a `thread_local`
//! `ThreadLocal`, one per `Metrics`), aligned to 128 bytes so no two
//! threads' slots share a cache line. A slot is written by its own thread
//! only, so adding is a plain load and store: no locked instruction, no
//! cache line bouncing between cores, whatever the number of workers. A
//! slot outlives its thread (a later thread reuses it), so totals never go
//! down.
//!
//! **Rule:** take the slot with [`PerThread::slot`] right where you count,
//! and never keep it across an `.await` (the task may resume on another
//! thread, which would then write a slot it does not own).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use enum_map::{Enum, EnumMap};
use thread_local::ThreadLocal;

use super::histogram::{Buckets, HistogramSnapshot, BATCH_BOUNDS, DURATION_BOUNDS_NS};

/// One inbound message in this many (per thread) has its handling timed:
/// two clock reads per 16 messages instead of per message.
pub(crate) const SAMPLE_EVERY: u64 = 16;

/// What handled an inbound message (the `kind` of the handling durations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub(crate) enum Handling {
    /// A module request (control verb or room publish).
    Request,
    /// A typed route.
    Route,
    /// The subscribed message handlers.
    Handlers,
}

/// A counter with one writer (its thread): `add` is a load and a store.
#[derive(Default)]
pub(crate) struct Cell(AtomicU64);

impl Cell {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One thread's counters.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Slot {
    messages_in: Cell,
    bytes_in: Cell,
    messages_out: Cell,
    bytes_out: Cell,
    /// Inbound messages seen, for sampling.
    tick: Cell,
    handling: EnumMap<Handling, Buckets<{ DURATION_BOUNDS_NS.len() }>>,
    handshakes: Buckets<{ DURATION_BOUNDS_NS.len() }>,
    batches: Buckets<{ BATCH_BOUNDS.len() }>,
}

impl Slot {
    /// One binary frame of `bytes` received.
    #[inline]
    pub fn received(&self, bytes: usize) {
        self.messages_in.add(1);
        self.bytes_in.add(bytes as u64);
    }

    /// Whether to time the handling of the message just received: true for
    /// one in [`SAMPLE_EVERY`].
    #[inline]
    pub fn sample(&self) -> bool {
        let t = self.tick.get();
        self.tick.add(1);
        t.is_multiple_of(SAMPLE_EVERY)
    }

    /// A sampled message took `took` to handle.
    pub fn handled(&self, kind: Handling, took: Duration) {
        self.handling[kind].observe(nanos(took), &DURATION_BOUNDS_NS);
    }

    /// A handshake took `took` (request to 101).
    pub fn handshake(&self, took: Duration) {
        self.handshakes.observe(nanos(took), &DURATION_BOUNDS_NS);
    }

    /// The writer took a batch of `taken` queued messages (the queue's depth
    /// when it woke) and wrote `count` of them, `bytes` in all.
    #[inline]
    pub fn written(&self, taken: usize, count: u64, bytes: u64) {
        if taken > 0 {
            self.batches.observe(taken as u64, &BATCH_BOUNDS);
        }
        if count > 0 {
            self.messages_out.add(count);
            self.bytes_out.add(bytes);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The sums over every thread's slot.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub messages_in: u64,
    pub bytes_in: u64,
    pub messages_out: u64,
    pub bytes_out: u64,
    pub handling: EnumMap<Handling, HistogramSnapshot>,
    pub handshakes: HistogramSnapshot,
    pub batches: HistogramSnapshot,
}

/// Per-thread slots of one `Metrics`.
#[derive(Default)]
pub(crate) struct PerThread(ThreadLocal<Slot>);

impl PerThread {
    /// This thread's slot (do not keep it across an `.await`).
    #[inline]
    pub fn slot(&self) -> &Slot {
        self.0.get_or_default()
    }

    /// Every slot summed (a few hundred loads per thread that ever counted).
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            handling: EnumMap::from_fn(|_| HistogramSnapshot::empty(&DURATION_BOUNDS_NS)),
            handshakes: HistogramSnapshot::empty(&DURATION_BOUNDS_NS),
            batches: HistogramSnapshot::empty(&BATCH_BOUNDS),
            ..Totals::default()
        };
        for s in self.0.iter() {
            t.messages_in += s.messages_in.get();
            t.bytes_in += s.bytes_in.get();
            t.messages_out += s.messages_out.get();
            t.bytes_out += s.bytes_out.get();
            for (kind, b) in &s.handling {
                b.add_to(&mut t.handling[kind]);
            }
            s.handshakes.add_to(&mut t.handshakes);
            s.batches.add_to(&mut t.batches);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_count_apart_and_sum_up() {
        let p = std::sync::Arc::new(PerThread::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        p.slot().received(10);
                    }
                    p.slot().written(3, 2, 20);
                    p.slot().handled(Handling::Route, Duration::from_micros(30));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let t = p.totals();
        assert_eq!((t.messages_in, t.bytes_in), (4000, 40_000));
        assert_eq!((t.messages_out, t.bytes_out), (8, 80));
        assert_eq!(t.batches.count, 4);
        assert_eq!(t.batches.sum, 12);
        let route = &t.handling[Handling::Route];
        assert_eq!(route.count, 4);
        assert_eq!(route.sum, 4 * 30_000);
        // 30 µs falls in the 50 µs bucket (and every bigger one), not 10 µs.
        assert_eq!(route.buckets[0], (10_000, 0));
        assert_eq!(route.buckets[1], (50_000, 4));
        assert_eq!(route.buckets.last().map(|b| b.1), Some(4));
        assert_eq!(t.handling[Handling::Request].count, 0);
    }

    #[test]
    fn one_in_sample_every_is_timed() {
        let s = Slot::default();
        let timed = (0..SAMPLE_EVERY * 4).filter(|_| s.sample()).count();
        assert_eq!(timed, 4);
    }
}
