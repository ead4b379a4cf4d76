//! What a caller learns when a message cannot be delivered.

/// Why a message was not queued for a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The user has no connection here.
    #[error("user is not connected")]
    NotConnected,
    /// The connection's send queue went over its hard limits
    /// (`send_queue_hard_capacity`, `send_queue_hard_max_bytes`): the client
    /// is too slow and its connection is being closed with 4003. The
    /// message was dropped. (A queue over its soft limits for longer than
    /// `slow_consumer_grace` is closed too; later sends get `Closed`.)
    #[error("send queue full: slow consumer disconnected")]
    QueueFull,
    /// The connection is already closing; the message was dropped.
    #[error("connection is closing")]
    Closed,
    /// The server is shutting down; the message was dropped.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The message alone is bigger than `send_queue_max_bytes`; it was
    /// dropped and the connection is left alone.
    #[error("message larger than the send queue")]
    TooLarge,
    /// The user is not connected here and the backplane that reaches the
    /// other nodes is down; the message was dropped.
    #[error("backplane unavailable")]
    Unavailable,
}

/// Where a message for one user went (`Ok` of [`WsClient::send`](crate::WsClient::send)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Queued for the user's connection on this node.
    Local,
    /// The user has no connection on this node: the message was handed to
    /// the backplane for the node that holds the user, if one does. Across
    /// nodes delivery is at most once and not confirmed (a message published
    /// while that node's Redis connection is down is lost);
    /// [`WsClient::send_checked`](crate::WsClient::send_checked) waits for
    /// Redis to say whether a node received it.
    Forwarded,
}

/// The outcome of a send to several users ([`send_many`](crate::WsClient::send_many),
/// [`broadcast`](crate::WsClient::broadcast)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReport {
    /// Connections the message was queued for (on this node).
    pub queued: usize,
    /// Recipients not on this node handed to the backplane for the other
    /// nodes (for a broadcast: 1 when it was handed on). At most once; see
    /// [`Delivery::Forwarded`].
    pub forwarded: usize,
    /// Users it was not queued for, and why. A broadcast that could not be
    /// handed to the other nodes is listed as user `*`.
    pub failed: Vec<(String, SendError)>,
}

impl SendReport {
    /// `true` when nothing failed.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// Counts one outcome for `user`.
    pub(crate) fn record(&mut self, user: &str, outcome: Result<(), SendError>) {
        match outcome {
            Ok(()) => self.queued += 1,
            Err(e) => self.failed.push((user.to_owned(), e)),
        }
    }

    /// The outcome for a single recipient (a report of one).
    pub(crate) fn single(mut self) -> Result<(), SendError> {
        match self.failed.pop() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }
}
