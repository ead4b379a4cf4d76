//! Tuning knobs of a [`WsClient`](crate::WsClient), with documented defaults
//! and an `EDK_WS_*` environment mapping.

use std::time::Duration;

/// Options of a [`WsClient`](crate::WsClient).
///
/// Every field has a default (see [`Options::default`]) and an environment
/// variable read by [`Options::from_env`]. Durations in the environment are
/// written like `25s`, `500ms` or `1m`.
///
/// | field | default | environment variable |
/// |---|---|---|
/// | `kick_out_new_user_conn` | `false` | `EDK_WS_KICK_OUT_NEW_USER_CONN` |
/// | `user_id_header` | `x-user-id` | `EDK_WS_USER_ID_HEADER` |
/// | `allowed_origins` | empty (any) | `EDK_WS_ALLOWED_ORIGINS` (comma-separated) |
/// | `max_message_size` | 1 MiB | `EDK_WS_MAX_MESSAGE_SIZE` |
/// | `read_buffer_size` | 4 KiB | `EDK_WS_READ_BUFFER_SIZE` |
/// | `write_buffer_size` | 16 KiB | `EDK_WS_WRITE_BUFFER_SIZE` |
/// | `send_queue_capacity` | 1024 messages | `EDK_WS_SEND_QUEUE_CAPACITY` |
/// | `send_queue_max_bytes` | 4 MiB | `EDK_WS_SEND_QUEUE_MAX_BYTES` |
/// | `ping_interval` | 25 s | `EDK_WS_PING_INTERVAL` |
/// | `idle_timeout` | 60 s | `EDK_WS_IDLE_TIMEOUT` |
/// | `close_timeout` | 5 s | `EDK_WS_CLOSE_TIMEOUT` |
/// | `max_rooms_per_connection` | 128 | `EDK_WS_MAX_ROOMS_PER_CONNECTION` |
/// | `max_members_per_room` | 0 (no limit) | `EDK_WS_MAX_MEMBERS_PER_ROOM` |
/// | `max_state_keys` | 64 | `EDK_WS_MAX_STATE_KEYS` |
/// | `max_state_bytes` | 16 KiB | `EDK_WS_MAX_STATE_BYTES` |
/// | `room_member_events` | `true` | `EDK_WS_ROOM_MEMBER_EVENTS` |
/// | `room_publish_echo` | `false` | `EDK_WS_ROOM_PUBLISH_ECHO` |
/// | `room_member_events_batch_above` | 64 | `EDK_WS_ROOM_MEMBER_EVENTS_BATCH_ABOVE` |
/// | `event_batch_interval` | 100 ms | `EDK_WS_EVENT_BATCH_INTERVAL` |
/// | `online_activities_disabled` | `false` | `SERVER_ONLINE_ACTIVITIES_DISABLED` |
/// | `max_requests_per_second` | 200 | `EDK_WS_MAX_REQUESTS_PER_SECOND` |
///
/// ```
/// use std::time::Duration;
/// let opts = edk_ws::Options {
///     kick_out_new_user_conn: true,
///     idle_timeout: Duration::from_secs(30),
///     ..Default::default()
/// };
/// assert_eq!(opts.ping_interval, Duration::from_secs(25));
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    /// `false`: a new connection of a user replaces the old one, which is
    /// closed with 4001. `true`: the new connection is refused with HTTP 409
    /// and the old one is left alone.
    pub kick_out_new_user_conn: bool,
    /// The request header that carries the (gateway-verified) user id.
    pub user_id_header: String,
    /// Allowed `Origin` values (exact match, e.g. `https://app.example.com`).
    /// Empty allows every origin, and requests without `Origin`. When not
    /// empty, a request whose `Origin` is missing or not listed gets 403.
    pub allowed_origins: Vec<String>,
    /// Largest message (and frame) a client may send, in bytes. Larger ones
    /// close the connection with 1009.
    pub max_message_size: usize,
    /// Read buffer allocated per connection, in bytes.
    pub read_buffer_size: usize,
    /// Outgoing bytes buffered before a write is forced, in bytes.
    pub write_buffer_size: usize,
    /// Messages that may wait in one connection's send queue. One more and
    /// the connection is closed with 4003 (slow consumer).
    pub send_queue_capacity: usize,
    /// Bytes that may wait in one connection's send queue (same rule).
    pub send_queue_max_bytes: usize,
    /// How often the server pings each connection.
    pub ping_interval: Duration,
    /// A connection from which nothing (no frame, no pong) arrived for this
    /// long is closed with 4000.
    pub idle_timeout: Duration,
    /// How long a closing connection may take to answer our close frame (or
    /// to take the bytes queued before it) before the socket is dropped.
    pub close_timeout: Duration,
    /// Rooms one connection may be in at once (`TOO_MANY_ROOMS` beyond).
    pub max_rooms_per_connection: usize,
    /// Members one room may have (`ROOM_FULL` beyond); 0 means no limit.
    pub max_members_per_room: usize,
    /// Keys one state map (a room's, or a member's) may hold.
    pub max_state_keys: usize,
    /// Bytes (keys plus values) one state map may hold.
    pub max_state_bytes: usize,
    /// Whether members get `MemberChanged` when others join or leave (a room
    /// policy can change it per room).
    pub room_member_events: bool,
    /// Whether a room publish is also delivered back to its sender.
    pub room_publish_echo: bool,
    /// Rooms with more members than this get their member events coalesced
    /// into one `MemberChanges` per member per `event_batch_interval`.
    pub room_member_events_batch_above: usize,
    /// The batch window of activity changes (and of large rooms' member
    /// events): each recipient gets at most one frame per window.
    pub event_batch_interval: Duration,
    /// Activities off: `SetActivity` gets `ACTIVITIES_DISABLED`, nothing
    /// propagates, every user appears offline. Env:
    /// `SERVER_ONLINE_ACTIVITIES_DISABLED` (exact name).
    pub online_activities_disabled: bool,
    /// Module requests (control verbs and room publishes) one connection may
    /// make per second, with bursts of twice that; beyond, `RATE_LIMITED`.
    pub max_requests_per_second: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kick_out_new_user_conn: false,
            user_id_header: "x-user-id".to_owned(),
            allowed_origins: Vec::new(),
            max_message_size: 1 << 20,
            read_buffer_size: 4 << 10,
            write_buffer_size: 16 << 10,
            send_queue_capacity: 1024,
            send_queue_max_bytes: 4 << 20,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(5),
            max_rooms_per_connection: 128,
            max_members_per_room: 0,
            max_state_keys: 64,
            max_state_bytes: 16 << 10,
            room_member_events: true,
            room_publish_echo: false,
            room_member_events_batch_above: 64,
            event_batch_interval: Duration::from_millis(100),
            online_activities_disabled: false,
            max_requests_per_second: 200,
        }
    }
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
        self
    }
}

/// A bad value in an `EDK_WS_*` environment variable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {var}={value:?} is invalid: {reason}")]
pub struct OptionsError {
    /// The variable's name.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Options {
    /// Defaults overridden by every `EDK_WS_*` variable that is set (see the
    /// table on [`Options`]). A value that does not parse is an error naming
    /// the variable, never a silent default.
    pub fn from_env() -> Result<Self, OptionsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Options::from_env`], reading variables through `get` (handy in
    /// tests and for other configuration sources).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, OptionsError> {
        let mut o = Options::default();
        let r = Reader { get: &get };
        r.bool(
            "EDK_WS_KICK_OUT_NEW_USER_CONN",
            &mut o.kick_out_new_user_conn,
        )?;
        if let Some(v) = r.raw("EDK_WS_USER_ID_HEADER") {
            if http::HeaderName::from_bytes(v.as_bytes()).is_err() {
                return Err(err("EDK_WS_USER_ID_HEADER", &v, "not a header name"));
            }
            o.user_id_header = v.to_ascii_lowercase();
        }
        if let Some(v) = r.raw("EDK_WS_ALLOWED_ORIGINS") {
            o.allowed_origins = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        r.size("EDK_WS_MAX_MESSAGE_SIZE", &mut o.max_message_size)?;
        r.size("EDK_WS_READ_BUFFER_SIZE", &mut o.read_buffer_size)?;
        r.size("EDK_WS_WRITE_BUFFER_SIZE", &mut o.write_buffer_size)?;
        r.size("EDK_WS_SEND_QUEUE_CAPACITY", &mut o.send_queue_capacity)?;
        r.size("EDK_WS_SEND_QUEUE_MAX_BYTES", &mut o.send_queue_max_bytes)?;
        r.duration("EDK_WS_PING_INTERVAL", &mut o.ping_interval)?;
        r.duration("EDK_WS_IDLE_TIMEOUT", &mut o.idle_timeout)?;
        r.duration("EDK_WS_CLOSE_TIMEOUT", &mut o.close_timeout)?;
        r.size(
            "EDK_WS_MAX_ROOMS_PER_CONNECTION",
            &mut o.max_rooms_per_connection,
        )?;
        r.size_or_zero("EDK_WS_MAX_MEMBERS_PER_ROOM", &mut o.max_members_per_room)?;
        r.size("EDK_WS_MAX_STATE_KEYS", &mut o.max_state_keys)?;
        r.size("EDK_WS_MAX_STATE_BYTES", &mut o.max_state_bytes)?;
        r.bool("EDK_WS_ROOM_MEMBER_EVENTS", &mut o.room_member_events)?;
        r.bool("EDK_WS_ROOM_PUBLISH_ECHO", &mut o.room_publish_echo)?;
        r.size_or_zero(
            "EDK_WS_ROOM_MEMBER_EVENTS_BATCH_ABOVE",
            &mut o.room_member_events_batch_above,
        )?;
        r.duration("EDK_WS_EVENT_BATCH_INTERVAL", &mut o.event_batch_interval)?;
        r.bool(
            "SERVER_ONLINE_ACTIVITIES_DISABLED",
            &mut o.online_activities_disabled,
        )?;
        let mut rps = o.max_requests_per_second as usize;
        r.size("EDK_WS_MAX_REQUESTS_PER_SECOND", &mut rps)?;
        o.max_requests_per_second = rps.min(u32::MAX as usize) as u32;
        Ok(o)
    }
}

fn err(var: &'static str, value: &str, reason: &str) -> OptionsError {
    OptionsError {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

struct Reader<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Reader<'_> {
    fn raw(&self, var: &str) -> Option<String> {
        (self.get)(var).map(|v| v.trim().to_owned())
    }

    fn bool(&self, var: &'static str, out: &mut bool) -> Result<(), OptionsError> {
        if let Some(v) = self.raw(var) {
            *out = parse_bool(&v).ok_or_else(|| err(var, &v, "expected true or false"))?;
        }
        Ok(())
    }

    fn size(&self, var: &'static str, out: &mut usize) -> Result<(), OptionsError> {
        if let Some(v) = self.raw(var) {
            match v.parse::<usize>() {
                Ok(n) if n > 0 => *out = n,
                _ => return Err(err(var, &v, "expected a positive integer")),
            }
        }
        Ok(())
    }

    fn size_or_zero(&self, var: &'static str, out: &mut usize) -> Result<(), OptionsError> {
        if let Some(v) = self.raw(var) {
            *out = v
                .parse::<usize>()
                .map_err(|_| err(var, &v, "expected a non-negative integer"))?;
        }
        Ok(())
    }

    fn duration(&self, var: &'static str, out: &mut Duration) -> Result<(), OptionsError> {
        if let Some(v) = self.raw(var) {
            match humantime::parse_duration(&v) {
                Ok(d) if !d.is_zero() => *out = d,
                Ok(_) => return Err(err(var, &v, "must be greater than zero")),
                Err(e) => return Err(err(var, &v, &format!("expected a duration like 25s: {e}"))),
            }
        }
        Ok(())
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
        ])
        .unwrap();
        assert!(o.kick_out_new_user_conn);
        assert_eq!(o.ping_interval, Duration::from_millis(500));
        assert_eq!(
            o.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(o.send_queue_capacity, 8);
        assert!(o.online_activities_disabled);
        assert_eq!(o.max_members_per_room, 0);
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
    }
}
