//! The batching ticker: runs a flush of coalesced events (large rooms'
//! member events, presence changes) once a batch window has passed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::Hub;

impl Hub {
    /// Runs `flush` once `event_batch_interval` has passed, unless a run is
    /// already scheduled (the flag `scheduled` picks; `flush` clears it
    /// before taking its batch, so a change that comes later schedules
    /// the next run).
    pub(super) fn schedule_flush(
        self: &Arc<Self>,
        scheduled: fn(&Hub) -> &AtomicBool,
        flush: fn(&Arc<Hub>),
    ) {
        self.schedule(scheduled, move |hub| {
            flush(&hub);
            async {}.boxed()
        });
    }

    /// Like [`schedule_flush`](Hub::schedule_flush), for a flush that
    /// works in slices and yields between them.
    pub(super) fn schedule_sliced_flush(
        self: &Arc<Self>,
        scheduled: fn(&Hub) -> &AtomicBool,
        flush: fn(Arc<Hub>) -> BoxFuture<'static, ()>,
    ) {
        self.schedule(scheduled, flush);
    }

    fn schedule(
        self: &Arc<Self>,
        scheduled: fn(&Hub) -> &AtomicBool,
        flush: impl FnOnce(Arc<Hub>) -> BoxFuture<'static, ()> + Send + 'static,
    ) {
        if scheduled(self).swap(true, Ordering::AcqRel) {
            return;
        }
        let hub = self.clone();
        after_window(self.options.event_batch_interval, move || flush(hub));
    }
}

/// Runs `f`'s future once `window` has passed: on the tokio runtime when
/// there is one, else on a short-lived thread. Never inline — callers
/// (batched room and presence events) may hold locks that `f` takes.
fn after_window(window: Duration, f: impl FnOnce() -> BoxFuture<'static, ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(async move {
                tokio::time::sleep(window).await;
                f().await;
            });
        }
        Err(_) => {
            std::thread::spawn(move || {
                std::thread::sleep(window);
                futures::executor::block_on(f());
            });
        }
    }
}
