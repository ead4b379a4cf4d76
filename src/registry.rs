//! Users → their one connection. Admission is atomic per user, so any number
//! of simultaneous handshakes for one user leaves exactly one registered.

use std::collections::hash_map::{Entry, HashMap, RandomState};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::connection::Connection;

const SHARDS: usize = 16;

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
