//! The linger index: which users have a session lingering, ordered by when its grace ends,
//! so reaping takes the due ones without walking every user. Shared by the memory store
//! (all users) and the Redis store (this node's users: only the node that held a session
//! knows when its grace ends).

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct LingerIndex {
    /// (grace deadline ms, user id). A user with two lingering sessions is in it twice: each
    /// deadline is its own reason to look at the user again.
    entries: BTreeSet<(u64, String)>,
}

impl LingerIndex {
    /// Remembers that `user_id` has a session lingering until `until_ms`.
    pub fn insert(&mut self, until_ms: u64, user_id: &str) {
        self.entries.insert((until_ms, user_id.to_owned()));
    }

    /// Takes out the users whose deadline is at or before `now_ms`, earliest first (a user
    /// once per deadline).
    pub fn take_due(&mut self, now_ms: u64) -> Vec<String> {
        let due = match now_ms.checked_add(1) {
            // `(now_ms + 1, "")` sorts after every entry due at or before `now_ms` and
            // before every later one.
            Some(after) => {
                let later = self.entries.split_off(&(after, String::new()));
                std::mem::replace(&mut self.entries, later)
            }
            None => std::mem::take(&mut self.entries),
        };
        due.into_iter().map(|(_, user)| user).collect()
    }

    /// The latest deadline in the index.
    pub fn last_deadline(&self) -> Option<u64> {
        self.entries.last().map(|(until, _)| *until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_what_is_due_earliest_first() {
        let mut index = LingerIndex::default();
        index.insert(300, "carol");
        index.insert(100, "bob");
        index.insert(200, "alice");
        assert!(index.take_due(99).is_empty());
        assert_eq!(
            index.take_due(200),
            vec!["bob", "alice"],
            "the deadline itself is due"
        );
        assert!(index.take_due(200).is_empty(), "taken out once");
        assert_eq!(index.take_due(1_000), vec!["carol"]);
        assert!(index.take_due(u64::MAX).is_empty());
    }

    #[test]
    fn a_user_comes_back_once_per_deadline() {
        let mut index = LingerIndex::default();
        index.insert(100, "alice");
        index.insert(100, "alice");
        index.insert(150, "alice");
        assert_eq!(index.take_due(120), vec!["alice"]);
        assert_eq!(index.take_due(150), vec!["alice"]);
    }

    #[test]
    fn the_last_deadline_is_the_latest_still_in_it() {
        let mut index = LingerIndex::default();
        assert_eq!(index.last_deadline(), None);
        index.insert(500, "bob");
        index.insert(100, "alice");
        assert_eq!(index.last_deadline(), Some(500));
        index.take_due(u64::MAX);
        assert_eq!(index.last_deadline(), None);
    }

    #[test]
    fn the_end_of_time_is_due_at_the_end_of_time() {
        let mut index = LingerIndex::default();
        index.insert(u64::MAX, "alice");
        assert!(index.take_due(u64::MAX - 1).is_empty());
        assert_eq!(index.take_due(u64::MAX), vec!["alice"]);
    }
}
