//! Actions sent to Asterisk, what ends them, and their outcome.

use std::time::Duration;

use actix::prelude::*;
use ctid_proto::ami::AmiPacket;
use ctid_proto::commands::{originate_reason, Plan, Wait};

pub use ctid_proto::ami::actions::AmiReply;

use super::AmiLink;
use crate::ask::{ask, Unanswered};
use crate::settings::human_duration;
use crate::supervisor::Slot;

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

/// Runs a command's actions in order on `link`; the first failure is the outcome. `socket`
/// bounds each action, and `ring` adds to those that wait for a phone to answer.
pub async fn run_plan(
    plan: Plan,
    link: Slot<AmiLink>,
    socket: Duration,
    ring: Duration,
) -> Result<(), String> {
    for step in plan.steps {
        let Some(link) = link.get() else {
            return Err("AMI link is down (not running)".to_owned());
        };
        let (completion, timeout) = match step.wait {
            Wait::Response => (Completion::Response, socket),
            Wait::Event(name) => (Completion::Event(name), ring + socket),
        };
        let request = AmiRequest {
            packet: step.packet,
            completion,
            timeout: Some(timeout),
        };
        // The link times the action out itself; this bounds its mailbox too.
        let reply = match ask(&link, request, timeout + socket).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(Unanswered::Late) => {
                return Err(format!(
                    "AMI link busy (no answer within {})",
                    human_duration(timeout + socket)
                ))
            }
            Err(Unanswered::Gone) => return Err("AMI link stopped".to_owned()),
        };
        match reply.outcome() {
            Ok(()) => {}
            Err(m) if step.tolerate == Some(m.as_str()) => {}
            Err(_) if matches!(step.wait, Wait::Event(_)) && !reply.events.is_empty() => {
                return Err(originate_reason(reply.events[0].get("Reason")));
            }
            Err(m) => return Err(m),
        }
    }
    Ok(())
}
