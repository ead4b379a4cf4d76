//! Frame ⇄ [`Message`]: decoding inbound binary frames (stamping the trusted
//! fields) and encoding outbound messages once, into shareable bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use super::proto::message::Control;
use super::proto::Message;

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Decodes one inbound frame. The payload shares `frame`'s buffer. The
/// `sender` is overwritten with the connection's user id and `timestamp_ms`
/// with the receive time: neither is trusted from a client.
pub fn decode_inbound(frame: Bytes, user_id: &str) -> Result<Message, prost::DecodeError> {
    let mut msg = Message::decode(frame)?;
    msg.sender.clear();
    msg.sender.push_str(user_id);
    msg.timestamp_ms = now_ms();
    Ok(msg)
}

/// Encodes an outbound message once, stamping `timestamp_ms` with now. The
/// returned bytes are cloned (not copied) for every recipient.
pub fn encode_outbound(msg: &mut Message) -> Bytes {
    msg.timestamp_ms = now_ms();
    encode(msg)
}

/// Encodes a module message (a reply with the request's `id`, or an event
/// with an empty one) carrying `control`, stamped with now.
pub(crate) fn encode_control(id: String, control: Control) -> Bytes {
    encode_outbound(&mut Message {
        id,
        control: Some(control),
        ..Default::default()
    })
}

/// Encodes a message as is.
pub(crate) fn encode(msg: &Message) -> Bytes {
    let mut buf = BytesMut::with_capacity(msg.encoded_len());
    // Encoding into a buffer with enough capacity cannot fail.
    let _ = msg.encode(&mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_sender_is_overwritten() {
        let m = Message {
            id: "1".into(),
            r#type: "t".into(),
            payload: Bytes::from_static(b"hi"),
            sender: "mallory".into(),
            ..Default::default()
        };
        let got = decode_inbound(encode(&m), "alice").unwrap();
        assert_eq!(got.sender, "alice");
        assert_eq!(got.payload, Bytes::from_static(b"hi"));
        assert!(got.timestamp_ms > 0);
        assert!(decode_inbound(Bytes::from_static(&[0xff, 0xff, 0xff]), "a").is_err());
    }
}
