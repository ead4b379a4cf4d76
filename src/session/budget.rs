//! A connection's inbound budget: messages per second and bytes per
//! second, each with a burst (`max_inbound_messages_per_second`,
//! `inbound_messages_burst`, `max_inbound_bytes_per_second`,
//! `inbound_bytes_burst`). Checked on every binary frame before it is
//! decoded; what is over it is answered `Error RATE_LIMITED` (a module
//! request, or any message with an `id`) or dropped (an application
//! message with an empty `id`), and counted (`session::task`).
//!
//! Module requests have their own, tighter budget on top
//! (`max_requests_per_second`, `control::Limiter`).

use std::num::NonZeroU32;
use std::sync::LazyLock;

use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::options::Options;

/// The budget, created on the first frame (idle connections pay nothing).
#[derive(Default)]
pub(crate) struct Inbound(Option<Box<Limiters>>);

struct Limiters {
    messages: DefaultDirectRateLimiter,
    bytes: DefaultDirectRateLimiter,
}

/// A rate limiter on the process's one clock: creating a clock runs
/// `CPUID` (to calibrate), which traps to the hypervisor on a VM and cost
/// ~9% of a node's CPU during a connect storm when every connection made
/// its own.
pub(crate) fn limiter(quota: Quota) -> DefaultDirectRateLimiter {
    static CLOCK: LazyLock<DefaultClock> = LazyLock::new(DefaultClock::default);
    RateLimiter::direct_with_clock(quota, CLOCK.clone())
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl Inbound {
    /// Spends one message and `bytes` bytes; `false` when over the budget
    /// (nothing of the byte budget is spent then).
    pub fn allow(&mut self, o: &Options, bytes: usize) -> bool {
        let l = self.0.get_or_insert_with(|| {
            Box::new(Limiters {
                messages: limiter(quota(
                    o.max_inbound_messages_per_second,
                    o.inbound_messages_burst,
                )),
                bytes: limiter(quota(o.max_inbound_bytes_per_second, o.inbound_bytes_burst)),
            })
        });
        if l.messages.check().is_err() {
            return false;
        }
        let n = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        matches!(l.bytes.check_n(n), Ok(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_pass_then_the_budget_holds() {
        let o = Options::default()
            .with_max_inbound_messages_per_second(1)
            .with_inbound_messages_burst(5)
            .with_max_inbound_bytes_per_second(1)
            .with_inbound_bytes_burst(1000)
            .with_max_message_size(100)
            .sanitized();
        let mut b = Inbound::default();
        let passed = (0..20).filter(|_| b.allow(&o, 10)).count();
        assert_eq!(passed, 5, "the message burst");
        let o = o.with_inbound_messages_burst(1000);
        let mut b = Inbound::default();
        let passed = (0..20).filter(|_| b.allow(&o, 300)).count();
        assert_eq!(passed, 3, "the byte burst: 3 × 300 of 1000");
    }
}
