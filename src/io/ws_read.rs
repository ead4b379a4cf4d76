//! The server's WebSocket read path (RFC 6455, server role): bytes from
//! the socket → whole messages, with the protocol's rules enforced.
//!
//! Small reads land in a stack buffer, which lives only inside one poll:
//! complete frames are cut out of it as owned [`Bytes`], and only an
//! unfinished tail is copied to a heap buffer. That buffer exists while a
//! frame is incomplete (reserved for the frame's announced length, bounded
//! by `max`, so big frames are read straight into it with no re-copying)
//! and is released as soon as it is emptied. So an idle connection holds
//! no read buffer, and no buffer is zeroed per read.
//!
//! Every broken rule is a [`ReadError`] that names its close code: client
//! frames must be masked, RSV bits clear and opcodes known (else 1002);
//! control frames are at most 125 bytes and never fragmented (1002);
//! continuation frames continue an open message, a new message never
//! interrupts one (1002); a frame or message over `max` is 1009; text must
//! be valid UTF-8 (1007, checked as fragments arrive); a close frame has no
//! 1-byte payload (1002) and a UTF-8 reason (1007).

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use super::{close_payload, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

/// The largest read into the stack buffer (the option `read_buffer_size`
/// may make reads smaller, not larger).
pub(crate) const STACK_READ: usize = 4096;

/// What the client sent: one complete message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A complete binary message.
    Binary(Bytes),
    /// A complete text message (valid UTF-8; its content is not kept).
    Text,
    /// A ping: to be answered with a pong carrying this payload.
    Ping(Bytes),
    Pong,
    /// A valid close frame: the client's code (none for an empty payload)
    /// and the payload of the close frame to reply with (the client's own,
    /// or 1002 when its code may not be sent, RFC 6455 §7.4).
    Close {
        code: Option<u16>,
        reply: Bytes,
    },
}

/// Why reading stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The stream ended without a close frame.
    Eof,
    Io(io::Error),
    /// A protocol rule was broken: close 1002.
    Protocol(&'static str),
    /// A frame or message over the size limit: close 1009.
    TooBig {
        size: u64,
        max: usize,
    },
    /// Text (or a close reason) that is not UTF-8: close 1007.
    Utf8,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Eof => f.write_str("end of stream without a close frame"),
            ReadError::Io(e) => write!(f, "read: {e}"),
            ReadError::Protocol(what) => f.write_str(what),
            ReadError::TooBig { size, max } => {
                write!(
                    f,
                    "message of {size} bytes or more, over the limit of {max}"
                )
            }
            ReadError::Utf8 => f.write_str("invalid UTF-8"),
        }
    }
}

/// A frame header, parsed.
struct Head {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes, mask included.
    len: usize,
    payload: usize,
}

impl Head {
    fn total(&self) -> usize {
        self.len + self.payload
    }
}

/// Parses the frame header at the start of `data` (`None`: incomplete);
/// rules that the header alone shows are checked here.
fn parse_head(data: &[u8], max: usize) -> Result<Option<Head>, ReadError> {
    let [b0, b1, rest @ ..] = data else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ReadError::Protocol("reserved bits set"));
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG if !fin => {
            return Err(ReadError::Protocol("fragmented control frame"))
        }
        OP_CLOSE | OP_PING | OP_PONG => {}
        _ => return Err(ReadError::Protocol("reserved opcode")),
    }
    if b1 & 0x80 == 0 {
        return Err(ReadError::Protocol("unmasked frame from a client"));
    }
    let (payload, ext) = match b1 & 0x7f {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (u64::from_be_bytes(be), 8)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    if opcode >= OP_CLOSE && payload > 125 {
        return Err(ReadError::Protocol("control frame over 125 bytes"));
    }
    let payload = match usize::try_from(payload) {
        Ok(n) if n <= max => n,
        _ => return Err(ReadError::TooBig { size: payload, max }),
    };
    let Some(mask) = rest.get(ext..ext + 4) else {
        return Ok(None);
    };
    Ok(Some(Head {
        fin,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        len: 2 + ext + 4,
        payload,
    }))
}

/// Unmasks (or masks) `data` in place.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// May a client send this close code (RFC 6455 §7.4)?
fn code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// A frame's unmasked payload: in the stack buffer, or cut out of the heap
/// buffer (then owned, and kept without a copy).
enum Payload<'a> {
    Borrowed(&'a [u8]),
    Owned(BytesMut),
}

impl Payload<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Borrowed(s) => s,
            Payload::Owned(b) => b,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Payload::Borrowed(s) => Bytes::copy_from_slice(s),
            Payload::Owned(b) => b.freeze(),
        }
    }
}

/// A fragmented message still open.
struct Partial {
    text: bool,
    /// Binary: the payload so far. Text: only the bytes not yet known to be
    /// valid UTF-8 (an incomplete character; the text itself is not kept).
    data: BytesMut,
    /// The message's size so far.
    size: usize,
}

/// The read state of one connection (see the module docs).
pub(crate) struct FrameReader {
    /// Unparsed bytes left over by earlier reads; no capacity while empty.
    buf: BytesMut,
    partial: Option<Partial>,
    max: usize,
    read_size: usize,
}

impl FrameReader {
    /// `max`: the largest frame or message; `read_size`: the size of reads
    /// into the stack buffer (at most [`STACK_READ`]); `read_ahead`: bytes
    /// already read from the stream, parsed first.
    pub fn new(max: usize, read_size: usize, read_ahead: Vec<u8>) -> Self {
        FrameReader {
            buf: BytesMut::from(&read_ahead[..]),
            partial: None,
            max,
            read_size: read_size.clamp(1, STACK_READ),
        }
    }

    /// Reads until a message or control frame is complete. Cancel-safe:
    /// everything read is kept in `self` between polls.
    pub fn poll_next<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut R,
    ) -> Poll<Result<Incoming, ReadError>> {
        loop {
            // Whole frames left over first.
            while let Some(head) = parse_head(&self.buf, self.max)? {
                if self.buf.len() < head.total() {
                    break;
                }
                let mut frame = self.buf.split_to(head.total());
                if self.buf.is_empty() {
                    self.buf = BytesMut::new();
                }
                frame.advance(head.len);
                unmask(&mut frame, head.mask);
                if let Some(msg) = self.on_frame(&head, Payload::Owned(frame))? {
                    return Poll::Ready(Ok(msg));
                }
            }
            if self.buf.is_empty() {
                let mut stack = [MaybeUninit::<u8>::uninit(); STACK_READ];
                let mut rb = ReadBuf::uninit(&mut stack[..self.read_size]);
                ready!(Pin::new(&mut *io).poll_read(cx, &mut rb)).map_err(ReadError::Io)?;
                if rb.filled().is_empty() {
                    return Poll::Ready(Err(ReadError::Eof));
                }
                if let Some(msg) = self.consume(rb.filled_mut())? {
                    return Poll::Ready(Ok(msg));
                }
            } else {
                // An unfinished frame: read on into the heap buffer.
                self.reserve()?;
                let n = ready!(tokio_util::io::poll_read_buf(
                    Pin::new(&mut *io),
                    cx,
                    &mut self.buf
                ))
                .map_err(ReadError::Io)?;
                if n == 0 {
                    return Poll::Ready(Err(ReadError::Eof));
                }
            }
        }
    }

    /// Takes the frames out of freshly read bytes (the stack buffer) until
    /// one completes a message; keeps what is left in the heap buffer.
    fn consume(&mut self, data: &mut [u8]) -> Result<Option<Incoming>, ReadError> {
        let mut pos = 0;
        let mut msg = None;
        while msg.is_none() {
            let Some(head) = parse_head(&data[pos..], self.max)? else {
                break;
            };
            if data.len() - pos < head.total() {
                break;
            }
            let payload = &mut data[pos + head.len..pos + head.total()];
            unmask(payload, head.mask);
            pos += head.total();
            msg = self.on_frame(&head, Payload::Borrowed(payload))?;
        }
        if pos < data.len() {
            let tail = &data[pos..];
            // A broken header in the tail is reported by the next poll,
            // after the message at hand.
            let missing = self.missing(tail).unwrap_or(self.read_size);
            let mut buf = BytesMut::with_capacity(tail.len() + missing);
            buf.extend_from_slice(tail);
            self.buf = buf;
        }
        Ok(msg)
    }

    /// Room in the heap buffer for the rest of the frame it starts with.
    fn reserve(&mut self) -> Result<(), ReadError> {
        let missing = self.missing(&self.buf)?;
        self.buf.reserve(missing);
        Ok(())
    }

    /// How much to read after `data`, an unfinished frame: the rest of its
    /// announced length (already checked against `max`), at least one
    /// read's worth.
    fn missing(&self, data: &[u8]) -> Result<usize, ReadError> {
        let want = match parse_head(data, self.max)? {
            Some(head) => head.total(),
            None => 0,
        };
        Ok(want.saturating_sub(data.len()).max(self.read_size))
    }

    /// One complete, unmasked frame; a message when it completes one.
    fn on_frame(
        &mut self,
        head: &Head,
        payload: Payload<'_>,
    ) -> Result<Option<Incoming>, ReadError> {
        match head.opcode {
            OP_CONTINUATION => {
                let Some(p) = self.partial.as_mut() else {
                    return Err(ReadError::Protocol("continuation frame without a message"));
                };
                let slice = payload.as_slice();
                p.size += slice.len();
                if p.size > self.max {
                    return Err(ReadError::TooBig {
                        size: p.size as u64,
                        max: self.max,
                    });
                }
                p.data.extend_from_slice(slice);
                if p.text {
                    check_utf8(&mut p.data, head.fin)?;
                }
                if !head.fin {
                    return Ok(None);
                }
                let p = self.partial.take();
                Ok(p.map(|p| {
                    if p.text {
                        Incoming::Text
                    } else {
                        Incoming::Binary(p.data.freeze())
                    }
                }))
            }
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(ReadError::Protocol(
                        "a new message while a fragmented one is open",
                    ));
                }
                let text = head.opcode == OP_TEXT;
                if head.fin {
                    if text {
                        return match std::str::from_utf8(payload.as_slice()) {
                            Ok(_) => Ok(Some(Incoming::Text)),
                            Err(_) => Err(ReadError::Utf8),
                        };
                    }
                    return Ok(Some(Incoming::Binary(payload.into_bytes())));
                }
                let slice = payload.as_slice();
                let mut data = BytesMut::from(slice);
                if text {
                    check_utf8(&mut data, false)?;
                }
                self.partial = Some(Partial {
                    text,
                    data,
                    size: slice.len(),
                });
                Ok(None)
            }
            OP_PING => Ok(Some(Incoming::Ping(payload.into_bytes()))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            _ => close_frame(payload).map(Some),
        }
    }
}

/// Checks the UTF-8 of text `data` and drops what is valid, keeping an
/// incomplete last character unless the message ends here.
fn check_utf8(data: &mut BytesMut, fin: bool) -> Result<(), ReadError> {
    match std::str::from_utf8(data) {
        Ok(_) => data.clear(),
        Err(e) if e.error_len().is_none() && !fin => data.advance(e.valid_up_to()),
        Err(_) => return Err(ReadError::Utf8),
    }
    Ok(())
}

/// Validates a client's close frame and builds the reply's payload.
fn close_frame(payload: Payload<'_>) -> Result<Incoming, ReadError> {
    let slice = payload.as_slice();
    match slice {
        [] => Ok(Incoming::Close {
            code: None,
            reply: Bytes::new(),
        }),
        [_] => Err(ReadError::Protocol("close frame with a 1-byte payload")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if std::str::from_utf8(reason).is_err() {
                return Err(ReadError::Utf8);
            }
            let reply = if code_allowed(code) {
                payload.into_bytes()
            } else {
                Bytes::from(close_payload(1002, "Protocol violation"))
            };
            Ok(Incoming::Close {
                code: Some(code),
                reply,
            })
        }
    }
}

/// Parses a stream of client bytes delivered in chunks of the given sizes
/// (cycled), as the connection's reader would: every outcome is a message
/// or one of the documented errors, never a panic. For the fuzz target
/// `read_frames` and the unit tests; returns the messages and the error.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_chunked(
    data: &[u8],
    chunks: &[usize],
    max: usize,
    read_size: usize,
) -> (Vec<Incoming>, Option<ReadError>) {
    /// Hands out `data` in chunks, `Pending` (with a wake) between them.
    struct Chunked<'a> {
        data: &'a [u8],
        chunks: Vec<usize>,
        i: usize,
        pending: bool,
    }
    impl AsyncRead for Chunked<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.pending {
                self.pending = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.pending = true;
            let c = self.chunks[self.i % self.chunks.len()].max(1);
            self.i += 1;
            let n = c.min(self.data.len()).min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Poll::Ready(Ok(()))
        }
    }
    let chunks = if chunks.is_empty() {
        vec![usize::MAX]
    } else {
        chunks.to_vec()
    };
    let mut io = Chunked {
        data,
        chunks,
        i: 0,
        pending: false,
    };
    let mut reader = FrameReader::new(max, read_size, Vec::new());
    let mut got = Vec::new();
    let err = futures::executor::block_on(async {
        loop {
            match std::future::poll_fn(|cx| reader.poll_next(cx, &mut io)).await {
                Ok(m) => got.push(m),
                Err(e) => return e,
            }
        }
    });
    (got, Some(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend((n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        out.extend(mask);
        let mut p = payload.to_vec();
        unmask(&mut p, mask);
        out.extend(p);
        out
    }

    fn all(data: &[u8]) -> (Vec<Incoming>, Option<ReadError>) {
        parse_chunked(data, &[], 1 << 20, STACK_READ)
    }

    fn bin(p: &[u8]) -> Incoming {
        Incoming::Binary(Bytes::copy_from_slice(p))
    }

    #[test]
    fn masked_frames_and_every_split() {
        let mut wire = frame(true, OP_BINARY, b"hello");
        wire.extend(frame(false, OP_BINARY, b"frag"));
        wire.extend(frame(true, OP_PING, b"p"));
        wire.extend(frame(false, OP_CONTINUATION, b"men"));
        wire.extend(frame(true, OP_CONTINUATION, b"ted"));
        wire.extend(frame(true, OP_BINARY, &[7u8; 300]));
        wire.extend(frame(true, OP_BINARY, &[9u8; 70_000]));
        wire.extend(frame(true, OP_PONG, b""));
        wire.extend(frame(true, OP_CLOSE, b"\x03\xe8bye"));
        let want = vec![
            bin(b"hello"),
            Incoming::Ping(Bytes::from_static(b"p")),
            bin(b"fragmented"),
            bin(&[7u8; 300]),
            bin(&[9u8; 70_000]),
            Incoming::Pong,
            Incoming::Close {
                code: Some(1000),
                reply: Bytes::from_static(b"\x03\xe8bye"),
            },
        ];
        // Split at every byte boundary of the small frames (and through
        // the big one), then in chunks of every size up to 40 bytes.
        for cut in 0..wire.len().min(400) {
            let (got, err) = parse_chunked(&wire, &[cut, usize::MAX], 1 << 20, STACK_READ);
            assert_eq!(got, want, "cut at {cut}");
            assert!(matches!(err, Some(ReadError::Eof)));
        }
        for size in 1..40 {
            let (got, _) = parse_chunked(&wire, &[size], 1 << 20, 64);
            assert_eq!(got, want, "chunks of {size}");
        }
    }

    #[test]
    fn the_heap_buffer_is_released_when_emptied() {
        let wire = frame(true, OP_BINARY, &[1u8; 10_000]);
        let mut reader = FrameReader::new(1 << 20, STACK_READ, wire[..5000].to_vec());
        let mut rest = &wire[5000..];
        let msg =
            futures::executor::block_on(std::future::poll_fn(|cx| reader.poll_next(cx, &mut rest)));
        assert_eq!(msg.unwrap(), bin(&[1u8; 10_000]));
        assert_eq!(reader.buf.capacity(), 0);
    }

    #[test]
    fn unmasked_reserved_and_control_rules() {
        let unmasked = [0x82, 0x01, 0x00];
        assert!(matches!(all(&unmasked).1, Some(ReadError::Protocol(_))));
        let mut rsv = frame(true, OP_BINARY, b"x");
        rsv[0] |= 0x40;
        assert!(matches!(all(&rsv).1, Some(ReadError::Protocol(_))));
        for op in [3u8, 7, 0xb, 0xf] {
            let f = frame(true, op, b"");
            assert!(matches!(all(&f).1, Some(ReadError::Protocol(_))), "{op}");
        }
        let big_ping = frame(true, OP_PING, &[0u8; 126]);
        assert!(matches!(all(&big_ping).1, Some(ReadError::Protocol(_))));
        let frag_ping = frame(false, OP_PING, b"");
        assert!(matches!(all(&frag_ping).1, Some(ReadError::Protocol(_))));
        let cont = frame(true, OP_CONTINUATION, b"x");
        assert!(matches!(all(&cont).1, Some(ReadError::Protocol(_))));
        let mut nested = frame(false, OP_BINARY, b"a");
        nested.extend(frame(true, OP_BINARY, b"b"));
        assert!(matches!(all(&nested).1, Some(ReadError::Protocol(_))));
    }

    #[test]
    fn a_message_before_a_broken_frame_is_delivered_first() {
        let mut wire = frame(true, OP_BINARY, b"ok");
        wire.extend([0x82, 0x01, 0x00]); // unmasked
        let (got, err) = all(&wire);
        assert_eq!(got, [bin(b"ok")]);
        assert!(matches!(err, Some(ReadError::Protocol(_))));
    }

    #[test]
    fn oversized_frames_and_messages() {
        let f = frame(true, OP_BINARY, &[0u8; 101]);
        let (got, err) = parse_chunked(&f, &[], 100, STACK_READ);
        assert!(got.is_empty());
        assert!(matches!(err, Some(ReadError::TooBig { .. })));
        let mut m = frame(false, OP_BINARY, &[0u8; 60]);
        m.extend(frame(true, OP_CONTINUATION, &[0u8; 60]));
        let (_, err) = parse_chunked(&m, &[], 100, STACK_READ);
        assert!(matches!(err, Some(ReadError::TooBig { .. })));
        // A 64-bit length over any limit, before its payload arrives.
        let huge = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(all(&huge).1, Some(ReadError::TooBig { .. })));
    }

    #[test]
    fn text_is_checked_as_it_arrives() {
        assert_eq!(
            all(&frame(true, OP_TEXT, "é".as_bytes())).0,
            [Incoming::Text]
        );
        let bad = frame(true, OP_TEXT, b"\xff");
        assert!(matches!(all(&bad).1, Some(ReadError::Utf8)));
        // "é" split across fragments is fine; an invalid byte fails at once.
        let mut split = frame(false, OP_TEXT, b"\xc3");
        split.extend(frame(true, OP_CONTINUATION, b"\xa9"));
        assert_eq!(all(&split).0, [Incoming::Text]);
        let mut early = frame(false, OP_TEXT, b"ok\xff");
        early.extend(frame(true, OP_CONTINUATION, b"x"));
        let (got, err) = all(&early);
        assert!(got.is_empty() && matches!(err, Some(ReadError::Utf8)));
        let truncated = frame(true, OP_TEXT, b"\xc3");
        assert!(matches!(all(&truncated).1, Some(ReadError::Utf8)));
    }

    #[test]
    fn close_frames_are_validated() {
        let (got, _) = all(&frame(true, OP_CLOSE, b""));
        assert_eq!(
            got,
            [Incoming::Close {
                code: None,
                reply: Bytes::new()
            }]
        );
        let one = frame(true, OP_CLOSE, b"\x03");
        assert!(matches!(all(&one).1, Some(ReadError::Protocol(_))));
        let bad_reason = frame(true, OP_CLOSE, b"\x03\xe8\xff");
        assert!(matches!(all(&bad_reason).1, Some(ReadError::Utf8)));
        for (code, allowed) in [
            (999u16, false),
            (1000, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1011, true),
            (1015, false),
            (2999, false),
            (3000, true),
            (4999, true),
            (5000, false),
        ] {
            let (got, _) = all(&frame(true, OP_CLOSE, &code.to_be_bytes()));
            let reply = if allowed {
                Bytes::copy_from_slice(&code.to_be_bytes())
            } else {
                Bytes::from_static(b"\x03\xeaProtocol violation")
            };
            assert_eq!(
                got,
                [Incoming::Close {
                    code: Some(code),
                    reply
                }],
                "{code}"
            );
        }
    }
}
