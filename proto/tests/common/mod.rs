//! What the call-model tests share: the recordings' directory and their events.

#![allow(dead_code)]

use std::path::PathBuf;

use bytes::BytesMut;
use ctid_proto::ami::{AmiCodec, AmiFrame, AmiMessage, MessageKind};
use ctid_proto::calls::{CallEvent, CallModel};
use ctid_proto::directory::{Directory, DEFAULT_PBX};
use tokio_util::codec::Decoder;

const PW: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$PmUfvJSx/XoaiPI5CGZKyQ$widnLdjpam9VZ0OVSdxdkHJkTCIH1RSgZ5vw0n8DyHo";

/// The recordings' world: phones are Local/100X@default, tenant A dials from `internal`,
/// tenant B lives in `tenant-b`.
pub fn directory() -> Directory {
    let mut text = String::from(
        "[[contexts]]\nname = \"default\"\ndialplan = [\"default\", \"internal\"]\n\
         [[contexts]]\nname = \"tenant-b\"\ndialplan = [\"tenant-b\", \"tenant-b-internal\"]\n\
         [[queues]]\nname = \"support\"\ncontext = \"default\"\n",
    );
    for (id, login, first, number) in [
        (1, "alice", "Alice", "1001"),
        (2, "bob", "Bob", "1002"),
        (3, "carol", "Carol", "1003"),
    ] {
        text.push_str(&format!(
            "[[users]]\nid = {id}\nlogin = \"{login}\"\npassword = \"{PW}\"\nfirstname = \"{first}\"\nlastname = \"Test\"\n\
             line = {{ interface = \"Local/{number}@default\", number = \"{number}\", context = \"default\", dialplan = \"internal\" }}\n"
        ));
    }
    Directory::parse(&text).unwrap()
}

pub fn events(name: &str) -> Vec<AmiMessage> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/ami")
        .join(format!("{name}.txt"));
    let mut buf = BytesMut::from(&std::fs::read(path).unwrap()[..]);
    let mut codec = AmiCodec::default();
    let mut out = Vec::new();
    while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
        if let AmiFrame::Message(m) = frame {
            if m.kind() == MessageKind::Event {
                out.push(m);
            }
        }
    }
    out
}

pub fn run(events: &[AmiMessage], dir: &Directory) -> (CallModel, Vec<CallEvent>) {
    let mut model = CallModel::new(DEFAULT_PBX);
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        out.extend(model.apply(e, 1000.0 + i as f64, dir));
    }
    (model, out)
}

/// Every recording of a call.
pub fn fixture_names() -> Vec<&'static str> {
    vec![
        "bridged_call",
        "queue_call",
        "attended_transfer",
        "blind_transfer",
        "redirect_transfer",
        "simple_originate",
        "agi_call",
    ]
}
