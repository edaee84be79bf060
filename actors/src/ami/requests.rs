//! Actions sent to Asterisk, what ends them, and their outcome.

use std::time::Duration;

use actix::prelude::*;
use ctid_proto::ami::AmiPacket;

pub use ctid_proto::ami::actions::AmiReply;

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

impl Completion {
    /// What ends the action on the wire.
    pub(super) fn wire(self) -> ctid_proto::ami::actions::Completion {
        use ctid_proto::ami::actions::Completion as Wire;
        match self {
            Completion::Response => Wire::Response,
            Completion::List | Completion::InStream(_) => Wire::List,
            Completion::Event(name) => Wire::Event(name),
        }
    }
}

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
