//! What ctid nodes tell each other in cluster mode: the call events the active ingest of a
//! PBX publishes for each context (one per message), the live calls it keeps for the
//! edges that start later, and what edges ask of the active ingest. JSON.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::agi::AgiRequest;
use crate::calls::{Call, EventKind};

/// One change of one context's calls, as published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    /// The lease epoch of the ingest that published it: an edge drops an event of an older
    /// epoch than one it has seen for the same PBX.
    pub epoch: u64,
    pub pbx: String,
    pub change: WireChange,
    /// When it happened (epoch seconds: the PBX's time, or when the ingest read it), so
    /// that an edge's clients see the ingest's time. None from a node that did not say.
    #[serde(default)]
    pub at: Option<f64>,
    /// When the ingest read its AMI event (epoch seconds), for the event lag an edge shows
    /// its wallboards. None from a node that did not say.
    #[serde(default)]
    pub read: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireChange {
    /// An event of a call, with the call as it is after it.
    Call {
        kind: EventKind,
        call: Box<WireCall>,
    },
    /// The call moved to another context: this one forgets it.
    Left { id: String },
}

/// A call with what clients are not sent but edges need (the lines it touched).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireCall {
    #[serde(flatten)]
    pub call: Call,
    pub lines: BTreeSet<String>,
}

impl From<&Call> for WireCall {
    fn from(call: &Call) -> WireCall {
        WireCall {
            call: call.clone(),
            lines: call.lines.clone(),
        }
    }
}

impl WireCall {
    pub fn into_call(self) -> Call {
        let mut call = self.call;
        call.lines = self.lines;
        call
    }
}

/// A live call as an edge finds it when it starts: the call after the event of stream
/// sequence `seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveCall {
    pub seq: u64,
    pub epoch: u64,
    pub call: WireCall,
}

/// Who acts, when not a user of the directory: an HTTP token, by its name and role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acting {
    pub name: String,
    pub role: crate::rights::Role,
}

/// What a node asks of the active ingest of a PBX. Users are named by id: the ingest reads
/// them from the same directory; an HTTP token is `acting` instead (its `user_id` unused).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum Ask {
    /// An `ipbxcommand`: answered [`Answer::Planned`], then [`Answer::Done`] if planned.
    Command {
        user_id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acting: Option<Acting>,
        partition: Option<String>,
        fields: serde_json::Map<String, serde_json::Value>,
    },
    /// A disposition: answered [`Answer::Done`].
    Disposition {
        user_id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acting: Option<Acting>,
        partition: Option<String>,
        call_id: String,
        code: String,
        note: Option<String>,
        at: f64,
    },
    /// A FastAGI script: answered [`Answer::Agi`].
    Agi {
        request: AgiRequest,
        linkedid: Option<String>,
    },
    /// Resync with Asterisk (a dialplan reload): not answered.
    Resync,
}

/// What the active ingest answers; errors are error codes (`ErrorCode` as text) or, for
/// a command's outcome and a script, what failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Planned {
        error: Option<String>,
    },
    Done {
        error: Option<String>,
    },
    Agi {
        outcome: Result<Vec<(String, String)>, String>,
    },
}

/// A token usable in NATS subjects, stream and bucket names and KV keys, from any text
/// (a context or a call id): letters, digits, `-` are kept, anything else is `_` and its
/// bytes in hex. Distinct texts give distinct tokens.
pub fn token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::AmiMessage;
    use crate::calls::CallModel;
    use crate::directory::Directory;

    #[test]
    fn events_keep_their_call_and_its_lines() {
        let dir = Directory::parse(
            "[[contexts]]\nname = \"a\"\ndialplan = [\"in\"]\n[[users]]\nid = 1\nlogin = \"x\"\n\
             password = \"$argon2id$v=19$m=19456,t=2,p=1$PmUfvJSx/XoaiPI5CGZKyQ$widnLdjpam9VZ0OVSdxdkHJkTCIH1RSgZ5vw0n8DyHo\"\n\
             line = { interface = \"PJSIP/1\", number = \"1\", context = \"a\", dialplan = \"in\" }\n",
        )
        .unwrap();
        let mut model = CallModel::new(crate::directory::DEFAULT_PBX);
        let ev = AmiMessage::parse(
            "Event: Newchannel\r\nChannel: PJSIP/1-01\r\nUniqueid: 9.1\r\nLinkedid: 9.1\r\nContext: in\r\nExten: 2\r\n",
        );
        let call = model.apply(&ev, 1.0, &dir).remove(0).call;
        assert!(call.lines.contains("PJSIP/1"));
        let event = WireEvent {
            epoch: 7,
            pbx: "p".into(),
            at: Some(1733071200.123456),
            read: Some(1733071200.2),
            change: WireChange::Call {
                kind: EventKind::Offered,
                call: Box::new(WireCall::from(&call)),
            },
        };
        let text = serde_json::to_string(&event).unwrap();
        let back: WireEvent = serde_json::from_str(&text).unwrap();
        assert_eq!((back.epoch, back.pbx.as_str()), (7, "p"));
        assert_eq!(back.at, Some(1733071200.123456));
        assert_eq!(back.read, Some(1733071200.2));
        let older = text
            .replace(",\"at\":1733071200.123456", "")
            .replace(",\"read\":1733071200.2", "");
        let older = serde_json::from_str::<WireEvent>(&older).unwrap();
        assert_eq!((older.at, older.read), (None, None));
        let WireChange::Call { kind, call: wire } = back.change else {
            panic!("{text}");
        };
        assert_eq!(kind, EventKind::Offered);
        assert_eq!(wire.into_call(), call);
    }

    #[test]
    fn tokens_are_safe_and_distinct() {
        assert_eq!(token("tenant-b"), "tenant-b");
        assert_eq!(token("a.b c"), "a_2eb_20c");
        assert_eq!(token("paris:1795348189.2"), "paris_3a1795348189_2e2");
        assert_ne!(token("a_2e"), token("a."));
        assert_eq!(token(""), "_");
        assert_eq!(token("*"), "_2a");
    }
}
