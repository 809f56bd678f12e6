//! The outbound side of one session: what the node still has to send to the device.
//!
//! It is the response stream itself (no writer task, no channel): the transport pulls a
//! frame when HTTP/2 flow control lets it, so a slow reader leaves updates here, where they
//! are coalesced to the latest per user. Memory is bounded by the watch list (one pending
//! entry per watched user) plus `max_control_frames` replies weighing at most
//! `max_unread_bytes` (plus the one reply that crossed it). A session whose replies are not
//! read waits (and so stops reading the device's frames: backpressure) for up to a timeout,
//! then ends with RESOURCE_EXHAUSTED.
//!
//! Snapshots are coalesced: a user's view in a snapshot still unread is shared (not copied)
//! by a later snapshot carrying the same view, so re-subscribing to watched users while the
//! first answer is unread costs a pointer per user, not a second copy of every record. What
//! the device receives is the same, frame for frame.
//!
//! It also holds the watch list, because what may be sent depends on it: a watcher gets an
//! update only when its view of a user changed, its versions per user strictly increase,
//! and nothing reaches it for a user before that user's `Snapshot`.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use prost::Message as _;

use super::watch_list::WatchList;

use crate::proto::{server_frame, Presence, PresenceUpdate, ServerFrame, Snapshot};

/// Most users in one `PresenceUpdate` frame; keeps frames well under the message size limit.
const MAX_UPDATE_BATCH: usize = 256;

/// Room kept above the reply bound for frames the node sends on its own (`Reconnect`).
const UNSOLICITED_SLACK: usize = 8;

/// Room kept above the byte bound for frames pushed without waiting for room (heartbeat
/// acks, `Reconnect`, revocations).
const UNSOLICITED_SLACK_BYTES: usize = 64 * 1024;

/// What one queued reply costs beyond its contents (queue slot, frame struct).
const REPLY_OVERHEAD: usize = std::mem::size_of::<Reply>() + std::mem::size_of::<ServerFrame>();

/// Both views of one user's record at one version, computed once per fan-out and shared by
/// every local watcher.
#[derive(Debug, Clone)]
pub struct ViewPair {
    pub user_id: String,
    /// What everyone but the user sees.
    pub public: Presence,
    pub public_hash: u64,
    /// What the user themself sees.
    pub owner: Presence,
    pub owner_hash: u64,
}

impl ViewPair {
    pub fn new(public: Presence, owner: Presence) -> Self {
        Self {
            user_id: public.user_id.clone(),
            public_hash: view_hash(&public),
            owner_hash: view_hash(&owner),
            public,
            owner,
        }
    }
}

/// Hash of what a watcher can see, the version excluded: equal hashes mean "nothing to tell".
pub fn view_hash(p: &Presence) -> u64 {
    let mut h = DefaultHasher::new();
    (
        p.status,
        &p.status_text,
        &p.devices,
        p.since_ms,
        p.last_seen_ms,
    )
        .hash(&mut h);
    h.finish()
}

/// Why no more frames can be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overflow {
    /// The control queue is full: the device does not read.
    SlowConsumer,
    /// The stream is already ending.
    Closed,
}

/// One watched user.
#[derive(Debug, Default)]
struct Watch {
    /// Highest version observed (sent, queued or skipped): anything older is stale.
    seen_version: u64,
    /// Hash of the view the device has (last sent).
    sent_hash: u64,
    /// The latest view not yet sent (boxed: most watches have none, and a `Presence` inline
    /// would cost every watch its size).
    pending: Option<Box<(Presence, u64)>>,
    /// Whether the user id is in `Inner::queue`.
    queued: bool,
    /// Subscribed but the snapshot is not queued yet: updates wait here.
    awaiting_snapshot: bool,
}

/// A reply waiting to be sent.
#[derive(Debug)]
enum Reply {
    Frame(ServerFrame),
    /// A snapshot whose views may be shared with later unread snapshots (`Inner::shared`).
    Snapshot {
        reference: u64,
        presences: Vec<Arc<Presence>>,
        denied_user_ids: Vec<String>,
    },
}

#[derive(Debug)]
struct Queued {
    reply: Reply,
    /// What it counts toward `Inner::unread_bytes`.
    cost: usize,
}

#[derive(Debug)]
struct Inner {
    /// Replies (welcome, snapshots, acks, errors, heartbeat acks, reconnect), in order.
    control: VecDeque<Queued>,
    /// What the replies in `control` weigh (encoded size plus bookkeeping; a view shared
    /// between snapshots counts once).
    unread_bytes: usize,
    /// user id -> its view in the latest unread snapshot carrying it, for later snapshots to
    /// share; an entry goes when the last snapshot holding it is sent.
    shared: HashMap<String, Arc<Presence>>,
    watches: WatchList<Watch>,
    /// Users with a pending update, in arrival order (may hold ids whose update was dropped).
    queue: VecDeque<String>,
    /// Set once: after the queued control frames, the stream ends (Ok) or fails (Err).
    ending: Option<Result<(), tonic::Status>>,
    /// The transport's waker while it waits for a frame.
    waker: Option<Waker>,
    /// Updates replaced by a newer one before they were sent.
    coalesced: u64,
}

pub struct Outbox {
    /// The session's own user: its own record is seen with the owner view.
    owner: String,
    max_control_frames: usize,
    max_unread_bytes: usize,
    inner: Mutex<Inner>,
    /// Signalled when the transport took a reply, for `reserve`.
    space: tokio::sync::Notify,
}

impl Outbox {
    pub fn new(owner: impl Into<String>, max_control_frames: usize) -> Arc<Self> {
        Self::bounded(owner, max_control_frames, usize::MAX / 2)
    }

    /// An outbox whose unread replies are bounded in frames and in bytes
    /// (`PRESENCE_MAX_UNREAD_FRAMES`, `PRESENCE_MAX_UNREAD_BYTES`).
    pub fn bounded(
        owner: impl Into<String>,
        max_control_frames: usize,
        max_unread_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            owner: owner.into(),
            max_control_frames,
            max_unread_bytes,
            inner: Mutex::new(Inner {
                control: VecDeque::new(),
                unread_bytes: 0,
                shared: HashMap::new(),
                watches: WatchList::default(),
                queue: VecDeque::new(),
                ending: None,
                waker: None,
                coalesced: 0,
            }),
            space: tokio::sync::Notify::new(),
        })
    }

    /// Waits until a reply fits. A device that does not read its replies for `patience`
    /// is a slow consumer: the stream is ended with RESOURCE_EXHAUSTED.
    pub async fn reserve(&self, patience: std::time::Duration) -> Result<(), Overflow> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.ending.is_some() {
                    return Err(Overflow::Closed);
                }
                let frames_full = inner.control.len() >= self.max_control_frames;
                if !frames_full && inner.unread_bytes < self.max_unread_bytes {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    let reason = if frames_full {
                        "unread_frames"
                    } else {
                        "unread_bytes"
                    };
                    metrics::counter!(crate::metrics::REFUSED, "reason" => reason).increment(1);
                    inner.ending = Some(Err(crate::errors::session::slow_consumer()));
                    wake(&mut inner);
                    return Err(Overflow::SlowConsumer);
                }
            }
            let _ = tokio::time::timeout_at(deadline, space).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave it inconsistent in a way that matters
        // more than losing the session, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a reply frame.
    pub fn push(&self, frame: server_frame::Kind) -> Result<(), Overflow> {
        let mut inner = self.lock();
        let frame = ServerFrame { kind: Some(frame) };
        let cost = REPLY_OVERHEAD + frame.encoded_len();
        self.push_locked(&mut inner, Reply::Frame(frame), cost)
    }

    fn push_locked(&self, inner: &mut Inner, reply: Reply, cost: usize) -> Result<(), Overflow> {
        if inner.ending.is_some() {
            return Err(Overflow::Closed);
        }
        let frames_over = inner.control.len() >= self.max_control_frames + UNSOLICITED_SLACK;
        let bytes_over = inner.unread_bytes
            >= self
                .max_unread_bytes
                .saturating_add(UNSOLICITED_SLACK_BYTES);
        if frames_over || bytes_over {
            let reason = if frames_over {
                "unread_frames"
            } else {
                "unread_bytes"
            };
            metrics::counter!(crate::metrics::REFUSED, "reason" => reason).increment(1);
            inner.ending = Some(Err(crate::errors::session::slow_consumer()));
            wake(inner);
            return Err(Overflow::SlowConsumer);
        }
        metrics::histogram!(crate::metrics::OUTBOX_DEPTH).record(inner.control.len() as f64);
        inner.unread_bytes += cost;
        inner.control.push_back(Queued { reply, cost });
        wake(inner);
        Ok(())
    }

    /// What the unread replies weigh (see `Inner::unread_bytes`).
    pub fn unread_bytes(&self) -> usize {
        self.lock().unread_bytes
    }

    /// Ends the stream after the frames already queued (first call wins).
    pub fn close(&self, result: Result<(), tonic::Status>) {
        let mut inner = self.lock();
        if inner.ending.is_none() {
            inner.ending = Some(result);
        }
        wake(&mut inner);
    }

    pub fn is_closed(&self) -> bool {
        self.lock().ending.is_some()
    }

    /// Number of watched users.
    pub fn watch_count(&self) -> usize {
        self.lock().watches.len()
    }

    /// How many of `ids` are not watched yet.
    pub fn count_unwatched(&self, ids: &[String]) -> usize {
        let inner = self.lock();
        ids.iter().filter(|id| !inner.watches.contains(id)).count()
    }

    pub fn watched_ids(&self) -> Vec<String> {
        self.lock().watches.ids().map(str::to_owned).collect()
    }

    /// Updates dropped because a newer one replaced them before sending.
    pub fn coalesced(&self) -> u64 {
        self.lock().coalesced
    }

    /// Starts watching `ids` (those not yet watched); until `complete_snapshot`, updates for
    /// them are held back. Returns the ids that are new.
    pub fn begin_watch(&self, ids: &[String]) -> Vec<String> {
        let mut inner = self.lock();
        let added = inner.watches.insert_missing(ids, || Watch {
            awaiting_snapshot: true,
            ..Watch::default()
        });
        // Users already watched wait for the snapshot too: an update sent from now on could
        // be newer than the store read the snapshot carries, which would then undo it.
        for id in ids {
            if let Some(watch) = inner.watches.get_mut(id) {
                watch.awaiting_snapshot = true;
            }
        }
        added
    }

    /// Undoes `begin_watch` when the subscribe fails: the users it added are dropped, and
    /// those already watched send what was held back for the snapshot.
    pub fn cancel_watch(&self, ids: &[String], added: &[String]) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.watches.remove(added);
        for id in ids {
            let Some(watch) = inner.watches.get_mut(id) else {
                continue;
            };
            if !std::mem::take(&mut watch.awaiting_snapshot) {
                continue;
            }
            queue_pending(watch, &mut inner.queue, id);
        }
        wake(inner);
    }

    /// Stops watching; returns the ids that were watched.
    pub fn unwatch(&self, ids: &[String]) -> Vec<String> {
        self.lock().watches.remove(ids)
    }

    /// Queues the `Snapshot` answering a subscribe, and releases the updates held back
    /// meanwhile that are newer than it.
    pub fn complete_snapshot(
        &self,
        reference: u64,
        mut views: Vec<Presence>,
        denied_user_ids: Vec<String>,
    ) -> Result<(), Overflow> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for view in &mut views {
            let Some(watch) = inner.watches.get_mut(&view.user_id) else {
                continue;
            };
            let hash = view_hash(view);
            let early = watch.pending.take();
            if !watch.awaiting_snapshot && view.version < watch.seen_version {
                // Already watched and the device has seen newer: repeat the newest known.
                if let Some(newer) = &early {
                    *view = newer.0.clone();
                }
            }
            watch.awaiting_snapshot = false;
            watch.seen_version = watch.seen_version.max(view.version);
            watch.sent_hash = view_hash(view);
            if let Some(early) = early {
                let (newer, newer_hash) = *early;
                if newer.version > view.version && newer_hash != hash {
                    watch.seen_version = newer.version;
                    watch.pending = Some(Box::new((newer, newer_hash)));
                    queue_pending(watch, &mut inner.queue, &view.user_id);
                }
            }
        }
        // Coalesced with the snapshots still unread: a view equal to one they carry is
        // shared, and counts only its pointer.
        let mut cost = REPLY_OVERHEAD
            + denied_user_ids
                .iter()
                .map(|id| id.len() + std::mem::size_of::<String>())
                .sum::<usize>();
        let presences = views
            .into_iter()
            .map(|view| {
                cost += std::mem::size_of::<Arc<Presence>>();
                match inner.shared.get(&view.user_id) {
                    Some(shared) if **shared == view => shared.clone(),
                    _ => {
                        cost += std::mem::size_of::<Presence>()
                            + view.encoded_len()
                            + view.user_id.len();
                        let view = Arc::new(view);
                        inner.shared.insert(view.user_id.clone(), view.clone());
                        view
                    }
                }
            })
            .collect();
        self.push_locked(
            inner,
            Reply::Snapshot {
                reference,
                presences,
                denied_user_ids,
            },
            cost,
        )
    }

    /// Stops watching users the viewer may no longer see (a decision turned to DENY or
    /// HIDE): each watched one is shown once more as OFFLINE with nothing else and a version
    /// above the last the device saw (listed as denied when `denied`), in one update queued
    /// as a reply, and its pending update is dropped. Returns the ids that were watched.
    pub fn revoke(&self, users: &[(String, bool)]) -> Result<Vec<String>, Overflow> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut presences = Vec::new();
        let mut denied_user_ids = Vec::new();
        let mut removed = Vec::new();
        for (user, denied) in users {
            let Some(watch) = inner.watches.get_mut(user) else {
                continue;
            };
            presences.push(Presence {
                user_id: user.clone(),
                status: crate::proto::Status::Offline as i32,
                version: watch.seen_version + 1,
                ..Presence::default()
            });
            if *denied {
                denied_user_ids.push(user.clone());
            }
            removed.push(user.clone());
        }
        if removed.is_empty() {
            return Ok(removed);
        }
        inner.watches.remove(&removed);
        let frame = ServerFrame {
            kind: Some(server_frame::Kind::Update(PresenceUpdate {
                presences,
                denied_user_ids,
            })),
        };
        let cost = REPLY_OVERHEAD + frame.encoded_len();
        self.push_locked(inner, Reply::Frame(frame), cost)?;
        Ok(removed)
    }

    /// Offers a change of a watched user. Stale versions and changes the device cannot see
    /// are dropped; a pending update for the same user is replaced by the newer one.
    pub fn offer(&self, pair: &ViewPair) {
        let (view, hash) = if pair.user_id == self.owner {
            (&pair.owner, pair.owner_hash)
        } else {
            (&pair.public, pair.public_hash)
        };
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.ending.is_some() {
            return;
        }
        let Some(watch) = inner.watches.get_mut(&pair.user_id) else {
            return;
        };
        if view.version <= watch.seen_version {
            metrics::counter!(crate::metrics::UPDATES_DROPPED, "reason" => "stale").increment(1);
            return;
        }
        watch.seen_version = view.version;
        if watch.awaiting_snapshot {
            watch.pending = Some(Box::new((view.clone(), hash)));
            return;
        }
        let replaced = if hash == watch.sent_hash {
            // Back to what the device already shows: nothing to say.
            metrics::counter!(crate::metrics::UPDATES_DROPPED, "reason" => "unchanged")
                .increment(1);
            watch.pending.take().is_some()
        } else {
            watch
                .pending
                .replace(Box::new((view.clone(), hash)))
                .is_some()
        };
        if replaced {
            inner.coalesced += 1;
            metrics::counter!(crate::metrics::UPDATES_COALESCED).increment(1);
        }
        if queue_pending(watch, &mut inner.queue, &pair.user_id) {
            wake(inner);
        }
    }

    /// The next frame to send, or why there is none.
    fn poll_frame(&self, cx: &mut Context<'_>) -> Poll<Option<Result<ServerFrame, tonic::Status>>> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(Queued { reply, cost }) = inner.control.pop_front() {
            inner.unread_bytes -= cost;
            release_if_empty(&mut inner.control);
            let frame = match reply {
                Reply::Frame(frame) => frame,
                Reply::Snapshot {
                    reference,
                    presences,
                    denied_user_ids,
                } => ServerFrame {
                    kind: Some(server_frame::Kind::Snapshot(Snapshot {
                        r#ref: reference,
                        presences: presences
                            .into_iter()
                            .map(|view| unshare(&mut inner.shared, view))
                            .collect(),
                        denied_user_ids,
                    })),
                },
            };
            if inner.shared.is_empty() && inner.shared.capacity() > 0 {
                inner.shared = HashMap::new();
            }
            self.space.notify_waiters();
            return Poll::Ready(Some(Ok(frame)));
        }
        let mut presences = Vec::new();
        while presences.len() < MAX_UPDATE_BATCH {
            let Some(user) = inner.queue.pop_front() else {
                break;
            };
            let Some(watch) = inner.watches.get_mut(&user) else {
                continue;
            };
            watch.queued = false;
            if watch.awaiting_snapshot {
                // Queued before an unsubscribe and a new subscribe: its update goes after
                // the snapshot (`complete_snapshot` queues it again if still newer).
                continue;
            }
            if let Some(pending) = watch.pending.take() {
                let (view, hash) = *pending;
                watch.sent_hash = hash;
                presences.push(view);
            }
        }
        release_if_empty(&mut inner.queue);
        if !presences.is_empty() {
            metrics::counter!(crate::metrics::UPDATES_DELIVERED).increment(presences.len() as u64);
            return Poll::Ready(Some(Ok(ServerFrame {
                kind: Some(server_frame::Kind::Update(PresenceUpdate {
                    presences,
                    denied_user_ids: Vec::new(),
                })),
            })));
        }
        match inner.ending.as_mut() {
            Some(Ok(())) => Poll::Ready(None),
            Some(Err(status)) => {
                // Report the status once, then end.
                let status = std::mem::replace(status, crate::errors::session::reported());
                inner.ending = Some(Ok(()));
                Poll::Ready(Some(Err(status)))
            }
            None => {
                inner.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The view to send from a snapshot being sent; forgets it as shareable when no later
/// unread snapshot holds it.
fn unshare(shared: &mut HashMap<String, Arc<Presence>>, view: Arc<Presence>) -> Presence {
    // Two holders: this snapshot and the map, so no unread snapshot needs it any more.
    if Arc::strong_count(&view) == 2
        && shared
            .get(&view.user_id)
            .is_some_and(|s| Arc::ptr_eq(s, &view))
    {
        shared.remove(&view.user_id);
    }
    Arc::try_unwrap(view).unwrap_or_else(|view| (*view).clone())
}

/// Puts a watched user with a pending update in the send queue (once); returns whether it
/// was added.
fn queue_pending(watch: &mut Watch, queue: &mut VecDeque<String>, user_id: &str) -> bool {
    if watch.pending.is_none() || watch.queued {
        return false;
    }
    watch.queued = true;
    queue.push_back(user_id.to_owned());
    true
}

/// Frees an emptied queue's buffer: idle sessions are most sessions, and a retained buffer
/// (four 96-byte frames after the first reply) would cost each of them for nothing.
fn release_if_empty<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
}

fn wake(inner: &mut Inner) {
    if let Some(waker) = inner.waker.take() {
        waker.wake();
    }
}

/// The response stream of a `Session` call.
pub struct OutboxStream {
    outbox: Arc<Outbox>,
}

impl OutboxStream {
    pub fn new(outbox: Arc<Outbox>) -> Self {
        Self { outbox }
    }
}

impl Stream for OutboxStream {
    type Item = Result<ServerFrame, tonic::Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.outbox.poll_frame(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Ack, Status};
    use futures::StreamExt;

    fn presence(user: &str, status: Status, text: &str, version: u64) -> Presence {
        Presence {
            user_id: user.into(),
            status: status as i32,
            status_text: text.into(),
            version,
            ..Presence::default()
        }
    }

    fn pair(user: &str, status: Status, text: &str, version: u64) -> ViewPair {
        let p = presence(user, status, text, version);
        ViewPair::new(p.clone(), p)
    }

    /// Drains every frame available now.
    fn drain(outbox: &Arc<Outbox>) -> Vec<ServerFrame> {
        let mut stream = OutboxStream::new(outbox.clone());
        let mut out = Vec::new();
        while let Some(Some(frame)) = stream.next().now_or_never() {
            out.push(frame.unwrap());
        }
        out
    }

    use futures::FutureExt;

    /// The presences carried by the frames that `pick` selects, in order.
    fn presences_in(
        frames: &[ServerFrame],
        pick: impl Fn(&server_frame::Kind) -> Option<&Vec<Presence>>,
    ) -> Vec<Presence> {
        frames
            .iter()
            .filter_map(|f| f.kind.as_ref().and_then(&pick))
            .flatten()
            .cloned()
            .collect()
    }

    fn updates(frames: &[ServerFrame]) -> Vec<Presence> {
        presences_in(frames, |kind| match kind {
            server_frame::Kind::Update(u) => Some(&u.presences),
            _ => None,
        })
    }

    fn snapshots(frames: &[ServerFrame]) -> Vec<Presence> {
        presences_in(frames, |kind| match kind {
            server_frame::Kind::Snapshot(s) => Some(&s.presences),
            _ => None,
        })
    }

    fn watching(user: &str, at: Presence) -> Arc<Outbox> {
        let outbox = Outbox::new("me", 8);
        outbox.begin_watch(&[user.to_string()]);
        outbox.complete_snapshot(1, vec![at], Vec::new()).unwrap();
        drain(&outbox);
        outbox
    }

    #[test]
    fn an_update_queued_before_unsubscribe_and_resubscribe_waits_for_the_new_snapshot() {
        let outbox = watching("bob", presence("bob", Status::Offline, "", 1));
        // Queued, not read yet (a slow reader).
        outbox.offer(&pair("bob", Status::Online, "", 2));
        outbox.unwatch(&["bob".to_string()]);
        outbox.begin_watch(&["bob".to_string()]);
        outbox.offer(&pair("bob", Status::Busy, "", 3));
        // Nothing about bob before his snapshot.
        assert!(updates(&drain(&outbox)).is_empty());
        outbox
            .complete_snapshot(2, vec![presence("bob", Status::Online, "", 2)], Vec::new())
            .unwrap();
        let frames = drain(&outbox);
        assert_eq!(snapshots(&frames)[0].version, 2);
        let after = updates(&frames);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].version, 3);
    }

    #[test]
    fn subscribing_again_never_sends_a_snapshot_older_than_an_update_sent() {
        let outbox = watching("bob", presence("bob", Status::Offline, "", 1));
        assert!(outbox.begin_watch(&["bob".to_string()]).is_empty());
        // A change arrives between the store read (v2) and the snapshot: held back.
        outbox.offer(&pair("bob", Status::Busy, "", 3));
        assert!(updates(&drain(&outbox)).is_empty());
        outbox
            .complete_snapshot(2, vec![presence("bob", Status::Online, "", 2)], Vec::new())
            .unwrap();
        let frames = drain(&outbox);
        let versions: Vec<u64> = snapshots(&frames)
            .iter()
            .chain(updates(&frames).iter())
            .map(|p| p.version)
            .collect();
        assert_eq!(versions, vec![2, 3]);
    }

    #[test]
    fn a_failed_subscribe_releases_what_it_held_back() {
        let outbox = watching("bob", presence("bob", Status::Offline, "", 1));
        let added = outbox.begin_watch(&["bob".to_string(), "carol".to_string()]);
        assert_eq!(added, vec!["carol".to_string()]);
        outbox.offer(&pair("bob", Status::Busy, "", 3));
        outbox.cancel_watch(&["bob".to_string(), "carol".to_string()], &added);
        assert_eq!(outbox.watched_ids(), vec!["bob".to_string()]);
        let got = updates(&drain(&outbox));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].version, 3);
        // And later updates flow as before.
        outbox.offer(&pair("bob", Status::Away, "", 4));
        assert_eq!(updates(&drain(&outbox))[0].version, 4);
    }

    #[test]
    fn pending_updates_coalesce_to_the_latest() {
        let outbox = watching("bob", presence("bob", Status::Offline, "", 1));
        for v in 2..=100_000u64 {
            outbox.offer(&pair("bob", Status::Online, &format!("n={v}"), v));
        }
        let got = updates(&drain(&outbox));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status_text, "n=100000");
        assert_eq!(outbox.coalesced(), 99_998);
    }

    #[test]
    fn stale_and_duplicate_versions_are_dropped() {
        let outbox = watching("bob", presence("bob", Status::Offline, "", 5));
        outbox.offer(&pair("bob", Status::Online, "", 4));
        outbox.offer(&pair("bob", Status::Online, "", 5));
        assert!(updates(&drain(&outbox)).is_empty());
        outbox.offer(&pair("bob", Status::Online, "", 7));
        outbox.offer(&pair("bob", Status::Away, "", 6));
        let got = updates(&drain(&outbox));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].version, got[0].status), (7, Status::Online as i32));
    }

    #[test]
    fn no_update_when_the_view_did_not_change() {
        let outbox = watching("bob", presence("bob", Status::Online, "", 1));
        outbox.offer(&pair("bob", Status::Online, "", 2));
        assert!(updates(&drain(&outbox)).is_empty());
        // Away then back before the device read anything: nothing to tell.
        outbox.offer(&pair("bob", Status::Away, "", 3));
        outbox.offer(&pair("bob", Status::Online, "", 4));
        assert!(updates(&drain(&outbox)).is_empty());
        // An older change arriving late must not resurrect the AWAY.
        outbox.offer(&pair("bob", Status::Away, "", 3));
        assert!(updates(&drain(&outbox)).is_empty());
    }

    #[test]
    fn updates_wait_for_the_snapshot_and_only_newer_ones_follow_it() {
        let outbox = Outbox::new("me", 8);
        outbox.begin_watch(&["bob".to_string(), "carol".to_string()]);
        outbox.offer(&pair("bob", Status::Away, "", 3));
        outbox.offer(&pair("carol", Status::Busy, "", 9));
        assert!(drain(&outbox).is_empty(), "nothing before the snapshot");
        outbox
            .complete_snapshot(
                7,
                vec![
                    presence("bob", Status::Online, "", 5),
                    presence("carol", Status::Online, "", 8),
                ],
                Vec::new(),
            )
            .unwrap();
        let frames = drain(&outbox);
        assert!(matches!(
            frames[0].kind,
            Some(server_frame::Kind::Snapshot(Snapshot { r#ref: 7, .. }))
        ));
        let got = updates(&frames);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].user_id.as_str(), got[0].version), ("carol", 9));
    }

    #[test]
    fn owner_sees_owner_view() {
        let outbox = Outbox::new("me", 8);
        outbox.begin_watch(&["me".to_string()]);
        outbox
            .complete_snapshot(1, vec![presence("me", Status::Offline, "", 1)], Vec::new())
            .unwrap();
        drain(&outbox);
        let pair = ViewPair::new(
            presence("me", Status::Offline, "", 2),
            presence("me", Status::Invisible, "", 2),
        );
        outbox.offer(&pair);
        let got = updates(&drain(&outbox));
        assert_eq!(got[0].status, Status::Invisible as i32);
    }

    #[test]
    fn unwatched_users_get_nothing() {
        let outbox = watching("bob", presence("bob", Status::Offline, "", 1));
        outbox.offer(&pair("carol", Status::Online, "", 2));
        outbox.offer(&pair("bob", Status::Online, "", 2));
        assert_eq!(
            outbox.unwatch(&["bob".to_string()]),
            vec!["bob".to_string()]
        );
        assert!(updates(&drain(&outbox)).is_empty());
    }

    #[test]
    fn too_many_unsolicited_frames_end_the_stream_with_resource_exhausted() {
        let outbox = Outbox::new("me", 3);
        for r in 0..(3 + UNSOLICITED_SLACK as u64) {
            outbox
                .push(server_frame::Kind::Ack(Ack { r#ref: r }))
                .unwrap();
        }
        assert_eq!(
            outbox.push(server_frame::Kind::Ack(Ack { r#ref: 99 })),
            Err(Overflow::SlowConsumer)
        );
        let mut stream = OutboxStream::new(outbox.clone());
        let mut items = Vec::new();
        while let Some(Some(item)) = stream.next().now_or_never() {
            items.push(item);
        }
        assert_eq!(items.len(), 3 + UNSOLICITED_SLACK + 1);
        assert_eq!(
            items.last().unwrap().as_ref().unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
    }

    #[tokio::test(start_paused = true)]
    async fn replies_wait_for_the_reader_then_give_up() {
        let outbox = Outbox::new("me", 2);
        let patience = std::time::Duration::from_secs(30);
        for r in 0..2 {
            outbox.reserve(patience).await.unwrap();
            outbox
                .push(server_frame::Kind::Ack(Ack { r#ref: r }))
                .unwrap();
        }
        // Full: a reader taking one frame makes room.
        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.reserve(patience).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let mut stream = OutboxStream::new(outbox.clone());
        stream.next().await.unwrap().unwrap();
        assert_eq!(waiting.await.unwrap(), Ok(()));
        outbox
            .push(server_frame::Kind::Ack(Ack { r#ref: 2 }))
            .unwrap();
        // Nobody reads any more: after the patience the session is a slow consumer.
        assert_eq!(outbox.reserve(patience).await, Err(Overflow::SlowConsumer));
        assert!(outbox.is_closed());
    }

    #[test]
    fn a_repeated_snapshot_shares_the_unread_one_s_views() {
        let outbox = Outbox::new("me", 64);
        let ids: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
        let long = "x".repeat(256);
        let views = || {
            ids.iter()
                .map(|id| presence(id, Status::Busy, &long, 7))
                .collect::<Vec<_>>()
        };
        outbox.begin_watch(&ids);
        outbox.complete_snapshot(1, views(), Vec::new()).unwrap();
        let first = outbox.unread_bytes();
        assert!(first > 1000 * 256, "{first}");
        // Subscribing again while the first is unread: the same views, shared.
        for reference in 2..=5 {
            outbox.begin_watch(&ids);
            outbox
                .complete_snapshot(reference, views(), Vec::new())
                .unwrap();
        }
        let repeated = (outbox.unread_bytes() - first) / 4;
        assert!(repeated < first / 20, "{repeated} per repeat vs {first}");
        // A changed view is not shared.
        outbox.begin_watch(&ids[..1]);
        outbox
            .complete_snapshot(6, vec![presence("u0", Status::Away, &long, 8)], Vec::new())
            .unwrap();
        // What the device receives is the same as unshared, frame for frame.
        let frames = drain(&outbox);
        assert_eq!(frames.len(), 6);
        for frame in &frames[..5] {
            let Some(server_frame::Kind::Snapshot(s)) = &frame.kind else {
                panic!("{frame:?}");
            };
            assert_eq!(s.presences, views());
        }
        assert_eq!(snapshots(&frames[5..])[0].status, Status::Away as i32);
        assert_eq!(outbox.unread_bytes(), 0);
        assert!(outbox.lock().shared.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn unread_bytes_past_the_bound_for_the_patience_end_the_stream() {
        let outbox = Outbox::bounded("me", 1_000, 4096);
        let patience = std::time::Duration::from_secs(30);
        let mut r = 0;
        // Frames are far under the frame bound; bytes reach the byte bound.
        while outbox.unread_bytes() < 4096 {
            outbox.reserve(patience).await.unwrap();
            outbox
                .push(server_frame::Kind::Error(crate::proto::Error {
                    r#ref: r,
                    code: 0,
                    message: "m".repeat(200),
                }))
                .unwrap();
            r += 1;
        }
        assert!(r < 100);
        assert_eq!(outbox.reserve(patience).await, Err(Overflow::SlowConsumer));
        let mut stream = OutboxStream::new(outbox.clone());
        let mut last = None;
        while let Some(Some(item)) = stream.next().now_or_never() {
            last = Some(item);
        }
        assert_eq!(
            last.unwrap().unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
    }

    #[test]
    fn batches_are_bounded() {
        let outbox = Outbox::new("me", 8);
        let ids: Vec<String> = (0..600).map(|i| format!("u{i}")).collect();
        outbox.begin_watch(&ids);
        outbox
            .complete_snapshot(
                1,
                ids.iter()
                    .map(|id| presence(id, Status::Offline, "", 1))
                    .collect(),
                Vec::new(),
            )
            .unwrap();
        drain(&outbox);
        for id in &ids {
            outbox.offer(&pair(id, Status::Online, "", 2));
        }
        let frames = drain(&outbox);
        assert_eq!(frames.len(), 3);
        assert_eq!(updates(&frames).len(), 600);
    }
}
