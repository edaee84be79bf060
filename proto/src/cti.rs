//! The CTI client protocol: one JSON object per line, `\n`-terminated, UTF-8, both ways.
//! Every message has a `class`; a client's `commandid` comes back as `replyid`; the server
//! stamps `timenow` (seconds since the epoch) on everything it sends.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use tokio_util::codec::Decoder;

use crate::calls::{Call, EventKind};

/// Longest line a client may send; a longer one is skipped and answered `frame_too_large`.
pub const DEFAULT_MAX_LINE: usize = 64 << 10;

/// The stable error codes of `error_string`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Wrong login or password (which one is not said).
    LoginPassword,
    /// Required fields absent: `missing:a,b`.
    Missing(Vec<String>),
    /// A command before the login completed.
    NotLoggedYet,
    /// The user may not do that (other context, no line, ...).
    Unallowed,
    UnknownClass,
    /// A known class with an unknown `function`/`command`/`listname`.
    UnknownFunction,
    /// A field holds a value that cannot be used: `invalid:<field>`.
    Invalid(String),
    /// The line is not a JSON object.
    BadJson,
    /// The line is longer than the limit.
    FrameTooLarge,
    /// A binary WebSocket message: the protocol is JSON text.
    BinaryMessage,
    /// The login did not complete in time.
    LoginTimeout,
    /// The client did not read its messages fast enough.
    SlowConsumer,
    /// A resume token that is unknown, expired, or whose events are gone.
    ResyncRequired,
    /// Too many connections still logging in.
    TooManyConnections,
    /// Too many bad messages in a row.
    TooManyErrors,
    /// The user was deleted or moved to another context.
    UserChanged,
    /// ctid is stopping.
    Shutdown,
    /// Call records are off, or the database failed.
    StoreUnavailable,
    /// The call records did not answer in time, or too many requests wait for them.
    StoreBusy,
    /// Too many password checks wait already (a login storm): try again shortly.
    LoginBusy,
    /// An operator closed the session from the console.
    Kicked,
    /// Too many requests of the session still unanswered.
    TooManyRequests,
    /// The part of ctid that answers this did not within `timeouts.socket`.
    Busy,
    /// No node holds the PBX's AMI link now (cluster mode: no active ingest for it).
    PbxUnavailable,
    /// HTTP: no bearer token, or one ctid does not know.
    Unauthorized,
    /// HTTP: no such route, or no such call, record or user the token may see.
    NotFound,
    /// HTTP: the PBX refused or failed a command it was sent.
    CommandFailed,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorCode::LoginPassword => "login_password",
            ErrorCode::Missing(fields) => return write!(f, "missing:{}", fields.join(",")),
            ErrorCode::Invalid(field) => return write!(f, "invalid:{field}"),
            ErrorCode::NotLoggedYet => "notloggedyet",
            ErrorCode::Unallowed => "unallowed",
            ErrorCode::UnknownClass => "unknown_class",
            ErrorCode::UnknownFunction => "unknown_function",
            ErrorCode::BadJson => "bad_json",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::BinaryMessage => "binary_message",
            ErrorCode::LoginTimeout => "login_timeout",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::ResyncRequired => "resync_required",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::TooManyErrors => "too_many_errors",
            ErrorCode::UserChanged => "user_changed",
            ErrorCode::Shutdown => "shutdown",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::StoreBusy => "store_busy",
            ErrorCode::LoginBusy => "login_busy",
            ErrorCode::Kicked => "kicked",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Busy => "busy",
            ErrorCode::PbxUnavailable => "pbx_unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::CommandFailed => "command_failed",
        };
        f.write_str(s)
    }
}

impl std::str::FromStr for ErrorCode {
    type Err = ();

    /// Reads back what [`fmt::Display`] wrote (nodes of a cluster pass codes as text).
    fn from_str(s: &str) -> Result<Self, ()> {
        if let Some(fields) = s.strip_prefix("missing:") {
            return Ok(ErrorCode::Missing(
                fields.split(',').map(str::to_owned).collect(),
            ));
        }
        if let Some(field) = s.strip_prefix("invalid:") {
            return Ok(ErrorCode::Invalid(field.to_owned()));
        }
        use ErrorCode::*;
        [
            LoginPassword,
            NotLoggedYet,
            Unallowed,
            UnknownClass,
            UnknownFunction,
            BadJson,
            FrameTooLarge,
            BinaryMessage,
            LoginTimeout,
            SlowConsumer,
            ResyncRequired,
            TooManyConnections,
            TooManyErrors,
            UserChanged,
            Shutdown,
            StoreUnavailable,
            StoreBusy,
            LoginBusy,
            Kicked,
            TooManyRequests,
            Busy,
            PbxUnavailable,
            Unauthorized,
            NotFound,
            CommandFailed,
        ]
        .into_iter()
        .find(|c| c.to_string() == s)
        .ok_or(())
    }
}

/// What the line decoder yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtiFrame {
    Line(Bytes),
    /// A line longer than the limit was skipped; `bytes` of it were dropped.
    TooLong {
        bytes: usize,
    },
}

/// Splits a byte stream into lines, never buffering more than the limit: a longer line is
/// skipped up to its end and reported. Empty lines are ignored; a trailing `\r` is removed.
#[derive(Debug)]
pub struct CtiCodec {
    max_line: usize,
    scanned: usize,
    discarded: Option<usize>,
}

impl CtiCodec {
    pub fn new(max_line: usize) -> CtiCodec {
        CtiCodec {
            max_line,
            scanned: 0,
            discarded: None,
        }
    }
}

impl Default for CtiCodec {
    fn default() -> Self {
        CtiCodec::new(DEFAULT_MAX_LINE)
    }
}

impl Decoder for CtiCodec {
    type Item = CtiFrame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<CtiFrame>, std::io::Error> {
        loop {
            if let Some(dropped) = self.discarded {
                match memchr::memchr(b'\n', buf) {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.discarded = None;
                        return Ok(Some(CtiFrame::TooLong { bytes: dropped + i }));
                    }
                    None => {
                        self.discarded = Some(dropped + buf.len());
                        buf.clear();
                        return Ok(None);
                    }
                }
            }
            match memchr::memchr(b'\n', &buf[self.scanned..]) {
                Some(i) => {
                    let end = self.scanned + i;
                    self.scanned = 0;
                    if end > self.max_line {
                        buf.advance(end + 1);
                        return Ok(Some(CtiFrame::TooLong { bytes: end }));
                    }
                    let mut line = buf.split_to(end + 1);
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(end - 1);
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Ok(Some(CtiFrame::Line(line.freeze())));
                }
                None if buf.len() > self.max_line => {
                    self.discarded = Some(buf.len());
                    self.scanned = 0;
                    buf.clear();
                    return Ok(None);
                }
                None => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<CtiFrame>, std::io::Error> {
        let frame = self.decode(buf)?;
        if frame.is_none() {
            // A line cut by the peer closing is incomplete: it is dropped.
            buf.clear();
            self.scanned = 0;
            self.discarded = None;
        }
        Ok(frame)
    }
}

/// A client message: its class, its commandid, and the rest.
#[derive(Clone, Debug)]
pub struct Request {
    pub class: String,
    pub commandid: Option<Value>,
    pub fields: Map<String, Value>,
}

impl Request {
    /// Parses one line. A line that is not a JSON object with a string `class` is
    /// `bad_json` (or `missing:class`); the commandid is kept when it can be read, so that
    /// even an error can be matched to its command.
    pub fn parse(line: &[u8]) -> Result<Request, (ErrorCode, Option<Value>)> {
        let mut fields = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(map)) => map,
            _ => return Err((ErrorCode::BadJson, None)),
        };
        let commandid = fields.remove("commandid");
        match fields.remove("class") {
            Some(Value::String(class)) => Ok(Request {
                class,
                commandid,
                fields,
            }),
            _ => Err((ErrorCode::Missing(vec!["class".into()]), commandid)),
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.fields.get(key).and_then(Value::as_u64)
    }

    /// `missing:<fields>` for those of `keys` that are absent or null.
    pub fn require(&self, keys: &[&str]) -> Result<(), ErrorCode> {
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| self.fields.get(**k).is_none_or(Value::is_null))
            .map(|k| (*k).to_owned())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ErrorCode::Missing(missing))
        }
    }
}

/// A server message being built.
#[derive(Clone, Debug)]
pub struct Reply(Map<String, Value>);

impl Reply {
    pub fn new(class: &str) -> Reply {
        let mut map = Map::new();
        map.insert("class".into(), Value::String(class.to_owned()));
        Reply(map)
    }

    /// The error reply to a message of `class`.
    pub fn error(class: &str, code: &ErrorCode) -> Reply {
        Reply::new(class).with("error_string", code.to_string())
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Reply {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_json(self, key: &str, value: &impl Serialize) -> Reply {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.with(key, value)
    }

    /// Echoes the client's commandid as replyid.
    pub fn reply_to(self, commandid: Option<&Value>) -> Reply {
        match commandid {
            Some(id) => self.with("replyid", id.clone()),
            None => self,
        }
    }

    /// The wire bytes, stamped with `timenow`.
    pub fn encode(mut self, timenow: f64) -> Bytes {
        self.0.insert("timenow".into(), timenow.into());
        to_line(&self.0)
    }
}

fn to_line(value: &impl Serialize) -> Bytes {
    let mut buf = BytesMut::with_capacity(256).writer();
    // Serializing maps of strings and numbers cannot fail.
    let _ = serde_json::to_writer(&mut buf, value);
    let mut buf = buf.into_inner();
    buf.put_u8(b'\n');
    buf.freeze()
}

/// A call as one partition shows it: with only that partition's context under context
/// separation, without copying the call.
#[derive(Clone, Copy, Debug)]
pub struct Shown<'a> {
    call: &'a Call,
    only: Option<&'a str>,
}

impl<'a> Shown<'a> {
    pub fn new(call: &'a Call) -> Self {
        Shown { call, only: None }
    }

    pub fn only(call: &'a Call, context: &'a str) -> Self {
        Shown {
            call,
            only: Some(context),
        }
    }
}

impl Serialize for Shown<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.call;
        let mut m = s.serialize_struct("Call", 19)?;
        m.serialize_field("id", &c.id)?;
        m.serialize_field("pbx", &c.pbx)?;
        match self.only {
            Some(own) => m.serialize_field("contexts", &[own])?,
            None => m.serialize_field("contexts", &c.contexts)?,
        }
        m.serialize_field("direction", &c.direction)?;
        m.serialize_field("state", &c.state)?;
        m.serialize_field("caller", &c.caller)?;
        m.serialize_field("callee", &c.callee)?;
        m.serialize_field("ani", &c.ani)?;
        m.serialize_field("dnis", &c.dnis)?;
        m.serialize_field("queue", &c.queue)?;
        m.serialize_field("agent", &c.agent)?;
        m.serialize_field("ivr_path", &c.ivr_path)?;
        m.serialize_field("attached", &c.attached)?;
        m.serialize_field("created", &c.created)?;
        m.serialize_field("answered", &c.answered)?;
        m.serialize_field("ended", &c.ended)?;
        m.serialize_field("hangup_cause", &c.hangup_cause)?;
        m.serialize_field("disposition", &c.disposition)?;
        m.serialize_field("record_id", &c.record_id)?;
        m.end()
    }
}

#[derive(Serialize)]
struct CallEventLine<'a> {
    class: &'static str,
    event: &'static str,
    call: Shown<'a>,
    seq: u64,
    timenow: f64,
}

/// A pushed `call_event` line, encoded once and sent as is to every session.
pub fn encode_call_event(kind: EventKind, call: Shown<'_>, seq: u64, timenow: f64) -> Bytes {
    to_line(&CallEventLine {
        class: "call_event",
        event: kind.as_str(),
        call,
        seq,
        timenow,
    })
}

/// Seconds since the epoch, with milliseconds.
pub fn timenow() -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_millis() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_call_has_every_field_of_the_call() {
        let mut call = Call::new("a", "1.1", 5.0);
        call.contexts = vec!["a".into(), "b".into()];
        call.record_id = Some(3);
        assert_eq!(
            serde_json::to_value(Shown::new(&call)).unwrap(),
            serde_json::to_value(&call).unwrap()
        );
        let only = serde_json::to_value(Shown::only(&call, "b")).unwrap();
        assert_eq!(only["contexts"], serde_json::json!(["b"]));
    }

    #[test]
    fn error_codes_read_back_as_written() {
        for text in [
            "pbx_unavailable",
            "busy",
            "missing:a,b",
            "invalid:exten",
            "resync_required",
            "login_password",
        ] {
            let code: ErrorCode = text.parse().unwrap();
            assert_eq!(code.to_string(), text);
        }
        assert!("no_such_code".parse::<ErrorCode>().is_err());
    }

    fn lines(codec: &mut CtiCodec, input: &[u8]) -> Vec<CtiFrame> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn lines_are_split_and_blank_ones_skipped() {
        let out = lines(
            &mut CtiCodec::default(),
            b"{\"a\":1}\r\n\n  \n{\"b\":2}\n{\"c\"",
        );
        assert_eq!(
            out,
            [
                CtiFrame::Line(Bytes::from_static(b"{\"a\":1}")),
                CtiFrame::Line(Bytes::from_static(b"{\"b\":2}"))
            ]
        );
    }

    #[test]
    fn a_long_line_is_skipped_without_being_buffered() {
        let mut codec = CtiCodec::new(16);
        let mut buf = BytesMut::new();
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'x'; 1024]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.len() <= 1024);
        }
        buf.extend_from_slice(b"yy\n{\"ok\":1}\n");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(CtiFrame::TooLong { bytes: 1_024_002 })
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(CtiFrame::Line(Bytes::from_static(b"{\"ok\":1}")))
        );
    }

    #[test]
    fn a_long_line_arriving_whole_is_skipped_too() {
        let mut input = vec![b'z'; 100];
        input.extend_from_slice(b"\n{}\n");
        let out = lines(&mut CtiCodec::new(16), &input);
        assert_eq!(out[0], CtiFrame::TooLong { bytes: 100 });
        assert_eq!(out[1], CtiFrame::Line(Bytes::from_static(b"{}")));
    }

    #[test]
    fn a_line_cut_at_eof_is_dropped() {
        let mut codec = CtiCodec::default();
        let mut buf = BytesMut::from(&b"{\"class\":\"log"[..]);
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn requests_parse_or_say_why_not() {
        let r =
            Request::parse(br#"{"class":"login_id","userlogin":"alice","commandid":7}"#).unwrap();
        assert_eq!(
            (r.class.as_str(), r.str("userlogin")),
            ("login_id", Some("alice"))
        );
        assert_eq!(r.commandid, Some(Value::from(7)));
        assert_eq!(
            r.require(&["userlogin", "company"]),
            Err(ErrorCode::Missing(vec!["company".into()]))
        );
        assert_eq!(Request::parse(b"[1,2]").unwrap_err().0, ErrorCode::BadJson);
        assert_eq!(
            Request::parse(b"\xff\xfe").unwrap_err().0,
            ErrorCode::BadJson
        );
        let (code, id) = Request::parse(br#"{"commandid":3}"#).unwrap_err();
        assert_eq!(
            (code.to_string(), id),
            ("missing:class".to_owned(), Some(Value::from(3)))
        );
    }

    #[test]
    fn replies_carry_replyid_and_timenow() {
        let line = Reply::error("login_pass", &ErrorCode::LoginPassword)
            .reply_to(Some(&Value::from(2)))
            .encode(1.5);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["class"], "login_pass");
        assert_eq!(v["error_string"], "login_password");
        assert_eq!(v["replyid"], 2);
        assert_eq!(v["timenow"], 1.5);
        assert_eq!(line.last(), Some(&b'\n'));
    }
}
