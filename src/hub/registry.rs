//! Users → their one connection here. Admission is atomic per user, so any
//! number of simultaneous handshakes for one user leaves exactly one
//! registered: the one with the highest ownership epoch.

use std::collections::hash_map::{Entry, HashMap, RandomState};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::conn::Connection;

pub(crate) const SHARDS: usize = 16;

type Shard = RwLock<HashMap<Arc<str>, Arc<Connection>>>;

pub(crate) struct Registry {
    shards: Box<[Shard]>,
    hasher: RandomState,
    closed: AtomicBool,
}

pub(crate) enum Admission {
    /// Registered; `replaced` is the user's previous connection, if any.
    Admitted { replaced: Option<Arc<Connection>> },
    /// The user is connected and new connections are refused.
    Conflict,
    /// A newer connection of the user (a higher epoch) is registered: this
    /// one lost the race and must close as replaced.
    Stale,
    /// The registry is closed (shutdown).
    Closed,
}

impl Registry {
    pub fn new() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn shard(&self, user: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(user) as usize % SHARDS]
    }

    /// Registers `conn` under its user, by the kick-out rule.
    pub fn admit(&self, conn: Arc<Connection>, refuse_new: bool) -> Admission {
        let mut shard = self.shard(conn.user_id()).write();
        // Checked under the shard lock: `close` sets the flag before it walks
        // the shards, so no admission can slip past a shutdown.
        if self.closed.load(SeqCst) {
            return Admission::Closed;
        }
        match shard.entry(conn.user_key()) {
            Entry::Occupied(_) if refuse_new => Admission::Conflict,
            Entry::Occupied(e) if e.get().epoch() > conn.epoch() => Admission::Stale,
            Entry::Occupied(mut e) => Admission::Admitted {
                replaced: Some(e.insert(conn)),
            },
            Entry::Vacant(e) => {
                e.insert(conn);
                Admission::Admitted { replaced: None }
            }
        }
    }

    /// The user's connection.
    pub fn get(&self, user: &str) -> Option<Arc<Connection>> {
        self.shard(user).read().get(user).cloned()
    }

    /// Removes the user's entry only if it is still connection `conn_id`
    /// (a replaced connection must not unregister its successor).
    pub fn remove_if(&self, user: &str, conn_id: u64) -> bool {
        let mut shard = self.shard(user).write();
        match shard.get(user) {
            Some(c) if c.id() == conn_id => {
                shard.remove(user);
                true
            }
            _ => false,
        }
    }

    /// Calls `f` for every registered connection (under each shard's read
    /// lock in turn: `f` must be quick and must not touch the registry).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Connection>)) {
        for shard in self.shards.iter() {
            for c in shard.read().values() {
                f(c);
            }
        }
    }

    /// Appends the handles of shard `i`'s connections to `out`, so that the
    /// caller can work on them with no lock held.
    pub fn handles(&self, i: usize, out: &mut Vec<Arc<Connection>>) {
        out.extend(self.shards[i].read().values().cloned());
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Refuses every later admission and returns who is registered now.
    pub fn close(&self) -> Vec<Arc<Connection>> {
        self.closed.store(true, SeqCst);
        let mut all = Vec::new();
        self.for_each(|c| all.push(c.clone()));
        all
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::testing::{connect, hub};
    use crate::options::Options;
    use http::HeaderMap;

    fn conn_with_epoch(user: &str, id: u64, epoch: u64) -> Arc<Connection> {
        hub(Options::default()).new_connection(id, epoch, Arc::from(user), HeaderMap::new(), None)
    }

    #[test]
    fn replace_refuse_stale_and_close() {
        let r = Registry::new();
        let old = conn_with_epoch("u", 1, 1);
        let new = conn_with_epoch("u", 2, 2);
        let late = conn_with_epoch("u", 3, 1);
        assert!(matches!(
            r.admit(old.clone(), false),
            Admission::Admitted { replaced: None }
        ));
        assert!(matches!(r.admit(new.clone(), true), Admission::Conflict));
        match r.admit(new.clone(), false) {
            Admission::Admitted { replaced: Some(c) } => assert_eq!(c.id(), 1),
            _ => panic!("expected a replacement"),
        }
        // An older epoch that finishes its handshake late loses.
        assert!(matches!(r.admit(late, false), Admission::Stale));
        assert_eq!(r.get("u").map(|c| c.id()), Some(2));
        // The replaced connection cannot unregister its successor.
        assert!(!r.remove_if("u", 1));
        assert_eq!(r.len(), 1);
        assert_eq!(r.close().len(), 1);
        assert!(matches!(
            r.admit(conn_with_epoch("v", 4, 4), false),
            Admission::Closed
        ));
        assert!(r.remove_if("u", 2));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn handles_cover_every_shard() {
        let h = hub(Options::default());
        for i in 0..100 {
            connect(&h, &format!("user-{i}"));
        }
        let mut all = Vec::new();
        for i in 0..SHARDS {
            h.registry.handles(i, &mut all);
        }
        assert_eq!(all.len(), 100);
    }
}
