//! Subscriber lists (message, disconnect and activity handlers): read
//! lock-free on every event as a snapshot, changed rarely, and the public
//! [`Subscription`] handle that removes one. Imports nothing else of the
//! crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;

/// Subscribers in subscription order, with their ids.
pub(crate) type Snapshot<F> = Arc<Vec<(u64, Arc<F>)>>;

pub(crate) struct Subscribers<F: ?Sized> {
    next_id: AtomicU64,
    list: ArcSwap<Vec<(u64, Arc<F>)>>,
}

impl<F: ?Sized + Send + Sync + 'static> Subscribers<F> {
    pub fn new() -> Arc<Self> {
        Arc::new(Subscribers {
            next_id: AtomicU64::new(1),
            list: ArcSwap::from_pointee(Vec::new()),
        })
    }

    /// Appends `f`; the returned handle removes it.
    pub fn add(self: &Arc<Self>, f: Arc<F>) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.list.rcu(|l| {
            let mut l = Vec::clone(l);
            l.push((id, f.clone()));
            l
        });
        let weak: Weak<dyn Unsubscribe> = Arc::downgrade(self) as Weak<dyn Unsubscribe>;
        Subscription { id, list: weak }
    }

    /// The subscribers now (a handler may subscribe or unsubscribe while
    /// the snapshot is being called).
    pub fn snapshot(&self) -> Snapshot<F> {
        self.list.load_full()
    }

    /// The subscribers now, borrowed for a moment (per message): unlike
    /// [`Subscribers::snapshot`] it does not touch the list's shared
    /// reference count, which every worker thread would otherwise write.
    /// Not to be kept across an await.
    pub fn load(&self) -> arc_swap::Guard<Snapshot<F>> {
        self.list.load()
    }
}

trait Unsubscribe: Send + Sync {
    fn remove(&self, id: u64) -> bool;
}

impl<F: ?Sized + Send + Sync> Unsubscribe for Subscribers<F> {
    fn remove(&self, id: u64) -> bool {
        let before = self.list.rcu(|l| {
            l.iter()
                .filter(|(i, _)| *i != id)
                .cloned()
                .collect::<Vec<_>>()
        });
        before.iter().any(|(i, _)| *i == id)
    }
}

/// A subscribed handler. Dropping it keeps the handler subscribed; call
/// [`Subscription::unsubscribe`] to remove it.
pub struct Subscription {
    id: u64,
    list: Weak<dyn Unsubscribe>,
}

impl Subscription {
    /// Removes the handler: it is not called for events that start after
    /// this returns. Returns `false` if it was already gone.
    pub fn unsubscribe(self) -> bool {
        self.list.upgrade().is_some_and(|l| l.remove(self.id))
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_snapshot_unsubscribe() {
        let s: Arc<Subscribers<dyn Fn() -> u32 + Send + Sync>> = Subscribers::new();
        let one = s.add(Arc::new(|| 1));
        let _two = s.add(Arc::new(|| 2));
        let snap = s.snapshot();
        assert_eq!(snap.iter().map(|(_, f)| f()).collect::<Vec<_>>(), [1, 2]);
        assert!(one.unsubscribe());
        assert_eq!(s.snapshot().len(), 1);
        assert_eq!(snap.len(), 2, "a snapshot taken before is unchanged");
    }
}
