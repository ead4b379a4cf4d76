//! Log lines that an attacker can cause (refused handshakes, malformed
//! requests, protocol errors) go through a [`LogBudget`]: at most a few per
//! second are written, and the first line after a quiet spell says how many
//! were suppressed, so a flood of bad clients cannot flood the log.
//! Imports nothing else of the crate.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A per-call-site budget of log lines.
pub(crate) struct LogBudget {
    limiter: DefaultDirectRateLimiter,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// `per_second` lines a second, with bursts of as many.
    pub fn new(per_second: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        LogBudget {
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were
    /// suppressed since the last one written (say so in the line); `None`
    /// when this one must be suppressed (it is counted).
    pub fn admit(&self) -> Option<u64> {
        if self.limiter.check().is_ok() {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// A peer address as a log field: `127.0.0.1:5000`, or `-` when unknown
/// (never `Some(..)`).
pub(crate) struct PeerAddr(pub Option<SocketAddr>);

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The `ns` field of a log line or span: the endpoint's name (option
/// `name`), so that two `WsClient`s of one process can be told apart; no
/// field at all when the name is empty.
pub(crate) fn ns(name: &str) -> Option<tracing::field::DisplayValue<&str>> {
    (!name.is_empty()).then(|| tracing::field::display(name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_burst_is_cut_and_counted() {
        let b = super::LogBudget::new(5);
        let written = (0..100).filter(|_| b.admit().is_some()).count();
        assert!((5..100).contains(&written), "{written} of 100 written");
        assert_eq!(
            b.suppressed.load(std::sync::atomic::Ordering::Relaxed),
            100 - written as u64
        );
    }

    #[test]
    fn peer_addresses_print_as_addresses() {
        let a: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(super::PeerAddr(Some(a)).to_string(), "127.0.0.1:5000");
        assert_eq!(super::PeerAddr(None).to_string(), "-");
    }
}
