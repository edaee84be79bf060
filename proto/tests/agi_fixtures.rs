//! The FastAGI codec against sessions recorded from a real Asterisk 22 (fixtures/agi).

use std::path::PathBuf;

use bytes::BytesMut;
use ctid_proto::agi::{AgiCodec, AgiCommand, AgiFrame};
use tokio_util::codec::{Decoder, Encoder};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/agi")
            .join(name),
    )
    .unwrap()
}

fn frames(name: &str) -> Vec<AgiFrame> {
    let mut codec = AgiCodec::default();
    let mut buf = BytesMut::from(&fixture(name)[..]);
    let mut out = Vec::new();
    while let Some(f) = codec.decode(&mut buf).unwrap() {
        out.push(f);
    }
    assert!(buf.is_empty(), "{name}: bytes left");
    out
}

#[test]
fn the_request_header_is_read_whole() {
    let out = frames("fastagi_basic.txt");
    let AgiFrame::Request(req) = &out[0] else {
        panic!("no request")
    };
    assert_eq!(req.script, "incoming");
    assert_eq!(req.params, [("x".to_owned(), "y".to_owned())]);
    assert_eq!(req.args, ["first arg", "second"]);
    assert_eq!(req.get("uniqueid"), Some("1795348247.39"));
    assert_eq!(req.get("channel"), Some("Local/3000@default-00000013;2"));
    assert_eq!(req.get("calleridname"), Some("Bob"));
    assert_eq!(req.get("accountcode"), Some(""));
    assert_eq!(req.env.len(), 24);
}

#[test]
fn each_command_gets_one_reply_including_the_usage_block() {
    let out = frames("fastagi_basic.txt");
    let sent = String::from_utf8(fixture("fastagi_basic.sent.txt")).unwrap();
    let replies: Vec<_> = out[1..]
        .iter()
        .map(|f| match f {
            AgiFrame::Reply(r) => r.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(replies.len(), sent.lines().count());
    assert_eq!(replies[0].data.as_deref(), Some("hello"));
    assert_eq!(replies[4].data.as_deref(), Some("\"Bob\" <2025550100>"));
    assert_eq!(replies[8].code, 510);
    assert_eq!(replies[9].code, 520);
    assert_eq!(replies[9].text.lines().count(), 4);
    assert!(replies[10].ok());
}

#[test]
fn a_hangup_arrives_between_replies() {
    let out = frames("fastagi_hangup.txt");
    let AgiFrame::Request(req) = &out[0] else {
        panic!("no request")
    };
    assert_eq!(
        (req.script.as_str(), req.param("tenant")),
        ("tenant-b", Some("b"))
    );
    let hangup = out.iter().position(|f| *f == AgiFrame::Hangup).unwrap();
    assert_eq!(hangup, 3, "after two replies");
    let codes: Vec<u16> = out
        .iter()
        .filter_map(|f| match f {
            AgiFrame::Reply(r) => Some(r.code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [200, 200, 200, 200, 511, 200]);
}

#[test]
fn commands_encode_byte_for_byte() {
    for name in ["fastagi_basic.sent.txt", "fastagi_hangup.sent.txt"] {
        let sent = fixture(name);
        let mut codec = AgiCodec::default();
        let mut buf = BytesMut::new();
        for line in String::from_utf8(sent.clone()).unwrap().lines() {
            codec
                .encode(&AgiCommand(line.to_owned()), &mut buf)
                .unwrap();
        }
        assert_eq!(&buf[..], &sent[..], "{name}");
    }
    let mut buf = BytesMut::new();
    AgiCodec::default()
        .encode(
            &AgiCommand::set_variable("FROM_AGI", "set by fastagi"),
            &mut buf,
        )
        .unwrap();
    assert_eq!(&buf[..], b"SET VARIABLE FROM_AGI \"set by fastagi\"\n");
}
