//! Tuning knobs of a [`WsClient`](crate::WsClient), with documented defaults
//! and an `EDK_WS_*` environment mapping.
//!
//! Every option is declared once, in the `options!` table below: its field,
//! its `with_*` setter, its default, its environment variable and how that
//! variable is parsed. The struct, `Default`, the setters and
//! [`Options::from_env`] are generated from that one table, so they cannot
//! drift apart.

use std::time::Duration;

/// A bad value in an `EDK_WS_*` environment variable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {var}={value:?} is invalid: {reason}")]
#[non_exhaustive]
pub struct OptionsError {
    /// The variable's name.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

macro_rules! options {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident, $setter:ident: $ty:ty = $default:expr, $env:literal via $parse:ident;
    )*) => {
        /// Options of a [`WsClient`](crate::WsClient).
        ///
        /// Every field has a default (see the README's "Options" table), a
        /// `with_*` setter and an environment variable read by
        /// [`Options::from_env`]. Durations in the environment are written
        /// like `25s`, `500ms` or `1m`.
        ///
        /// ```
        /// use std::time::Duration;
        /// let opts = edk_ws::Options::default()
        ///     .with_kick_out_new_user_conn(true)
        ///     .with_idle_timeout(Duration::from_secs(30));
        /// assert_eq!(opts.ping_interval, Duration::from_secs(25));
        /// ```
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        pub struct Options {
            $(
                $(#[doc = $doc])*
                #[doc = concat!("\n\nEnvironment: `", $env, "`.")]
                pub $name: $ty,
            )*
        }

        impl Default for Options {
            fn default() -> Self {
                Options { $($name: $default,)* }
            }
        }

        impl Options {
            $(
                #[doc = concat!("Sets [`", stringify!($name), "`](Options::", stringify!($name), ").")]
                #[must_use]
                pub fn $setter(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*

            /// Every option's environment variable.
            #[cfg(test)]
            pub(crate) const ENV_VARS: &'static [&'static str] = &[$($env),*];

            fn read_env(&mut self, get: &dyn Fn(&str) -> Option<String>) -> Result<(), OptionsError> {
                $(
                    if let Some(v) = get($env) {
                        let v = v.trim();
                        self.$name = parse::$parse(v).map_err(|reason| OptionsError {
                            var: $env,
                            value: v.to_owned(),
                            reason,
                        })?;
                    }
                )*
                Ok(())
            }
        }
    };
}

options! {
    /// `false`: a new connection of a user replaces the old one, which is
    /// closed with 4001. `true`: the new connection is refused with HTTP 409
    /// and the old one is left alone.
    kick_out_new_user_conn, with_kick_out_new_user_conn: bool = false,
        "EDK_WS_KICK_OUT_NEW_USER_CONN" via boolean;
    /// The request header that carries the (gateway-verified) user id.
    user_id_header, with_user_id_header: String = "x-user-id".to_owned(),
        "EDK_WS_USER_ID_HEADER" via header_name;
    /// Allowed `Origin` values (exact match, e.g. `https://app.example.com`).
    /// Empty allows every origin, and requests without `Origin`. When not
    /// empty, a request whose `Origin` is missing or not listed gets 403.
    /// Comma-separated in the environment.
    allowed_origins, with_allowed_origins: Vec<String> = Vec::new(),
        "EDK_WS_ALLOWED_ORIGINS" via list;
    /// Largest message (and frame) a client may send, in bytes. Larger ones
    /// close the connection with 1009.
    max_message_size, with_max_message_size: usize = 1 << 20,
        "EDK_WS_MAX_MESSAGE_SIZE" via size;
    /// The largest read from the socket into the reader's stack buffer, in
    /// bytes (at most 4 KiB is used; nothing is allocated per connection
    /// for it: only an unfinished frame is kept on the heap, see `io/`).
    read_buffer_size, with_read_buffer_size: usize = 4 << 10,
        "EDK_WS_READ_BUFFER_SIZE" via size;
    /// Outgoing bytes buffered before a write is forced, in bytes.
    write_buffer_size, with_write_buffer_size: usize = 16 << 10,
        "EDK_WS_WRITE_BUFFER_SIZE" via size;
    /// Messages that may wait in one connection's send queue. A queue over
    /// it for longer than `slow_consumer_grace` is closed with 4003 (slow
    /// consumer); see also `send_queue_hard_capacity`.
    send_queue_capacity, with_send_queue_capacity: usize = 1024,
        "EDK_WS_SEND_QUEUE_CAPACITY" via size;
    /// Bytes that may wait in one connection's send queue (same rule; see
    /// also `send_queue_hard_max_bytes`). A single message larger than this
    /// is refused (`SendError::TooLarge`).
    send_queue_max_bytes, with_send_queue_max_bytes: usize = 4 << 20,
        "EDK_WS_SEND_QUEUE_MAX_BYTES" via size;
    /// How often the server pings each connection.
    ping_interval, with_ping_interval: Duration = Duration::from_secs(25),
        "EDK_WS_PING_INTERVAL" via duration;
    /// A connection from which nothing (no frame, no pong) arrived for this
    /// long is closed with 4000.
    idle_timeout, with_idle_timeout: Duration = Duration::from_secs(60),
        "EDK_WS_IDLE_TIMEOUT" via duration;
    /// How long a closing connection may take to answer our close frame (or
    /// to take the bytes queued before it) before the socket is dropped.
    close_timeout, with_close_timeout: Duration = Duration::from_secs(5),
        "EDK_WS_CLOSE_TIMEOUT" via duration;
    /// Rooms one connection may be in at once (`TOO_MANY_ROOMS` beyond).
    max_rooms_per_connection, with_max_rooms_per_connection: usize = 128,
        "EDK_WS_MAX_ROOMS_PER_CONNECTION" via size;
    /// Members one room may have (`ROOM_FULL` beyond); 0 means no limit.
    max_members_per_room, with_max_members_per_room: usize = 0,
        "EDK_WS_MAX_MEMBERS_PER_ROOM" via size_or_zero;
    /// Keys one state map (a room's, or a member's) may hold.
    max_state_keys, with_max_state_keys: usize = 64,
        "EDK_WS_MAX_STATE_KEYS" via size;
    /// Bytes (keys plus values) one state map may hold.
    max_state_bytes, with_max_state_bytes: usize = 16 << 10,
        "EDK_WS_MAX_STATE_BYTES" via size;
    /// Whether members get `MemberChanged` when others join or leave (a room
    /// policy can change it per room).
    room_member_events, with_room_member_events: bool = true,
        "EDK_WS_ROOM_MEMBER_EVENTS" via boolean;
    /// Whether a room publish is also delivered back to its sender.
    room_publish_echo, with_room_publish_echo: bool = false,
        "EDK_WS_ROOM_PUBLISH_ECHO" via boolean;
    /// Rooms with more members than this get their member events coalesced
    /// into one `MemberChanges` per member per `event_batch_interval`.
    room_member_events_batch_above, with_room_member_events_batch_above: usize = 64,
        "EDK_WS_ROOM_MEMBER_EVENTS_BATCH_ABOVE" via size_or_zero;
    /// The batch window of activity changes (and of large rooms' member
    /// events): each recipient gets at most one frame per window.
    event_batch_interval, with_event_batch_interval: Duration = Duration::from_millis(100),
        "EDK_WS_EVENT_BATCH_INTERVAL" via duration;
    /// Activities off: `SetActivity` gets `ACTIVITIES_DISABLED`, nothing
    /// propagates, every user appears offline. The variable's name has no
    /// `EDK_WS_` prefix (it is the Go module's).
    online_activities_disabled, with_online_activities_disabled: bool = false,
        "SERVER_ONLINE_ACTIVITIES_DISABLED" via boolean;
    /// Module requests (control verbs and room publishes) one connection may
    /// make per second, with bursts of twice that; beyond, `RATE_LIMITED`.
    max_requests_per_second, with_max_requests_per_second: u32 = 200,
        "EDK_WS_MAX_REQUESTS_PER_SECOND" via positive_u32;
    /// Most entries in one `Members` or `Activities` reply page
    /// (`ListMembers`/`ListActivities` with `limit` 0 or above it).
    max_list_page_size, with_max_list_page_size: usize = 100,
        "EDK_WS_MAX_LIST_PAGE_SIZE" via size;

    // --- scale-out (issue 9) ---
    /// Redis that several instances share to behave as one server
    /// (`redis://[user:pass@]host:port[/db]`, or `rediss://` for TLS).
    /// `None`: this process alone (the in-process local backplane). Read by
    /// [`WsClient::connect`](crate::WsClient::connect).
    redis_url, with_redis_url: Option<String> = None,
        "EDK_WS_REDIS_URL" via optional_string;
    /// This instance's id in the cluster; `None`: unique per process
    /// (host name, pid and a random suffix).
    node_id, with_node_id: Option<String> = None,
        "EDK_WS_NODE_ID" via optional_string;
    /// Prefix of every Redis key and channel (several deployments can share
    /// one Redis with different prefixes).
    redis_prefix, with_redis_prefix: String = "edk".to_owned(),
        "EDK_WS_REDIS_PREFIX" via nonempty_string;
    /// How long any one Redis call may take before it fails (and the
    /// backplane is marked down): cross-node operations never hang longer.
    redis_timeout, with_redis_timeout: Duration = Duration::from_millis(250),
        "EDK_WS_REDIS_TIMEOUT" via duration;
    /// A node that has not renewed its lease for this long is dead: its
    /// users, memberships and activities are cleaned by a surviving node.
    /// Leases are renewed every fifth of it.
    node_lease, with_node_lease: Duration = Duration::from_secs(10),
        "EDK_WS_NODE_LEASE" via duration;
    /// While Redis is unreachable, new handshakes are refused with 503
    /// (`false`, the default: one connection per user cannot be checked
    /// cluster-wide), or admitted on this node alone (`true`).
    redis_admit_when_down, with_redis_admit_when_down: bool = false,
        "EDK_WS_REDIS_ADMIT_WHEN_DOWN" via boolean;

    // operability (issue 12)
    /// The path the endpoint is mounted at, as its AsyncAPI document
    /// (`WsClient::asyncapi`) states it. The module does not route by it:
    /// mount `handler()` at the same path.
    mount_path, with_mount_path: String = "/ws".to_owned(),
        "EDK_WS_MOUNT_PATH" via path;
    /// The `namespace` label of this endpoint's Prometheus metrics (two
    /// endpoints in one registry differ by it). Empty: the mount path
    /// without its slashes (`/lobby` → `lobby`, `/` → `root`).
    metrics_namespace, with_metrics_namespace: String = String::new(),
        "EDK_WS_METRICS_NAMESPACE" via label_value;

    // browsers (issue 11)
    /// `true`: a request *without* the user id header is identified by its
    /// token (for [`JwtAuthenticator`](crate::JwtAuthenticator): the verified
    /// token's `sub`), so that browsers, which cannot set headers on a
    /// WebSocket, can connect directly. A request *with* the header is
    /// checked as always (the token must be issued to that user). `false`
    /// (the gateway setting): no header → 401. See the security notes of
    /// [`AuthRequest::user_id`](crate::AuthRequest::user_id).
    user_id_from_token, with_user_id_from_token: bool = false,
        "EDK_WS_USER_ID_FROM_TOKEN" via boolean;
    /// This endpoint's name in the log (the `ns` field of its connection
    /// spans and handshake refusals), to tell two `WsClient`s of one process
    /// apart, e.g. `lobby`. Empty: no `ns` field.
    name, with_name: String = String::new(),
        "EDK_WS_NAME" via text;

    // hardening (issue 10)
    /// Under [`serve`](crate::serve): how long a new connection may take,
    /// from accept, to send a complete request head and be upgraded. A
    /// connection that is still sending its head (or silent) is closed at
    /// once; one whose request the application is still answering is
    /// closed when that answer is sent, and no longer counts as pending.
    /// Also the idle limit of keep-alive HTTP connections.
    handshake_timeout, with_handshake_timeout: Duration = Duration::from_secs(10),
        "EDK_WS_HANDSHAKE_TIMEOUT" via duration;
    /// Under [`serve`](crate::serve): the most bytes of one request head
    /// (request line and headers) read before it is complete; a larger head
    /// gets 431. At least 8 KiB (hyper's minimum).
    max_header_bytes, with_max_header_bytes: usize = 16 << 10,
        "EDK_WS_MAX_HEADER_BYTES" via size;
    /// Under [`serve`](crate::serve): connections accepted and not yet
    /// upgraded (nor past `handshake_timeout`), in all. One more is
    /// answered 503 and closed at once.
    max_pending_handshakes, with_max_pending_handshakes: usize = 4096,
        "EDK_WS_MAX_PENDING_HANDSHAKES" via size;
    /// Under [`serve`](crate::serve): the same, per source address (an
    /// IPv6 address counts with its whole /64), so one address cannot take
    /// every slot. Behind a gateway every connection comes from the
    /// gateway's address: raise it to `max_pending_handshakes` there.
    max_pending_handshakes_per_ip, with_max_pending_handshakes_per_ip: usize = 256,
        "EDK_WS_MAX_PENDING_HANDSHAKES_PER_IP" via size;
    /// Entries one message's `metadata` may have. More close the connection
    /// with 1009, before the message is decoded.
    max_metadata_entries, with_max_metadata_entries: usize = 64,
        "EDK_WS_MAX_METADATA_ENTRIES" via size_or_zero;
    /// Bytes one message's `metadata` may take, as encoded (keys, values
    /// and 2–4 bytes of framing per entry). More close with 1009.
    max_metadata_bytes, with_max_metadata_bytes: usize = 16 << 10,
        "EDK_WS_MAX_METADATA_BYTES" via size_or_zero;
    /// Messages (of any kind) one connection may send per second, on
    /// average; see `inbound_messages_burst`. Beyond the budget a module
    /// request or a message with an `id` gets `Error RATE_LIMITED`, any
    /// other message is dropped; both are counted.
    max_inbound_messages_per_second, with_max_inbound_messages_per_second: u32 = 10_000,
        "EDK_WS_MAX_INBOUND_MESSAGES_PER_SECOND" via positive_u32;
    /// Messages one connection may send at once, above the average.
    inbound_messages_burst, with_inbound_messages_burst: u32 = 20_000,
        "EDK_WS_INBOUND_MESSAGES_BURST" via positive_u32;
    /// Bytes of binary frames one connection may send per second, on
    /// average (same answer as the message budget).
    max_inbound_bytes_per_second, with_max_inbound_bytes_per_second: u32 = 2 << 20,
        "EDK_WS_MAX_INBOUND_BYTES_PER_SECOND" via positive_u32;
    /// Bytes one connection may send at once, above the average (raised to
    /// `max_message_size`, so that one largest message always fits).
    inbound_bytes_burst, with_inbound_bytes_burst: u32 = 8 << 20,
        "EDK_WS_INBOUND_BYTES_BURST" via positive_u32;
    /// A send queue over `send_queue_capacity` messages or
    /// `send_queue_max_bytes` bytes (counting what its writer is still
    /// writing) for longer than this is a slow consumer: closed with 4003.
    /// A client that reads is allowed to be behind a burst.
    slow_consumer_grace, with_slow_consumer_grace: Duration = Duration::from_secs(5),
        "EDK_WS_SLOW_CONSUMER_GRACE" via duration;
    /// Messages a send queue may hold at all (raised to
    /// `send_queue_capacity`): one more closes with 4003 at once.
    send_queue_hard_capacity, with_send_queue_hard_capacity: usize = 4096,
        "EDK_WS_SEND_QUEUE_HARD_CAPACITY" via size;
    /// Bytes a send queue may hold at all (raised to
    /// `send_queue_max_bytes`): more closes with 4003 at once.
    send_queue_hard_max_bytes, with_send_queue_hard_max_bytes: usize = 16 << 20,
        "EDK_WS_SEND_QUEUE_HARD_MAX_BYTES" via size;
}

impl Options {
    /// Durations clamped to 1 ms – 1 day (a zero interval would panic the
    /// timer, a huge one overflow it), sizes to at least 1.
    pub(crate) fn sanitized(mut self) -> Self {
        let clamp = |d: Duration| d.clamp(Duration::from_millis(1), Duration::from_secs(86_400));
        self.ping_interval = clamp(self.ping_interval);
        self.idle_timeout = clamp(self.idle_timeout);
        self.close_timeout = clamp(self.close_timeout);
        self.event_batch_interval = clamp(self.event_batch_interval);
        self.max_message_size = self.max_message_size.max(1);
        self.read_buffer_size = self.read_buffer_size.max(1);
        self.write_buffer_size = self.write_buffer_size.max(1);
        self.send_queue_capacity = self.send_queue_capacity.max(1);
        self.send_queue_max_bytes = self.send_queue_max_bytes.max(1);
        self.max_list_page_size = self.max_list_page_size.max(1);
        self.redis_timeout = clamp(self.redis_timeout);
        self.node_lease = self
            .node_lease
            .clamp(Duration::from_millis(500), Duration::from_secs(3600));
        // hardening (issue 10)
        self.handshake_timeout = clamp(self.handshake_timeout);
        self.slow_consumer_grace = clamp(self.slow_consumer_grace);
        self.max_header_bytes = self.max_header_bytes.max(8 << 10);
        self.max_pending_handshakes = self.max_pending_handshakes.max(1);
        self.max_pending_handshakes_per_ip = self.max_pending_handshakes_per_ip.max(1);
        self.max_inbound_messages_per_second = self.max_inbound_messages_per_second.max(1);
        self.inbound_messages_burst = self.inbound_messages_burst.max(1);
        self.max_inbound_bytes_per_second = self.max_inbound_bytes_per_second.max(1);
        let largest = u32::try_from(self.max_message_size).unwrap_or(u32::MAX);
        self.inbound_bytes_burst = self.inbound_bytes_burst.max(largest);
        self.send_queue_hard_capacity = self.send_queue_hard_capacity.max(self.send_queue_capacity);
        self.send_queue_hard_max_bytes = self
            .send_queue_hard_max_bytes
            .max(self.send_queue_max_bytes);
        self
    }

    /// Defaults overridden by every `EDK_WS_*` variable that is set (see the
    /// README's "Options" table).
    ///
    /// # Errors
    ///
    /// A value that does not parse is an [`OptionsError`] naming the
    /// variable, never a silent default.
    pub fn from_env() -> Result<Self, OptionsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Options::from_env`], reading variables through `get` (handy in
    /// tests and for other configuration sources).
    ///
    /// # Errors
    ///
    /// As [`Options::from_env`].
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, OptionsError> {
        let mut o = Options::default();
        o.read_env(&get)?;
        Ok(o)
    }
}

/// How each kind of variable is parsed; `Err` is the reason shown.
mod parse {
    use std::time::Duration;

    pub fn boolean(v: &str) -> Result<bool, String> {
        super::parse_bool(v).ok_or_else(|| "expected true or false".to_owned())
    }

    pub fn size(v: &str) -> Result<usize, String> {
        match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err("expected a positive integer".to_owned()),
        }
    }

    pub fn size_or_zero(v: &str) -> Result<usize, String> {
        v.parse::<usize>()
            .map_err(|_| "expected a non-negative integer".to_owned())
    }

    pub fn positive_u32(v: &str) -> Result<u32, String> {
        match v.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("expected an integer from 1 to {}", u32::MAX)),
        }
    }

    pub fn duration(v: &str) -> Result<Duration, String> {
        match humantime::parse_duration(v) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err("must be greater than zero".to_owned()),
            Err(e) => Err(format!("expected a duration like 25s: {e}")),
        }
    }

    pub fn header_name(v: &str) -> Result<String, String> {
        http::HeaderName::from_bytes(v.as_bytes())
            .map(|_| v.to_ascii_lowercase())
            .map_err(|_| "not a header name".to_owned())
    }

    pub fn optional_string(v: &str) -> Result<Option<String>, String> {
        Ok((!v.is_empty()).then(|| v.to_owned()))
    }

    pub fn nonempty_string(v: &str) -> Result<String, String> {
        match v {
            "" => Err("must not be empty".to_owned()),
            v => Ok(v.to_owned()),
        }
    }

    pub fn path(v: &str) -> Result<String, String> {
        match v.starts_with('/') && !v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            true => Ok(v.to_owned()),
            false => Err("expected a path starting with /".to_owned()),
        }
    }

    pub fn label_value(v: &str) -> Result<String, String> {
        match v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            true => Ok(v.to_owned()),
            false => Err("expected letters, digits, '_' or '-'".to_owned()),
        }
    }

    pub fn text(v: &str) -> Result<String, String> {
        Ok(v.to_owned())
    }

    pub fn list(v: &str) -> Result<Vec<String>, String> {
        Ok(v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect())
    }
}

/// Parses the boolean spellings accepted in `EDK_WS_*` (and related) variables:
/// `true/false`, `1/0`, `yes/no`, `on/off`, any case.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Options, OptionsError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn env_overrides_defaults() {
        let o = from(&[
            ("EDK_WS_KICK_OUT_NEW_USER_CONN", "true"),
            ("EDK_WS_PING_INTERVAL", "500ms"),
            (
                "EDK_WS_ALLOWED_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("EDK_WS_SEND_QUEUE_CAPACITY", "8"),
            ("SERVER_ONLINE_ACTIVITIES_DISABLED", "true"),
            ("EDK_WS_MAX_MEMBERS_PER_ROOM", "0"),
            ("EDK_WS_USER_ID_HEADER", "X-Gateway-User"),
            ("EDK_WS_USER_ID_FROM_TOKEN", "yes"),
            ("EDK_WS_NAME", " lobby "),
        ])
        .unwrap();
        assert!(o.user_id_from_token);
        assert_eq!(o.name, "lobby");
        assert!(o.kick_out_new_user_conn);
        assert_eq!(o.ping_interval, Duration::from_millis(500));
        assert_eq!(
            o.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(o.send_queue_capacity, 8);
        assert!(o.online_activities_disabled);
        assert_eq!(o.max_members_per_room, 0);
        assert_eq!(o.user_id_header, "x-gateway-user");
        assert_eq!(o.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = from(&[("EDK_WS_KICK_OUT_NEW_USER_CONN", "maybe")]).unwrap_err();
        assert_eq!(e.var, "EDK_WS_KICK_OUT_NEW_USER_CONN");
        assert!(e.to_string().contains("EDK_WS_KICK_OUT_NEW_USER_CONN"));
        let e = from(&[("EDK_WS_IDLE_TIMEOUT", "soon")]).unwrap_err();
        assert_eq!(e.var, "EDK_WS_IDLE_TIMEOUT");
        let e = from(&[("EDK_WS_MAX_MESSAGE_SIZE", "-1")]).unwrap_err();
        assert_eq!(e.var, "EDK_WS_MAX_MESSAGE_SIZE");
        let e = from(&[("EDK_WS_USER_ID_HEADER", "not a header")]).unwrap_err();
        assert_eq!(e.var, "EDK_WS_USER_ID_HEADER");
    }

    /// The README's options table lists every variable, so the two cannot
    /// drift apart.
    #[test]
    fn readme_lists_every_variable() {
        let readme = include_str!("../README.md");
        for var in Options::ENV_VARS {
            assert!(readme.contains(&format!("`{var}`")), "README lacks {var}");
        }
    }
}
