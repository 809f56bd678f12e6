//! How a record is stored in Redis and sent in change events. The version is kept apart
//! (the write script assigns it); the body is JSON, short field names.

use serde::{Deserialize, Serialize};

use crate::presence::{SessionEntry, UserRecord};
use crate::proto::Status;

#[derive(Debug, Serialize, Deserialize)]
struct StoredSession {
    id: String,
    d: String,
    n: String,
    at: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    lu: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredRecord {
    st: i32,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    tx: String,
    /// When the status was chosen (unix ms, clock of the node where it was chosen). Records
    /// written before this field existed read as 0: older than any choice.
    #[serde(default)]
    ca: u64,
    #[serde(default)]
    since: u64,
    #[serde(default)]
    ls: u64,
    #[serde(default)]
    up: u64,
    #[serde(default)]
    s: Vec<StoredSession>,
    /// The public version (`UserRecord::public_at`) when it is not the record's own: absent
    /// means "what others see changed at this record's version", which the write script
    /// assigns after the body is made. Layouts before it have none: read as absent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pv: Option<u64>,
}

/// The hash field holding a user's record: `<version>\n<body>` (the write script writes
/// it; the version is also kept alone in field `v` for the compare-and-set).
pub const RECORD_FIELD: &str = "r";
/// The hash field holding the version alone.
pub const VERSION_FIELD: &str = "v";

/// The record without its version (the body of field `r` and of change events).
pub fn encode_body(record: &UserRecord) -> String {
    let stored = StoredRecord {
        st: record.status as i32,
        tx: record.status_text.clone(),
        ca: record.chosen_at_ms,
        since: record.since_ms,
        ls: record.last_seen_ms,
        up: record.updated_at_ms,
        s: record
            .sessions
            .iter()
            .map(|s| StoredSession {
                id: s.session_id.clone(),
                d: s.device.clone(),
                n: s.node_id.clone(),
                at: s.connected_at_ms,
                lu: s.linger_until_ms,
            })
            .collect(),
        pv: record.public_at,
    };
    serde_json::to_string(&stored).expect("a record always serializes")
}

/// The record of `user_id` from its body and version.
pub fn decode(user_id: &str, version: u64, body: &str) -> Result<UserRecord, String> {
    let stored: StoredRecord =
        serde_json::from_str(body).map_err(|e| format!("bad record of {user_id:?}: {e}"))?;
    Ok(UserRecord {
        user_id: user_id.to_owned(),
        status: Status::try_from(stored.st).unwrap_or(Status::Online),
        status_text: stored.tx,
        chosen_at_ms: stored.ca,
        sessions: stored
            .s
            .into_iter()
            .map(|s| SessionEntry {
                session_id: s.id,
                device: s.d,
                node_id: s.n,
                connected_at_ms: s.at,
                linger_until_ms: s.lu,
            })
            .collect(),
        since_ms: stored.since,
        last_seen_ms: stored.ls,
        version,
        updated_at_ms: stored.up,
        // A public version above the record's can only come from something else writing
        // the hash: the record's own is then the safe bound.
        public_at: stored.pv.filter(|pv| *pv <= version),
    })
}

/// The record of `user_id` from its stored field `r`.
pub fn decode_stored(user_id: &str, stored: &str) -> Result<UserRecord, String> {
    let (version, body) = stored
        .split_once('\n')
        .ok_or_else(|| format!("bad record of {user_id:?}: no version"))?;
    let version = version
        .parse()
        .map_err(|_| format!("bad record of {user_id:?}: version {version:?}"))?;
    decode(user_id, version, body)
}

/// Splits the bulk read script's reply into `n` stored records (`None`: no record), or
/// `None` when it does not hold exactly `n`.
pub fn split_joined(joined: &str, n: usize) -> Option<Vec<Option<&str>>> {
    let rows: Vec<Option<&str>> = joined
        .split('\x1e')
        .map(|r| (!r.is_empty()).then_some(r))
        .collect();
    (rows.len() == n).then_some(rows)
}

/// A change event: `<origin node>\n<version>\n<body>`.
pub fn encode_event_prefix(origin: &str) -> String {
    format!("{origin}\n")
}

/// Splits an event into (origin node, version, body).
pub fn decode_event(payload: &str) -> Option<(&str, u64, &str)> {
    let (origin, rest) = payload.split_once('\n')?;
    let (version, body) = rest.split_once('\n')?;
    Some((origin, version.parse().ok()?, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut record = UserRecord::new("alice");
        record
            .open_session(
                SessionEntry {
                    session_id: "n1:1".into(),
                    device: "ios".into(),
                    node_id: "n1".into(),
                    connected_at_ms: 5,
                    linger_until_ms: Some(9),
                },
                Some((Status::Busy, "in \"quotes\"\n".into())),
                16,
                7,
            )
            .unwrap();
        let back = decode("alice", record.version, &encode_body(&record)).unwrap();
        assert_eq!(back, record);
        let stored = format!("{}\n{}", record.version, encode_body(&record));
        assert_eq!(decode_stored("alice", &stored).unwrap(), record);
        assert_eq!(back.chosen_at_ms, 7, "the choice's time is kept");
        assert!(decode_stored("alice", "12").is_err());
        assert!(decode_stored("alice", "x\n{}").is_err());
    }

    #[test]
    fn a_record_written_without_the_choice_time_reads_as_chosen_at_zero() {
        let old = r#"{"st":4,"tx":"meeting","since":5,"ls":0,"up":6,"s":[]}"#;
        let record = decode("alice", 3, old).unwrap();
        assert_eq!(record.status, Status::Busy);
        assert_eq!(record.status_text, "meeting");
        assert_eq!(record.chosen_at_ms, 0);
    }

    #[test]
    fn the_public_version_round_trips_and_older_layouts_read_as_changed_now() {
        let mut record = UserRecord::new("alice");
        let session = SessionEntry {
            session_id: "n1:1".into(),
            device: "ios".into(),
            node_id: "n1".into(),
            connected_at_ms: 5,
            linger_until_ms: None,
        };
        record.open_session(session, None, 16, 7).unwrap();
        assert!(
            !encode_body(&record).contains("\"pv\""),
            "{}",
            encode_body(&record)
        );
        record.set_status(Status::Invisible, String::new(), 8);
        let frozen = record.version;
        record.set_status(Status::Invisible, "x".into(), 9);
        assert_eq!(record.public_at, Some(frozen));
        // Redis assigns another version on write: the frozen one stays.
        let back = decode("alice", frozen + 500, &encode_body(&record)).unwrap();
        assert_eq!(back.public_version(), frozen);
        assert_eq!(back.view(false), record.view(false));
        // A body without `pv` (the layout before it): what others see is at its version.
        let old = decode("alice", 42, "{\"st\":5,\"s\":[]}").unwrap();
        assert_eq!(old.public_version(), 42);
        // A public version above the record's cannot be right: the record's bounds it.
        let odd = decode("alice", 42, "{\"st\":5,\"pv\":99}").unwrap();
        assert_eq!(odd.public_version(), 42);
    }

    #[test]
    fn bulk_replies_split_into_one_row_per_user() {
        assert_eq!(
            split_joined("1\n{}\x1e\x1e2\n{}", 3),
            Some(vec![Some("1\n{}"), None, Some("2\n{}")])
        );
        assert_eq!(split_joined("", 1), Some(vec![None]));
        assert_eq!(split_joined("\x1e", 2), Some(vec![None, None]));
        assert_eq!(split_joined("1\n{}", 2), None);
        // A record's text never holds the separator: JSON escapes control characters.
        let mut record = UserRecord::new("bob");
        record.status_text = "a\x1eb".into();
        assert!(!encode_body(&record).contains('\x1e'));
    }

    #[test]
    fn events_split_into_origin_version_and_body() {
        let payload = format!("{}42\n{{\"st\":2}}", encode_event_prefix("node-a"));
        assert_eq!(decode_event(&payload), Some(("node-a", 42, "{\"st\":2}")));
        assert_eq!(decode_event("garbage"), None);
    }
}
