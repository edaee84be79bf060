//! Actions sent to Asterisk, what ends them, and their outcome.

use std::time::Duration;

use actix::prelude::*;
use ctid_proto::ami::{AmiMessage, AmiPacket};

use crate::settings::human_duration;

/// What ends an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Its response.
    Response,
    /// `EventList: start`, the items, then the `...Complete` event.
    List,
    /// Its response, then the named event carrying the same ActionID (an async
    /// Originate's `OriginateResponse`).
    Event(&'static str),
    /// A list whose outcome goes downstream with the events, where it happened in the
    /// stream ([`super::AmiItem::ListTaken`], [`super::AmiItem::ListDone`]); the request
    /// itself is answered once the action is sent.
    InStream(ListTag),
}

/// Names a list asked for [`Completion::InStream`] in the event stream.
pub type ListTag = u64;

/// Sends an action to Asterisk and waits for its outcome.
#[derive(Message, Debug)]
#[rtype(result = "Result<AmiReply, AmiError>")]
pub struct AmiRequest {
    pub packet: AmiPacket,
    pub completion: Completion,
    /// Defaults to the socket timeout.
    pub timeout: Option<Duration>,
}

impl AmiRequest {
    pub fn new(packet: AmiPacket) -> Self {
        AmiRequest {
            packet,
            completion: Completion::Response,
            timeout: None,
        }
    }

    pub fn list(packet: AmiPacket) -> Self {
        AmiRequest {
            completion: Completion::List,
            ..AmiRequest::new(packet)
        }
    }

    pub fn in_stream(packet: AmiPacket, tag: ListTag) -> Self {
        AmiRequest {
            completion: Completion::InStream(tag),
            ..AmiRequest::new(packet)
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct AmiReply {
    pub response: Option<AmiMessage>,
    /// List items, or the awaited event.
    pub events: Vec<AmiMessage>,
}

pub(super) fn is_failure(status: &str) -> bool {
    status.eq_ignore_ascii_case("Error") || status.eq_ignore_ascii_case("Failure")
}

impl AmiReply {
    /// Asterisk's verdict: the response's, or the awaited event's `Response` field.
    pub fn outcome(&self) -> Result<(), String> {
        let verdict = self
            .events
            .last()
            .filter(|e| e.get("Response").is_some())
            .or(self.response.as_ref());
        match verdict {
            Some(m) if m.get("Response").is_some_and(is_failure) => Err(m
                .get("Message")
                .or_else(|| m.get("Reason"))
                .unwrap_or("failed")
                .to_owned()),
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmiError {
    #[error("AMI link is down ({0})")]
    Down(String),
    #[error("no answer from Asterisk within {}", human_duration(*.0))]
    Timeout(Duration),
    #[error("invalid action: {0}")]
    Invalid(String),
    #[error("AMI link is congested")]
    Busy,
    #[error("refused by Asterisk ({0})")]
    Refused(String),
}
