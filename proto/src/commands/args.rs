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
    /// Bridged channels first: the leg that talks.
    fn talking_first(channels: impl Iterator<Item = &'a Channel>) -> Vec<&'a Channel> {
        let (mut bridged, rest): (Vec<_>, Vec<_>) = channels.partition(|c| c.bridge.is_some());
        bridged.extend(rest);
        bridged
    }

    /// The leg the sender acts as, and its line: their own channel in the call; else, for a
    /// role that reaches further, the channel of a line they may use (the agent's leg).
    pub(super) fn actor(
        &self,
        sender: &Sender<'_>,
        dir: &Directory,
        pbx: &str,
    ) -> Result<(&'a Channel, Line), ErrorCode> {
        if let Some(own) = sender.user.line.as_ref().filter(|l| l.pbx == pbx) {
            let mine = self
                .channels
                .iter()
                .copied()
                .filter(|c| c.interface == own.interface);
            if let Some(channel) = Self::talking_first(mine).first() {
                return Ok((channel, own.clone()));
            }
        }
        Self::talking_first(self.channels.iter().copied())
            .into_iter()
            .find_map(|c| {
                let line = dir.user_by_interface(pbx, &c.interface)?.line.as_ref()?;
                sender.may_use_line(line).then(|| (c, line.clone()))
            })
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

/// The call of `call_id`, if the sender may act on it: one of another context, or one their
/// role does not reach, is refused exactly like one that does not exist.
pub(super) fn target<'a>(
    model: &'a CallModel,
    sender: &Sender<'_>,
    req: &Request,
) -> Result<Target<'a>, ErrorCode> {
    let id = text(req, "call_id")?;
    let call = model
        .call(id)
        .filter(|c| sender.may_act_on(c))
        .ok_or(ErrorCode::Unallowed)?;
    let mut channels: Vec<&Channel> = model.channels_of(id).collect();
    channels.sort_by(|a, b| a.uniqueid.cmp(&b.uniqueid));
    Ok(Target {
        channels,
        state: call.state,
    })
}

/// The line of a directory member given by number or interface, if the sender may act on
/// it (their own, or one their role reaches); on `pbx` only, if given.
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
                && sender.may_use_line(l)
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
