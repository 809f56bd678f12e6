//! What the transports add under the session protocol.
//!
//! - `request_end`: how a gRPC request stream ended (the client's clean `END_STREAM` or a
//!   `RST_STREAM` / transport error), which tonic itself does not tell apart.

pub mod request_end;
