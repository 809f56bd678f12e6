//! What the transports add under the session protocol.
//!
//! - `request_end`: how a gRPC request stream ended (the client's clean `END_STREAM` or a
//!   `RST_STREAM` / transport error), which tonic itself does not tell apart.
//! - `connections`: serving a listener's connections: the connection cap, the idle GOAWAY,
//!   the header-list limit, pending hellos per connection, oversized messages refused.

pub mod connections;
pub mod request_end;
