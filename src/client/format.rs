//! The readable forms the `presence` CLI prints and parses: status names, one line per
//! presence, times. Nothing here speaks the protocol.

use crate::proto::{server_frame, Presence, Status as PresenceStatus};

/// The name of a server frame variant, for messages.
pub fn server_frame_name(kind: &server_frame::Kind) -> &'static str {
    match kind {
        server_frame::Kind::Welcome(_) => "welcome",
        server_frame::Kind::Snapshot(_) => "snapshot",
        server_frame::Kind::Update(_) => "update",
        server_frame::Kind::HeartbeatAck(_) => "heartbeat_ack",
        server_frame::Kind::Ack(_) => "ack",
        server_frame::Kind::Error(_) => "error",
        server_frame::Kind::Reconnect(_) => "reconnect",
    }
}

/// The name of an `ErrorCode` without its prefix, e.g. `INVALID_STATUS`.
pub fn error_code_name(code: i32) -> &'static str {
    match crate::proto::ErrorCode::try_from(code) {
        Ok(code) => {
            let name = code.as_str_name();
            name.strip_prefix("ERROR_CODE_").unwrap_or(name)
        }
        Err(_) => "UNKNOWN_ERROR_CODE",
    }
}

/// The lower-case name of a `Status` value: "online", "away", "busy", "invisible", "offline",
/// "unspecified" (and "unknown" for a value this client does not know).
pub fn status_name(status: i32) -> &'static str {
    match PresenceStatus::try_from(status) {
        Ok(PresenceStatus::Unspecified) => "unspecified",
        Ok(PresenceStatus::Offline) => "offline",
        Ok(PresenceStatus::Online) => "online",
        Ok(PresenceStatus::Away) => "away",
        Ok(PresenceStatus::Busy) => "busy",
        Ok(PresenceStatus::Invisible) => "invisible",
        Err(_) => "unknown",
    }
}

/// Parses a status name, case-insensitively: online, away, busy, invisible, and offline (so
/// that the server can refuse it). A `STATUS_` prefix is accepted.
pub fn parse_status(s: &str) -> Option<PresenceStatus> {
    let lower = s.trim().to_ascii_lowercase();
    let name = lower.strip_prefix("status_").unwrap_or(&lower);
    match name {
        "online" => Some(PresenceStatus::Online),
        "away" => Some(PresenceStatus::Away),
        "busy" => Some(PresenceStatus::Busy),
        "invisible" => Some(PresenceStatus::Invisible),
        "offline" => Some(PresenceStatus::Offline),
        _ => None,
    }
}

/// One readable line, e.g.
/// `alice  online  "at lunch"  devices=ios,web  since=2026-11-29T10:15:02Z  v=12`;
/// an offline user shows `last_seen=...` or `never seen` instead.
pub fn format_presence(p: &Presence) -> String {
    let mut parts: Vec<String> = vec![p.user_id.clone(), status_name(p.status).to_string()];
    let offline = p.status == PresenceStatus::Offline as i32;
    if !p.status_text.is_empty() {
        // Debug quoting escapes quotes and control characters: always one line.
        parts.push(format!("{:?}", p.status_text));
    }
    if !p.devices.is_empty() {
        parts.push(format!("devices={}", p.devices.join(",")));
    }
    if offline {
        if p.last_seen_ms > 0 {
            parts.push(format!("last_seen={}", format_rfc3339(p.last_seen_ms)));
        } else {
            parts.push("never seen".to_string());
        }
    } else if p.since_ms > 0 {
        parts.push(format!("since={}", format_rfc3339(p.since_ms)));
    }
    parts.push(format!("v={}", p.version));
    parts.join("  ")
}

/// Unix milliseconds as an RFC 3339 UTC time with second precision:
/// `2026-11-29T10:15:02Z`.
pub fn format_rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The UTC time of day of unix milliseconds as `HH:MM:SS.mmm`.
pub fn format_time_of_day(unix_ms: u64) -> String {
    let ms_of_day = unix_ms % 86_400_000;
    let secs = ms_of_day / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

/// The current time as unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_and_parsing() {
        assert_eq!(status_name(PresenceStatus::Online as i32), "online");
        assert_eq!(status_name(PresenceStatus::Away as i32), "away");
        assert_eq!(status_name(PresenceStatus::Busy as i32), "busy");
        assert_eq!(status_name(PresenceStatus::Invisible as i32), "invisible");
        assert_eq!(status_name(PresenceStatus::Offline as i32), "offline");
        assert_eq!(status_name(0), "unspecified");
        assert_eq!(status_name(99), "unknown");

        assert_eq!(parse_status("online"), Some(PresenceStatus::Online));
        assert_eq!(parse_status("AWAY"), Some(PresenceStatus::Away));
        assert_eq!(parse_status("Busy"), Some(PresenceStatus::Busy));
        assert_eq!(parse_status("invisible"), Some(PresenceStatus::Invisible));
        assert_eq!(parse_status("offline"), Some(PresenceStatus::Offline));
        assert_eq!(parse_status("STATUS_ONLINE"), Some(PresenceStatus::Online));
        assert_eq!(parse_status("unspecified"), None);
        assert_eq!(parse_status("dnd"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn time_formatting() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_709_251_199_999), "2024-02-29T23:59:59Z");
        assert_eq!(format_rfc3339(1_795_947_302_123), "2026-11-29T10:15:02Z");
        assert_eq!(format_rfc3339(4_102_444_800_000), "2100-01-01T00:00:00Z");
        assert_eq!(format_time_of_day(1_795_947_302_123), "10:15:02.123");
        assert_eq!(format_time_of_day(0), "00:00:00.000");
        // Every day of 1970..2100 round-trips against a naive calendar walk.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..47_482i64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ][m as usize - 1];
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    fn presence(user: &str, status: PresenceStatus) -> Presence {
        Presence {
            user_id: user.into(),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn format_presence_lines() {
        let mut p = presence("alice", PresenceStatus::Online);
        p.status_text = "at lunch".into();
        p.devices = vec!["ios".into(), "web".into()];
        p.since_ms = 1_795_947_302_000;
        p.version = 12;
        assert_eq!(
            format_presence(&p),
            "alice  online  \"at lunch\"  devices=ios,web  since=2026-11-29T10:15:02Z  v=12"
        );

        let mut p = presence("bob", PresenceStatus::Offline);
        p.last_seen_ms = 1_795_947_302_000;
        p.since_ms = 1_795_947_302_000;
        p.version = 3;
        assert_eq!(
            format_presence(&p),
            "bob  offline  last_seen=2026-11-29T10:15:02Z  v=3"
        );

        let p = presence("carol", PresenceStatus::Offline);
        assert_eq!(format_presence(&p), "carol  offline  never seen  v=0");

        let mut p = presence("dave", PresenceStatus::Busy);
        p.status_text = "say \"hi\"\nlater".into();
        p.devices = vec!["cli".into()];
        p.version = 7;
        assert_eq!(
            format_presence(&p),
            "dave  busy  \"say \\\"hi\\\"\\nlater\"  devices=cli  v=7"
        );
    }
}
