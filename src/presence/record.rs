//! A user's record and its aggregation into what a viewer sees.
//!
//! The record is the truth (kept by the store); a `Presence` is a view of it. Others see
//! an INVISIBLE user exactly as an OFFLINE one; the user themself sees INVISIBLE with the
//! devices. Every change of the record gets a new version, strictly increasing per user.
//!
//! Two views: the owner's carries the record's version; the public one (everyone else)
//! carries a public version that moves only when what others see moves. So nothing an
//! INVISIBLE user does (text, sessions opening and ending) changes anything others can
//! observe, the version included.

use crate::proto::{Presence, Status};

/// One session of the user, on some node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    /// Unique across nodes (`node_id:counter`).
    pub session_id: String,
    /// Device label from `Hello`; a lingering session with the same label is replaced on
    /// reconnect, so a reconnect never flaps.
    pub device: String,
    /// The node that owns the session (whose lease it lives under in cluster mode).
    pub node_id: String,
    pub connected_at_ms: u64,
    /// Set when the session ended abruptly (or while draining): it still counts until then.
    pub linger_until_ms: Option<u64>,
}

impl SessionEntry {
    pub fn is_live(&self) -> bool {
        self.linger_until_ms.is_none()
    }
}

/// A status the user chose, with when: the wall clock (unix ms) of the node where the choice
/// was made. Across partitions the later choice wins (`UserRecord::sync_node_sessions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub status: Status,
    pub text: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("user already has {live} live sessions (limit {max})")]
    TooManySessions { live: usize, max: usize },
}

/// The stored record of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: String,
    /// The chosen status: ONLINE, AWAY, BUSY or INVISIBLE (never OFFLINE, which is derived).
    pub status: Status,
    pub status_text: String,
    /// When the current choice was made (unix ms, clock of the node where it was made; 0:
    /// never chosen, or stored by a layout without it). Compared, not the write's time,
    /// when a choice kept during an outage meets the store again.
    pub chosen_at_ms: u64,
    pub sessions: Vec<SessionEntry>,
    /// When the status others see last changed.
    pub since_ms: u64,
    /// When the user last stopped being visibly online (0: never).
    pub last_seen_ms: u64,
    /// Strictly increasing per user; 0 only for a record never written.
    pub version: u64,
    /// Last change; the record is dropped `retention` after this once it has no session.
    pub updated_at_ms: u64,
    /// The version at which what others see last changed (the public version); `None`: at
    /// this record's `version`. A marker rather than a number, so a store that assigns the
    /// version while writing (Redis) stores a record whose public view changed before knowing
    /// its version: `None` resolves to whatever version the write got.
    pub public_at: Option<u64>,
}

/// The next version after `prev`. It never goes below the clock (in microseconds-ish units),
/// so a user whose record was dropped after the retention period and created again still
/// gets versions above any a watcher saw before.
pub fn next_version(prev: u64, now_ms: u64) -> u64 {
    (prev + 1).max(now_ms.saturating_mul(1000))
}

/// Whether `choice` was made after the choice made at `stored_at_ms`. Equal times: the
/// stored one stays (it may be this very choice, written already).
pub fn is_later(choice: &Choice, stored_at_ms: u64) -> bool {
    choice.at_ms > stored_at_ms
}

/// Is this a status a user may choose?
pub fn is_choosable(status: Status) -> bool {
    matches!(
        status,
        Status::Online | Status::Away | Status::Busy | Status::Invisible
    )
}

impl UserRecord {
    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            status: Status::Online,
            status_text: String::new(),
            chosen_at_ms: 0,
            sessions: Vec::new(),
            since_ms: 0,
            last_seen_ms: 0,
            version: 0,
            updated_at_ms: 0,
            public_at: None,
        }
    }

    /// The version others see: that of the last change they could see.
    pub fn public_version(&self) -> u64 {
        self.public_at.unwrap_or(self.version)
    }

    /// Whether what others see changed at this record's version (a change they can observe).
    pub fn public_changed(&self) -> bool {
        self.public_at.is_none()
    }

    /// The status everyone but the user sees.
    pub fn public_status(&self) -> Status {
        if self.sessions.is_empty() || self.status == Status::Invisible {
            Status::Offline
        } else {
            self.status
        }
    }

    pub fn is_visibly_online(&self) -> bool {
        self.public_status() != Status::Offline
    }

    pub fn live_sessions(&self) -> usize {
        self.sessions.iter().filter(|s| s.is_live()).count()
    }

    /// Distinct device labels, sorted.
    pub fn devices(&self) -> Vec<String> {
        let mut devices: Vec<String> = self.sessions.iter().map(|s| s.device.clone()).collect();
        devices.sort_unstable();
        devices.dedup();
        devices
    }

    /// What a viewer sees; `viewer_is_owner` when the viewer is this user.
    pub fn view(&self, viewer_is_owner: bool) -> Presence {
        if viewer_is_owner {
            self.owner_view()
        } else {
            self.public_view()
        }
    }

    /// What everyone but the user sees, with the public version.
    pub fn public_view(&self) -> Presence {
        self.view_as(self.public_status(), self.public_version())
    }

    /// What the user themself sees: the chosen status while a session counts (INVISIBLE
    /// included, with the devices), with the record's version.
    pub fn owner_view(&self) -> Presence {
        let status = if self.sessions.is_empty() {
            self.public_status()
        } else {
            self.status
        };
        self.view_as(status, self.version)
    }

    /// What others see, the version apart (what a watcher's view compares).
    fn public_facts(&self) -> Presence {
        self.view_as(self.public_status(), 0)
    }

    fn view_as(&self, status: Status, version: u64) -> Presence {
        let offline = status == Status::Offline;
        Presence {
            user_id: self.user_id.clone(),
            status: status as i32,
            status_text: if offline {
                String::new()
            } else {
                self.status_text.clone()
            },
            devices: if offline { Vec::new() } else { self.devices() },
            since_ms: self.since_ms,
            last_seen_ms: if self.is_visibly_online() {
                0
            } else {
                self.last_seen_ms
            },
            version,
        }
    }

    /// Adds a session. A lingering session with the same device label is replaced, so a
    /// reconnect is invisible. `initial` (from `Hello`) is applied in the same change, so
    /// the session never shows another status first.
    pub fn open_session(
        &mut self,
        entry: SessionEntry,
        initial: Option<(Status, String)>,
        max_live_sessions: usize,
        now_ms: u64,
    ) -> Result<(), RecordError> {
        let live = self.live_sessions();
        if live >= max_live_sessions {
            return Err(RecordError::TooManySessions {
                live,
                max: max_live_sessions,
            });
        }
        let before = self.public_facts();
        self.sessions
            .retain(|s| s.is_live() || s.device != entry.device);
        self.sessions.push(entry);
        if let Some((status, text)) = initial {
            self.choose(status, text, now_ms);
        }
        self.commit(before, now_ms);
        Ok(())
    }

    /// The current choice.
    pub fn choice(&self) -> Choice {
        Choice {
            status: self.status,
            text: self.status_text.clone(),
            at_ms: self.chosen_at_ms,
        }
    }

    /// Sets the chosen status, made at `now_ms`. Choosing again what is already chosen
    /// changes nothing visible but is still a change of the record: it is the latest choice
    /// now (a choice kept during an outage that is older must not win over it).
    pub fn set_status(&mut self, status: Status, text: String, now_ms: u64) -> bool {
        if self.status == status && self.status_text == text && self.chosen_at_ms >= now_ms {
            return false;
        }
        let before = self.public_facts();
        self.choose(status, text, now_ms);
        self.commit(before, now_ms);
        true
    }

    fn choose(&mut self, status: Status, text: String, at_ms: u64) {
        self.status = status;
        self.status_text = text;
        self.chosen_at_ms = at_ms;
    }

    /// Ends a session: removed at once, or kept until `linger_until_ms`. Returns false if
    /// the session is unknown (already replaced or swept).
    pub fn end_session(
        &mut self,
        session_id: &str,
        linger_until_ms: Option<u64>,
        now_ms: u64,
    ) -> bool {
        self.end_session_capped(session_id, linger_until_ms, usize::MAX, now_ms)
    }

    /// `end_session` with at most `max_lingering` sessions lingering afterwards: past it,
    /// the oldest lingering ones (earliest grace deadline, then earliest connected) stop
    /// counting at once, in the same change. So a loop of opens and resets holds the
    /// record's sessions (and every watcher's `devices`) to the live cap plus this.
    pub fn end_session_capped(
        &mut self,
        session_id: &str,
        linger_until_ms: Option<u64>,
        max_lingering: usize,
        now_ms: u64,
    ) -> bool {
        let Some(pos) = self
            .sessions
            .iter()
            .position(|s| s.session_id == session_id)
        else {
            return false;
        };
        let before = self.public_facts();
        match linger_until_ms {
            Some(until) => {
                self.sessions[pos].linger_until_ms = Some(until);
                self.cap_lingering(max_lingering);
            }
            None => {
                self.sessions.swap_remove(pos);
            }
        }
        self.commit(before, now_ms);
        true
    }

    /// Drops the oldest lingering sessions until at most `max` linger.
    fn cap_lingering(&mut self, max: usize) {
        let lingering = self.sessions.len() - self.live_sessions();
        if lingering <= max {
            return;
        }
        let mut oldest: Vec<(u64, u64, String)> = self
            .sessions
            .iter()
            .filter_map(|s| {
                let until = s.linger_until_ms?;
                Some((until, s.connected_at_ms, s.session_id.clone()))
            })
            .collect();
        oldest.sort_unstable();
        oldest.truncate(lingering - max);
        self.sessions
            .retain(|s| s.is_live() || !oldest.iter().any(|(_, _, id)| *id == s.session_id));
    }

    /// Removes lingering sessions whose grace has passed. Returns whether anything changed.
    pub fn expire_lingering(&mut self, now_ms: u64) -> bool {
        let before_len = self.sessions.len();
        let before = self.public_facts();
        self.sessions
            .retain(|s| s.linger_until_ms.is_none_or(|until| until > now_ms));
        if self.sessions.len() == before_len {
            return false;
        }
        self.commit(before, now_ms);
        true
    }

    /// Removes every session owned by `node_id` (a dead or restarted node). Returns whether
    /// anything changed.
    pub fn remove_node_sessions(&mut self, node_id: &str, now_ms: u64) -> bool {
        let before_len = self.sessions.len();
        let before = self.public_facts();
        self.sessions.retain(|s| s.node_id != node_id);
        if self.sessions.len() == before_len {
            return false;
        }
        self.commit(before, now_ms);
        true
    }

    /// Makes the sessions of `node_id` exactly `sessions` (a node re-asserting what it holds
    /// after the store lost or missed writes). `chosen` (a choice made while the store was
    /// unreachable) replaces the chosen status only when it was made later than the one
    /// stored: the user's latest choice wins, whichever node it was made on. `known` is the
    /// choice the node last knew, restored when the store lost the record entirely.
    /// Returns whether anything changed.
    pub fn sync_node_sessions(
        &mut self,
        node_id: &str,
        sessions: &[SessionEntry],
        chosen: Option<Choice>,
        known: Option<Choice>,
        max_lingering: usize,
        now_ms: u64,
    ) -> bool {
        let chosen = match (chosen, self.version) {
            (Some(chosen), _) if is_later(&chosen, self.chosen_at_ms) => Some(chosen),
            (_, 0) => known,
            (_, _) => None,
        };
        let mut mine: Vec<&SessionEntry> = self
            .sessions
            .iter()
            .filter(|s| s.node_id == node_id)
            .collect();
        mine.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        let mut wanted: Vec<&SessionEntry> = sessions.iter().collect();
        wanted.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        let sessions_differ = mine != wanted;
        let status_differs = chosen.as_ref().is_some_and(|c| *c != self.choice());
        if !sessions_differ && !status_differs {
            return false;
        }
        let before = self.public_facts();
        if sessions_differ {
            self.sessions.retain(|s| s.node_id != node_id);
            // A lingering session whose device already reconnected elsewhere is not
            // brought back: it was replaced.
            let taken: Vec<String> = self.sessions.iter().map(|s| s.device.clone()).collect();
            self.sessions.extend(
                sessions
                    .iter()
                    .filter(|s| s.is_live() || !taken.contains(&s.device))
                    .cloned(),
            );
            self.cap_lingering(max_lingering);
        }
        if let Some(Choice {
            status,
            text,
            at_ms,
        }) = chosen
        {
            self.choose(status, text, at_ms);
        }
        self.commit(before, now_ms);
        true
    }

    /// The earliest grace deadline among lingering sessions.
    pub fn next_linger_deadline(&self) -> Option<u64> {
        self.sessions.iter().filter_map(|s| s.linger_until_ms).min()
    }

    /// Whether the store may forget this record: no session and untouched for `retention_ms`.
    pub fn is_expired(&self, now_ms: u64, retention_ms: u64) -> bool {
        self.sessions.is_empty() && self.updated_at_ms.saturating_add(retention_ms) <= now_ms
    }

    /// Bookkeeping after any change: since/last-seen follow the public status, the version
    /// moves on, and the public version with it only if what others see changed (`before`).
    fn commit(&mut self, before: Presence, now_ms: u64) {
        let public_before = self.public_version();
        let was = Status::try_from(before.status).unwrap_or(Status::Offline);
        let after = self.public_status();
        if after != was {
            self.since_ms = now_ms;
            if was != Status::Offline && after == Status::Offline {
                self.last_seen_ms = now_ms;
            }
        }
        self.version = next_version(self.version, now_ms);
        self.updated_at_ms = now_ms;
        self.public_at = (self.public_facts() == before).then_some(public_before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn session(id: &str, device: &str) -> SessionEntry {
        SessionEntry {
            session_id: id.into(),
            device: device.into(),
            node_id: "n1".into(),
            connected_at_ms: T0,
            linger_until_ms: None,
        }
    }

    fn choice(status: Status, text: &str, at_ms: u64) -> Choice {
        Choice {
            status,
            text: text.into(),
            at_ms,
        }
    }

    fn online(rec: &mut UserRecord, id: &str, device: &str, now: u64) {
        rec.open_session(session(id, device), None, 16, now)
            .unwrap();
    }

    #[test]
    fn never_seen_user_is_offline_with_version_zero() {
        let rec = UserRecord::new("alice");
        let view = rec.view(false);
        assert_eq!(view.status, Status::Offline as i32);
        assert_eq!((view.version, view.last_seen_ms, view.since_ms), (0, 0, 0));
    }

    #[test]
    fn first_session_makes_user_online_since_now() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        let view = rec.view(false);
        assert_eq!(view.status, Status::Online as i32);
        assert_eq!(view.devices, vec!["ios"]);
        assert_eq!(view.since_ms, T0);
        assert_eq!(view.last_seen_ms, 0);
        assert!(view.version > 0);
    }

    #[test]
    fn devices_are_distinct_and_sorted() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "web", T0);
        online(&mut rec, "s2", "ios", T0);
        online(&mut rec, "s3", "web", T0);
        assert_eq!(rec.view(false).devices, vec!["ios", "web"]);
    }

    #[test]
    fn status_belongs_to_user_and_survives_reconnect() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        assert!(rec.set_status(Status::Busy, "meeting".into(), T0 + 1));
        assert!(rec.end_session("s1", None, T0 + 2));
        assert_eq!(rec.view(false).status, Status::Offline as i32);
        assert_eq!(rec.view(false).status_text, "");
        online(&mut rec, "s2", "web", T0 + 3);
        let view = rec.view(false);
        assert_eq!(view.status, Status::Busy as i32);
        assert_eq!(view.status_text, "meeting");
    }

    #[test]
    fn invisible_looks_offline_to_others_and_invisible_to_owner() {
        let mut rec = UserRecord::new("alice");
        rec.open_session(
            session("s1", "ios"),
            Some((Status::Invisible, "shh".into())),
            16,
            T0,
        )
        .unwrap();
        let other = rec.view(false);
        assert_eq!(other.status, Status::Offline as i32);
        assert!(other.devices.is_empty() && other.status_text.is_empty());
        let own = rec.view(true);
        assert_eq!(own.status, Status::Invisible as i32);
        assert_eq!(own.devices, vec!["ios"]);
        assert_eq!(own.status_text, "shh");
    }

    #[test]
    fn starting_invisible_never_shows_online() {
        let mut rec = UserRecord::new("alice");
        rec.open_session(
            session("s1", "ios"),
            Some((Status::Invisible, String::new())),
            16,
            T0,
        )
        .unwrap();
        // Public status never left OFFLINE, so `since` never moved.
        assert_eq!(rec.since_ms, 0);
        assert_eq!(rec.public_status(), Status::Offline);
    }

    #[test]
    fn last_seen_set_when_user_stops_being_visibly_online() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        rec.end_session("s1", None, T0 + 500);
        let view = rec.view(false);
        assert_eq!(view.last_seen_ms, T0 + 500);
        assert_eq!(view.since_ms, T0 + 500);
        // Going invisible also counts as stopping being visibly online.
        online(&mut rec, "s2", "ios", T0 + 600);
        assert_eq!(rec.view(false).last_seen_ms, 0);
        rec.set_status(Status::Invisible, String::new(), T0 + 700);
        assert_eq!(rec.view(false).last_seen_ms, T0 + 700);
    }

    #[test]
    fn versions_strictly_increase_even_in_the_same_millisecond() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        let v1 = rec.version;
        rec.set_status(Status::Away, String::new(), T0);
        let v2 = rec.version;
        rec.set_status(Status::Busy, String::new(), T0);
        assert!(v1 < v2 && v2 < rec.version);
    }

    #[test]
    fn versions_stay_above_the_clock_after_the_record_was_forgotten() {
        let mut old = UserRecord::new("alice");
        online(&mut old, "s1", "ios", T0);
        let mut fresh = UserRecord::new("alice");
        online(&mut fresh, "s2", "ios", T0 + 1);
        assert!(fresh.version > old.version);
    }

    #[test]
    fn same_status_again_is_a_later_choice_but_no_visible_change() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        assert!(rec.set_status(Status::Busy, String::new(), T0 + 1));
        let (v, view) = (rec.version, rec.view(false));
        // In the same millisecond: nothing at all.
        assert!(!rec.set_status(Status::Busy, String::new(), T0 + 1));
        assert_eq!(rec.version, v);
        // Later: the choice's time moves (it is the latest choice), nothing else does.
        assert!(rec.set_status(Status::Busy, String::new(), T0 + 9));
        assert_eq!(rec.chosen_at_ms, T0 + 9);
        assert!(rec.version > v);
        assert_eq!(
            Presence {
                version: v,
                ..rec.view(false)
            },
            view
        );
    }

    #[test]
    fn every_choice_records_its_time_and_other_changes_keep_it() {
        let mut rec = UserRecord::new("alice");
        rec.open_session(
            session("s1", "ios"),
            Some((Status::Away, "lunch".into())),
            16,
            T0,
        )
        .unwrap();
        assert_eq!(rec.choice(), choice(Status::Away, "lunch", T0));
        // A hello without a status keeps the choice and its time.
        online(&mut rec, "s2", "web", T0 + 5);
        rec.end_session("s1", None, T0 + 6);
        assert_eq!(rec.chosen_at_ms, T0);
        rec.set_status(Status::Busy, String::new(), T0 + 7);
        assert_eq!(rec.choice(), choice(Status::Busy, "", T0 + 7));
    }

    /// alice has a session on n1 (cut off from the store) and one on n2; n2's later choice
    /// reached the store. What n1 re-asserts afterwards.
    fn chose_busy_through_n2_at(at_ms: u64) -> UserRecord {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        let mut other = session("s2", "web");
        other.node_id = "n2".into();
        rec.open_session(other, None, 16, T0).unwrap();
        rec.set_status(Status::Busy, "from n2".into(), at_ms);
        rec
    }

    #[test]
    fn a_choice_kept_during_an_outage_loses_to_a_later_one_made_elsewhere() {
        let mut rec = chose_busy_through_n2_at(T0 + 200);
        let v = rec.version;
        let mine = vec![session("s1", "ios")];
        let away = Some(choice(Status::Away, "kept", T0 + 100));
        assert!(!rec.sync_node_sessions("n1", &mine, away.clone(), None, usize::MAX, T0 + 500));
        assert_eq!(rec.choice(), choice(Status::Busy, "from n2", T0 + 200));
        assert_eq!(rec.version, v, "nothing changed");
        // Made in the same millisecond: the stored one stays too.
        let same = Some(choice(Status::Away, "kept", T0 + 200));
        assert!(!rec.sync_node_sessions("n1", &mine, same, None, usize::MAX, T0 + 500));
        // The sessions are still reconciled: an end kept during the outage is written.
        assert!(rec.sync_node_sessions("n1", &[], away, None, usize::MAX, T0 + 600));
        assert_eq!(rec.view(false).devices, vec!["web"]);
        assert_eq!(rec.status, Status::Busy);
        assert!(rec.version > v);
    }

    #[test]
    fn a_choice_kept_during_an_outage_wins_when_it_is_the_latest() {
        let mut rec = chose_busy_through_n2_at(T0 + 200);
        let v = rec.version;
        let mine = vec![session("s1", "ios")];
        let away = Some(choice(Status::Away, "kept", T0 + 300));
        assert!(rec.sync_node_sessions("n1", &mine, away, None, usize::MAX, T0 + 500));
        assert_eq!(rec.choice(), choice(Status::Away, "kept", T0 + 300));
        assert!(rec.version > v);
        assert_eq!(
            rec.since_ms,
            T0 + 500,
            "others see AWAY from the re-assert on"
        );
    }

    #[test]
    fn a_choice_kept_during_an_outage_wins_over_a_record_without_a_choice_time() {
        // Written by a layout that did not store the choice's time: it reads as 0.
        let mut rec = chose_busy_through_n2_at(T0 + 200);
        rec.chosen_at_ms = 0;
        let mine = vec![session("s1", "ios")];
        let away = Some(choice(Status::Away, "kept", T0 + 100));
        assert!(rec.sync_node_sessions("n1", &mine, away, None, usize::MAX, T0 + 500));
        assert_eq!(rec.status, Status::Away);
    }

    #[test]
    fn only_a_strictly_later_choice_is_later() {
        let c = choice(Status::Away, "", T0);
        assert!(is_later(&c, T0 - 1));
        assert!(is_later(&c, 0));
        assert!(!is_later(&c, T0));
        assert!(!is_later(&c, T0 + 1));
    }

    #[test]
    fn lingering_session_counts_until_grace_then_goes() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        rec.end_session("s1", Some(T0 + 3000), T0 + 10);
        assert_eq!(rec.view(false).status, Status::Online as i32);
        assert_eq!(rec.view(false).devices, vec!["ios"]);
        assert_eq!(rec.next_linger_deadline(), Some(T0 + 3000));
        assert!(!rec.expire_lingering(T0 + 2999));
        assert!(rec.expire_lingering(T0 + 3000));
        assert_eq!(rec.view(false).status, Status::Offline as i32);
        assert_eq!(rec.view(false).last_seen_ms, T0 + 3000);
    }

    #[test]
    fn reconnect_of_same_device_replaces_lingering_session_without_public_change() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        let before = rec.view(false);
        rec.end_session("s1", Some(T0 + 3000), T0 + 10);
        online(&mut rec, "s2", "ios", T0 + 20);
        let after = rec.view(false);
        assert_eq!(rec.sessions.len(), 1);
        assert_eq!(after.status, before.status);
        assert_eq!(after.devices, before.devices);
        assert_eq!(after.since_ms, before.since_ms);
        // The replaced session can no longer take the user offline.
        assert!(!rec.expire_lingering(T0 + 5000));
    }

    #[test]
    fn lingering_session_of_other_device_is_kept() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        rec.end_session("s1", Some(T0 + 3000), T0 + 10);
        online(&mut rec, "s2", "web", T0 + 20);
        assert_eq!(rec.view(false).devices, vec!["ios", "web"]);
        rec.expire_lingering(T0 + 3000);
        assert_eq!(rec.view(false).devices, vec!["web"]);
    }

    #[test]
    fn past_the_lingering_cap_the_oldest_lingering_session_stops_counting() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "live", "desk", T0);
        for i in 0..10u64 {
            let (id, device) = (format!("s{i}"), format!("d{i}"));
            online(&mut rec, &id, &device, T0 + i);
            assert!(rec.end_session_capped(&id, Some(T0 + 3000 + i), 3, T0 + i));
            let lingering = rec.sessions.len() - rec.live_sessions();
            assert!(lingering <= 3, "{lingering} lingering");
        }
        // The three most recent ends linger; the live session is never touched.
        assert_eq!(rec.view(false).devices, vec!["d7", "d8", "d9", "desk"]);
        assert_eq!(rec.live_sessions(), 1);
    }

    #[test]
    fn the_lingering_cap_leaves_live_sessions_and_clean_ends_alone() {
        let mut rec = UserRecord::new("alice");
        for i in 0..4 {
            online(&mut rec, &format!("s{i}"), &format!("d{i}"), T0);
        }
        rec.end_session_capped("s0", Some(T0 + 100), 1, T0);
        rec.end_session_capped("s1", Some(T0 + 200), 1, T0);
        assert_eq!(rec.view(false).devices, vec!["d1", "d2", "d3"]);
        rec.end_session_capped("s2", None, 1, T0);
        assert_eq!(rec.view(false).devices, vec!["d1", "d3"]);
        // The dropped one's deadline passing later changes nothing.
        assert!(!rec.expire_lingering(T0 + 150));
    }

    #[test]
    fn live_session_cap_ignores_lingering_sessions() {
        let mut rec = UserRecord::new("alice");
        for i in 0..2 {
            online(&mut rec, &format!("s{i}"), &format!("d{i}"), T0);
        }
        let err = rec
            .open_session(session("s9", "d9"), None, 2, T0)
            .unwrap_err();
        assert_eq!(err, RecordError::TooManySessions { live: 2, max: 2 });
        rec.end_session("s0", Some(T0 + 3000), T0);
        rec.open_session(session("s9", "d9"), None, 2, T0).unwrap();
    }

    #[test]
    fn removing_a_dead_nodes_sessions() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        let mut other = session("s2", "web");
        other.node_id = "n2".into();
        rec.open_session(other, None, 16, T0).unwrap();
        assert!(rec.remove_node_sessions("n1", T0 + 1));
        assert_eq!(rec.view(false).devices, vec!["web"]);
        assert!(!rec.remove_node_sessions("n1", T0 + 2));
    }

    #[test]
    fn syncing_a_nodes_sessions_restores_what_the_store_lost() {
        let mut lost = UserRecord::new("alice");
        let mine = vec![session("s1", "ios")];
        let known = Some(choice(Status::Busy, "x", T0 - 10));
        assert!(lost.sync_node_sessions("n1", &mine, None, known.clone(), usize::MAX, T0));
        assert_eq!(lost.view(false).status, Status::Busy as i32);
        assert_eq!(lost.view(false).devices, vec!["ios"]);
        assert_eq!(
            lost.chosen_at_ms,
            T0 - 10,
            "restored with the choice's own time"
        );
        // Same again: nothing to change, no new version; `known` only restores lost records.
        let v = lost.version;
        let other_known = Some(choice(Status::Away, "", T0 + 1));
        assert!(!lost.sync_node_sessions("n1", &mine, None, other_known, usize::MAX, T0 + 1));
        assert_eq!(lost.version, v);
        // Another node's sessions are left alone; ours replaced.
        let mut other = session("s9", "web");
        other.node_id = "n2".into();
        lost.open_session(other, None, 16, T0 + 2).unwrap();
        assert!(lost.sync_node_sessions("n1", &[], None, None, usize::MAX, T0 + 3));
        assert_eq!(lost.view(false).devices, vec!["web"]);
    }

    #[test]
    fn a_reassertion_keeps_the_lingering_cap() {
        let mut rec = UserRecord::new("alice");
        let mut live = session("live", "ios");
        live.node_id = "n3".into();
        rec.open_session(live, None, 16, T0).unwrap();
        // Another node's 10 lingering sessions, graces ending at T0 + 1000 + i.
        for i in 0..10u64 {
            let mut s = session(&format!("b{i}"), &format!("b-dev{i}"));
            s.node_id = "n2".into();
            s.linger_until_ms = Some(T0 + 1000 + i);
            rec.sessions.push(s);
        }
        // This node re-asserts 10 lingering ones of its own, graces ending later.
        let mine: Vec<SessionEntry> = (0..10u64)
            .map(|i| {
                let mut s = session(&format!("a{i}"), &format!("a-dev{i}"));
                s.linger_until_ms = Some(T0 + 2000 + i);
                s
            })
            .collect();
        assert!(rec.sync_node_sessions("n1", &mine, None, None, 16, T0 + 10));
        let lingering: Vec<&str> = rec
            .sessions
            .iter()
            .filter(|s| !s.is_live())
            .map(|s| s.session_id.as_str())
            .collect();
        assert_eq!(lingering.len(), 16, "{lingering:?}");
        // The 4 whose grace ends first stopped counting; the live session is untouched.
        assert!(["b0", "b1", "b2", "b3"]
            .iter()
            .all(|id| !lingering.contains(id)));
        assert!(rec.sessions.iter().any(|s| s.session_id == "live"));
    }

    #[test]
    fn retention_forgets_only_idle_records_without_sessions() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        assert!(!rec.is_expired(T0 + 10_000, 1000));
        rec.end_session("s1", None, T0 + 1);
        assert!(!rec.is_expired(T0 + 1000, 1000));
        assert!(rec.is_expired(T0 + 1001, 1000));
    }

    /// Every change an INVISIBLE user can make, one after the other, from `t`.
    fn invisible_changes(rec: &mut UserRecord, t: u64) {
        assert!(rec.set_status(Status::Invisible, "hiding".into(), t));
        online(rec, "s2", "web", t + 1);
        rec.end_session("s2", Some(t + 100), t + 2);
        online(rec, "s3", "web", t + 3); // replaces the lingering web session
        let mut elsewhere = session("s4", "tv");
        elsewhere.node_id = "n2".into();
        rec.open_session(elsewhere, None, 16, t + 4).unwrap();
        assert!(rec.remove_node_sessions("n2", t + 5));
        rec.end_session("s3", Some(t + 10), t + 6);
        assert!(rec.expire_lingering(t + 10));
        let mine = vec![session("s5", "ios")];
        assert!(rec.sync_node_sessions("n1", &mine, None, None, usize::MAX, t + 11));
        for id in ["s1", "s5"] {
            rec.end_session(id, None, t + 12);
        }
        assert!(rec.sessions.is_empty(), "every session ended");
    }

    #[test]
    fn what_others_see_of_an_invisible_user_never_moves() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        assert!(rec.set_status(Status::Invisible, String::new(), T0 + 10));
        let frozen = rec.public_view();
        assert_eq!(frozen.status, Status::Offline as i32);
        assert_eq!((frozen.since_ms, frozen.last_seen_ms), (T0 + 10, T0 + 10));
        assert_eq!(frozen.version, rec.version, "going invisible is seen");
        let mut owner_versions = vec![rec.version];
        for (i, text) in ["a", "b", "c"].into_iter().enumerate() {
            let now = T0 + 20 + i as u64;
            assert!(rec.set_status(Status::Invisible, text.into(), now));
            online(&mut rec, &format!("x{i}"), "laptop", now);
            owner_versions.push(rec.version);
            assert_eq!(rec.public_view(), frozen, "after text {text:?}");
            assert_eq!(rec.view(false), frozen);
            assert!(!rec.public_changed());
        }
        let own = rec.view(true);
        assert_eq!(own.status, Status::Invisible as i32);
        assert_eq!(own.status_text, "c");
        assert_eq!(own.devices, vec!["ios", "laptop"]);
        assert_eq!(own.version, rec.version);
        assert!(owner_versions.windows(2).all(|w| w[0] < w[1]));
        invisible_changes(&mut rec, T0 + 100);
        assert_eq!(rec.public_view(), frozen, "through every kind of change");
    }

    #[test]
    fn an_invisible_user_never_visible_looks_never_seen() {
        let never_seen = UserRecord::new("alice").view(false);
        let mut rec = UserRecord::new("alice");
        rec.open_session(
            session("s1", "ios"),
            Some((Status::Invisible, "shh".into())),
            16,
            T0,
        )
        .unwrap();
        assert_eq!(rec.public_view(), never_seen);
        invisible_changes(&mut rec, T0 + 1);
        assert_eq!(rec.public_view(), never_seen);
        assert!(rec.version > 0, "the record itself moved on");
    }

    #[test]
    fn becoming_visible_again_moves_the_public_version_above_the_frozen_one() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        rec.set_status(Status::Invisible, String::new(), T0 + 1);
        let frozen = rec.public_view();
        invisible_changes(&mut rec, T0 + 2);
        online(&mut rec, "s9", "ios", T0 + 50);
        assert_eq!(rec.public_view(), frozen);
        assert!(rec.set_status(Status::Away, "back".into(), T0 + 51));
        let back = rec.public_view();
        assert!(rec.public_changed());
        assert_eq!(back.version, rec.version);
        assert!(back.version > frozen.version);
        assert_eq!(back.status, Status::Away as i32);
        assert_eq!((back.since_ms, back.last_seen_ms), (T0 + 51, 0));
    }

    #[test]
    fn a_change_others_cannot_see_keeps_the_public_version_of_a_visible_user() {
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        let seen = rec.public_view();
        // A dropped connection that comes back within the grace: nothing others see.
        rec.end_session("s1", Some(T0 + 3000), T0 + 10);
        online(&mut rec, "s2", "ios", T0 + 20);
        assert_eq!(rec.public_view(), seen);
        assert!(rec.view(true).version > seen.version);
        online(&mut rec, "s3", "web", T0 + 30);
        assert_eq!(rec.public_view().version, rec.version);
    }

    #[test]
    fn the_public_marker_follows_a_version_assigned_after_the_change() {
        // A store that assigns the version on write (Redis) sets `version` after `commit`.
        let mut rec = UserRecord::new("alice");
        online(&mut rec, "s1", "ios", T0);
        rec.version = 7_000_000;
        assert_eq!(
            rec.public_version(),
            7_000_000,
            "changed at the assigned version"
        );
        rec.set_status(Status::Invisible, String::new(), T0 + 1);
        rec.version = 8_000_000;
        assert_eq!(rec.public_version(), 8_000_000);
        rec.set_status(Status::Invisible, "x".into(), T0 + 2);
        rec.version = 9_000_000;
        assert_eq!(rec.public_version(), 8_000_000, "frozen at the earlier one");
    }

    #[test]
    fn a_forgotten_invisible_user_comes_back_above_what_watchers_saw() {
        let mut old = UserRecord::new("alice");
        online(&mut old, "s1", "ios", T0);
        old.set_status(Status::Invisible, String::new(), T0 + 1);
        let seen = old.public_view().version;
        old.end_session("s1", None, T0 + 2);
        let retention = 1000;
        assert!(old.is_expired(T0 + 2 + retention, retention));
        // Forgotten; the user comes back invisible, then visible.
        let mut fresh = UserRecord::new("alice");
        let later = T0 + 2 + retention;
        fresh
            .open_session(
                session("s2", "ios"),
                Some((Status::Invisible, String::new())),
                16,
                later,
            )
            .unwrap();
        assert_eq!(fresh.public_view(), UserRecord::new("alice").view(false));
        fresh.set_status(Status::Online, String::new(), later + 1);
        assert!(fresh.public_view().version > seen);
    }
}
