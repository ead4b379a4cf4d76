//! Redis key and channel names. Everything about one user, one room or one
//! node carries the same hash tag (`{u:…}`, `{r:…}`, `{n:…}`), so every
//! script touches keys of a single Redis Cluster slot, and the sharded
//! channel it publishes on is in that slot too.
//!
//! | scope | channel | keys |
//! |---|---|---|
//! | user U | `P:{u:U}` (sharded) | `P:{u:U}:own` hash {node, conn, epoch} |
//! | room R | `P:{r:R}` (sharded) | `:m` user → member, `:e` user → epoch, `:n` user → node, `:s` room state, `:v` version, `:cfg` {max, settings} |
//! | node N | — | `P:{n:N}:users`, `:rooms`, `:reap` (reaper lock) |
//! | activities | — | `P:{a:B}` user → record, `:e` user → epoch, `:n` user → node (16 buckets B) |
//! | everyone | `P:all` (broadcasts, activity batches, node bye) | `P:nodes` (sorted set of heartbeats), `P:incarnation` |

/// Activity buckets (each a slot of its own).
pub(crate) const BUCKETS: u32 = 16;

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    p: String,
}

/// The keys of one room, in the order the room scripts take them.
pub(crate) struct RoomKeys {
    pub members: String,
    pub epochs: String,
    pub nodes: String,
    pub state: String,
    pub version: String,
    pub config: String,
    pub channel: String,
}

impl RoomKeys {
    /// All of them, for a script's KEYS (the channel last).
    pub fn all(&self) -> [&str; 7] {
        [
            &self.members,
            &self.epochs,
            &self.nodes,
            &self.state,
            &self.version,
            &self.config,
            &self.channel,
        ]
    }
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            p: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.p
    }

    pub fn user_channel(&self, user: &str) -> String {
        format!("{}:{{u:{user}}}", self.p)
    }

    pub fn owner(&self, user: &str) -> String {
        format!("{}:{{u:{user}}}:own", self.p)
    }

    pub fn room_channel(&self, room: &str) -> String {
        format!("{}:{{r:{room}}}", self.p)
    }

    pub fn room(&self, room: &str) -> RoomKeys {
        let base = self.room_channel(room);
        RoomKeys {
            members: format!("{base}:m"),
            epochs: format!("{base}:e"),
            nodes: format!("{base}:n"),
            state: format!("{base}:s"),
            version: format!("{base}:v"),
            config: format!("{base}:cfg"),
            channel: base,
        }
    }

    pub fn node_users(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}:users", self.p)
    }

    pub fn node_rooms(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}:rooms", self.p)
    }

    pub fn reap_lock(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}:reap", self.p)
    }

    /// The activity bucket of `user`: (records, epochs, nodes).
    pub fn activity(&self, user: &str) -> [String; 3] {
        self.bucket(bucket_of(user))
    }

    pub fn bucket(&self, b: u32) -> [String; 3] {
        let base = format!("{}:{{a:{b:02}}}", self.p);
        [base.clone(), format!("{base}:e"), format!("{base}:n")]
    }

    pub fn all_channel(&self) -> String {
        format!("{}:all", self.p)
    }

    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.p)
    }

    pub fn incarnation(&self) -> String {
        format!("{}:incarnation", self.p)
    }
}

/// A stable bucket for `user` (FNV-1a).
fn bucket_of(user: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in user.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h % BUCKETS
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Redis Cluster's key → slot: CRC16/XMODEM of the hash tag (the part
    /// between the first `{` and the next `}`, if not empty) mod 16384.
    pub fn slot(key: &str) -> u16 {
        let b = key.as_bytes();
        let tagged = b.iter().position(|&c| c == b'{').and_then(|s| {
            let e = b[s + 1..].iter().position(|&c| c == b'}')?;
            (e > 0).then(|| &b[s + 1..s + 1 + e])
        });
        let data = tagged.unwrap_or(b);
        let mut crc: u16 = 0;
        for &byte in data {
            crc ^= (byte as u16) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    #[test]
    fn slot_function_matches_redis() {
        // Values from `CLUSTER KEYSLOT` (Redis documentation examples).
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_eq!(slot("{}foo"), 9500); // empty tag: the whole key
        assert_eq!(slot("edk:{u:a}b}:own"), 9505);
        assert_eq!(slot("edk:{r:日本}:m"), 16300);
    }

    /// Every script's keys (and the channel it publishes on) are in one slot,
    /// whatever the ids contain.
    #[test]
    fn each_script_touches_one_slot() {
        let k = Keys::new("edk");
        for id in ["alice", "a}b", "{x}", "日本", "", "r:1"] {
            let r = k.room(id);
            let s = slot(&r.members);
            assert!(r.all().iter().all(|key| slot(key) == s), "room {id:?}");
            assert_eq!(slot(&k.owner(id)), slot(&k.user_channel(id)), "user {id:?}");
            let n = [k.node_users(id), k.node_rooms(id), k.reap_lock(id)];
            assert!(n.iter().all(|key| slot(key) == slot(&n[0])), "node {id:?}");
            let a = k.activity(id);
            assert!(
                a.iter().all(|key| slot(key) == slot(&a[0])),
                "bucket of {id:?}"
            );
        }
    }
}
