//! The one place where the node's errors and refusals become `tonic::Status`: every gRPC
//! status a client can receive from the node is built here, so the same cause always gets
//! the same code and wording on every service and transport.

use std::fmt::Display;

use tonic::{Code, Status};

use crate::store::StoreError;

/// A store error, on any service: the store cannot be reached (or kept losing a
/// compare-and-set) is UNAVAILABLE, a record refusing the write (the per-user session cap)
/// is RESOURCE_EXHAUSTED.
pub fn store(e: &StoreError) -> Status {
    match e {
        StoreError::Unavailable(_) | StoreError::Contended(_) => Status::unavailable(e.to_string()),
        StoreError::Record(e) => Status::resource_exhausted(e.to_string()),
    }
}

/// No valid identity on a call (`e` says why; it never echoes the credential).
pub fn unauthenticated(e: impl Display) -> Status {
    Status::unauthenticated(e.to_string())
}

/// A request or first frame that breaks a limit or the protocol.
pub fn invalid_argument(e: impl Display) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A session whose first frame is not `hello`.
pub fn hello_expected() -> Status {
    Status::invalid_argument("the first frame must be hello")
}

/// New sessions while the node drains.
pub fn draining() -> Status {
    Status::unavailable("node draining; reconnect to another node")
}

/// The node is stopping: its actors are gone.
pub fn stopping() -> Status {
    Status::unavailable("node stopping")
}

/// A session over the node's cap, with gRPC's standard retry hint (`grpc-retry-pushback-ms`,
/// jittered) so clients back off and the load balancer can pick another node.
pub fn node_at_capacity(max: usize) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "node at capacity ({max} sessions); retry later or elsewhere"
    ));
    let retry_ms = rand::random_range(1_000..=5_000u64);
    if let Ok(value) = retry_ms.to_string().parse() {
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", value);
    }
    status
}

/// Past a rate of one caller (`what`: "session opens", "GetPresence calls"), with gRPC's
/// standard retry hint: when the caller's bucket has a token again.
pub fn rate_limited(what: &str, wait: std::time::Duration) -> Status {
    let mut status = Status::resource_exhausted(format!("too many {what}; retry later"));
    let retry_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    if let Ok(value) = retry_ms.to_string().parse() {
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", value);
    }
    status
}

/// A `GetPresence` whose answer would be larger than the node answers (bytes).
pub fn answer_too_large(bytes: usize, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "the answer would be {bytes} bytes, the limit is {max}"
    ))
}

/// What a message over the size limit is answered with (`RESOURCE_EXHAUSTED`): nothing of
/// the request is echoed.
pub const MESSAGE_TOO_LARGE: &str = "message too large";

/// A session stream over the connection's cap of streams that have not said hello.
pub fn too_many_pending_hellos(max: usize) -> Status {
    Status::resource_exhausted(format!(
        "too many session streams waiting for their hello on this connection (at most {max})"
    ))
}

/// No watch decision could be had (authorizer down, slow, erring): fail closed.
pub fn watch_policy_unavailable(e: impl Display) -> Status {
    Status::unavailable(e.to_string())
}

/// A session actor could not be started.
pub fn cannot_start_session(e: impl Display) -> Status {
    Status::unavailable(format!("cannot start a session: {e}"))
}

/// How a session's stream ends, by cause.
pub mod session {
    use super::*;

    /// No frame within the session TTL (or no hello within the hello timeout).
    pub fn silent() -> Status {
        Status::deadline_exceeded("no frame within the session ttl")
    }

    pub fn credential_expired() -> Status {
        Status::unauthenticated("credential expired")
    }

    /// The device left its replies unread past the bound for the session TTL.
    pub fn slow_consumer() -> Status {
        Status::resource_exhausted("slow consumer: replies not read")
    }

    /// Still open when the shutdown grace ran out.
    pub fn shutdown() -> Status {
        Status::unavailable("node shutting down")
    }

    /// The client reset its stream (`RST_STREAM`): an abrupt end, whatever tonic says.
    pub fn cancelled() -> Status {
        Status::cancelled("stream reset by the client")
    }

    /// The actor stopped without saying why.
    pub fn stopped() -> Status {
        Status::unavailable("session stopped")
    }

    /// The session actor crashed; its device should reconnect.
    pub fn crashed() -> Status {
        Status::internal("session failed; reconnect")
    }

    /// An operator ended the session (admin `Disconnect` with END).
    pub fn kicked(reason: &str) -> Status {
        Status::aborted(format!("disconnected by an operator: {reason}"))
    }

    /// What a stream that reported its error reports from then on: nothing more.
    pub fn reported() -> Status {
        Status::new(Code::Ok, "")
    }
}

/// The admin API's own refusals.
pub mod admin {
    use super::*;

    pub fn token_required() -> Status {
        Status::unauthenticated("admin token required (authorization: Bearer <token>)")
    }

    pub fn bad_disconnect_mode() -> Status {
        Status::invalid_argument("mode must be RECONNECT or END")
    }

    pub fn cannot_watch_everyone() -> Status {
        Status::failed_precondition(
            "watching every user needs one Redis: Redis Cluster has no sharded pattern subscription; give user_ids",
        )
    }

    pub fn change_stream_behind() -> Status {
        Status::resource_exhausted(
            "change stream fell too far behind; resubscribe and resync with GetPresence",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::RecordError;

    #[test]
    fn one_code_per_store_error() {
        assert_eq!(
            store(&StoreError::Unavailable("down".into())).code(),
            Code::Unavailable
        );
        assert_eq!(
            store(&StoreError::Contended("hot".into())).code(),
            Code::Unavailable
        );
        let refused = StoreError::Record(RecordError::TooManySessions { live: 16, max: 16 });
        assert_eq!(store(&refused).code(), Code::ResourceExhausted);
    }

    #[test]
    fn capacity_refusal_carries_a_retry_hint() {
        let status = node_at_capacity(10);
        assert_eq!(status.code(), Code::ResourceExhausted);
        let hint: u64 = status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1_000..=5_000).contains(&hint), "{hint}");
    }
}
