//! The media of channels and calls: codec, sample rate and translation paths, from the
//! `Status` list Asterisk answers for a channel (`Nativeformats`, `Readformat`,
//! `Writeformat`, `Readtrans`, `Writetrans`).

use serde::{Deserialize, Serialize};

use crate::ami::AmiMessage;

/// What a channel or a call carries. `codec` is Asterisk's format name (`ulaw`, `g722`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub codec: Option<String>,
    /// Hz, from [`sample_rate`]; None for a codec the table does not know.
    pub sample_rate: Option<u32>,
    /// Asterisk translates the channel's audio (a read or write translation path exists).
    pub transcoding: bool,
    pub read_trans: Option<String>,
    pub write_trans: Option<String>,
}

/// The sample rate of each codec Asterisk names, in Hz. docs/protocol.md has the same table
/// (a test checks it).
pub const SAMPLE_RATES: &[(&str, u32)] = &[
    ("ulaw", 8000),
    ("alaw", 8000),
    ("gsm", 8000),
    ("g729", 8000),
    ("g723", 8000),
    ("g726", 8000),
    ("g726aal2", 8000),
    ("adpcm", 8000),
    ("ilbc", 8000),
    ("lpc10", 8000),
    ("codec2", 8000),
    ("speex", 8000),
    ("speex16", 16000),
    ("speex32", 32000),
    ("silk8", 8000),
    ("silk12", 12000),
    ("silk16", 16000),
    ("silk24", 24000),
    ("g722", 16000),
    ("siren7", 16000),
    ("siren14", 32000),
    ("g719", 48000),
    ("opus", 48000),
    ("slin", 8000),
    ("slin12", 12000),
    ("slin16", 16000),
    ("slin24", 24000),
    ("slin32", 32000),
    ("slin44", 44100),
    ("slin48", 48000),
    ("slin96", 96000),
    ("slin192", 192000),
];

/// The sample rate of codec `name` (as Asterisk names it), if the table knows it.
pub fn sample_rate(name: &str) -> Option<u32> {
    SAMPLE_RATES
        .iter()
        .find(|(codec, _)| *codec == name)
        .map(|(_, rate)| *rate)
}

/// Whether the table knows codec `name`: counting calls by codec keeps to these.
pub fn known_codec(name: &str) -> bool {
    sample_rate(name).is_some()
}

/// Longest codec name or translation path kept: a longer value is not Asterisk's.
const MAX_FIELD: usize = 256;

/// A field's value, unless it says "none" or is implausibly long.
fn value<'a>(m: &'a AmiMessage, key: &str) -> Option<&'a str> {
    let v = m.get(key)?.trim();
    let none = v.is_empty()
        || v.len() > MAX_FIELD
        || matches!(
            v.to_ascii_lowercase().as_str(),
            "(none)" | "none" | "(nothing)" | "nothing" | "<unknown>" | "unknown"
        );
    (!none).then_some(v)
}

/// The first format of a `Nativeformats` value (`(ulaw|alaw)`).
fn first_native(formats: &str) -> Option<&str> {
    formats
        .trim_matches(|c| c == '(' || c == ')')
        .split('|')
        .map(str::trim)
        .find(|f| !f.is_empty())
}

impl Media {
    /// The media of the channel a `Status` list item describes; None if it names no
    /// codec and no translation (not a `Status` item, or a channel without audio yet).
    pub fn from_status(item: &AmiMessage) -> Option<Media> {
        let codec = value(item, "Readformat")
            .or_else(|| value(item, "Writeformat"))
            .or_else(|| value(item, "Nativeformats").and_then(first_native))
            .map(str::to_owned);
        let read_trans = value(item, "Readtrans").map(str::to_owned);
        let write_trans = value(item, "Writetrans").map(str::to_owned);
        if codec.is_none() && read_trans.is_none() && write_trans.is_none() {
            return None;
        }
        Some(Media {
            sample_rate: codec.as_deref().and_then(sample_rate),
            codec,
            transcoding: read_trans.is_some() || write_trans.is_some(),
            read_trans,
            write_trans,
        })
    }

    /// A call's media from its channels', the caller's first: the caller's codec, and the
    /// paths of the first channel that translates (`transcoding` if any does).
    pub fn of_call<'a>(channels: impl IntoIterator<Item = &'a Media>) -> Option<Media> {
        let mut channels = channels.into_iter();
        let first = channels.next()?;
        let translating = std::iter::once(first)
            .chain(channels)
            .find(|m| m.transcoding);
        let mut media = first.clone();
        if let Some(t) = translating {
            media.transcoding = true;
            media.read_trans.clone_from(&t.read_trans);
            media.write_trans.clone_from(&t.write_trans);
        }
        Some(media)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(fields: &str) -> AmiMessage {
        AmiMessage::parse(&format!("Event: Status\r\nUniqueid: 1.1\r\n{fields}"))
    }

    #[test]
    fn the_read_format_names_the_codec_and_paths_mean_transcoding() {
        let m = Media::from_status(&status(
            "Nativeformats: (ulaw)\r\nReadformat: g722\r\nReadtrans: (ulaw@8000)->(slin@8000)->(g722@16000)\r\nWriteformat: g722\r\nWritetrans: \r\n",
        ))
        .unwrap();
        assert_eq!(m.codec.as_deref(), Some("g722"));
        assert_eq!(m.sample_rate, Some(16000));
        assert!(m.transcoding);
        assert_eq!(
            m.read_trans.as_deref(),
            Some("(ulaw@8000)->(slin@8000)->(g722@16000)")
        );
        assert_eq!(m.write_trans, None);
    }

    #[test]
    fn without_read_and_write_formats_the_first_native_one_is_taken() {
        let m = Media::from_status(&status(
            "Nativeformats: (opus|ulaw)\r\nReadformat: \r\nReadtrans: (None)\r\nWritetrans: (none)\r\n",
        ))
        .unwrap();
        assert_eq!(m.codec.as_deref(), Some("opus"));
        assert_eq!(m.sample_rate, Some(48000));
        assert!(!m.transcoding);
        assert_eq!((m.read_trans, m.write_trans), (None, None));
    }

    #[test]
    fn an_unknown_codec_has_no_rate_and_no_formats_no_media() {
        let m = Media::from_status(&status("Readformat: vp8\r\n")).unwrap();
        assert_eq!((m.codec.as_deref(), m.sample_rate), (Some("vp8"), None));
        assert_eq!(Media::from_status(&status("Nativeformats: ()\r\n")), None);
        let huge = format!("Readformat: {}\r\n", "x".repeat(MAX_FIELD + 1));
        assert_eq!(Media::from_status(&status(&huge)), None);
    }

    #[test]
    fn a_call_has_its_callers_codec_and_any_translation() {
        let plain = |codec: &str| Media {
            codec: Some(codec.into()),
            sample_rate: sample_rate(codec),
            transcoding: false,
            read_trans: None,
            write_trans: None,
        };
        let mut callee = plain("g722");
        callee.transcoding = true;
        callee.write_trans = Some("(slin16@16000)->(g722@16000)".into());
        let call = Media::of_call([&plain("ulaw"), &callee]).unwrap();
        assert_eq!(call.codec.as_deref(), Some("ulaw"));
        assert!(call.transcoding);
        assert_eq!(call.write_trans, callee.write_trans);
        assert_eq!(Media::of_call([]), None);
        assert_eq!(
            Media::of_call([&plain("alaw"), &plain("alaw")]),
            Some(plain("alaw"))
        );
    }
}
