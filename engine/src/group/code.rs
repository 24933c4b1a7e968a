//! The Kafka error codes the group coordinator answers with, and how it maps a failed
//! append to the error a client understands (Kafka's `CoordinatorOperationExceptionHelper`).

pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const NONE: i16 = 0;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const INVALID_FETCH_SIZE: i16 = 4;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const RECORD_LIST_TOO_LARGE: i16 = 18;
pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

/// The error a client gets when the append that would acknowledge its request failed with
/// `append_error` (the partition's produce error): lost leadership means "find the
/// coordinator again", a replication shortfall means "retry here".
pub fn append_error_to_client(append_error: i16) -> i16 {
    match append_error {
        UNKNOWN_TOPIC_OR_PARTITION
        | NOT_ENOUGH_REPLICAS
        | NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | REQUEST_TIMED_OUT => COORDINATOR_NOT_AVAILABLE,
        NOT_LEADER_OR_FOLLOWER | KAFKA_STORAGE_ERROR => NOT_COORDINATOR,
        MESSAGE_TOO_LARGE | RECORD_LIST_TOO_LARGE | INVALID_FETCH_SIZE => UNKNOWN_SERVER_ERROR,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::error::ResponseError as E;

    #[test]
    fn codes_are_kafkas() {
        let pairs = [
            (UNKNOWN_SERVER_ERROR, E::UnknownServerError),
            (UNKNOWN_TOPIC_OR_PARTITION, E::UnknownTopicOrPartition),
            (INVALID_FETCH_SIZE, E::InvalidFetchSize),
            (NOT_LEADER_OR_FOLLOWER, E::NotLeaderOrFollower),
            (REQUEST_TIMED_OUT, E::RequestTimedOut),
            (MESSAGE_TOO_LARGE, E::MessageTooLarge),
            (OFFSET_METADATA_TOO_LARGE, E::OffsetMetadataTooLarge),
            (COORDINATOR_LOAD_IN_PROGRESS, E::CoordinatorLoadInProgress),
            (COORDINATOR_NOT_AVAILABLE, E::CoordinatorNotAvailable),
            (NOT_COORDINATOR, E::NotCoordinator),
            (RECORD_LIST_TOO_LARGE, E::RecordListTooLarge),
            (NOT_ENOUGH_REPLICAS, E::NotEnoughReplicas),
            (NOT_ENOUGH_REPLICAS_AFTER_APPEND, E::NotEnoughReplicasAfterAppend),
            (ILLEGAL_GENERATION, E::IllegalGeneration),
            (INCONSISTENT_GROUP_PROTOCOL, E::InconsistentGroupProtocol),
            (INVALID_GROUP_ID, E::InvalidGroupId),
            (UNKNOWN_MEMBER_ID, E::UnknownMemberId),
            (INVALID_SESSION_TIMEOUT, E::InvalidSessionTimeout),
            (REBALANCE_IN_PROGRESS, E::RebalanceInProgress),
            (KAFKA_STORAGE_ERROR, E::KafkaStorageError),
            (NON_EMPTY_GROUP, E::NonEmptyGroup),
            (GROUP_ID_NOT_FOUND, E::GroupIdNotFound),
            (MEMBER_ID_REQUIRED, E::MemberIdRequired),
            (GROUP_MAX_SIZE_REACHED, E::GroupMaxSizeReached),
            (FENCED_INSTANCE_ID, E::FencedInstanceId),
            (GROUP_SUBSCRIBED_TO_TOPIC, E::GroupSubscribedToTopic),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours, theirs.code(), "{theirs:?}");
        }
    }

    #[test]
    fn append_errors_map_as_kafka_maps_them() {
        assert_eq!(append_error_to_client(NOT_LEADER_OR_FOLLOWER), NOT_COORDINATOR);
        assert_eq!(append_error_to_client(KAFKA_STORAGE_ERROR), NOT_COORDINATOR);
        assert_eq!(
            append_error_to_client(NOT_ENOUGH_REPLICAS),
            COORDINATOR_NOT_AVAILABLE
        );
        assert_eq!(
            append_error_to_client(REQUEST_TIMED_OUT),
            COORDINATOR_NOT_AVAILABLE
        );
        assert_eq!(
            append_error_to_client(UNKNOWN_TOPIC_OR_PARTITION),
            COORDINATOR_NOT_AVAILABLE
        );
        assert_eq!(append_error_to_client(MESSAGE_TOO_LARGE), UNKNOWN_SERVER_ERROR);
        assert_eq!(append_error_to_client(NOT_COORDINATOR), NOT_COORDINATOR);
    }
}
