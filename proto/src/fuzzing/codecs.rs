//! Codec and parser properties: any bytes, cut anywhere, decode without panicking into the
//! same frames as when they arrive at once, and the decoder never holds more than its limit.

use std::fmt::Display;

use bytes::BytesMut;
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

use crate::agi::{AgiCodec, AgiCommand, AgiFrame, MAX_HEADER, MAX_LINE};
use crate::ami::{AmiCodec, AmiFrame, AmiMessage, AmiPacket, DEFAULT_MAX_MESSAGE};
use crate::cti::{CtiCodec, CtiFrame, ErrorCode, Request, DEFAULT_MAX_LINE};
use crate::directory::{Directory, DEFAULT_PBX};

/// What a decoder yielded for a whole stream: its frames, then its error if it failed.
pub type Decoded<T> = Vec<Result<T, String>>;

/// Feeds `wire` to `codec` in chunks whose lengths cycle through `cuts` (a zero counts as
/// one; no cuts is one chunk), then ends the stream as a `FramedRead` does. Each time the
/// codec asks for more bytes, it must hold at most `bound` of them.
pub fn decode_in_chunks<D>(mut codec: D, wire: &[u8], cuts: &[u8], bound: usize) -> Decoded<D::Item>
where
    D: Decoder,
    D::Error: Display,
{
    let mut sizes = cuts.iter().map(|&n| usize::from(n).max(1)).cycle();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = wire;
    loop {
        let (chunk, tail) = rest.split_at(sizes.next().unwrap_or(rest.len()).min(rest.len()));
        buf.extend_from_slice(chunk);
        rest = tail;
        loop {
            let step = if rest.is_empty() {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match step {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
        assert!(
            buf.len() <= bound,
            "the decoder holds {} bytes, more than {bound}",
            buf.len()
        );
        if rest.is_empty() {
            return out;
        }
    }
}

/// Splits a fuzz input into a fixed-size header and the rest.
fn header<const N: usize>(data: &[u8]) -> Option<([u8; N], &[u8])> {
    let (head, rest) = data.split_first_chunk::<N>()?;
    Some((*head, rest))
}

/// A limit from two header bytes: zero is the default limit, anything else a small one
/// that inputs of a few kilobytes can exceed.
fn limit(lo: u8, hi: u8, default: usize) -> usize {
    match u16::from_le_bytes([lo, hi]) {
        0 => default,
        n => usize::from(n % 4096) + 1,
    }
}

/// Input: a flags byte (bit 0: a banner comes first), the message limit (two bytes, see
/// [`limit`]), four chunk lengths, then the wire bytes.
pub fn fuzz_ami(data: &[u8]) {
    if let Some(([flags, lo, hi, cuts @ ..], wire)) = header::<7>(data) {
        check_ami(
            flags & 1 == 1,
            limit(lo, hi, DEFAULT_MAX_MESSAGE),
            wire,
            &cuts,
        );
    }
}

/// Input: four chunk lengths, then the wire bytes.
pub fn fuzz_agi(data: &[u8]) {
    if let Some((cuts, wire)) = header::<4>(data) {
        check_agi(wire, &cuts);
    }
}

/// Input: the line limit (two bytes, see [`limit`]), four chunk lengths, then the wire bytes.
pub fn fuzz_cti(data: &[u8]) {
    if let Some(([lo, hi, cuts @ ..], wire)) = header::<6>(data) {
        check_cti(limit(lo, hi, DEFAULT_MAX_LINE), wire, &cuts);
    }
}

/// Input: the file's bytes, read as UTF-8 with bad sequences replaced.
pub fn fuzz_directory(data: &[u8]) {
    check_directory(&String::from_utf8_lossy(data));
}

/// The AMI decoder with a message limit of `max`.
pub fn check_ami(banner: bool, max: usize, wire: &[u8], cuts: &[u8]) {
    let codec = || {
        if banner {
            AmiCodec::new(max)
        } else {
            AmiCodec::without_banner(max)
        }
    };
    // A message so far, plus the CR of the blank line that may end it.
    let bound = max + 1;
    let whole = decode_in_chunks(codec(), wire, &[], bound);
    let chunked = decode_in_chunks(codec(), wire, cuts, bound);
    assert_eq!(whole, chunked, "in one chunk, then cut by {cuts:?}");
    for frame in whole.iter().flatten() {
        match frame {
            AmiFrame::Banner(line) => assert!(line.chars().count() <= max, "banner {line:?}"),
            AmiFrame::Discarded { bytes } => assert!(*bytes > max, "discarded only {bytes}"),
            AmiFrame::Message(m) => check_ami_message(m, max),
        }
    }
}

/// A decoded message is within the limit, reads the same parsed at once, and its fields
/// written back by the encoder decode as exactly one message with the same fields.
fn check_ami_message(m: &AmiMessage, max: usize) {
    // Invalid UTF-8 became U+FFFD: at most one char for each byte received.
    assert!(m.wire_text().chars().count() <= max + 2, "{m:?}");
    assert!(!m.is_empty());
    assert_eq!(&AmiMessage::parse(m.wire_text()), m);
    let mut packet = AmiPacket::action("Fuzz");
    for (k, v) in m.fields().filter(|(k, _)| !k.is_empty()) {
        packet.push(k.to_owned(), v.to_owned());
    }
    let flat = |s: &str| s.replace(['\r', '\n'], " ");
    let sent: Vec<(String, String)> = packet.fields().map(|(k, v)| (flat(k), flat(v))).collect();
    let wire = packet.to_bytes();
    let echoed = decode_in_chunks(AmiCodec::without_banner(wire.len()), &wire, &[], wire.len());
    let [Ok(AmiFrame::Message(back))] = &echoed[..] else {
        panic!("{packet:?} encoded as {wire:?} decodes as {echoed:?}");
    };
    let back: Vec<(String, String)> = back
        .fields()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(back, sent);
}

/// The FastAGI decoder, whose limits are fixed.
pub fn check_agi(wire: &[u8], cuts: &[u8]) {
    let bound = MAX_HEADER.max(MAX_LINE);
    let whole = decode_in_chunks(AgiCodec::default(), wire, &[], bound);
    let chunked = decode_in_chunks(AgiCodec::default(), wire, cuts, bound);
    assert_eq!(whole, chunked, "in one chunk, then cut by {cuts:?}");
    for frame in whole.iter().flatten() {
        match frame {
            AgiFrame::Request(r) => {
                let size: usize = r
                    .env
                    .iter()
                    .map(|(k, v)| k.chars().count() + v.chars().count())
                    .sum();
                assert!(size <= MAX_HEADER, "a request of {size} bytes");
            }
            AgiFrame::Reply(r) => {
                assert!(
                    r.text.lines().count() <= 257,
                    "{} lines",
                    r.text.lines().count()
                );
                assert!(r.text.lines().all(|l| l.chars().count() <= MAX_LINE));
                // What a script sends back from a reply stays one command.
                let mut sent = BytesMut::new();
                let echo = AgiCommand::set_variable("ECHO", &r.text);
                AgiCodec::default()
                    .encode(&echo, &mut sent)
                    .expect("encoding cannot fail");
                assert_eq!(memchr::memchr_iter(b'\n', &sent).count(), 1);
            }
            AgiFrame::Hangup => {}
        }
    }
}

/// The CTI line decoder with a line limit of `max`, and the request parser on its lines.
pub fn check_cti(max: usize, wire: &[u8], cuts: &[u8]) {
    let whole = decode_in_chunks(CtiCodec::new(max), wire, &[], max);
    let chunked = decode_in_chunks(CtiCodec::new(max), wire, cuts, max);
    assert_eq!(whole, chunked, "in one chunk, then cut by {cuts:?}");
    for frame in whole.iter().flatten() {
        match frame {
            CtiFrame::TooLong { bytes } => assert!(*bytes > max, "too long at {bytes}"),
            CtiFrame::Line(line) => {
                assert!(line.len() <= max && !line.contains(&b'\n'), "{line:?}");
                check_request(line);
            }
        }
    }
}

/// `Request::parse` agrees with a plain JSON parse: an object with a string `class` is a
/// request holding every other member, an object without is `missing:class` (keeping its
/// commandid), anything else is `bad_json`.
pub fn check_request(line: &[u8]) {
    let json = serde_json::from_slice::<Value>(line).ok();
    match (Request::parse(line), json) {
        (Ok(r), Some(Value::Object(mut object))) => {
            assert_eq!(object.remove("class"), Some(Value::String(r.class)));
            assert_eq!(object.remove("commandid"), r.commandid);
            assert_eq!(object, r.fields);
        }
        (Err((ErrorCode::Missing(fields), id)), Some(Value::Object(object))) => {
            assert_eq!(fields, ["class"]);
            assert!(!object.get("class").is_some_and(Value::is_string));
            assert_eq!(id.as_ref(), object.get("commandid"));
        }
        (Err((ErrorCode::BadJson, None)), json) => {
            assert!(!matches!(json, Some(Value::Object(_))), "{json:?}");
        }
        (parsed, json) => panic!("parsed as {parsed:?}, JSON {json:?}"),
    }
}

/// The directory loaders, TOML and JSON: a refused text has its problems listed, an
/// accepted one has consistent indexes.
pub fn check_directory(text: &str) {
    let pbxes = [DEFAULT_PBX.to_owned()];
    for parsed in [Directory::parse(text), Directory::parse_json(text, &pbxes)] {
        match parsed {
            Ok(dir) => check_indexes(&dir),
            Err(problems) => assert!(!problems.is_empty()),
        }
    }
}

fn check_indexes(dir: &Directory) {
    for c in dir.contexts() {
        for d in &c.dialplan {
            let (pbx, d) = d.split_once(':').unwrap_or((DEFAULT_PBX, d));
            assert_eq!(dir.context_of_dialplan(pbx, d), Some(c.name.as_str()));
        }
    }
    for u in dir.users() {
        assert_eq!(dir.user(u.id), Some(u));
        assert_eq!(dir.user_by_login(&u.login).map(|f| f.id), Some(u.id));
        if let Some(line) = &u.line {
            assert!(dir.has_context(&line.context), "{line:?}");
            assert_eq!(
                dir.user_by_interface(&line.pbx, &line.interface)
                    .map(|f| f.id),
                Some(u.id)
            );
            assert!(dir.user_by_number(&line.context, &line.number).is_some());
        }
    }
    for q in dir.queues() {
        assert!(dir.has_context(&q.context), "{q:?}");
        assert_eq!(dir.queue(&q.pbx, &q.name), Some(q));
    }
}
