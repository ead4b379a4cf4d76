//! Build time: the AsyncAPI 3.0 document of the protocol, generated from the
//! descriptors of `proto/ws.proto` and their comments (the reference). The
//! library adds what depends on an endpoint (mount path, options, typed
//! routes) at run time (`src/asyncapi/mod.rs`).
//!
//! Read from the comments: each request's `Reply:` and `Errors:` lines
//! (error codes are checked against `Error.Code`: a misspelt code fails the
//! build), the role of each `control` variant (its comment starts with
//! `Request`, `Reply` or mentions `event`), and the `HandshakeStatus` and
//! `CloseCode` tables.

use prost_reflect::{DescriptorPool, FieldDescriptor, MessageDescriptor};
use serde_json::{json, Map, Value};

use crate::schema::{self, comment};

const PACKAGE: &str = "edk.ws.v1";

/// A request's documented replies and error codes.
struct Contract {
    replies: Vec<String>,
    errors: Vec<String>,
}

fn lookup(pool: &DescriptorPool, name: &str) -> Result<MessageDescriptor, String> {
    pool.get_message_by_name(&format!("{PACKAGE}.{name}"))
        .ok_or_else(|| format!("{PACKAGE}.{name} not found"))
}

/// The `Reply:` and `Errors:` lines of a request's comment.
fn contract(text: &str, codes: &[String], what: &str) -> Result<Contract, String> {
    let mut section = "";
    let (mut reply, mut errors) = (String::new(), String::new());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Reply:") {
            section = "reply";
            reply.push_str(rest);
        } else if let Some(rest) = line.strip_prefix("Errors:") {
            section = "errors";
            errors.push_str(rest);
        } else if line.trim().is_empty() {
            section = "";
        } else if section == "errors" {
            errors.push(' ');
            errors.push_str(line);
        } else if section == "reply" {
            reply.push(' ');
            reply.push_str(line);
        }
    }
    // Error codes are the upper-case words outside parentheses.
    let mut depth = 0;
    let mut outside = String::new();
    for c in errors.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    let errors: Vec<String> = outside
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|w| w.len() > 1)
        .map(str::to_owned)
        .collect();
    for e in &errors {
        if !codes.contains(e) {
            return Err(format!(
                "{what}: `Errors:` lists {e}, which is not an Error.Code"
            ));
        }
    }
    let replies: Vec<String> = reply
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    if replies.is_empty() {
        return Err(format!("{what}: no `Reply:` line in its comment"));
    }
    Ok(Contract { replies, errors })
}

/// The envelope of a verb: a `Message` with `field` set (and `id`).
fn envelope(field: &str, field_schema: Value, with: &[(&str, Value)]) -> Value {
    let mut props = Map::new();
    props.insert(
        "id".into(),
        json!({"type": "string", "description": "Correlation id: a reply carries the id of its request."}),
    );
    for (k, v) in with {
        props.insert((*k).to_owned(), v.clone());
    }
    props.insert(field.to_owned(), field_schema);
    json!({
        "type": "object",
        "required": [field],
        "properties": props,
        "x-protobuf-message": format!("{PACKAGE}.Message"),
    })
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn msg_ref(key: &str) -> Value {
    json!({ "$ref": format!("#/channels/ws/messages/{key}") })
}

/// The rows of a documentation enum: `(number, name without prefix, comment)`.
fn table(
    pool: &DescriptorPool,
    name: &str,
    prefix: &str,
) -> Result<Vec<(i32, String, String)>, String> {
    let e = pool
        .get_enum_by_name(&format!("{PACKAGE}.{name}"))
        .ok_or_else(|| format!("enum {name} not found"))?;
    Ok(e.values()
        .filter(|v| v.number() != 0)
        .map(|v| {
            let c = comment(&e.parent_file(), v.path()).unwrap_or_default();
            (
                v.number(),
                v.name().trim_start_matches(prefix).to_owned(),
                c.replace('\n', " "),
            )
        })
        .collect())
}

/// The protocol's document.
pub fn document(pool: &DescriptorPool, version: &str) -> Result<Value, String> {
    let mut schemas = Map::new();
    let message = lookup(pool, "Message")?;
    let file = message.parent_file();
    let codes: Vec<String> = pool
        .get_enum_by_name(&format!("{PACKAGE}.Error.Code"))
        .ok_or("Error.Code not found")?
        .values()
        .filter(|v| v.number() != 0)
        .map(|v| v.name().trim_start_matches("CODE_").to_owned())
        .collect();
    schema::message_ref(&message, &mut schemas);
    let field = |name: &str| -> Result<FieldDescriptor, String> {
        message
            .get_field_by_name(name)
            .ok_or_else(|| format!("Message.{name} not found"))
    };
    let field_schema = |name: &str, schemas: &Map<String, Value>| -> Value {
        schemas[&format!("{PACKAGE}.Message")]["properties"][name].clone()
    };

    let mut messages = Map::new();
    let mut operations = Map::new();

    // Requests, replies and events of the `control` oneof.
    for f in message.fields().filter(|f| f.containing_oneof().is_some()) {
        let prost_reflect::Kind::Message(verb) = f.kind() else {
            continue;
        };
        let role = comment(&file, f.path()).unwrap_or_default();
        let about = comment(&file, verb.path()).unwrap_or_default();
        let key = camel(f.name());
        let mut m = json!({
            "name": f.name(),
            "title": verb.name(),
            "summary": role,
            "description": about,
            "contentType": "application/x-protobuf",
            "payload": envelope(f.name(), schema::message_ref(&verb, &mut schemas), &[]),
            "x-protobuf-message": verb.full_name(),
            "x-proto": schema::proto_text(&verb),
        });
        if role.starts_with("Request") {
            let c = contract(&about, &codes, verb.name())?;
            let mut replies = Vec::new();
            for r in &c.replies {
                let rf = message
                    .fields()
                    .find(|x| matches!(x.kind(), prost_reflect::Kind::Message(ref d) if d.name() == r.as_str()))
                    .ok_or_else(|| format!("{}: reply {r} is not a control verb", verb.name()))?;
                replies.push(msg_ref(&camel(rf.name())));
            }
            replies.push(msg_ref("error"));
            m["x-replies"] = json!(c.replies);
            m["x-errors"] = json!(c.errors);
            operations.insert(
                key.clone(),
                json!({
                    "action": "receive",
                    "channel": {"$ref": "#/channels/ws"},
                    "title": verb.name(),
                    "summary": role,
                    "description": about,
                    "messages": [msg_ref(&key)],
                    "reply": {"channel": {"$ref": "#/channels/ws"}, "messages": replies},
                    "x-kind": "request",
                }),
            );
        } else if role.to_lowercase().contains("event") {
            operations.insert(
                format!("{key}Event"),
                json!({
                    "action": "send",
                    "channel": {"$ref": "#/channels/ws"},
                    "title": verb.name(),
                    "summary": role,
                    "description": about,
                    "messages": [msg_ref(&key)],
                    "x-kind": "event",
                }),
            );
        }
        messages.insert(key, m);
    }

    // A room publish: a Message with `room` set.
    let room = field("room")?;
    let room_about = comment(&file, room.path()).unwrap_or_default();
    let c = contract(&room_about, &codes, "Message.room")?;
    let app_fields = |schemas: &Map<String, Value>| {
        ["type", "payload", "metadata"].map(|n| (n, field_schema(n, schemas)))
    };
    let with = app_fields(&schemas);
    messages.insert(
        "publish".into(),
        json!({
            "name": "publish",
            "title": "Room publish",
            "summary": "Request: publish a message to a room's members.",
            "description": room_about,
            "contentType": "application/x-protobuf",
            "payload": envelope("room", field_schema("room", &schemas), &with),
            "x-protobuf-message": message.full_name(),
            "x-replies": c.replies,
            "x-errors": c.errors,
        }),
    );
    operations.insert(
        "publish".into(),
        json!({
            "action": "receive",
            "channel": {"$ref": "#/channels/ws"},
            "title": "Room publish",
            "summary": "Request: publish a message to a room's members.",
            "description": room_about,
            "messages": [msg_ref("publish")],
            "reply": {"channel": {"$ref": "#/channels/ws"}, "messages": [msg_ref("ack"), msg_ref("error")]},
            "x-kind": "request",
        }),
    );
    let mut stamped = app_fields(&schemas).to_vec();
    stamped.push(("sender", field_schema("sender", &schemas)));
    stamped.push(("timestamp_ms", field_schema("timestamp_ms", &schemas)));
    messages.insert(
        "roomMessage".into(),
        json!({
            "name": "roomMessage",
            "title": "Room message",
            "summary": "Event: a message published in a room you are in.",
            "description": "A member's publish (or the server's `publish`), stamped with `room`, `sender` and `timestamp_ms`.",
            "contentType": "application/x-protobuf",
            "payload": envelope("room", field_schema("room", &schemas), &stamped),
            "x-protobuf-message": message.full_name(),
        }),
    );
    operations.insert(
        "roomMessageEvent".into(),
        json!({
            "action": "send",
            "channel": {"$ref": "#/channels/ws"},
            "title": "Room message",
            "summary": "Event: a message published in a room you are in.",
            "messages": [msg_ref("roomMessage")],
            "x-kind": "event",
        }),
    );
    // Application messages.
    let type_about = comment(&file, field("type")?.path()).unwrap_or_default();
    messages.insert(
        "message".into(),
        json!({
            "name": "message",
            "title": "Application message",
            "summary": "An application message: neither `control` nor `room` set.",
            "description": type_about,
            "contentType": "application/x-protobuf",
            "payload": schema::reference(message.full_name()),
            "x-protobuf-message": message.full_name(),
            "x-proto": schema::proto_text(&message),
        }),
    );
    operations.insert(
        "message".into(),
        json!({
            "action": "receive",
            "channel": {"$ref": "#/channels/ws"},
            "title": "Application message (client → server)",
            "summary": "Handled by the application's typed route for its `type`, or its message handlers; the module sends no reply.",
            "messages": [msg_ref("message")],
            "x-kind": "application",
        }),
    );
    operations.insert(
        "messageEvent".into(),
        json!({
            "action": "send",
            "channel": {"$ref": "#/channels/ws"},
            "title": "Application message (server → client)",
            "summary": "What the application sends (`send`, `broadcast`, a route's reply), stamped with `sender` and `timestamp_ms`.",
            "messages": [msg_ref("message")],
            "x-kind": "application",
        }),
    );

    let handshake = table(pool, "HandshakeStatus", "HANDSHAKE_")?;
    let closes = table(pool, "CloseCode", "CLOSE_")?;
    let handshake_about = comment(
        &file,
        pool.get_enum_by_name(&format!("{PACKAGE}.HandshakeStatus"))
            .ok_or("HandshakeStatus")?
            .path(),
    )
    .unwrap_or_default();
    let close_about = comment(
        &file,
        pool.get_enum_by_name(&format!("{PACKAGE}.CloseCode"))
            .ok_or("CloseCode")?
            .path(),
    )
    .unwrap_or_default();
    let mut channel_about = format!("{handshake_about}\n\n| HTTP status | when |\n|---|---|\n");
    for (n, _, c) in &handshake {
        channel_about.push_str(&format!("| {n} | {c} |\n"));
    }
    channel_about.push_str(&format!(
        "\n{close_about}\n\n| close code | when (disconnect reason) |\n|---|---|\n"
    ));
    for (n, _, c) in &closes {
        channel_about.push_str(&format!("| {n} | {c} |\n"));
    }
    let channel_messages: Map<String, Value> = messages
        .keys()
        .map(|k| {
            (
                k.clone(),
                json!({"$ref": format!("#/components/messages/{k}")}),
            )
        })
        .collect();

    Ok(json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "edk-ws",
            "version": version,
            "description": comment(&file, &[12]).unwrap_or_default(),
        },
        "defaultContentType": "application/x-protobuf",
        "servers": {
            "endpoint": {
                "host": "{host}",
                "protocol": "ws",
                "pathname": "/ws",
                "title": "This endpoint",
                "description": "Plain `ws`; `wss` when a TLS terminator (gateway) is in front.",
                "variables": {"host": {"default": "localhost:8080", "description": "Where the service is reached."}},
                "security": [{"$ref": "#/components/securitySchemes/token"}],
            }
        },
        "channels": {
            "ws": {
                "address": "/ws",
                "title": "The WebSocket",
                "description": channel_about,
                "servers": [{"$ref": "#/servers/endpoint"}],
                "messages": channel_messages,
                "bindings": {"ws": {
                    "method": "GET",
                    "headers": {
                        "type": "object",
                        "required": ["x-user-id", "Sec-WebSocket-Protocol"],
                        "properties": {
                            "x-user-id": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[!-~]+$", "description": "The user id, set by the gateway (option `user_id_header`)."},
                            "Sec-WebSocket-Protocol": {"type": "string", "description": "`<token>` or `edk.ws.v1, <token>`."},
                            "Origin": {"type": "string", "description": "Checked against `allowed_origins` when set."},
                        },
                    },
                    "bindingVersion": "0.1.0",
                }},
                "x-handshake": handshake.iter().map(|(n, name, c)| json!({"status": n, "name": name, "when": c})).collect::<Vec<_>>(),
                "x-close-codes": closes.iter().map(|(n, name, c)| json!({"code": n, "name": name, "when": c})).collect::<Vec<_>>(),
            }
        },
        "operations": operations,
        "components": {
            "securitySchemes": {"token": {
                "type": "httpApiKey",
                "name": "Sec-WebSocket-Protocol",
                "in": "header",
                "description": "A token checked by the server's `Authenticator` (HS256 JWT with `sub` = the user id by default).",
            }},
            "messages": messages,
            "schemas": schemas,
        },
        "x-proto": file.file_descriptor_proto().name(),
    }))
}
