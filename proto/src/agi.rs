//! FastAGI, server side: Asterisk connects, sends its request (`agi_<name>: <value>` lines,
//! then an empty line), then answers each command ctid sends with one line (`200
//! result=1 (data)`, `510 ...`, `511 ...`) or a `520-` usage block ending with a `520 `
//! line. `HANGUP` may arrive at any moment. Lines end in a bare LF.

use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::calls::CallData;

/// Pairs one `attach` request may carry, at most, and the longest key and value (an IVR
/// step is a value).
pub const MAX_ATTACH: usize = 32;
pub const MAX_KEY: usize = 64;
pub const MAX_VALUE: usize = 512;

/// Longest header block accepted; a request is a few hundred bytes.
pub const MAX_HEADER: usize = 16 << 10;
/// Longest reply line accepted.
pub const MAX_LINE: usize = 16 << 10;

/// The request Asterisk sends when a channel runs `AGI(agi://host/<script>?k=v,arg1,...)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgiRequest {
    /// Every `agi_` variable, without the prefix, in order.
    pub env: Vec<(String, String)>,
    pub script: String,
    /// The `k=v` pairs after `?` in the script.
    pub params: Vec<(String, String)>,
    /// `agi_arg_1`, `agi_arg_2`, ...
    pub args: Vec<String>,
}

impl AgiRequest {
    /// The data an `attach` or `ivr` request carries, within the limits above.
    pub fn call_data(&self) -> Result<CallData, String> {
        let mut data = CallData::default();
        if self.script == "ivr" {
            let step = self.param("step").or(self.args.first().map(String::as_str));
            match step.filter(|s| !s.is_empty() && s.len() <= MAX_VALUE) {
                Some(step) => data.ivr_steps.push(step.to_owned()),
                None => return Err("ivr needs a step: ivr?step=NAME or ivr,NAME".into()),
            }
            return Ok(data);
        }
        let args = self
            .args
            .iter()
            .filter_map(|a| a.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        // `pbx=` names the PBX the request is for: it is not data.
        let params = self.params.iter().filter(|(k, _)| k != "pbx").cloned();
        for (k, v) in params.chain(args) {
            if k.is_empty() || k.len() > MAX_KEY || v.len() > MAX_VALUE {
                return Err(format!("attach: {k:?} is empty or too long"));
            }
            data.attached.insert(k, v);
        }
        match data.attached.len() {
            0 => Err("attach needs data: attach?key=value or attach,key=value".into()),
            n if n > MAX_ATTACH => Err(format!("attach: more than {MAX_ATTACH} pairs")),
            _ => Ok(data),
        }
    }

    fn from_env(env: Vec<(String, String)>) -> AgiRequest {
        let script_line = env
            .iter()
            .find(|(k, _)| k == "network_script")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let (script, query) = script_line.split_once('?').unwrap_or((script_line, ""));
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (percent_decode(k), percent_decode(v)),
                None => (percent_decode(p), String::new()),
            })
            .collect();
        let mut args: Vec<(usize, String)> = env
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("arg_")?.parse().ok()?, v.clone())))
            .collect();
        args.sort_by_key(|(n, _)| *n);
        AgiRequest {
            script: script.trim_matches('/').to_owned(),
            params,
            args: args.into_iter().map(|(_, v)| v).collect(),
            env,
        }
    }

    /// An `agi_` variable, e.g. `get("uniqueid")`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes `%XX` escapes and `+` (as a space), as in a URL query; bad escapes stay as
/// they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One answer to a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgiReply {
    pub code: u16,
    /// `1` of `200 result=1 (data)`.
    pub result: Option<String>,
    /// `data` of `200 result=1 (data)`.
    pub data: Option<String>,
    /// The whole answer, lines joined by `\n`.
    pub text: String,
}

impl AgiReply {
    pub fn parse(line: &str) -> AgiReply {
        let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        let rest = line.get(4..).unwrap_or("");
        let result = rest
            .strip_prefix("result=")
            .map(|r| r.split(' ').next().unwrap_or("").to_owned());
        let data = match (rest.find('('), rest.rfind(')')) {
            (Some(open), Some(close)) if close > open => Some(rest[open + 1..close].to_owned()),
            _ => None,
        };
        AgiReply {
            code,
            result,
            data,
            text: line.to_owned(),
        }
    }

    pub fn ok(&self) -> bool {
        self.code == 200
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgiFrame {
    Request(AgiRequest),
    Reply(AgiReply),
    /// The channel hung up.
    Hangup,
}

#[derive(Debug, thiserror::Error)]
pub enum AgiError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("request header larger than {MAX_HEADER} bytes")]
    HeaderTooLong,
    #[error("malformed request line {0:?}")]
    Malformed(String),
    #[error("reply line larger than {MAX_LINE} bytes")]
    LineTooLong,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Header,
    Replies,
}

/// The FastAGI codec of the server side.
#[derive(Debug, Default)]
pub struct AgiCodec {
    state: State,
    env: Vec<(String, String)>,
    /// Bytes of the request header read so far.
    header_bytes: usize,
    /// Lines of a `520-` block so far.
    usage: Option<Vec<String>>,
}

struct TooLong;

/// Takes the next whole line off `buf`, without its line end. A line longer than `max`
/// bytes is refused as soon as that many have come, and also when it comes whole, so that
/// the verdict does not depend on how the bytes were split into reads.
fn line(buf: &mut BytesMut, max: usize) -> Result<Option<String>, TooLong> {
    match memchr::memchr(b'\n', buf) {
        Some(end) if end <= max => {
            let raw = buf.split_to(end + 1);
            let text = String::from_utf8_lossy(&raw[..end]);
            Ok(Some(text.trim_end_matches('\r').to_owned()))
        }
        Some(_) => Err(TooLong),
        None if buf.len() > max => Err(TooLong),
        None => Ok(None),
    }
}

impl Decoder for AgiCodec {
    type Item = AgiFrame;
    type Error = AgiError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<AgiFrame>, AgiError> {
        loop {
            match self.state {
                State::Header => {
                    let (budget, before) =
                        (MAX_HEADER.saturating_sub(self.header_bytes), buf.len());
                    let Some(l) = line(buf, budget).map_err(|_| AgiError::HeaderTooLong)? else {
                        return Ok(None);
                    };
                    self.header_bytes += before - buf.len();
                    if l.is_empty() {
                        if self.env.is_empty() {
                            continue;
                        }
                        self.state = State::Replies;
                        self.header_bytes = 0;
                        let env = std::mem::take(&mut self.env);
                        return Ok(Some(AgiFrame::Request(AgiRequest::from_env(env))));
                    }
                    if l == "HANGUP" {
                        return Ok(Some(AgiFrame::Hangup));
                    }
                    let (key, value) = l
                        .split_once(':')
                        .and_then(|(k, v)| Some((k.strip_prefix("agi_")?, v)))
                        .ok_or_else(|| AgiError::Malformed(l.chars().take(80).collect()))?;
                    self.env.push((
                        key.to_owned(),
                        value.strip_prefix(' ').unwrap_or(value).to_owned(),
                    ));
                    if self.env.len() > MAX_HEADER / 8 {
                        return Err(AgiError::HeaderTooLong);
                    }
                }
                State::Replies => {
                    let Some(l) = line(buf, MAX_LINE).map_err(|_| AgiError::LineTooLong)? else {
                        return Ok(None);
                    };
                    if let Some(usage) = &mut self.usage {
                        usage.push(l.clone());
                        if usage.len() > 256 {
                            return Err(AgiError::LineTooLong);
                        }
                        if l.starts_with("520 ") {
                            let text = self.usage.take().unwrap_or_default().join("\n");
                            return Ok(Some(AgiFrame::Reply(AgiReply {
                                code: 520,
                                result: None,
                                data: None,
                                text,
                            })));
                        }
                        continue;
                    }
                    if l.starts_with("520-") {
                        self.usage = Some(vec![l]);
                        continue;
                    }
                    if l == "HANGUP" {
                        return Ok(Some(AgiFrame::Hangup));
                    }
                    if l.is_empty() {
                        continue;
                    }
                    return Ok(Some(AgiFrame::Reply(AgiReply::parse(&l))));
                }
            }
        }
    }
}

/// A command to send, e.g. `SET VARIABLE CTID_AGI_STATUS "ok"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgiCommand(pub String);

impl AgiCommand {
    /// `SET VARIABLE name "value"`, the value quoted and escaped.
    pub fn set_variable(name: &str, value: &str) -> AgiCommand {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        AgiCommand(format!("SET VARIABLE {name} \"{escaped}\""))
    }
}

impl Encoder<&AgiCommand> for AgiCodec {
    type Error = AgiError;

    fn encode(&mut self, cmd: &AgiCommand, buf: &mut BytesMut) -> Result<(), AgiError> {
        buf.reserve(cmd.0.len() + 1);
        for b in cmd.0.bytes() {
            buf.put_u8(if b == b'\n' || b == b'\r' { b' ' } else { b });
        }
        buf.put_u8(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<AgiFrame> {
        let mut codec = AgiCodec::default();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    fn request(script: &str) -> AgiRequest {
        AgiRequest::from_env(vec![("network_script".into(), script.into())])
    }

    fn request_with_arg(script: &str, arg: &str) -> AgiRequest {
        let env = [("network_script", script), ("arg_1", arg)];
        AgiRequest::from_env(env.map(|(k, v)| (k.into(), v.into())).into())
    }

    #[test]
    fn attached_data_and_ivr_steps_are_bounded() {
        let data = request("attach?account=42&lang=fr&pbx=b")
            .call_data()
            .unwrap();
        assert_eq!(data.attached.len(), 2, "pbx= is not data");
        let data = request_with_arg("ivr", "menu-1").call_data().unwrap();
        assert_eq!(data.ivr_steps, ["menu-1"]);
        let long_key = format!("attach?{}=1", "k".repeat(MAX_KEY + 1));
        assert!(request(&long_key).call_data().is_err());
        let long_step = format!("ivr?step={}", "s".repeat(MAX_VALUE + 1));
        assert!(request(&long_step).call_data().is_err());
        let many: Vec<String> = (0..=MAX_ATTACH).map(|i| format!("k{i}=v")).collect();
        let err = request(&format!("attach?{}", many.join("&")))
            .call_data()
            .unwrap_err();
        assert!(err.contains("more than 32 pairs"), "{err}");
        assert!(request("attach").call_data().is_err(), "no data");
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(percent_decode("a%20b+c%2Fd"), "a b c/d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn replies_parse() {
        let r = AgiReply::parse("200 result=1 (\"Bob\" <2025550100>)");
        assert_eq!(
            (r.code, r.result.as_deref(), r.data.as_deref()),
            (200, Some("1"), Some("\"Bob\" <2025550100>"))
        );
        let r = AgiReply::parse("511 Command Not Permitted on a dead channel or intercept routine");
        assert_eq!((r.code, r.result.as_deref()), (511, None));
        assert!(!r.ok());
    }

    #[test]
    fn a_malformed_header_is_an_error() {
        let mut codec = AgiCodec::default();
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(AgiError::Malformed(_))
        ));
        let mut codec = AgiCodec::default();
        let mut buf = BytesMut::from(&vec![b'a'; MAX_HEADER + 1][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(AgiError::HeaderTooLong)
        ));
    }

    #[test]
    fn set_variable_quotes_and_cannot_inject_a_second_command() {
        let mut codec = AgiCodec::default();
        let mut buf = BytesMut::new();
        codec
            .encode(
                &AgiCommand::set_variable("CALLERID(name)", "Al \"the\" \\ Pal\nHANGUP"),
                &mut buf,
            )
            .unwrap();
        assert_eq!(
            &buf[..],
            b"SET VARIABLE CALLERID(name) \"Al \\\"the\\\" \\\\ Pal HANGUP\"\n"
        );
    }

    #[test]
    fn a_line_over_the_limit_is_refused_however_it_arrives() {
        // Found by the property test: such a line was refused when it came in pieces, and
        // accepted, or refused for another reason, when it came in one read.
        let header = |n: usize| format!("agi_x: {}\n\n", "x".repeat(n - 7)).into_bytes();
        let decode = |wire: &[u8]| AgiCodec::default().decode(&mut BytesMut::from(wire));
        let whole = decode(&header(MAX_HEADER));
        assert!(matches!(whole, Ok(Some(AgiFrame::Request(_)))), "{whole:?}");
        let over = header(MAX_HEADER + 1);
        assert!(matches!(decode(&over), Err(AgiError::HeaderTooLong)));
        assert!(matches!(
            decode(&over[..MAX_HEADER + 1]),
            Err(AgiError::HeaderTooLong)
        ));

        let mut buf = BytesMut::from(&header(8)[..]);
        for n in [MAX_LINE, MAX_LINE + 1] {
            buf.extend_from_slice(format!("200 {}\n", "x".repeat(n - 4)).as_bytes());
        }
        let mut codec = AgiCodec::default();
        let frames = [(); 3].map(|_| codec.decode(&mut buf));
        assert!(
            matches!(
                frames,
                [
                    Ok(Some(AgiFrame::Request(_))),
                    Ok(Some(AgiFrame::Reply(_))),
                    Err(AgiError::LineTooLong)
                ]
            ),
            "{frames:?}"
        );
    }

    #[test]
    fn hangup_may_come_any_time() {
        let out = frames(b"agi_network_script: x\n\n200 result=1\nHANGUP\n200 result=0\n");
        assert_eq!(out[2], AgiFrame::Hangup);
        assert_eq!(out.len(), 4);
    }
}
