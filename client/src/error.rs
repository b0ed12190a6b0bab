//! The client's error type: a broker's error code, a connection or protocol failure, a timeout,
//! or a bad argument. Errors are `Clone` because one failed batch fails every record in it.

use quipu_protocol::ResponseError;

/// What went wrong; [`Error::is_retriable`] tells which errors a retry may cure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker answered with a Kafka error code.
    #[error("{context}: {error} (error code {code})", code = .error.code())]
    Broker {
        /// The error code, as kafka-protocol names it.
        error: ResponseError,
        /// What the client was doing (which topic, partition or group).
        context: String,
    },
    /// No connection could be made to any of the addresses.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The `host:port` tried.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// An established connection failed; requests on it have no answer.
    #[error("connection to {addr} lost: {reason}")]
    Disconnected {
        /// The broker's `host:port`.
        addr: String,
        /// Why the connection ended.
        reason: String,
    },
    /// The broker's bytes did not decode, or it lacks a version of an API the client needs.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer within the configured time.
    #[error("timed out after {timeout_ms} ms: {what}")]
    Timeout {
        /// The limit that passed.
        timeout_ms: u64,
        /// What was waited for.
        what: String,
    },
    /// A bad setting or argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The producer or consumer was closed.
    #[error("closed")]
    Closed,
}

impl Error {
    /// The broker's error, when there is one.
    pub fn broker_error(&self) -> Option<ResponseError> {
        match self {
            Error::Broker { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// Whether the same request may succeed later (a leader moved, a connection dropped).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Broker { error, .. } => error.is_retriable(),
            Error::Connect { .. } | Error::Disconnected { .. } | Error::Timeout { .. } => true,
            Error::Protocol(_) | Error::InvalidArgument(_) | Error::Closed => false,
        }
    }

    /// Whether the cached metadata may be stale: the client should refresh it before a retry.
    pub fn invalidates_metadata(&self) -> bool {
        match self {
            Error::Broker { error, .. } => matches!(
                error,
                ResponseError::NotLeaderOrFollower
                    | ResponseError::UnknownTopicOrPartition
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::UnknownLeaderEpoch
                    | ResponseError::ReplicaNotAvailable
                    | ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::KafkaStorageError
            ),
            Error::Connect { .. } | Error::Disconnected { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn broker(code: i16, context: impl Into<String>) -> Option<Self> {
        ResponseError::try_from_code(code).map(|error| Error::Broker {
            error,
            context: context.into(),
        })
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
