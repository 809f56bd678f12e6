//! Which users this node's watchers need events of: what cluster mode must be subscribed
//! to. The registry edits it (first local watcher of a user, last one leaving); the cluster
//! bridge follows it.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::Notify;

/// The users local sessions watch: what the bridge must be subscribed to. The registry
/// edits it; the bridge follows. A set, not a queue of changes, so it never grows beyond
/// the watched users however far the bridge falls behind.
#[derive(Default)]
pub struct Interest {
    desired: Mutex<HashSet<String>>,
    /// Change streams that want every user (admin `WatchChanges` without ids).
    everyone: std::sync::atomic::AtomicUsize,
    notify: Notify,
}

impl Interest {
    pub fn add(&self, user_id: &str) {
        self.desired.lock().unwrap().insert(user_id.to_owned());
        self.notify.notify_one();
    }

    pub fn remove(&self, user_id: &str) {
        self.desired.lock().unwrap().remove(user_id);
        self.notify.notify_one();
    }

    pub fn add_everyone(&self) {
        self.everyone
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub fn remove_everyone(&self) {
        self.everyone
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Completes at the next change (or at once if one happened since the last wait).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    pub fn wants_everyone(&self) -> bool {
        self.everyone.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    pub fn snapshot(&self) -> HashSet<String> {
        self.desired.lock().unwrap().clone()
    }
}
