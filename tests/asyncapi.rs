//! The AsyncAPI document of an endpoint: generated from ws.proto (every
//! request with its replies and error codes, every event, the handshake and
//! close tables), completed with the endpoint's mount path and options.

use edk_ws::{JwtAuthenticator, Options, WsClient};
use serde_json::Value;

fn doc(o: Options) -> Value {
    let c = WsClient::new(o, JwtAuthenticator::new(b"k"));
    serde_json::from_str(&c.asyncapi()).unwrap()
}

#[test]
fn requests_replies_events_and_tables_come_from_ws_proto() {
    let d = doc(Options::default());
    assert_eq!(d["asyncapi"], "3.0.0");
    assert_eq!(d["info"]["version"], env!("CARGO_PKG_VERSION"));
    let ops = d["operations"].as_object().unwrap();
    for (op, reply) in [
        ("join", "ack"),
        ("leave", "ack"),
        ("listMembers", "members"),
        ("updateState", "ack"),
        ("setActivity", "ack"),
        ("listActivities", "activities"),
        ("publish", "ack"),
    ] {
        let o = &ops[op];
        assert_eq!(o["action"], "receive", "{op}");
        let replies: Vec<&str> = o["reply"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["$ref"].as_str().unwrap())
            .collect();
        assert_eq!(
            replies,
            [
                format!("#/channels/ws/messages/{reply}"),
                "#/channels/ws/messages/error".into()
            ],
            "{op}"
        );
        assert!(
            !o["description"].as_str().unwrap().is_empty(),
            "{op}: no comment"
        );
    }
    for ev in [
        "stateChangedEvent",
        "memberChangedEvent",
        "memberChangesEvent",
        "roomClosedEvent",
        "activitiesEvent",
        "roomMessageEvent",
    ] {
        assert_eq!(ops[ev]["action"], "send", "{ev}");
    }
    let join = &d["components"]["messages"]["join"];
    assert!(join["x-proto"].as_str().unwrap().contains("message Join {"));
    assert!(join["description"]
        .as_str()
        .unwrap()
        .starts_with("Join `room`"));
    assert_eq!(
        d["components"]["schemas"]["edk.ws.v1.Join"]["properties"]["state"]["type"],
        "object"
    );
    let ch = &d["channels"]["ws"];
    let statuses: Vec<i64> = ch["x-handshake"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [101, 400, 401, 403, 409, 426, 431, 503]);
    let closes: Vec<i64> = ch["x-close-codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["code"].as_i64().unwrap())
        .collect();
    assert_eq!(
        closes,
        [1001, 1002, 1003, 1007, 1009, 1011, 4000, 4001, 4002, 4003]
    );
    assert!(ch["description"]
        .as_str()
        .unwrap()
        .contains("| 4003 | Slow consumer"));
}

#[test]
fn the_endpoint_path_options_and_switches_are_its_own() {
    let d = doc(Options::default()
        .with_mount_path("/lobby".into())
        .with_user_id_header("x-gateway-user".into())
        .with_max_message_size(4096)
        .with_online_activities_disabled(true));
    assert_eq!(d["channels"]["ws"]["address"], "/lobby");
    assert_eq!(d["servers"]["endpoint"]["pathname"], "/lobby");
    let headers = &d["channels"]["ws"]["bindings"]["ws"]["headers"];
    assert!(headers["properties"]["x-gateway-user"].is_object());
    assert!(headers["required"]
        .as_array()
        .unwrap()
        .contains(&"x-gateway-user".into()));
    assert_eq!(d["info"]["x-options"]["max_message_size"], 4096);
    assert_eq!(d["info"]["x-options"]["activities_enabled"], false);
    let ops = &d["operations"];
    assert!(
        ops.get("activitiesEvent").is_none(),
        "no activity events when off"
    );
    assert_eq!(ops["setActivity"]["x-disabled"], true);
    assert_eq!(
        ops["setActivity"]["reply"]["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // On by default.
    let d = doc(Options::default());
    assert!(d["operations"]["activitiesEvent"].is_object());
    assert_eq!(d["info"]["x-options"]["activities_enabled"], true);
}

#[test]
fn the_page_is_self_contained() {
    let c = WsClient::new(Options::default(), JwtAuthenticator::new(b"k"));
    let page = c.asyncapi_html();
    assert!(page.starts_with("<!doctype html>"));
    assert!(!page.contains("<script"), "no script");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing fetched"
    );
    for must in ["Join", "ROOM_FULL", "4001", "Handshake", "STATE_TOO_LARGE"] {
        assert!(page.contains(must), "page lacks {must}");
    }
}
