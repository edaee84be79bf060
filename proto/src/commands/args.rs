//! What a command names, checked against who sends it: numbers, calls and the sender's
//! own channel in them, directory members, queues.

use serde_json::Value;

use super::Sender;
use crate::calls::{CallModel, CallState, Channel};
use crate::cti::{ErrorCode, Request};
use crate::directory::{Directory, Line, User};

/// A number that may reach the dialplan: digits, letters and `*#+._-`, at most 40.
fn valid_exten(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"*#+._-".contains(&b))
}

pub(super) fn text<'a>(req: &'a Request, key: &str) -> Result<&'a str, ErrorCode> {
    req.str(key)
        .ok_or_else(|| ErrorCode::Missing(vec![key.to_owned()]))
}

pub(super) fn exten<'a>(req: &'a Request, key: &str) -> Result<&'a str, ErrorCode> {
    let value = text(req, key)?;
    if valid_exten(value) {
        Ok(value)
    } else {
        Err(ErrorCode::Invalid(key.to_owned()))
    }
}

/// `"Name" <number>`, for the CallerID of an Originate.
pub(super) fn caller_id(user: &User, line: &Line) -> String {
    let name = user.fullname().replace(['"', '<', '>'], "");
    format!("\"{name}\" <{}>", line.number)
}

/// The channels of a call the sender may act on, and the call itself.
pub(super) struct Target<'a> {
    pub(super) channels: Vec<&'a Channel>,
    pub(super) state: CallState,
}

impl<'a> Target<'a> {
    /// The sender's own channel in the call: the one of their line, in a bridge if any.
    pub(super) fn own(&self, line: &Line) -> Result<&'a Channel, ErrorCode> {
        let mine: Vec<&&Channel> = self
            .channels
            .iter()
            .filter(|c| c.interface == line.interface)
            .collect();
        mine.iter()
            .find(|c| c.bridge.is_some())
            .or(mine.first())
            .map(|c| **c)
            .ok_or(ErrorCode::Unallowed)
    }

    /// The party the sender talks to: in the same bridge, else an answered channel of
    /// another device.
    pub(super) fn peer(&self, own: &Channel, hold_context: &str) -> Result<&'a Channel, ErrorCode> {
        let others = || {
            self.channels
                .iter()
                .filter(|c| c.interface != own.interface)
        };
        others()
            .find(|c| c.bridge.is_some() && c.bridge == own.bridge)
            .or_else(|| others().find(|c| c.context == hold_context))
            .or_else(|| others().find(|c| c.state == 6))
            .copied()
            .ok_or(ErrorCode::Unallowed)
    }
}

/// The call of `call_id`, if the sender may see it: one of another context is refused
/// exactly like one that does not exist.
pub(super) fn target<'a>(
    model: &'a CallModel,
    sender: &Sender<'_>,
    req: &Request,
) -> Result<Target<'a>, ErrorCode> {
    let id = text(req, "call_id")?;
    let call = model
        .call(id)
        .filter(|c| sender.may_see(&c.contexts))
        .ok_or(ErrorCode::Unallowed)?;
    let mut channels: Vec<&Channel> = model.channels_of(id).collect();
    channels.sort_by(|a, b| a.uniqueid.cmp(&b.uniqueid));
    Ok(Target {
        channels,
        state: call.state,
    })
}

/// The line of a directory member given by number or interface, if the sender may use it;
/// on `pbx` only, if given.
pub(super) fn member_line<'d>(
    dir: &'d Directory,
    sender: &Sender<'_>,
    member: &str,
    pbx: Option<&str>,
) -> Result<&'d Line, ErrorCode> {
    dir.users()
        .filter_map(|u| u.line.as_ref())
        .find(|l| {
            (l.interface == member || l.number == member)
                && sender.may_use_context(&l.context)
                && pbx.is_none_or(|p| l.pbx == p)
        })
        .ok_or(ErrorCode::Unallowed)
}

/// The queues of `pbx` a request names (`queues`), or every one the sender may use.
pub(super) fn queue_names(
    dir: &Directory,
    sender: &Sender<'_>,
    req: &Request,
    pbx: &str,
) -> Result<Vec<String>, ErrorCode> {
    let allowed = |name: &str| {
        dir.queue(pbx, name)
            .is_some_and(|q| sender.may_use_context(&q.context))
    };
    match req.fields.get("queues") {
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| {
                n.as_str()
                    .filter(|n| allowed(n))
                    .map(str::to_owned)
                    .ok_or(ErrorCode::Unallowed)
            })
            .collect(),
        Some(_) => Err(ErrorCode::Invalid("queues".into())),
        None => Ok(dir
            .queues()
            .filter(|q| q.pbx == pbx && sender.may_use_context(&q.context))
            .map(|q| q.name.clone())
            .collect()),
    }
}
