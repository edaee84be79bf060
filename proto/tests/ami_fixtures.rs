//! The AMI codec against traffic recorded from a real Asterisk 22 (fixtures/ami).

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::BytesMut;
use ctid_proto::ami::{AmiCodec, AmiFrame, AmiMessage, AmiPacket, MessageKind, BANNER_PREFIX};
use tokio_util::codec::Decoder;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/ami")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode(bytes: &[u8], banner: bool) -> (Option<String>, Vec<AmiMessage>) {
    let mut codec = if banner {
        AmiCodec::default()
    } else {
        AmiCodec::without_banner(1 << 20)
    };
    let mut buf = BytesMut::from(bytes);
    let (mut banner_line, mut messages) = (None, Vec::new());
    while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
        match frame {
            AmiFrame::Banner(b) => banner_line = Some(b),
            AmiFrame::Message(m) => messages.push(m),
            AmiFrame::Discarded { bytes } => panic!("discarded {bytes} bytes"),
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    (banner_line, messages)
}

fn received(name: &str) -> Vec<AmiMessage> {
    let (banner, messages) = decode(&fixture(&format!("{name}.txt")), true);
    assert!(banner.unwrap().starts_with(BANNER_PREFIX));
    messages
}

/// Events after the two Asterisk sends on login (FullyBooted, SuccessfulAuth).
fn call_events(name: &str) -> Vec<AmiMessage> {
    received(name)
        .into_iter()
        .filter(|m| m.kind() == MessageKind::Event)
        .filter(|m| !matches!(m.event(), Some("FullyBooted" | "SuccessfulAuth")))
        .collect()
}

#[test]
fn every_fixture_decodes_completely() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ami");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let bytes = std::fs::read(&path).unwrap();
        let (banner, messages) = decode(&bytes, !name.ends_with(".sent.txt"));
        assert!(!messages.is_empty(), "{name}: no messages");
        if let Some(banner) = banner {
            assert_eq!(banner, "Asterisk Call Manager/11.0.0", "{name}");
        }
        for m in &messages {
            assert_ne!(m.kind(), MessageKind::Other, "{name}: {m:?}");
        }
        seen += 1;
    }
    assert_eq!(seen, 26);
}

#[test]
fn event_counts_match_the_recordings() {
    for (name, all, without_dialplan) in [
        ("simple_originate", 44, 28),
        ("bridged_call", 126, 61),
        ("queue_call", 103, 60),
        ("attended_transfer", 282, 140),
    ] {
        let events = call_events(name);
        let quiet = events
            .iter()
            .filter(|m| !matches!(m.event(), Some("VarSet" | "Newexten")))
            .count();
        assert_eq!((events.len(), quiet), (all, without_dialplan), "{name}");
    }
}

#[test]
fn bridged_call_fields() {
    let events = call_events("bridged_call");
    let first = &events[0];
    assert_eq!(first.event(), Some("Newchannel"));
    assert_eq!(first.get("Channel"), Some("Local/1001@default-00000001;1"));
    assert_eq!(first.get("CallerIDNum"), Some("<unknown>"));
    assert_eq!(first.get("AccountCode"), Some(""));
    let mut by_name = BTreeMap::new();
    for e in &events {
        *by_name.entry(e.event().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(by_name["Newchannel"], 4);
    assert_eq!(by_name["Hangup"], 4);
    assert_eq!(by_name["BridgeEnter"], by_name["BridgeLeave"]);
    // The Originate dials 1001 with no calling channel; the dialplan's Dial() then calls 1002.
    let dials: Vec<_> = events
        .iter()
        .filter(|e| e.event() == Some("DialBegin"))
        .collect();
    assert_eq!(dials.len(), 2);
    assert_eq!(
        (dials[0].get("Channel"), dials[0].get("DestExten")),
        (None, Some("1001"))
    );
    assert_eq!(
        dials[1].get("Channel"),
        Some("Local/1001@default-00000001;1")
    );
    assert_eq!(dials[1].get("DestExten"), Some("1002"));
}

#[test]
fn list_actions_answers() {
    let messages = received("list_actions");
    let by_id = |id: &str| -> Vec<&AmiMessage> {
        messages
            .iter()
            .filter(|m| m.action_id() == Some(id))
            .collect()
    };
    let csc = by_id("csc-1");
    assert_eq!(csc[0].event_list(), Some("start"));
    let complete = csc.last().unwrap();
    assert_eq!(complete.event(), Some("CoreShowChannelsComplete"));
    assert_eq!(complete.event_list(), Some("Complete"));
    assert_eq!(
        complete.get("ListItems"),
        Some(&*(csc.len() - 2).to_string())
    );
    let cmd = by_id("cmd-1");
    assert_eq!(cmd[0].get_all("Output").count(), 4);
    assert_eq!(by_id("bogus-1")[0].response(), Some("Error"));
    assert_eq!(by_id("hup-bad")[0].get("Message"), Some("No such channel"));
    let status = by_id("status-1");
    assert!(status.iter().any(|m| m.get("Privilege") == Some("Call")));
}

/// Builds the actions a client sent and compares them with the recorded bytes.
#[test]
fn actions_encode_byte_for_byte() {
    let login = AmiPacket::action("Login")
        .field("Username", "cti")
        .field("Secret", "ctipass")
        .field("ActionID", "login-1");
    let originate = AmiPacket::action("Originate")
        .field("ActionID", "orig-1")
        .field("Channel", "Local/1001@default")
        .field("Context", "internal")
        .field("Exten", "1002")
        .field("Priority", "1")
        .field("CallerID", "\"Alice\" <1001>")
        .field("Timeout", "30000")
        .field("Async", "true")
        .field("Variable", "TALK_1001=10")
        .field("Variable", "__TALK_1002=3");
    let logoff = AmiPacket::action("Logoff").field("ActionID", "logoff-1");
    let mut wire = Vec::new();
    for p in [&login, &originate, &logoff] {
        wire.extend_from_slice(&p.to_bytes());
    }
    assert_eq!(wire, fixture("bridged_call.sent.txt"));

    let challenge = AmiPacket::action("Challenge")
        .field("ActionID", "chal-1")
        .field("AuthType", "MD5");
    let md5_login = AmiPacket::action("Login")
        .field("ActionID", "login-md5")
        .field("AuthType", "MD5")
        .field("Username", "cti")
        .field("Key", ctid_proto::ami::md5_key("551143516", "ctipass"));
    let mut wire = Vec::new();
    for p in [&challenge, &md5_login, &logoff] {
        wire.extend_from_slice(&p.to_bytes());
    }
    assert_eq!(wire, fixture("login_md5_challenge.sent.txt"));
}

/// Every recorded client stream, decoded and re-encoded, gives back the same bytes.
#[test]
fn sent_streams_round_trip() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ami");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_str().unwrap().ends_with(".sent.txt") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let (_, messages) = decode(&bytes, false);
        let mut wire = Vec::new();
        for m in &messages {
            let mut fields = m.fields();
            let (k, v) = fields.next().unwrap();
            assert_eq!(k, "Action");
            let mut p = AmiPacket::action(v);
            for (k, v) in fields {
                p.push(k.to_owned(), v);
            }
            wire.extend_from_slice(&p.to_bytes());
        }
        assert_eq!(wire, bytes, "{}", path.display());
    }
}
