//! AMI messages to write (actions, and events and responses for the simulator).

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Encoder;

use super::{AmiCodec, AmiCodecError};

/// A message to write: `Key: Value` lines in the order they were added.
///
/// Carriage returns and line feeds inside keys and values would let one value smuggle in
/// another action, so the encoder writes them as spaces; [`AmiPacket::check`] reports them
/// to callers that prefer to refuse such input.
#[derive(Clone, PartialEq, Eq)]
pub struct AmiPacket {
    fields: Vec<(Cow<'static, str>, String)>,
}

/// Fields whose values are credentials and must never be logged.
const SECRET_KEYS: [&str; 2] = ["Secret", "Key"];

impl AmiPacket {
    fn starting(key: &'static str, value: impl Into<String>) -> AmiPacket {
        AmiPacket {
            fields: vec![(Cow::Borrowed(key), value.into())],
        }
    }

    pub fn action(name: impl Into<String>) -> AmiPacket {
        AmiPacket::starting("Action", name)
    }

    pub fn event(name: impl Into<String>) -> AmiPacket {
        AmiPacket::starting("Event", name)
    }

    pub fn response(status: impl Into<String>) -> AmiPacket {
        AmiPacket::starting("Response", status)
    }

    /// Appends a field.
    pub fn field(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Self {
        self.fields.push((key.into(), value.into()));
        self
    }

    pub fn push(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) {
        self.fields.push((key.into(), value.into()));
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The action name, for an action.
    pub fn name(&self) -> &str {
        self.fields.first().map_or("", |(_, v)| v.as_str())
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// Sets the ActionID: replaces an existing one, or adds it right after the first line.
    pub fn set_action_id(&mut self, id: impl Into<String>) {
        let id = id.into();
        match self
            .fields
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case("ActionID"))
        {
            Some((_, v)) => *v = id,
            None => {
                let at = self.fields.len().min(1);
                self.fields.insert(at, (Cow::Borrowed("ActionID"), id));
            }
        }
    }

    /// The first key or value holding a line break, if any.
    pub fn check(&self) -> Result<(), String> {
        match self
            .fields
            .iter()
            .find(|(k, v)| has_line_break(k) || has_line_break(v))
        {
            Some((k, _)) => Err(format!("field {k:?} holds a line break")),
            None => Ok(()),
        }
    }

    /// The wire bytes of this packet.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode_into(&mut buf);
        buf.freeze()
    }

    fn encoded_len(&self) -> usize {
        self.fields
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
            + 2
    }

    fn encode_into(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len());
        for (k, v) in &self.fields {
            put_clean(buf, k);
            buf.put_slice(b": ");
            put_clean(buf, v);
            buf.put_slice(b"\r\n");
        }
        buf.put_slice(b"\r\n");
    }
}

fn has_line_break(s: &str) -> bool {
    s.bytes().any(|b| b == b'\r' || b == b'\n')
}

fn put_clean(buf: &mut BytesMut, s: &str) {
    if has_line_break(s) {
        buf.extend(
            s.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        buf.put_slice(s.as_bytes());
    }
}

/// Shows the packet with credentials masked, so that it can be logged.
impl fmt::Debug for AmiPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.fields {
            if SECRET_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s)) {
                map.entry(k, &"***");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

impl Encoder<&AmiPacket> for AmiCodec {
    type Error = AmiCodecError;

    fn encode(&mut self, packet: &AmiPacket, buf: &mut BytesMut) -> Result<(), AmiCodecError> {
        packet.encode_into(buf);
        Ok(())
    }
}
