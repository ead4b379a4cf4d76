//! The per-connection send queue: bounded, drained in batches by the
//! connection's single writer task, and carrying the close request that ends
//! the connection.
//!
//! A queue that overflows (by count or bytes) is a slow consumer: what is
//! queued is dropped and a 4003 close is requested, so one client that does
//! not read never holds memory or delays anyone else.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::close::{code, CloseRequest, DisconnectReason};
use crate::error::SendError;

pub(crate) struct SendQueue {
    state: Mutex<State>,
    /// Wakes the writer: something was queued or a close was requested.
    pub(crate) writer_wake: Notify,
    max_messages: u32,
    max_bytes: u32,
}

#[derive(Default)]
struct State {
    msgs: VecDeque<Bytes>,
    bytes: usize,
    close: Option<CloseRequest>,
    /// The peer is gone or closed: nothing more may be queued.
    ended: bool,
}

/// What the writer takes in one go.
pub(crate) struct Batch {
    pub msgs: VecDeque<Bytes>,
    pub close: Option<CloseRequest>,
    pub ended: bool,
}

impl SendQueue {
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        SendQueue {
            state: Mutex::new(State::default()),
            writer_wake: Notify::new(),
            max_messages: max_messages.clamp(1, u32::MAX as usize) as u32,
            max_bytes: max_bytes.clamp(1, u32::MAX as usize) as u32,
        }
    }

    /// Queues one encoded message. On overflow what is queued is dropped, a
    /// 4003 close is requested and `QueueFull` returned (once: later pushes
    /// get `Closed`).
    pub fn push(&self, frame: Bytes) -> Result<(), SendError> {
        let mut s = self.state.lock();
        if s.close.is_some() || s.ended {
            return Err(SendError::Closed);
        }
        if frame.len() > self.max_bytes as usize {
            return Err(SendError::TooLarge);
        }
        if s.msgs.len() >= self.max_messages as usize
            || s.bytes + frame.len() > self.max_bytes as usize
        {
            let mut req = CloseRequest::new(
                code::SLOW_CONSUMER,
                "slow consumer",
                DisconnectReason::SlowConsumer,
            );
            req.discard_queue = true;
            s.close = Some(req);
            s.msgs = VecDeque::new();
            s.bytes = 0;
            drop(s);
            self.writer_wake.notify_one();
            return Err(SendError::QueueFull);
        }
        s.bytes += frame.len();
        s.msgs.push_back(frame);
        let first = s.msgs.len() == 1;
        drop(s);
        if first {
            self.writer_wake.notify_one();
        }
        Ok(())
    }

    /// Requests a close. The first request wins (its reason is the one
    /// reported); returns whether this call was it.
    pub fn request_close(&self, req: CloseRequest) -> bool {
        let mut s = self.state.lock();
        if s.close.is_some() {
            return false;
        }
        if req.discard_queue {
            s.msgs = VecDeque::new();
            s.bytes = 0;
        }
        s.close = Some(req);
        drop(s);
        self.writer_wake.notify_one();
        true
    }

    /// The peer closed or went away: refuse further messages, let the writer
    /// finish.
    pub fn end(&self) {
        self.state.lock().ended = true;
        self.writer_wake.notify_one();
    }

    /// Takes everything queued (an empty queue keeps no allocation).
    pub fn take(&self) -> Batch {
        let mut s = self.state.lock();
        s.bytes = 0;
        Batch {
            msgs: std::mem::take(&mut s.msgs),
            close: s.close.clone(),
            ended: s.ended,
        }
    }

    /// The reason of the close requested so far, if any.
    pub fn close_reason(&self) -> Option<DisconnectReason> {
        self.state.lock().close.as_ref().map(|c| c.reason)
    }

    pub fn is_closing(&self) -> bool {
        let s = self.state.lock();
        s.close.is_some() || s.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_requests_slow_consumer_close() {
        let q = SendQueue::new(2, 1 << 20);
        q.push(Bytes::from_static(b"a")).unwrap();
        q.push(Bytes::from_static(b"b")).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"c")), Err(SendError::QueueFull));
        assert_eq!(q.push(Bytes::from_static(b"d")), Err(SendError::Closed));
        let b = q.take();
        assert!(b.msgs.is_empty());
        assert_eq!(b.close.unwrap().code, code::SLOW_CONSUMER);
    }

    #[test]
    fn a_frame_bigger_than_the_queue_is_refused_without_closing() {
        let q = SendQueue::new(100, 3);
        assert_eq!(
            q.push(Bytes::from_static(b"abcd")),
            Err(SendError::TooLarge)
        );
        q.push(Bytes::from_static(b"ab")).unwrap();
        assert!(q.close_reason().is_none());
    }

    #[test]
    fn byte_limit_counts() {
        let q = SendQueue::new(100, 3);
        q.push(Bytes::from_static(b"ab")).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"cd")), Err(SendError::QueueFull));
    }

    #[test]
    fn first_close_request_wins() {
        let q = SendQueue::new(4, 64);
        assert!(q.request_close(CloseRequest::new(4002, "bye", DisconnectReason::Kicked)));
        assert!(!q.request_close(CloseRequest::new(
            1001,
            "",
            DisconnectReason::ServerShutdown
        )));
        assert_eq!(q.close_reason(), Some(DisconnectReason::Kicked));
    }
}
