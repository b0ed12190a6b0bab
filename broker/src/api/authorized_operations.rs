//! The authorized-operations bit sets of Metadata, DescribeCluster and DescribeGroups (KIP-430).
//!
//! Quipu has no authorizer, so, as in Kafka without one, every operation a resource type supports
//! is allowed: each set is `1 << AclOperation code` over the resource's supported operations.
//! Invariant: a set is only sent when the request asked for it; otherwise the field keeps
//! Kafka's "not requested" value, `i32::MIN`.

/// Kafka's value for "authorized operations not requested".
pub const OMITTED: i32 = i32::MIN;

// AclOperation codes (Kafka's `org.apache.kafka.common.acl.AclOperation`).
const READ: u8 = 3;
const WRITE: u8 = 4;
const CREATE: u8 = 5;
const DELETE: u8 = 6;
const ALTER: u8 = 7;
const DESCRIBE: u8 = 8;
const CLUSTER_ACTION: u8 = 9;
const DESCRIBE_CONFIGS: u8 = 10;
const ALTER_CONFIGS: u8 = 11;
const IDEMPOTENT_WRITE: u8 = 12;

const fn bits(operations: &[u8]) -> i32 {
    let mut set = 0i32;
    let mut i = 0;
    while i < operations.len() {
        set |= 1 << operations[i];
        i += 1;
    }
    set
}

/// What may be done to a topic.
pub const TOPIC: i32 = bits(&[
    READ,
    WRITE,
    CREATE,
    DESCRIBE,
    DELETE,
    ALTER,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
]);

/// What may be done to the cluster.
pub const CLUSTER: i32 = bits(&[
    CREATE,
    CLUSTER_ACTION,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
    IDEMPOTENT_WRITE,
    ALTER,
    DESCRIBE,
]);

/// What may be done to a consumer group.
pub const GROUP: i32 = bits(&[READ, DESCRIBE, DELETE, DESCRIBE_CONFIGS, ALTER_CONFIGS]);

/// `set` when it was asked for, else [`OMITTED`].
pub fn when(requested: bool, set: i32) -> i32 {
    if requested {
        set
    } else {
        OMITTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sets_are_kafkas() {
        assert_eq!((TOPIC, CLUSTER, GROUP), (3576, 8096, 3400));
        assert_eq!(when(false, TOPIC), i32::MIN);
    }
}
