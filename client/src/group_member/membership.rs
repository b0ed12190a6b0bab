//! A member's place in its group: the generation it holds ([`Generation`]), the coordinator's
//! answers that end it, and LeaveGroup. The join, the heartbeat and the commits all judge the
//! coordinator's errors here, so they agree on when a member is out.
//!
//! Invariant: a member counts itself out of its generation (its partitions lost, not revoked)
//! exactly on ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID, and each of those also
//! makes it join again.

use std::sync::Arc;

use quipu_protocol::messages::leave_group_request::MemberIdentity;
use quipu_protocol::messages::{GroupId, LeaveGroupRequest};
use quipu_protocol::{ResponseError, StrBytes};

use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// A group member's identity in the current generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generation {
    /// The id the coordinator gave this member.
    pub member_id: String,
    /// The group's generation, which commits carry.
    pub generation_id: i32,
    /// The assignment strategy the group chose.
    pub protocol: String,
    /// Whether this member computed the group's assignment.
    pub leader: bool,
}

/// Sends LeaveGroup for dynamic member `member_id`.
pub(crate) async fn leave_group(
    cluster: &Arc<Cluster>,
    group_id: &str,
    member_id: &str,
) -> Result<()> {
    let conn = cluster.coordinator(group_id).await?;
    let version = conn.version_for::<LeaveGroupRequest>()?;
    let mut request =
        LeaveGroupRequest::default().with_group_id(GroupId(StrBytes::from_string(group_id.into())));
    if version >= 3 {
        request.members =
            vec![MemberIdentity::default().with_member_id(StrBytes::from_string(member_id.into()))];
    } else {
        request.member_id = StrBytes::from_string(member_id.into());
    }
    let response = conn.send_version(&request, version).await?;
    if let Some(e) = Error::broker(response.error_code, "leave group") {
        return Err(e);
    }
    for member in &response.members {
        if let Some(e) = Error::broker(member.error_code, "leave group") {
            return Err(e);
        }
    }
    Ok(())
}

/// Errors that say this member is no longer in its generation: its partitions are lost.
pub(crate) fn fenced(e: &Error) -> bool {
    matches!(
        e.broker_error(),
        Some(
            ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
                | ResponseError::FencedInstanceId
        )
    )
}

/// Errors after which the member must join again.
pub(crate) fn rejoin_error(e: &Error) -> bool {
    matches!(
        e.broker_error(),
        Some(
            ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
                | ResponseError::MemberIdRequired
                | ResponseError::FencedInstanceId
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(error: ResponseError) -> Error {
        Error::Broker {
            error,
            context: "test".into(),
        }
    }

    #[test]
    fn every_fencing_error_also_asks_for_a_rejoin() {
        for error in [
            ResponseError::IllegalGeneration,
            ResponseError::UnknownMemberId,
            ResponseError::FencedInstanceId,
        ] {
            assert!(fenced(&broker(error)), "{error:?} fences");
            assert!(rejoin_error(&broker(error)), "{error:?} rejoins");
        }
    }

    #[test]
    fn a_rebalance_rejoins_without_losing_the_partitions() {
        for error in [
            ResponseError::RebalanceInProgress,
            ResponseError::MemberIdRequired,
        ] {
            assert!(!fenced(&broker(error)), "{error:?} does not fence");
            assert!(rejoin_error(&broker(error)), "{error:?} rejoins");
        }
    }

    #[test]
    fn errors_outside_the_group_protocol_neither_fence_nor_rejoin() {
        for e in [
            broker(ResponseError::NotCoordinator),
            broker(ResponseError::CoordinatorNotAvailable),
            Error::Closed,
            Error::Timeout {
                timeout_ms: 1,
                what: "test".into(),
            },
        ] {
            assert!(!fenced(&e), "{e} does not fence");
            assert!(!rejoin_error(&e), "{e} does not rejoin");
        }
    }
}
