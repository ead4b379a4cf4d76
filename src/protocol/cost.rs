//! The cost rule: every inbound frame is walked once, before it is decoded,
//! without allocating — reading tags and lengths, skipping string and
//! bytes contents — and refused (close 1009) when decoding it could cost
//! more than its size warrants. Decoding a protobuf map entry or list item
//! allocates, so a 1 MiB frame of 100,000 tiny `metadata` entries costs
//! ~80× what a 1 MiB payload does; the rule bounds exactly that:
//!
//! - `metadata`: at most `max_metadata_entries` entries and
//!   `max_metadata_bytes` bytes (as encoded);
//! - every other map and list of the message (room and member state,
//!   removed keys, and whatever a client puts in a server-to-client verb):
//!   at most `4 × max_state_keys` entries in all — no request with more
//!   could succeed;
//! - protobuf fields in all, at every depth (unknown and repeated ones
//!   included): at most `64 + 3 × (both entry limits)`.
//!
//! So decoding a frame costs O(its bytes) plus a bounded number of small
//! allocations (≈ 1,000 with the defaults), whatever is in it. The walk
//! knows the schema of `proto/ws.proto` (which fields are messages, maps or
//! lists); the table below must follow it (a test encodes every such field
//! and checks it is counted).
//!
//! The walk also reads what the inbound budget needs without decoding: the
//! `id` and whether the message is a module request (`room` or `control`
//! set).

use std::ops::Range;

/// The limits of the rule (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `max_metadata_entries`.
    pub metadata_entries: usize,
    /// `max_metadata_bytes`.
    pub metadata_bytes: usize,
    /// Entries of every other map and list, in all.
    pub entries: usize,
}

impl Limits {
    /// The limits for these options (see the module docs).
    pub fn new(
        max_metadata_entries: usize,
        max_metadata_bytes: usize,
        max_state_keys: usize,
    ) -> Self {
        Limits {
            metadata_entries: max_metadata_entries,
            metadata_bytes: max_metadata_bytes,
            entries: max_state_keys.saturating_mul(4),
        }
    }

    fn fields(&self) -> usize {
        let entries = self.metadata_entries.saturating_add(self.entries);
        entries.saturating_mul(3).saturating_add(64)
    }
}

/// Why a frame was refused before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Over a limit of the rule: close 1009 with this text.
    Over(&'static str),
    /// Not a protobuf message at all: close 1007.
    Malformed,
}

/// What the walk read of an acceptable frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// The bytes of the (last) `id` field, as a range of the frame.
    pub id: Range<usize>,
    /// `room` non-empty or a `control` verb present: a module request.
    pub is_request: bool,
}

/// The messages of `proto/ws.proto` that hold maps, lists or messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Message,
    Join,
    UpdateState,
    Members,
    Member,
    StateChanged,
    MemberChanged,
    MemberChanges,
    Activities,
    /// A map entry, an `Activity`, or any message with only scalar and
    /// string fields: walked for its field count only.
    Leaf,
}

/// What a length-delimited field of a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// A `metadata` entry.
    Metadata,
    /// An item of another map or list, holding a message of this kind.
    Entry(Msg),
    /// An item of a list of strings: counted, its bytes skipped.
    Item,
    /// A singular message field.
    Single(Msg),
    /// A string, bytes, or an unknown field: skipped.
    Opaque,
}

fn field(msg: Msg, number: u64) -> Field {
    use Field::*;
    match (msg, number) {
        (Msg::Message, 4) => Metadata,
        (Msg::Message, 16) => Single(Msg::Join),
        (Msg::Message, 19) => Single(Msg::UpdateState),
        (Msg::Message, 24) => Single(Msg::Members),
        (Msg::Message, 25) => Single(Msg::Activities),
        (Msg::Message, 26) => Single(Msg::StateChanged),
        (Msg::Message, 27) => Single(Msg::MemberChanged),
        (Msg::Message, 29) => Single(Msg::MemberChanges),
        // Leave, ListMembers, SetActivity, ListActivities, Ack, Error,
        // RoomClosed: scalars and strings only.
        (Msg::Message, 17 | 18 | 20 | 21 | 22 | 23 | 28) => Single(Msg::Leaf),
        (Msg::Join, 2) => Entry(Msg::Leaf),
        (Msg::UpdateState, 2 | 4) => Entry(Msg::Leaf),
        (Msg::UpdateState, 3 | 5) => Item,
        (Msg::Members, 2) => Entry(Msg::Member),
        (Msg::Members, 3) => Entry(Msg::Leaf),
        (Msg::Member, 2) => Entry(Msg::Leaf),
        (Msg::StateChanged, 3) => Entry(Msg::Leaf),
        (Msg::StateChanged, 4) => Item,
        (Msg::MemberChanged, 2) => Single(Msg::Member),
        (Msg::MemberChanges, 2) => Entry(Msg::MemberChanged),
        (Msg::Activities, 1) => Entry(Msg::Leaf),
        _ => Opaque,
    }
}

#[derive(Default)]
struct Counts {
    metadata: usize,
    metadata_bytes: usize,
    entries: usize,
    fields: usize,
}

/// Walks `frame` (an inbound `Message`) under `limits`.
pub fn scan(frame: &[u8], limits: &Limits) -> Result<Scan, Refused> {
    let mut counts = Counts::default();
    let mut scan = Scan::default();
    walk(frame, 0, Msg::Message, limits, &mut counts, &mut scan)?;
    Ok(scan)
}

fn walk(
    buf: &[u8],
    base: usize,
    msg: Msg,
    limits: &Limits,
    counts: &mut Counts,
    scan: &mut Scan,
) -> Result<(), Refused> {
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return Err(Refused::Malformed);
        }
        counts.fields += 1;
        if counts.fields > limits.fields() {
            return Err(Refused::Over("too many fields in one message"));
        }
        match wire {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => pos = skip(buf, pos, 8)?,
            5 => pos = skip(buf, pos, 4)?,
            2 => {
                let len =
                    usize::try_from(varint(buf, &mut pos)?).map_err(|_| Refused::Malformed)?;
                let start = pos;
                pos = skip(buf, pos, len)?;
                let body = &buf[start..pos];
                if msg == Msg::Message {
                    match number {
                        1 => scan.id = base + start..base + pos,
                        7 if len > 0 => scan.is_request = true,
                        16..=29 => scan.is_request = true,
                        _ => {}
                    }
                }
                let inner = match field(msg, number) {
                    Field::Opaque => continue,
                    Field::Metadata => {
                        counts.metadata += 1;
                        counts.metadata_bytes += len;
                        if counts.metadata > limits.metadata_entries
                            || counts.metadata_bytes > limits.metadata_bytes
                        {
                            return Err(Refused::Over("metadata over the limit"));
                        }
                        Msg::Leaf
                    }
                    Field::Entry(inner) => {
                        count_entry(counts, limits)?;
                        inner
                    }
                    Field::Item => {
                        count_entry(counts, limits)?;
                        continue;
                    }
                    Field::Single(inner) => inner,
                };
                walk(body, base + start, inner, limits, counts, scan)?;
            }
            // Groups (3, 4) do not exist in proto3; 6 and 7 are no wire type.
            _ => return Err(Refused::Malformed),
        }
    }
    Ok(())
}

fn count_entry(counts: &mut Counts, limits: &Limits) -> Result<(), Refused> {
    counts.entries += 1;
    if counts.entries > limits.entries {
        return Err(Refused::Over("too many map or list entries"));
    }
    Ok(())
}

fn skip(buf: &[u8], pos: usize, n: usize) -> Result<usize, Refused> {
    match pos.checked_add(n) {
        Some(end) if end <= buf.len() => Ok(end),
        _ => Err(Refused::Malformed),
    }
}

/// A base-128 varint of at most 10 bytes.
fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, Refused> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or(Refused::Malformed)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(Refused::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::proto::message::Control;
    use crate::protocol::proto::*;
    use prost::Message as _;
    use std::collections::HashMap;

    const LIMITS: Limits = Limits {
        metadata_entries: 64,
        metadata_bytes: 16 << 10,
        entries: 256,
    };

    fn map(n: usize) -> HashMap<String, String> {
        (0..n).map(|i| (format!("k{i}"), "v".to_owned())).collect()
    }

    fn with(control: Control) -> Message {
        Message {
            id: "the-id".into(),
            control: Some(control),
            ..Default::default()
        }
    }

    #[test]
    fn plain_messages_pass_and_tell_id_and_kind() {
        let m = Message {
            id: "42".into(),
            r#type: "t".into(),
            payload: vec![7u8; 100_000].into(),
            metadata: map(64),
            ..Default::default()
        };
        let b = m.encode_to_vec();
        let s = scan(&b, &LIMITS).unwrap();
        assert_eq!(&b[s.id], b"42");
        assert!(!s.is_request);
        let publish = Message {
            room: "r".into(),
            ..Default::default()
        };
        assert!(scan(&publish.encode_to_vec(), &LIMITS).unwrap().is_request);
        let leave = with(Control::Leave(Leave { room: "r".into() }));
        assert!(scan(&leave.encode_to_vec(), &LIMITS).unwrap().is_request);
        assert_eq!(scan(&[], &LIMITS), Ok(Scan::default()));
    }

    #[test]
    fn metadata_is_bounded_by_entries_and_bytes() {
        let m = Message {
            metadata: map(65),
            ..Default::default()
        };
        assert!(matches!(
            scan(&m.encode_to_vec(), &LIMITS),
            Err(Refused::Over(_))
        ));
        let m = Message {
            metadata: [("k".to_owned(), "v".repeat(17 << 10))].into(),
            ..Default::default()
        };
        assert!(matches!(
            scan(&m.encode_to_vec(), &LIMITS),
            Err(Refused::Over(_))
        ));
    }

    /// Every map and list of the schema is counted, wherever it is.
    #[test]
    fn every_map_and_list_counts() {
        let n = 257;
        let member = |n| Member {
            user_id: "u".into(),
            state: map(n),
        };
        let keys: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let cases = [
            Control::Join(Join {
                room: "r".into(),
                state: map(n),
            }),
            Control::UpdateState(UpdateState {
                room_changes: map(n),
                ..Default::default()
            }),
            Control::UpdateState(UpdateState {
                member_changes: map(n),
                ..Default::default()
            }),
            Control::UpdateState(UpdateState {
                room_removed: keys.clone(),
                ..Default::default()
            }),
            Control::UpdateState(UpdateState {
                member_removed: keys.clone(),
                ..Default::default()
            }),
            Control::Members(Members {
                members: (0..n).map(|_| member(0)).collect(),
                ..Default::default()
            }),
            Control::Members(Members {
                room_state: map(n),
                ..Default::default()
            }),
            Control::Members(Members {
                members: vec![member(n)],
                ..Default::default()
            }),
            Control::StateChanged(StateChanged {
                changes: map(n),
                ..Default::default()
            }),
            Control::StateChanged(StateChanged {
                removed: keys.clone(),
                ..Default::default()
            }),
            Control::MemberChanged(MemberChanged {
                member: Some(member(n)),
                ..Default::default()
            }),
            Control::MemberChanges(MemberChanges {
                changes: (0..n).map(|_| MemberChanged::default()).collect(),
                ..Default::default()
            }),
            Control::MemberChanges(MemberChanges {
                changes: vec![MemberChanged {
                    member: Some(member(n)),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            Control::Activities(Activities {
                activities: (0..n).map(|_| Activity::default()).collect(),
                ..Default::default()
            }),
        ];
        for c in cases {
            let b = with(c.clone()).encode_to_vec();
            assert_eq!(
                scan(&b, &LIMITS),
                Err(Refused::Over("too many map or list entries")),
                "{c:?}"
            );
        }
    }

    #[test]
    fn repeated_fields_count_toward_the_field_limit() {
        // 2,000 `id` fields, each decoded (and replaced) by prost.
        let b: Vec<u8> = std::iter::repeat_n([0x0a, 0x01, b'x'], 2_000)
            .flatten()
            .collect();
        assert!(matches!(scan(&b, &LIMITS), Err(Refused::Over(_))));
        // Unknown fields too.
        let b: Vec<u8> = std::iter::repeat_n([0x78, 0x01], 2_000).flatten().collect();
        assert!(matches!(scan(&b, &LIMITS), Err(Refused::Over(_))));
    }

    #[test]
    fn broken_wire_data_is_malformed() {
        for b in [
            &[0x0a, 0x05, b'x'][..], // length past the end
            &[0x00],                 // field 0
            &[0x0b],                 // a group
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ], // varint of 11 bytes
            &[0x0a],                 // no length
        ] {
            assert_eq!(scan(b, &LIMITS), Err(Refused::Malformed), "{b:?}");
        }
    }
}
