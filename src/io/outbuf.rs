//! The connection writer's output: server frames (unmasked, never
//! fragmented) formatted here and written with as few syscalls and copies
//! as the batch allows.
//!
//! Small frames of a batch are appended to one buffer; the batch's last
//! frame, and any big payload, is written together with that buffer in one
//! vectored write (buffer, header, payload), so a payload is never copied
//! just to be sent and several queued frames still leave in one syscall.
//! A lone small frame (a reply, an event) is copied to the stack and sent
//! with one plain write instead: the kernel's vectored path costs more per
//! call than that copy.
//! The buffer is freed after each write-out: an idle connection holds no
//! write memory. A close frame is the last thing written (RFC 6455
//! §5.5.1): after it, frames are refused.

use std::io::{self, IoSlice};

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{close_payload, OP_BINARY, OP_CLOSE};

/// A lone frame up to this size (header included) is copied to the stack
/// and sent with one plain write (see `FrameWriter::write_out`).
const SMALL_FRAME: usize = 256;

/// Payloads from this size on are never copied into the buffer.
const COPY_LIMIT: usize = 16 << 10;

/// A final, unmasked frame header for a payload of `len` bytes; returns
/// the bytes and how many of them are the header.
fn head(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode;
    let n = match len {
        0..=125 => {
            h[1] = len as u8;
            2
        }
        126..=0xffff => {
            h[1] = 126;
            h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            h[1] = 127;
            h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    (h, n)
}

/// Writes frames to `W` (see the module docs).
pub(crate) struct FrameWriter<W> {
    io: W,
    /// Frames waiting to be written.
    out: Vec<u8>,
    /// Buffered bytes beyond which the buffer is written out.
    flush_above: usize,
    /// Whether `io` writes several buffers in one call; if not, small
    /// payloads are copied so that a frame still leaves in one write.
    vectored: bool,
    /// A close frame went in: nothing may follow it.
    closed: bool,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W, flush_above: usize) -> Self {
        let vectored = io.is_write_vectored();
        FrameWriter {
            io,
            out: Vec::new(),
            flush_above: flush_above.max(1),
            vectored,
            closed: false,
        }
    }

    /// Sends a binary frame: buffered when small and `more` frames follow
    /// in this batch (written out once over `flush_above`), else written
    /// now with what is buffered. Returns `false` (sending nothing) after a
    /// close frame.
    pub async fn binary(&mut self, payload: &[u8], more: bool) -> io::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        let (h, n) = head(OP_BINARY, payload.len());
        if more && payload.len() < COPY_LIMIT {
            self.out.extend_from_slice(&h[..n]);
            self.out.extend_from_slice(payload);
            if self.out.len() >= self.flush_above {
                self.flush().await?;
            }
        } else {
            self.write_out(&h[..n], payload).await?;
        }
        Ok(true)
    }

    /// Appends a control frame (at most 125 bytes of payload, cut if
    /// longer): a ping, a pong, or the close frame, after which nothing is
    /// appended any more. Returns `false` (appending nothing) after a close.
    pub fn control(&mut self, opcode: u8, payload: &[u8]) -> bool {
        if self.closed {
            return false;
        }
        let payload = &payload[..payload.len().min(125)];
        let (h, n) = head(opcode, payload.len());
        self.out.extend_from_slice(&h[..n]);
        self.out.extend_from_slice(payload);
        self.closed = opcode == OP_CLOSE;
        true
    }

    /// Appends a close frame with `code` and `reason` (cut to fit).
    pub fn close(&mut self, code: u16, reason: &str) -> bool {
        self.control(OP_CLOSE, &close_payload(code, reason))
    }

    /// Writes out what is buffered, then frees the buffer.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.write_out(&[], &[]).await
    }

    /// Writes the buffer, then `head` and `payload`, in one vectored write
    /// when the stream allows; frees the buffer.
    async fn write_out(&mut self, head: &[u8], payload: &[u8]) -> io::Result<()> {
        if self.out.is_empty() && !head.is_empty() && head.len() + payload.len() <= SMALL_FRAME {
            // A lone small frame (a reply, an event): one plain write of a
            // copy on the stack. The kernel's vectored write costs more
            // per call than the copy, and nothing is allocated.
            let n = std::future::poll_fn(|cx| {
                let mut frame = [0u8; SMALL_FRAME];
                let len = head.len() + payload.len();
                frame[..head.len()].copy_from_slice(head);
                frame[head.len()..len].copy_from_slice(payload);
                std::pin::Pin::new(&mut self.io).poll_write(cx, &frame[..len])
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            if n < head.len() + payload.len() {
                // The rest of a short write.
                let (h, p) = (n.min(head.len()), n.saturating_sub(head.len()));
                write_all_vectored(&mut self.io, [&[], &head[h..], &payload[p..]]).await?;
            }
            return self.io.flush().await;
        }
        if !self.vectored && payload.len() < COPY_LIMIT {
            self.out.extend_from_slice(head);
            self.out.extend_from_slice(payload);
            write_all_vectored(&mut self.io, [&self.out, &[], &[]]).await?;
        } else {
            write_all_vectored(&mut self.io, [&self.out, head, payload]).await?;
        }
        // Freed, not cleared: an idle connection holds no write memory.
        self.out = Vec::new();
        self.io.flush().await
    }

    /// Ends the stream for writing (after a flush).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.io.shutdown().await
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub fn into_inner(self) -> W {
        self.io
    }
}

/// Writes all of `parts`, in order, with as few vectored writes as the
/// stream takes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    io: &mut W,
    mut parts: [&[u8]; 3],
) -> io::Result<()> {
    while parts.iter().any(|p| !p.is_empty()) {
        let slices = parts.map(IoSlice::new);
        let mut n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        for p in &mut parts {
            let k = n.min(p.len());
            *p = &p[k..];
            n -= k;
        }
    }
    Ok(())
}

/// Checks that what the writer produces parses back with tungstenite, for
/// a sequence of writer operations read from `ops` (the fuzz target
/// `writer_frames`, and a unit test): binary frames (buffered or written
/// at once), pings, pongs, the close frame, flushes, through a stream that
/// takes a few bytes per write. A tungstenite client reading the bytes
/// must see exactly those messages in order, and nothing after the close.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_frames_parse_back(ops: &[u8]) {
    use super::{OP_PING, OP_PONG};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
    use tokio_tungstenite::tungstenite::Message;

    /// Takes at most `step` bytes per write (0: all), vectored or not.
    struct Trickle {
        bytes: Vec<u8>,
        step: usize,
        vectored: bool,
    }
    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = if self.step == 0 {
                buf.len()
            } else {
                buf.len().min(self.step)
            };
            self.bytes.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            if !self.vectored {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                return self.poll_write(cx, first);
            }
            let mut total = 0;
            for b in bufs {
                let Poll::Ready(Ok(n)) = self.as_mut().poll_write(cx, b) else {
                    unreachable!("Trickle writes are always ready");
                };
                total += n;
                if n < b.len() {
                    break;
                }
            }
            Poll::Ready(Ok(total))
        }
        fn is_write_vectored(&self) -> bool {
            self.vectored
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    let Some((&limit, mut rest)) = ops.split_first() else {
        return;
    };
    let io = Trickle {
        bytes: Vec::new(),
        step: usize::from(limit & 0x7f),
        vectored: limit & 0x80 == 0,
    };
    let mut w = FrameWriter::new(io, usize::from(limit) * 64);
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
                    let sent = w
                        .binary(payload, op & 1 == 0)
                        .await
                        .expect("Trickle writes");
                    assert_eq!(sent, !closed, "binary after close");
                    if !closed {
                        expected.push(Message::Binary(payload.to_vec().into()));
                    }
                }
                2 => {
                    let (opcode, msg) = if op & 4 == 0 {
                        (OP_PING, Message::Ping(payload.to_vec().into()))
                    } else {
                        (OP_PONG, Message::Pong(payload.to_vec().into()))
                    };
                    assert_eq!(w.control(opcode, payload), !closed, "control after close");
                    if !closed {
                        expected.push(msg);
                    }
                }
                _ => {
                    assert_eq!(w.close(4000, "bye"), !closed, "close after close");
                    if !closed {
                        expected.push(Message::Close(Some(CloseFrame {
                            code: 4000u16.into(),
                            reason: "bye".into(),
                        })));
                    }
                    closed = true;
                }
            }
            if op & 8 != 0 {
                w.flush().await.expect("Trickle flushes");
            }
        }
        w.shutdown().await.expect("Trickle shuts down");
    });
    let written = w.into_inner().bytes;

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
    use crate::io::{OP_PING, OP_PONG};
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn buffered_frames_leave_with_the_last_and_the_buffer_is_freed() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut w = FrameWriter::new(a, 1 << 20);
        w.binary(&[7u8; 3], true).await.unwrap();
        w.binary(&[1u8; 300], true).await.unwrap();
        assert!(w.control(OP_PING, b""));
        let mut probe = [0u8; 1];
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), b.read(&mut probe));
        assert!(early.await.is_err(), "nothing leaves before the batch ends");
        w.binary(&vec![2u8; 70_000], false).await.unwrap();
        assert_eq!(w.out.capacity(), 0);
        let mut got = vec![0u8; 2 + 3 + 4 + 300 + 2 + 10 + 70_000];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..5], &[0x82, 3, 7, 7, 7]);
        assert_eq!(&got[5..9], &[0x82, 126, 1, 44]); // 300 = 0x012c
        assert_eq!(&got[309..311], b"\x89\x00");
        assert_eq!(&got[311..321], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]); // 70_000
    }

    #[tokio::test]
    async fn nothing_after_a_close_frame() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = FrameWriter::new(a, 1 << 16);
        assert!(w.binary(b"first", true).await.unwrap());
        assert!(w.control(OP_PONG, b""));
        assert!(w.close(1000, ""));
        assert!(!w.binary(b"after close", false).await.unwrap());
        assert!(!w.control(OP_PING, b""));
        w.shutdown().await.unwrap();
        drop(w);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"\x82\x05first\x8a\x00\x88\x02\x03\xe8");
    }

    #[test]
    fn a_mixed_sequence_parses_back() {
        // binary 300 (buffered), ping "hi" + flush, pong, binary 0 (now),
        // close, binary after close (refused), ping after close (refused).
        for limit in [0u8, 1, 3, 0x81, 0x85] {
            let mut ops = vec![limit];
            ops.extend([0, 44, 1]);
            ops.extend(vec![9u8; 300]);
            ops.extend([2 | 8, 2, 0, b'h', b'i']);
            ops.extend([2 | 4, 0, 0]);
            ops.extend([1, 0, 0]);
            ops.extend([3, 0, 0]);
            ops.extend([0, 1, 0, 7]);
            ops.extend([2, 0, 0]);
            check_frames_parse_back(&ops);
        }
        check_frames_parse_back(&[]);
        check_frames_parse_back(&[0, 0]);
    }

    /// Every header parses back with tungstenite's own frame parser at
    /// each length-format boundary of RFC 6455 §5.2.
    #[test]
    fn headers_parse_back_with_tungstenite() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 1 << 20] {
            let (h, n) = head(OP_BINARY, len);
            let mut cursor = std::io::Cursor::new(&h[..n]);
            let (header, got) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(got as usize, len, "length {len}");
            assert_eq!(cursor.position() as usize, n);
            assert!(header.is_final && header.mask.is_none());
            assert_eq!(header.opcode, OpCode::Data(Data::Binary));
        }
    }
}
