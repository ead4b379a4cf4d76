//! [`LocalBackplane`]: a cluster of one node, the default. Nothing needs
//! recording elsewhere and there is nobody to tell, so every operation
//! succeeds at once; the hub alone is the authority on users, rooms and
//! activities (including the member limit and one connection per user).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{Backplane, BackplaneError, Claim, ClaimError, MemberRecord};
use crate::hub::policy::StateChange;
use crate::hub::rooms::RoomError;
use crate::hub::{Hub, Payload, Topic};
use crate::protocol::proto::Activity;

/// A cluster of one; see the module docs.
pub(crate) struct LocalBackplane {
    #[allow(dead_code)] // read through `Backplane::node_id`
    node_id: String,
    /// Claims are ordered by this counter: a handshake that claimed later
    /// wins over an earlier one that registers after it.
    epochs: AtomicU64,
}

impl LocalBackplane {
    pub fn new() -> Self {
        LocalBackplane {
            node_id: format!("local-{}", std::process::id()),
            epochs: AtomicU64::new(1),
        }
    }
}

#[async_trait]
impl Backplane for LocalBackplane {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn is_clustered(&self) -> bool {
        false
    }

    async fn start(&self, _hub: Arc<Hub>) -> Result<(), BackplaneError> {
        Ok(())
    }

    async fn stop(&self) {}

    fn publish(&self, _: Topic<'_>, _: &Payload, _: &[&str]) -> Result<(), BackplaneError> {
        Ok(()) // no other node to reach
    }

    async fn claim(&self, _user: &str, _conn: u64, _refuse_new: bool) -> Result<Claim, ClaimError> {
        // The registry decides conflicts and replacements here.
        Ok(Claim {
            epoch: self.epochs.fetch_add(1, Ordering::Relaxed),
        })
    }

    async fn release(&self, _user: &str, _conn: u64, _epoch: u64) {}

    async fn room_join(&self, _: &str, _: MemberRecord<'_>, _: usize) -> Result<u64, RoomError> {
        Ok(0)
    }

    async fn room_leave(&self, _: &str, _: &str, _: u64) -> Result<u64, RoomError> {
        Ok(0)
    }

    async fn room_update(
        &self,
        _: &str,
        _: Option<(&str, u64)>,
        _: &StateChange,
    ) -> Result<u64, RoomError> {
        Ok(0)
    }

    async fn room_close(&self, _: &str, _: &str) -> Result<usize, RoomError> {
        Ok(0)
    }

    async fn activity_set(&self, _: &Activity, _: u64) -> Result<(), BackplaneError> {
        Ok(())
    }
}
