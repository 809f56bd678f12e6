//! A session's watched users and what it knows of each: a vector sorted by user id.
//!
//! Every idle session holds one, so its size is most of what a watch list costs: a
//! `HashMap<String, _>` of 20 users takes 32 buckets of 56 bytes plus control bytes; this
//! takes exactly 20 entries of 16 + `size_of::<V>()` bytes (boxed ids, capacity trimmed).
//! Lookups are binary searches, cheap at the watch-list limits; changes come in batches
//! (a subscribe, an unsubscribe), so each batch is one sort or one pass.

use std::collections::HashSet;

#[derive(Debug)]
pub struct WatchList<V> {
    entries: Vec<(Box<str>, V)>,
}

impl<V> Default for WatchList<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V> WatchList<V> {
    fn position(&self, id: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(key, _)| (**key).cmp(id))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.position(id).is_ok()
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        let i = self.position(id).ok()?;
        Some(&mut self.entries[i].1)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(id, _)| &**id)
    }

    /// Adds the ids not present yet, each with `make()`; returns them in the order given,
    /// once each.
    pub fn insert_missing(&mut self, ids: &[String], mut make: impl FnMut() -> V) -> Vec<String> {
        let mut added: Vec<String> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for id in ids {
            if !self.contains(id) && seen.insert(id) {
                added.push(id.clone());
            }
        }
        if !added.is_empty() {
            self.entries.reserve_exact(added.len());
            self.entries
                .extend(added.iter().map(|id| (Box::from(id.as_str()), make())));
            self.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        added
    }

    /// Removes the ids present; returns them in the order given, once each.
    pub fn remove(&mut self, ids: &[String]) -> Vec<String> {
        let mut removed: Vec<String> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for id in ids {
            if self.contains(id) && seen.insert(id) {
                removed.push(id.clone());
            }
        }
        if !removed.is_empty() {
            self.entries.retain(|(id, _)| !seen.contains(&**id));
            // A session that drops most of a large list gives the memory back.
            if self.entries.capacity() > 2 * self.entries.len() + 8 {
                self.entries.shrink_to_fit();
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn inserts_once_in_given_order_and_finds_by_id() {
        let mut list = WatchList::default();
        let mut n = 0;
        let added = list.insert_missing(&ids(&["c", "a", "c", "b"]), || {
            n += 1;
            n
        });
        assert_eq!(added, ids(&["c", "a", "b"]));
        assert_eq!(list.len(), 3);
        assert_eq!(list.ids().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(list.get_mut("c"), Some(&mut 1));
        assert_eq!(list.get_mut("b"), Some(&mut 3));
        assert_eq!(list.get_mut("zz"), None);
        // Present ids keep their value.
        let added = list.insert_missing(&ids(&["a", "d"]), || 9);
        assert_eq!(added, ids(&["d"]));
        assert_eq!(list.get_mut("a"), Some(&mut 2));
        assert_eq!(list.get_mut("d"), Some(&mut 9));
    }

    #[test]
    fn removes_only_present_ids_once() {
        let mut list = WatchList::default();
        list.insert_missing(&ids(&["a", "b", "c"]), || 0);
        let removed = list.remove(&ids(&["b", "x", "b", "a"]));
        assert_eq!(removed, ids(&["b", "a"]));
        assert_eq!(list.ids().collect::<Vec<_>>(), ["c"]);
        assert!(!list.contains("a"));
        assert!(list.remove(&ids(&["a"])).is_empty());
    }

    #[test]
    fn holds_exactly_its_entries() {
        let mut list = WatchList::default();
        let many: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
        list.insert_missing(&many, || 0u64);
        assert_eq!(list.entries.capacity(), 20);
        list.remove(&many[..18]);
        assert!(list.entries.capacity() <= 2 * list.len() + 8);
    }
}
