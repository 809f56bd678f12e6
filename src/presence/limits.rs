//! The size limits of the API and the checks that enforce them. A frame that breaks a
//! limit is refused whole, never truncated.

use crate::proto::{ErrorCode, Status};

use super::record::is_choosable;

/// Configurable limits; defaults as in API.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_user_id_bytes: usize,
    pub max_status_text_bytes: usize,
    pub max_device_bytes: usize,
    pub max_ids_per_request: usize,
    pub max_subscriptions: usize,
    pub max_sessions_per_user: usize,
}

pub const DEFAULT_MAX_USER_ID_BYTES: usize = 128;
pub const DEFAULT_MAX_STATUS_TEXT_BYTES: usize = 256;
pub const DEFAULT_MAX_DEVICE_BYTES: usize = 64;
pub const DEFAULT_MAX_IDS_PER_REQUEST: usize = 1000;
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 10_000;
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 16;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_user_id_bytes: DEFAULT_MAX_USER_ID_BYTES,
            max_status_text_bytes: DEFAULT_MAX_STATUS_TEXT_BYTES,
            max_device_bytes: DEFAULT_MAX_DEVICE_BYTES,
            max_ids_per_request: DEFAULT_MAX_IDS_PER_REQUEST,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
        }
    }
}

/// Why a frame (or request) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("invalid user id {id:?}: {reason}")]
    UserId { id: String, reason: &'static str },
    #[error("status_text is {len} bytes, the limit is {max}")]
    TextTooLong { len: usize, max: usize },
    #[error("device label is {len} bytes or has control characters (1..={max} bytes)")]
    Device { len: usize, max: usize },
    #[error("{count} ids in one frame, the limit is {max}")]
    TooManyIds { count: usize, max: usize },
    #[error("no user ids given")]
    NoIds,
    #[error("watching {would_watch} users would exceed the limit of {max} per session")]
    TooManySubscriptions { would_watch: usize, max: usize },
    #[error("status {0} cannot be chosen (ONLINE, AWAY, BUSY or INVISIBLE; OFFLINE is derived)")]
    Status(i32),
}

impl LimitError {
    /// The `Error` frame code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            LimitError::UserId { .. } => ErrorCode::InvalidUserId,
            LimitError::TextTooLong { .. }
            | LimitError::Device { .. }
            | LimitError::TooManyIds { .. }
            | LimitError::NoIds => ErrorCode::InvalidArgument,
            LimitError::TooManySubscriptions { .. } => ErrorCode::TooManySubscriptions,
            LimitError::Status(_) => ErrorCode::InvalidStatus,
        }
    }
}

impl Limits {
    pub fn check_user_id(&self, id: &str) -> Result<(), LimitError> {
        let reason = if id.is_empty() {
            "empty"
        } else if id.len() > self.max_user_id_bytes {
            "too long"
        } else if id.chars().any(char::is_control) {
            "control characters"
        } else {
            return Ok(());
        };
        Err(LimitError::UserId {
            // Never echo an oversized id back whole.
            id: id.chars().take(64).collect(),
            reason,
        })
    }

    pub fn check_text(&self, text: &str) -> Result<(), LimitError> {
        if text.len() > self.max_status_text_bytes {
            return Err(LimitError::TextTooLong {
                len: text.len(),
                max: self.max_status_text_bytes,
            });
        }
        Ok(())
    }

    pub fn check_device(&self, device: &str) -> Result<(), LimitError> {
        if device.is_empty()
            || device.len() > self.max_device_bytes
            || device.chars().any(char::is_control)
        {
            return Err(LimitError::Device {
                len: device.len(),
                max: self.max_device_bytes,
            });
        }
        Ok(())
    }

    /// A status a user may choose, with its text.
    pub fn check_choice(&self, status: i32, text: &str) -> Result<Status, LimitError> {
        let status = Status::try_from(status)
            .ok()
            .filter(|s| is_choosable(*s))
            .ok_or(LimitError::Status(status))?;
        self.check_text(text)?;
        Ok(status)
    }

    /// Checks the ids of a lookup (count, then each id); duplicates are allowed, since a
    /// lookup answers one entry per requested id. An empty list is fine too.
    pub fn check_lookup_ids(&self, ids: &[String]) -> Result<(), LimitError> {
        if ids.len() > self.max_ids_per_request {
            return Err(LimitError::TooManyIds {
                count: ids.len(),
                max: self.max_ids_per_request,
            });
        }
        ids.iter().try_for_each(|id| self.check_user_id(id))
    }

    /// Checks a list of ids (count first, then each id) and returns them without
    /// duplicates, in first-seen order.
    pub fn check_ids(&self, ids: &[String]) -> Result<Vec<String>, LimitError> {
        if ids.is_empty() {
            return Err(LimitError::NoIds);
        }
        if ids.len() > self.max_ids_per_request {
            return Err(LimitError::TooManyIds {
                count: ids.len(),
                max: self.max_ids_per_request,
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        let mut unique = Vec::with_capacity(ids.len());
        for id in ids {
            self.check_user_id(id)?;
            if seen.insert(id.as_str()) {
                unique.push(id.clone());
            }
        }
        Ok(unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_bounds_and_characters() {
        let limits = Limits::default();
        assert!(limits.check_user_id("alice").is_ok());
        assert!(limits.check_user_id(&"é".repeat(64)).is_ok()); // 128 bytes
        assert!(limits.check_user_id(&"a".repeat(129)).is_err());
        assert!(limits.check_user_id("").is_err());
        assert!(limits.check_user_id("a\nb").is_err());
        assert!(limits.check_user_id("a\u{7f}").is_err());
        assert_eq!(
            limits.check_user_id("").unwrap_err().code(),
            ErrorCode::InvalidUserId
        );
    }

    #[test]
    fn text_limit_is_in_bytes() {
        let limits = Limits::default();
        assert!(limits.check_text(&"a".repeat(256)).is_ok());
        let err = limits.check_text(&"é".repeat(129)).unwrap_err();
        assert_eq!(err, LimitError::TextTooLong { len: 258, max: 256 });
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn offline_unspecified_and_unknown_cannot_be_chosen() {
        let limits = Limits::default();
        for bad in [Status::Offline as i32, Status::Unspecified as i32, 42] {
            let err = limits.check_choice(bad, "").unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidStatus);
        }
        assert_eq!(
            limits.check_choice(Status::Invisible as i32, "").unwrap(),
            Status::Invisible
        );
    }

    #[test]
    fn ids_are_counted_checked_and_deduplicated() {
        let limits = Limits {
            max_ids_per_request: 3,
            ..Limits::default()
        };
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            limits.check_ids(&ids(&["b", "a", "b"])).unwrap(),
            ids(&["b", "a"])
        );
        assert!(matches!(
            limits.check_ids(&ids(&["a", "b", "c", "d"])),
            Err(LimitError::TooManyIds { count: 4, max: 3 })
        ));
        assert_eq!(
            limits.check_ids(&ids(&["a", ""])).unwrap_err().code(),
            ErrorCode::InvalidUserId
        );
        assert!(limits.check_ids(&[]).is_err());
    }

    #[test]
    fn device_label_bounds() {
        let limits = Limits::default();
        assert!(limits.check_device("ios").is_ok());
        assert!(limits.check_device("").is_err());
        assert!(limits.check_device(&"d".repeat(65)).is_err());
    }
}
