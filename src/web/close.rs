//! How a WebSocket session's end is told to the client: a fatal end is a close with code
//! 4000 + the gRPC status code and the status message as reason (API.md, "Browsers"), a
//! clean end a normal close (1000).

use axum::extract::ws::{CloseFrame, Message};
use tonic::Status;

/// WebSocket close codes 4000-4999 are for applications; ours are 4000 + gRPC code.
pub const APPLICATION_BASE: u16 = 4000;
/// RFC 6455 5.5: a control frame's payload is at most 125 bytes, 2 of them the code.
pub const MAX_REASON_BYTES: usize = 123;
/// RFC 6455 7.4.1: normal closure.
pub const NORMAL: u16 = 1000;

/// The close message for a session's result.
pub fn message(result: Result<(), &Status>) -> Message {
    let (code, reason) = match result {
        Ok(()) => (NORMAL, ""),
        Err(status) => (
            APPLICATION_BASE + status.code() as u16,
            truncate(status.message(), MAX_REASON_BYTES),
        ),
    };
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_4000_plus_grpc() {
        let close = |status: Status| match message(Err(&status)) {
            Message::Close(Some(frame)) => frame.code,
            _ => 0,
        };
        assert_eq!(close(Status::deadline_exceeded("x")), 4004);
        assert_eq!(close(Status::resource_exhausted("x")), 4008);
        assert_eq!(close(Status::unavailable("x")), 4014);
        assert_eq!(close(Status::unauthenticated("x")), 4016);
        assert_eq!(close(Status::invalid_argument("x")), 4003);
        assert!(matches!(message(Ok(())), Message::Close(Some(f)) if f.code == NORMAL));
    }

    #[test]
    fn reasons_are_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        let cut = truncate(&long, MAX_REASON_BYTES);
        assert_eq!(cut.len(), 122);
        assert!(long.starts_with(cut));
        assert_eq!(truncate("short", MAX_REASON_BYTES), "short");
    }
}
