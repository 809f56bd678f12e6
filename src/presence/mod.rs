//! Pure presence logic: no actors, no I/O, time passed in.
//!
//! - `record`: a user's stored record (chosen status, sessions) and how it turns into the
//!   `Presence` a viewer sees, with versions and since/last-seen bookkeeping.
//! - `limits`: the size limits of API.md and the checks that enforce them.
//! - `storm`: mass abrupt disconnects get a longer, bounded grace.

pub mod limits;
pub mod record;
pub mod storm;

pub use limits::{LimitError, Limits};
pub use record::{Choice, RecordError, SessionEntry, UserRecord};
