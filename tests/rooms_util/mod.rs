//! Helpers shared by tests/rooms.rs and tests/presence.rs: request builders,
//! reply assertions, a client wrapper that keeps frames it was not looking
//! for (so a later wait still sees them, in order), markers, and a server
//! with two separate `WsClient`s mounted at /layout and /lobby.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use edk_ws::proto::error::Code;
use edk_ws::proto::message::Control;
use edk_ws::proto::{
    Activities, Activity, Join, Leave, ListActivities, ListMembers, MemberChanged, MemberChanges,
    Members, SetActivity, StateChanged, UpdateState,
};
use edk_ws::{JwtAuthenticator, Message, Options, Status, WsClient};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use warp::Filter;

use crate::common::*;

/// The `type` of marker messages.
pub const MARKER: &str = "marker";

/// A state map from pairs.
pub fn state(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn ctl(id: &str, c: Control) -> Message {
    Message {
        id: id.into(),
        control: Some(c),
        ..Default::default()
    }
}

pub fn join_req(id: &str, room: &str, st: &[(&str, &str)]) -> Message {
    ctl(
        id,
        Control::Join(Join {
            room: room.into(),
            state: state(st),
        }),
    )
}

pub fn leave_req(id: &str, room: &str) -> Message {
    ctl(id, Control::Leave(Leave { room: room.into() }))
}

pub fn list_req(id: &str, room: &str) -> Message {
    ctl(
        id,
        Control::ListMembers(ListMembers {
            room: room.into(),
            ..Default::default()
        }),
    )
}

pub fn update_req(id: &str, u: UpdateState) -> Message {
    ctl(id, Control::UpdateState(u))
}

pub fn publish_req(id: &str, room: &str, ty: &str, payload: &[u8]) -> Message {
    let mut m = msg(id, ty, payload);
    m.room = room.into();
    m
}

pub fn set_activity_req(id: &str, status: Status, detail: &str) -> Message {
    ctl(
        id,
        Control::SetActivity(SetActivity {
            status: status as i32,
            detail: detail.into(),
        }),
    )
}

pub fn list_activities_req(id: &str) -> Message {
    ctl(id, Control::ListActivities(ListActivities::default()))
}

/// A marker message (type [`MARKER`], payload `tag`), sent by the server.
pub fn marker(tag: &str) -> Message {
    msg("", MARKER, tag.as_bytes())
}

pub fn is_marker(m: &Message) -> bool {
    m.control.is_none() && m.r#type == MARKER
}

/// Whether `m` is a reply (Ack, Error, Members or Activities with an id).
pub fn is_reply(m: &Message) -> bool {
    !m.id.is_empty()
        && matches!(
            m.control,
            Some(
                Control::Ack(_) | Control::Error(_) | Control::Members(_) | Control::Activities(_)
            )
        )
}

pub fn error_code(m: &Message) -> Option<Code> {
    match &m.control {
        Some(Control::Error(e)) => {
            Some(Code::try_from(e.code).unwrap_or_else(|_| panic!("unknown error code in {m:?}")))
        }
        _ => None,
    }
}

#[track_caller]
pub fn assert_ack(m: &Message) {
    assert!(
        matches!(m.control, Some(Control::Ack(_))),
        "expected Ack, got {m:?}"
    );
}

#[track_caller]
pub fn assert_error(m: &Message, code: Code) {
    assert_eq!(
        error_code(m),
        Some(code),
        "expected Error {code:?}, got {m:?}"
    );
}

pub fn member_changed(m: &Message) -> Option<&MemberChanged> {
    match &m.control {
        Some(Control::MemberChanged(c)) => Some(c),
        _ => None,
    }
}

pub fn member_changes(m: &Message) -> Option<&MemberChanges> {
    match &m.control {
        Some(Control::MemberChanges(c)) => Some(c),
        _ => None,
    }
}

pub fn state_changed(m: &Message) -> Option<&StateChanged> {
    match &m.control {
        Some(Control::StateChanged(c)) => Some(c),
        _ => None,
    }
}

pub fn members_reply(m: &Message) -> &Members {
    match &m.control {
        Some(Control::Members(ms)) => ms,
        _ => panic!("expected Members, got {m:?}"),
    }
}

pub fn activities(m: &Message) -> Option<&Activities> {
    match &m.control {
        Some(Control::Activities(a)) => Some(a),
        _ => None,
    }
}

/// The activity of `user` in an Activities frame, if any.
pub fn activity_of<'a>(m: &'a Message, user: &str) -> Option<&'a Activity> {
    activities(m)?.activities.iter().find(|a| a.user_id == user)
}

pub fn status_of(a: &Activity) -> Status {
    Status::try_from(a.status).unwrap_or_else(|_| panic!("unknown status in {a:?}"))
}

/// Members of a `Members` reply, as user → state.
pub fn member_map(ms: &Members) -> HashMap<String, HashMap<String, String>> {
    ms.members
        .iter()
        .map(|m| (m.user_id.clone(), m.state.clone()))
        .collect()
}

/// A test client: a real WebSocket plus the frames read but not yet
/// consumed (kept in arrival order).
pub struct Peer {
    pub user: String,
    pub ws: Ws,
    stash: VecDeque<Message>,
    seq: u32,
}

impl Peer {
    pub async fn connect(srv: &TestServer, user: &str) -> Peer {
        Peer::new(user, srv.connect(user).await)
    }

    pub fn new(user: &str, ws: Ws) -> Peer {
        Peer {
            user: user.into(),
            ws,
            stash: VecDeque::new(),
            seq: 0,
        }
    }

    /// A fresh request id, unique for this peer.
    pub fn next_id(&mut self) -> String {
        self.seq += 1;
        format!("{}-{}", self.user, self.seq)
    }

    pub async fn send(&mut self, m: &Message) {
        send(&mut self.ws, m).await;
    }

    /// The next frame (kept ones first).
    pub async fn next(&mut self) -> Message {
        match self.stash.pop_front() {
            Some(m) => m,
            None => recv(&mut self.ws).await,
        }
    }

    /// The next frame (kept ones first), waiting up to `within` (longer
    /// than [`WAIT`] when a test expects a long quiet spell).
    pub async fn next_within(&mut self, within: Duration) -> Message {
        use futures::StreamExt;
        use prost::Message as _;
        use tokio_tungstenite::tungstenite::Message as WsMessage;
        if let Some(m) = self.stash.pop_front() {
            return m;
        }
        loop {
            let item = tokio::time::timeout(within, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: nothing within {within:?}", self.user));
            match item {
                Some(Ok(WsMessage::Binary(b))) => return Message::decode(b).expect("a Message"),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                other => panic!("{}: expected a message, got {other:?}", self.user),
            }
        }
    }

    /// The first frame (kept or new) matching `pred`; frames read on the way
    /// are kept for later.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        if let Some(i) = self.stash.iter().position(&pred) {
            return self.stash.remove(i).unwrap();
        }
        loop {
            let m = match next_event(&mut self.ws).await {
                Event::Msg(m) => m,
                other => panic!("{}: waiting for {what}, got {other:?}", self.user),
            };
            if pred(&m) {
                return m;
            }
            self.stash.push_back(m);
        }
    }

    /// Takes the first activity of `user` matching `pred` out of the
    /// Activities events (kept or new). A frame can carry several users'
    /// changes: only the matched activity is consumed, the rest stay.
    pub async fn take_activity(
        &mut self,
        user: &str,
        pred: impl Fn(&Activity) -> bool,
    ) -> Activity {
        let hit = |m: &Message| {
            m.id.is_empty()
                && activities(m)
                    .is_some_and(|a| a.activities.iter().any(|a| a.user_id == user && pred(a)))
        };
        let (i, mut m) = match self.stash.iter().position(hit) {
            Some(i) => (i, self.stash.remove(i).unwrap()),
            None => {
                let what = format!("an activity of {user}");
                let m = self.wait_for(&what, hit).await;
                (self.stash.len(), m)
            }
        };
        let Some(Control::Activities(acts)) = &mut m.control else {
            unreachable!()
        };
        let j = acts
            .activities
            .iter()
            .position(|a| a.user_id == user && pred(a))
            .unwrap();
        let found = acts.activities.remove(j);
        if !acts.activities.is_empty() {
            self.stash.insert(i, m);
        }
        found
    }

    /// Sends `m` (which must have an id) and returns its reply.
    pub async fn request(&mut self, m: Message) -> Message {
        assert!(!m.id.is_empty(), "a request needs an id");
        let id = m.id.clone();
        self.send(&m).await;
        let what = format!("the reply to {id}");
        self.wait_for(&what, |r| r.id == id && is_reply(r)).await
    }

    /// Joins `room` with member state, asserting the Ack.
    pub async fn join(&mut self, room: &str, st: &[(&str, &str)]) {
        let id = self.next_id();
        let r = self.request(join_req(&id, room, st)).await;
        assert_ack(&r);
    }

    /// Every frame before the next marker (kept ones first); consumes the
    /// marker and returns its payload too.
    pub async fn until_marker(&mut self) -> (Vec<Message>, String) {
        let mut before = Vec::new();
        loop {
            let m = self.next().await;
            if is_marker(&m) {
                return (before, String::from_utf8_lossy(&m.payload).into_owned());
            }
            before.push(m);
        }
    }

    /// Asserts that none of `before` (frames read before a marker) matches
    /// `bad`: used to show that something was not delivered.
    #[track_caller]
    pub fn assert_none(&self, before: &[Message], what: &str, bad: impl Fn(&Message) -> bool) {
        if let Some(m) = before.iter().find(|m| bad(m)) {
            panic!("{} received {what}: {m:?}", self.user);
        }
    }

    /// Closes the connection cleanly.
    pub async fn close(mut self) {
        self.ws.close(None).await.expect("client close failed");
    }
}

/// One warp server with two separate `WsClient`s: /layout and /lobby.
pub struct TwoWorlds {
    pub addr: SocketAddr,
    pub layout: WsClient,
    pub lobby: WsClient,
    pub jwt: JwtAuthenticator,
}

impl TwoWorlds {
    pub async fn start(options: Options) -> TwoWorlds {
        let jwt = JwtAuthenticator::new(SECRET);
        let layout = WsClient::new(options.clone(), jwt.clone());
        let lobby = WsClient::new(options, jwt.clone());
        let routes = warp::path("layout")
            .and(warp::path::end())
            .and(layout.handler())
            .or(warp::path("lobby")
                .and(warp::path::end())
                .and(lobby.handler()));
        let listener = edk_ws::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        TwoWorlds {
            addr,
            layout,
            lobby,
            jwt,
        }
    }

    /// Connects `user` to the endpoint at `/{path}`.
    pub async fn connect(&self, path: &str, user: &str) -> Peer {
        let mut req = format!("ws://{}/{path}", self.addr)
            .into_client_request()
            .unwrap();
        let token = self.jwt.issue(user, Duration::from_secs(3600)).unwrap();
        let h = req.headers_mut();
        h.insert("x-user-id", HeaderValue::from_str(user).unwrap());
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("edk.ws.v1, {token}")).unwrap(),
        );
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("handshake timed out")
            .unwrap_or_else(|e| panic!("handshake for {user} at /{path} failed: {e}"));
        Peer::new(user, ws)
    }
}
