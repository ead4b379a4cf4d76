//! The Lua scripts that make cluster-wide decisions atomically. Each one
//! touches the keys of one hash tag (one Redis Cluster slot; see `keys.rs`).
//! Room scripts publish their event on the room's sharded channel from
//! inside the script, appending the room's new version to the envelope as
//! protobuf field 5 (`Envelope.room_version`): so events reach every
//! replica in exactly the order they were applied.

use std::sync::LazyLock;

use redis::Script;

/// Appends `Envelope.room_version = v` (field 5, varint) to an encoded
/// envelope: protobuf merges a repeated scalar field, the last one wins.
const WITH_VERSION: &str = r#"
local function with_version(envelope, v)
  local out = {envelope, string.char(40)}
  while v >= 128 do
    out[#out + 1] = string.char(v % 128 + 128)
    v = math.floor(v / 128)
  end
  out[#out + 1] = string.char(v)
  return table.concat(out)
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{WITH_VERSION}\n{body}"))
}

/// The room scripts' keys (`KEYS`: m e n s v cfg channel, see `keys.rs`)
/// and what an emptied room leaves: its keys go, its version stays (a day)
/// so versions only grow.
const ROOM: &str = r#"
local m, e, n, s, v, cfg, ch = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local function drop_room()
  redis.call('DEL', m, e, n, s, cfg)
  redis.call('PEXPIRE', v, 86400000)
end
"#;

fn room_script(body: &str) -> Script {
    script(&format!("{ROOM}\n{body}"))
}

/// Claims a user's one connection.
/// KEYS: own. ARGV: node, conn, refuse_new (1/0), dead nodes….
/// Returns `{'-1', '', '', ''}` (conflict: refuse mode and the owner's node
/// is not known dead — a node that just started counts as alive), or
/// `{epoch, previous node, previous conn, previous epoch}`, all as strings.
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local own = KEYS[1]
local owner = redis.call('HGET', own, 'node')
if ARGV[3] == '1' and owner then
  local dead = false
  for i = 4, #ARGV do
    if ARGV[i] == owner then dead = true end
  end
  if not dead then return {'-1', '', '', ''} end
end
local prev_conn = redis.call('HGET', own, 'conn') or ''
local prev_epoch = redis.call('HGET', own, 'epoch') or '0'
local epoch = redis.call('HINCRBY', own, 'epoch', 1)
redis.call('HSET', own, 'node', ARGV[1], 'conn', ARGV[2])
redis.call('PERSIST', own)
return {tostring(epoch), owner or '', prev_conn, prev_epoch}
"#,
    )
});

/// Gives up a claim, only if it is still this one. The epoch stays (so
/// epochs only grow); the record expires after a day unused.
/// KEYS: own. ARGV: node, epoch. Returns 1 if released.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local own = KEYS[1]
if redis.call('HGET', own, 'node') == ARGV[1] and redis.call('HGET', own, 'epoch') == ARGV[2] then
  redis.call('HDEL', own, 'node', 'conn')
  redis.call('PEXPIRE', own, 86400000)
  return 1
end
return 0
"#,
    )
});

/// Writes again a claim this node holds, after Redis lost it (or this node
/// was reaped while alive): only if no newer epoch was granted since.
/// KEYS: own. ARGV: node, conn, epoch. Returns 1 if written.
pub(crate) static ANNOUNCE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local own = KEYS[1]
local cur = tonumber(redis.call('HGET', own, 'epoch') or '0')
if cur > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', own, 'node', ARGV[1], 'conn', ARGV[2], 'epoch', ARGV[3])
redis.call('PERSIST', own)
return 1
"#,
    )
});

/// A node's heartbeat on the node table (a sorted set by last beat, Redis's
/// clock). KEYS: nodes. ARGV: node, lease ms. Returns `{new (1/0), dead
/// nodes}`: `new` means this node was not in the table (its first beat, or
/// it was reaped while alive and must announce itself); dead nodes are
/// those whose last beat is older than the lease.
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local new = redis.call('ZADD', KEYS[1], now, ARGV[1])
local since = now - tonumber(ARGV[2])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. since)
return {new, dead}
"#,
    )
});

/// Clears a dead node's claim of a user. KEYS: own. ARGV: dead node.
pub(crate) static RELEASE_NODE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local own = KEYS[1]
if redis.call('HGET', own, 'node') == ARGV[1] then
  redis.call('HDEL', own, 'node', 'conn')
  redis.call('PEXPIRE', own, 86400000)
  return 1
end
return 0
"#,
    )
});

/// Joins (or re-joins) a room, creating it.
/// KEYS: m e n s v cfg channel. ARGV: user, epoch, node, member record,
/// max members (0 = none; used when creating), settings blob (when
/// creating), envelope.
/// Returns `{'-1', ''}` stale epoch, `{'-2', ''}` full, or
/// `{version, settings blob}`.
pub(crate) static ROOM_JOIN: LazyLock<Script> = LazyLock::new(|| {
    room_script(
        r#"
local user, epoch = ARGV[1], tonumber(ARGV[2])
local cur = redis.call('HGET', e, user)
if cur and tonumber(cur) > epoch then return {'-1', ''} end
if redis.call('EXISTS', cfg) == 0 then
  redis.call('HSET', cfg, 'max', ARGV[5], 'settings', ARGV[6])
end
local max = tonumber(redis.call('HGET', cfg, 'max'))
if redis.call('HEXISTS', m, user) == 0 and max > 0 and redis.call('HLEN', m) >= max then
  return {'-2', ''}
end
redis.call('HSET', m, user, ARGV[4])
redis.call('HSET', e, user, ARGV[2])
redis.call('HSET', n, user, ARGV[3])
local version = redis.call('INCR', v)
redis.call('PERSIST', v)
redis.call('SPUBLISH', ch, with_version(ARGV[7], version))
return {tostring(version), redis.call('HGET', cfg, 'settings')}
"#,
    )
});

/// Leaves a room (only the member with this epoch). An emptied room's keys
/// go, but its version stays (a day) so versions only grow.
/// KEYS: m e n s v cfg channel. ARGV: user, epoch, envelope.
/// Returns `{-1}` not a member (or a newer connection's seat), or `{version}`.
pub(crate) static ROOM_LEAVE: LazyLock<Script> = LazyLock::new(|| {
    room_script(
        r#"
if redis.call('HGET', e, ARGV[1]) ~= ARGV[2] then return {-1} end
redis.call('HDEL', m, ARGV[1])
redis.call('HDEL', e, ARGV[1])
redis.call('HDEL', n, ARGV[1])
local version = redis.call('INCR', v)
if redis.call('HLEN', m) == 0 then drop_room() end
redis.call('SPUBLISH', ch, with_version(ARGV[3], version))
return {version}
"#,
    )
});

/// Changes room state and/or a member's state, if the room is still at the
/// version the change was checked against (compare-and-set).
/// KEYS: m e n s v cfg channel. ARGV: expected version, user ('' = the
/// server), epoch, new member record ('' = none), envelope, number of set
/// pairs N, then N key/value pairs, then the keys to remove.
/// Returns `{-1}` stale member, `{-3}` version moved on, `{-4}` no room, or
/// `{version}`.
pub(crate) static ROOM_UPDATE: LazyLock<Script> = LazyLock::new(|| {
    room_script(
        r#"
if redis.call('EXISTS', cfg) == 0 then return {-4} end
if (redis.call('GET', v) or '0') ~= ARGV[1] then return {-3} end
local user = ARGV[2]
if user ~= '' and redis.call('HGET', e, user) ~= ARGV[3] then return {-1} end
local pairs = tonumber(ARGV[6])
for i = 0, pairs - 1 do
  redis.call('HSET', s, ARGV[7 + 2 * i], ARGV[8 + 2 * i])
end
for i = 7 + 2 * pairs, #ARGV do
  redis.call('HDEL', s, ARGV[i])
end
if ARGV[4] ~= '' then redis.call('HSET', m, user, ARGV[4]) end
local version = redis.call('INCR', v)
redis.call('SPUBLISH', ch, with_version(ARGV[5], version))
return {version}
"#,
    )
});

/// Closes a room. KEYS: m e n s v cfg channel. ARGV: envelope.
/// Returns `{-4}` no room, or `{version, members it had}`.
pub(crate) static ROOM_CLOSE: LazyLock<Script> = LazyLock::new(|| {
    room_script(
        r#"
if redis.call('EXISTS', cfg) == 0 then return {-4} end
local count = redis.call('HLEN', m)
local version = redis.call('INCR', v)
drop_room()
redis.call('SPUBLISH', ch, with_version(ARGV[1], version))
return {version, count}
"#,
    )
});

/// Removes every member a dead node had in a room.
/// KEYS: m e n s v cfg channel. ARGV: dead node, envelope.
/// Returns `{version or 0, members removed}`.
pub(crate) static ROOM_REAP: LazyLock<Script> = LazyLock::new(|| {
    room_script(
        r#"
local all = redis.call('HGETALL', n)
local removed = 0
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then
    redis.call('HDEL', m, all[i])
    redis.call('HDEL', e, all[i])
    redis.call('HDEL', n, all[i])
    removed = removed + 1
  end
end
if removed == 0 then return {0, 0} end
local version = redis.call('INCR', v)
if redis.call('HLEN', m) == 0 then drop_room() end
redis.call('SPUBLISH', ch, with_version(ARGV[2], version))
return {version, removed}
"#,
    )
});

/// Sets (or clears) a user's activity, unless a newer connection of the
/// user set it. KEYS: bucket, bucket:e, bucket:n. ARGV: user, epoch, node,
/// record, offline (1/0). Returns 1 if written.
pub(crate) static ACTIVITY_SET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur and tonumber(cur) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[5] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
end
return 1
"#,
    )
});

/// Clears every activity a dead node had in one bucket.
/// KEYS: bucket, bucket:e, bucket:n. ARGV: dead node. Returns the users.
pub(crate) static ACTIVITY_REAP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local all = redis.call('HGETALL', KEYS[3])
local users = {}
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('HDEL', KEYS[3], all[i])
    users[#users + 1] = all[i]
  end
end
return users
"#,
    )
});

/// Loads every script into Redis (after connecting, so that the first
/// handshakes of a fresh Redis do not each load it).
pub(crate) async fn load_all(
    con: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<()> {
    for script in [
        &*CLAIM,
        &*RELEASE,
        &*ANNOUNCE,
        &*HEARTBEAT,
        &*RELEASE_NODE,
        &*ROOM_JOIN,
        &*ROOM_LEAVE,
        &*ROOM_UPDATE,
        &*ROOM_CLOSE,
        &*ROOM_REAP,
        &*ACTIVITY_SET,
        &*ACTIVITY_REAP,
    ] {
        script.load_async(con).await?;
    }
    Ok(())
}
