//! Fixed-bucket histograms counted per thread (see `per_thread`), and the
//! public [`HistogramSnapshot`] they sum up to.

use super::per_thread::Cell;

/// Upper bounds of the duration buckets, in nanoseconds: 10 µs to 5 s.
pub(crate) const DURATION_BOUNDS_NS: [u64; 12] = [
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// Upper bounds of the writer batch sizes, in messages.
pub(crate) const BATCH_BOUNDS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// One thread's buckets: `N` bounded ones and the overflow, the sum and
/// the count. Written by its thread only.
pub(crate) struct Buckets<const N: usize> {
    counts: [Cell; N],
    over: Cell,
    sum: Cell,
}

impl<const N: usize> Default for Buckets<N> {
    fn default() -> Self {
        Buckets {
            counts: std::array::from_fn(|_| Cell::default()),
            over: Cell::default(),
            sum: Cell::default(),
        }
    }
}

impl<const N: usize> Buckets<N> {
    pub fn observe(&self, value: u64, bounds: &[u64; N]) {
        match bounds.iter().position(|&b| value <= b) {
            Some(i) => self.counts[i].add(1),
            None => self.over.add(1),
        }
        self.sum.add(value);
    }

    /// Adds these counts to `total` (made by [`HistogramSnapshot::empty`]
    /// with the same bounds).
    pub fn add_to(&self, total: &mut HistogramSnapshot) {
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.get();
            total.buckets[i].1 += cumulative;
        }
        let n = cumulative + self.over.get();
        total.count += n;
        total.sum += self.sum.get();
    }
}

/// A histogram read at one point in time, Prometheus-style: cumulative
/// counts per upper bound (`buckets`, bound first), then the total `count`
/// (which includes values above the last bound) and `sum`. Durations are in
/// nanoseconds; batch sizes in messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistogramSnapshot {
    /// `(upper bound, observations <= bound)`, bounds increasing.
    pub buckets: Vec<(u64, u64)>,
    /// Every observation.
    pub count: u64,
    /// The sum of the observed values.
    pub sum: u64,
}

impl HistogramSnapshot {
    pub(crate) fn empty(bounds: &[u64]) -> Self {
        HistogramSnapshot {
            buckets: bounds.iter().map(|&b| (b, 0)).collect(),
            count: 0,
            sum: 0,
        }
    }
}
