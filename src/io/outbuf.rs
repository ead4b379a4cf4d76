//! The socket under a connection's WebSocket: one write buffer, owned by
//! us, that leaves in one syscall per flush and is freed afterwards.
//!
//! tungstenite keeps its own write buffer's capacity forever, so a
//! connection that once received a big frame would hold that memory while
//! idle. So the connection's writer bypasses tungstenite for data frames:
//! it appends complete binary frames straight into [`OutBuf`], and
//! tungstenite (run with a write buffer of 0) hands its own frames — pings,
//! pongs, the close frame — down into the same buffer. Every append is a
//! whole frame, so frames never interleave; the writer sends the close
//! frame last. On flush the buffer is written out and its memory released.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// A close frame went in: nothing may follow it (RFC 6455 §5.5.1).
    closed: bool,
}

/// The shared outgoing buffer of one connection.
#[derive(Clone, Default)]
pub(crate) struct OutBuf(Arc<Mutex<State>>);

impl OutBuf {
    /// Appends one unmasked, unfragmented binary frame (server → client).
    /// Returns `false` (and appends nothing) once a close frame went in.
    pub fn push_binary(&self, payload: &[u8]) -> bool {
        let mut s = self.0.lock();
        if s.closed {
            return false;
        }
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        };
        // Writing into a Vec cannot fail.
        let _ = header.format(payload.len() as u64, &mut s.buf);
        s.buf.extend_from_slice(payload);
        true
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        let s = self.0.lock();
        s.buf.len() - s.pos
    }
}

/// The IO given to tungstenite: reads pass through; writes go to [`OutBuf`].
pub(crate) struct CoalescingIo<T> {
    inner: T,
    out: OutBuf,
    /// Buffered bytes beyond which a write first pushes the buffer out.
    limit: usize,
}

impl<T> CoalescingIo<T> {
    pub fn new(inner: T, out: OutBuf, limit: usize) -> Self {
        CoalescingIo {
            inner,
            out,
            limit: limit.max(1),
        }
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: AsyncWrite + Unpin> CoalescingIo<T> {
    /// Writes out everything buffered, then frees the buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.out.0.lock();
        while s.pos < s.buf.len() {
            let State { buf, pos, .. } = &mut *s;
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[*pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            s.pos += n;
        }
        // Freed, not cleared: an idle connection holds no write memory.
        s.pos = 0;
        s.buf = Vec::new();
        Poll::Ready(Ok(()))
    }
}

/// Walks the (server-written, whole) frames in `data` looking for a close
/// frame, with tungstenite's own header parser.
fn contains_close_frame(data: &[u8]) -> bool {
    let mut cursor = std::io::Cursor::new(data);
    while let Ok(Some((header, len))) = FrameHeader::parse(&mut cursor) {
        if header.opcode == OpCode::Control(Control::Close) {
            return true;
        }
        let next = cursor.position().saturating_add(len);
        if next >= data.len() as u64 {
            return false;
        }
        cursor.set_position(next);
    }
    false
}

impl<T: AsyncRead + Unpin> AsyncRead for CoalescingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.out.pending() >= this.limit {
            ready!(this.poll_drain(cx))?;
        }
        let mut s = this.out.0.lock();
        // tungstenite hands down whole frames (its write buffer is 0): note
        // a close frame so that no data frame is appended after it.
        if contains_close_frame(data) {
            s.closed = true;
        }
        s.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Checks that what the writer produces parses back with tungstenite, for
/// a sequence of writer operations read from `ops` (the fuzz target
/// `writer_frames`, and a unit test): binary frames appended to the
/// [`OutBuf`], tungstenite's pings, pongs and close frame written through
/// [`CoalescingIo`], flushes. A tungstenite client reading the bytes must
/// see exactly those messages in order, and nothing after the close.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_frames_parse_back(ops: &[u8]) {
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message;

    let Some((&limit, mut rest)) = ops.split_first() else {
        return;
    };
    let out = OutBuf::default();
    let mut io = CoalescingIo::new(Vec::<u8>::new(), out.clone(), usize::from(limit) * 64);
    let mut expected = Vec::new();
    let mut closed = false;
    futures::executor::block_on(async {
        while let Some((&op, r)) = rest.split_first() {
            let (len, r) = match r {
                [a, b, r @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), r),
                _ => (0, r),
            };
            let control = op & 3 == 2;
            let n = len.min(r.len()).min(if control { 125 } else { usize::MAX });
            let (payload, r) = r.split_at(n);
            rest = r;
            match op & 3 {
                0 | 1 => {
                    assert_eq!(out.push_binary(payload), !closed, "binary after close");
                    if !closed {
                        expected.push(Message::Binary(payload.to_vec().into()));
                    }
                }
                2 if !closed => {
                    let (frame, msg) = if op & 4 == 0 {
                        (
                            Frame::ping(payload.to_vec()),
                            Message::Ping(payload.to_vec().into()),
                        )
                    } else {
                        (
                            Frame::pong(payload.to_vec()),
                            Message::Pong(payload.to_vec().into()),
                        )
                    };
                    let mut b = Vec::new();
                    frame.format(&mut b).expect("a frame formats into a Vec");
                    io.write_all(&b).await.expect("writes to a Vec succeed");
                    expected.push(msg);
                }
                3 if !closed => {
                    let close = CloseFrame {
                        code: 4000u16.into(),
                        reason: "bye".into(),
                    };
                    let mut b = Vec::new();
                    Frame::close(Some(close.clone()))
                        .format(&mut b)
                        .expect("a frame formats into a Vec");
                    io.write_all(&b).await.expect("writes to a Vec succeed");
                    expected.push(Message::Close(Some(close)));
                    closed = true;
                }
                _ => {}
            }
            if op & 8 != 0 {
                io.flush().await.expect("flushes to a Vec succeed");
            }
        }
        io.shutdown().await.expect("shutdown of a Vec succeeds");
    });
    let written = std::mem::take(io.get_mut());

    /// Reads the written bytes; discards the client's own replies.
    struct Wire(std::io::Cursor<Vec<u8>>);
    impl std::io::Read for Wire {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl std::io::Write for Wire {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let mut ws = WebSocket::from_raw_socket(
        Wire(std::io::Cursor::new(written)),
        Role::Client,
        Some(config),
    );
    for want in expected {
        match ws.read() {
            Ok(got) => assert_eq!(got, want),
            Err(e) => panic!("expected {want:?}, tungstenite says {e}"),
        }
    }
    assert!(ws.read().is_err(), "nothing follows the expected frames");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn frames_leave_on_flush_and_the_buffer_is_freed() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let out = OutBuf::default();
        let mut io = CoalescingIo::new(a, out.clone(), 1 << 20);
        out.push_binary(&[7u8; 3]);
        out.push_binary(&[1u8; 300]);
        out.push_binary(&vec![2u8; 70_000]);
        io.write_all(b"\x89\x00").await.unwrap(); // a ping from tungstenite
        let mut probe = [0u8; 1];
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), b.read(&mut probe));
        assert!(early.await.is_err(), "nothing leaves before the flush");
        io.flush().await.unwrap();
        let mut got = vec![0u8; 2 + 3 + 4 + 300 + 10 + 70_000 + 2];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..5], &[0x82, 3, 7, 7, 7]);
        assert_eq!(&got[5..9], &[0x82, 126, 1, 44]); // 300 = 0x012c
        assert_eq!(&got[309..319], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]); // 70_000
        assert_eq!(&got[got.len() - 2..], b"\x89\x00");
        assert_eq!(out.0.lock().buf.capacity(), 0);
    }

    #[tokio::test]
    async fn no_data_frame_after_a_close_frame() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let out = OutBuf::default();
        let mut io = CoalescingIo::new(a, out.clone(), 1 << 16);
        assert!(out.push_binary(b"first"));
        // A pong and a close reply in one write, as tungstenite may hand them.
        io.write_all(b"\x8a\x00\x88\x02\x03\xe8").await.unwrap();
        assert!(!out.push_binary(b"after close"));
        io.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"\x82\x05first\x8a\x00\x88\x02\x03\xe8");
    }

    #[test]
    fn a_mixed_sequence_parses_back() {
        // limit 1 (64 bytes); binary 300, ping "hi", flush, pong, binary 0,
        // close, binary after close (refused), ping after close (skipped).
        let mut ops = vec![1u8];
        ops.extend([0, 44, 1]);
        ops.extend(vec![9u8; 300]);
        ops.extend([2 | 8, 2, 0, b'h', b'i']);
        ops.extend([2 | 4, 0, 0]);
        ops.extend([1, 0, 0]);
        ops.extend([3, 0, 0]);
        ops.extend([0, 1, 0, 7]);
        ops.extend([2, 0, 0]);
        check_frames_parse_back(&ops);
        check_frames_parse_back(&[]);
        check_frames_parse_back(&[0, 0]);
    }

    /// Every frame the writer produces parses back with tungstenite's own
    /// frame parser, whatever the payload length (each length-format
    /// boundary of RFC 6455 §5.2), and the close-frame scan finds only
    /// close frames.
    #[test]
    fn written_frames_parse_back_with_tungstenite() {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 1 << 20] {
            let out = OutBuf::default();
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert!(out.push_binary(&payload));
            let bytes = std::mem::take(&mut out.0.lock().buf);
            let mut cursor = std::io::Cursor::new(&bytes[..]);
            let (header, n) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(n as usize, len, "length {len}");
            assert!(header.is_final && header.mask.is_none());
            assert_eq!(header.opcode, OpCode::Data(Data::Binary));
            let start = cursor.position() as usize;
            assert_eq!(&bytes[start..], &payload[..], "payload of length {len}");
            assert!(!contains_close_frame(&bytes));
            let mut with_close = bytes.clone();
            Frame::close(None).format(&mut with_close).unwrap();
            assert!(contains_close_frame(&with_close), "close after {len}");
        }
    }
}
