//! `Session` frames as WebSocket messages, one frame per message (API.md, "Browsers"):
//! `presence.v1.proto` carries each encoded frame in a binary message, `presence.v1.json`
//! carries it in a text message in the proto3 JSON mapping (pbjson's generated serde:
//! lowerCamelCase names, 64-bit integers as strings, enums by name when writing; original
//! names, numbers and strings accepted when reading).

use axum::extract::ws::Message;
use prost::Message as _;

use crate::proto::{ClientFrame, ServerFrame};

/// One of the listener's WebSocket subprotocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subprotocol {
    Proto,
    Json,
}

pub const PROTO: &str = "presence.v1.proto";
pub const JSON: &str = "presence.v1.json";

impl Subprotocol {
    pub fn name(self) -> &'static str {
        match self {
            Subprotocol::Proto => PROTO,
            Subprotocol::Json => JSON,
        }
    }

    /// The first of the client's `Sec-WebSocket-Protocol` offers (in its order of preference)
    /// that this listener speaks.
    pub fn choose<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        offered
            .into_iter()
            .flat_map(|list| list.split(','))
            .find_map(|name| match name.trim() {
                PROTO => Some(Subprotocol::Proto),
                JSON => Some(Subprotocol::Json),
                _ => None,
            })
    }

    /// A client's data message as a frame; `Err` says what is wrong with it (without echoing
    /// it: the message could be anything).
    pub fn decode(self, message: &Message) -> Result<ClientFrame, String> {
        match (self, message) {
            (Subprotocol::Proto, Message::Binary(bytes)) => ClientFrame::decode(bytes.as_ref())
                .map_err(|e| format!("not an encoded ClientFrame: {e}")),
            (Subprotocol::Json, Message::Text(text)) => serde_json::from_str(text.as_str())
                .map_err(|e| {
                    format!(
                        "not a ClientFrame in the proto3 JSON mapping (line {}, column {}: {})",
                        e.line(),
                        e.column(),
                        e.classify_name()
                    )
                }),
            (Subprotocol::Proto, _) => Err(format!("{PROTO} frames are binary messages, not text")),
            (Subprotocol::Json, _) => Err(format!("{JSON} frames are text messages, not binary")),
        }
    }

    /// A frame for the client.
    pub fn encode(self, frame: &ServerFrame) -> Message {
        match self {
            Subprotocol::Proto => Message::Binary(frame.encode_to_vec().into()),
            // Serialising generated messages to a string cannot fail (no maps with non-string
            // keys, no floats that JSON cannot hold): an empty object is never sent.
            Subprotocol::Json => {
                Message::Text(serde_json::to_string(frame).unwrap_or_default().into())
            }
        }
    }
}

/// serde_json's error category, named.
trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "i/o",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "not a ClientFrame",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{client_frame, server_frame, Hello, Presence, PresenceUpdate, Status};

    #[test]
    fn the_client_order_of_offers_decides() {
        assert_eq!(
            Subprotocol::choose(["x, presence.v1.json", PROTO]),
            Some(Subprotocol::Json)
        );
        assert_eq!(
            Subprotocol::choose(["presence.v1.proto"]),
            Some(Subprotocol::Proto)
        );
        assert_eq!(Subprotocol::choose(["chat", "presence.v2.json"]), None);
    }

    #[test]
    fn json_reads_every_proto3_form() {
        let forms = [
            r#"{"ref":"7","hello":{"device":"web"}}"#,
            r#"{"ref":7,"hello":{"device":"web"}}"#,
        ];
        for form in forms {
            let frame = Subprotocol::Json
                .decode(&Message::Text(form.into()))
                .unwrap();
            assert_eq!(frame.r#ref, 7, "{form}");
            assert!(
                matches!(frame.kind, Some(client_frame::Kind::Hello(Hello { ref device, .. })) if device == "web")
            );
        }
        let status = r#"{"setStatus":{"status":"STATUS_BUSY"}}"#;
        let by_name = Subprotocol::Json
            .decode(&Message::Text(status.into()))
            .unwrap();
        let status = r#"{"set_status":{"status":4}}"#;
        let by_number = Subprotocol::Json
            .decode(&Message::Text(status.into()))
            .unwrap();
        assert_eq!(by_name, by_number);
    }

    #[test]
    fn json_writes_camel_case_strings_for_u64_and_enum_names() {
        let frame = ServerFrame {
            kind: Some(server_frame::Kind::Update(PresenceUpdate {
                presences: vec![Presence {
                    user_id: "alice".into(),
                    status: Status::Busy as i32,
                    last_seen_ms: 12,
                    version: 3,
                    ..Default::default()
                }],
                denied_user_ids: Vec::new(),
            })),
        };
        let Message::Text(text) = Subprotocol::Json.encode(&frame) else {
            panic!("a text message");
        };
        let text = text.as_str();
        assert!(text.contains(r#""userId":"alice""#), "{text}");
        assert!(text.contains(r#""status":"STATUS_BUSY""#), "{text}");
        assert!(text.contains(r#""lastSeenMs":"12""#), "{text}");
        assert!(text.contains(r#""version":"3""#), "{text}");
    }

    #[test]
    fn wrong_kinds_and_garbage_are_refused() {
        let text = Message::Text("{}".into());
        assert!(Subprotocol::Proto.decode(&text).is_err());
        assert!(Subprotocol::Json
            .decode(&Message::Binary(vec![1, 2].into()))
            .is_err());
        assert!(Subprotocol::Json
            .decode(&Message::Text("{\"ref\":".into()))
            .is_err());
        assert!(Subprotocol::Json
            .decode(&Message::Text(r#"{"nope":1}"#.into()))
            .is_err());
        assert!(Subprotocol::Proto
            .decode(&Message::Binary(vec![0xff; 3].into()))
            .is_err());
    }
}
