//! Call control: a client's `ipbxcommand` checked against who sends it, then turned into
//! the AMI actions that carry it out.
//!
//! A user acts only on lines, calls and queues of their own context (any context when
//! context separation is off; an admin, any context always) and dials only from their own
//! line. Within that, [`TABLE`] names what each command acts on and the user's role how far
//! they reach ([`crate::rights`]): an agent acts on their own line and the calls it is in,
//! a supervisor on every line and call of their context. A call of another context, or one
//! the user may not touch, is refused exactly like a call that does not exist: clients
//! learn nothing about other tenants. Nothing here does I/O; the session sends the planned
//! actions.
//!
//! Each family of commands has its module, which plans its actions: [`dial`], [`call`],
//! [`transfer`], [`queue`]; [`args`] resolves and checks what a request names.

mod args;
mod call;
mod dial;
mod queue;
mod transfer;

use crate::ami::AmiPacket;
use crate::calls::{Call, CallModel};
use crate::cti::{ErrorCode, Request};
use crate::directory::{Directory, Line, User};
use crate::rights::{Reach, Role, Target};

pub use dial::originate_reason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Dial,
    Call,
    Transfer,
    Queue,
}

/// Every `command` of `ipbxcommand`: the family that plans it, and what it acts on.
const TABLE: [(&str, Family, Target); 21] = [
    ("dial", Family::Dial, Target::OwnLine),
    ("originate", Family::Dial, Target::Line),
    ("pickup", Family::Dial, Target::Call),
    ("intercept", Family::Dial, Target::Call),
    ("hangup", Family::Call, Target::Call),
    ("hold", Family::Call, Target::Call),
    ("resume", Family::Call, Target::Call),
    ("park", Family::Call, Target::Call),
    ("record", Family::Call, Target::Call),
    ("transfer", Family::Transfer, Target::Call),
    ("atxfer", Family::Transfer, Target::Call),
    ("atxfer_complete", Family::Transfer, Target::Call),
    ("atxfer_cancel", Family::Transfer, Target::Call),
    ("agentlogin", Family::Queue, Target::OwnLine),
    ("agentlogout", Family::Queue, Target::OwnLine),
    ("agentpause", Family::Queue, Target::OwnLine),
    ("agentunpause", Family::Queue, Target::OwnLine),
    ("queueadd", Family::Queue, Target::Line),
    ("queueremove", Family::Queue, Target::Line),
    ("queuepause", Family::Queue, Target::Line),
    ("queueunpause", Family::Queue, Target::Line),
];

/// What the `disposition` class acts on.
pub const DISPOSITION_TARGET: Target = Target::Call;

/// Every `command` of `ipbxcommand` and what it acts on, as `login_capas` lists them.
pub fn targets() -> impl Iterator<Item = (&'static str, Target)> {
    TABLE.iter().map(|(name, _, target)| (*name, *target))
}

fn family(command: &str) -> Result<Family, ErrorCode> {
    TABLE
        .iter()
        .find(|(name, _, _)| *name == command)
        .map(|(_, family, _)| *family)
        .ok_or(ErrorCode::UnknownFunction)
}

/// What ends one action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Response,
    /// The response, then this event with the same ActionID (an async Originate).
    Event(&'static str),
}

/// One AMI action of a plan.
#[derive(Clone, Debug)]
pub struct Step {
    pub packet: AmiPacket,
    pub wait: Wait,
    /// An error message that still counts as done (hanging up a channel already gone).
    pub tolerate: Option<&'static str>,
}

impl Step {
    pub(super) fn new(packet: AmiPacket) -> Step {
        Step {
            packet,
            wait: Wait::Response,
            tolerate: None,
        }
    }
}

/// The actions of one command, run in order; the first failure is the outcome.
#[derive(Clone, Debug)]
pub struct Plan {
    pub command: String,
    pub steps: Vec<Step>,
}

/// Settings that shape the actions.
#[derive(Clone, Debug)]
pub struct CommandSettings {
    /// Dialplan context with extensions `hold` (music for the held party) and `wait` (for
    /// the user meanwhile).
    pub hold_context: String,
    /// How long a user's own phone rings for a dial or an originate, in milliseconds.
    pub originate_timeout_ms: u64,
}

impl Default for CommandSettings {
    fn default() -> Self {
        CommandSettings {
            hold_context: "ctid-hold".into(),
            originate_timeout_ms: 30_000,
        }
    }
}

/// Who sends a command, and what it may touch.
pub struct Sender<'a> {
    pub user: &'a User,
    /// The partition key of the user (their context, or `*` without separation).
    pub partition: Option<&'a str>,
    pub separated: bool,
}

impl Sender<'_> {
    fn reach(&self) -> Reach {
        self.user.role.reach()
    }

    pub(super) fn may_see(&self, contexts: &[String]) -> bool {
        match (self.reach(), self.separated, self.partition) {
            (Reach::Any, _, _) | (_, false, _) => true,
            (_, true, Some(own)) => contexts.iter().any(|c| c == own),
            (_, true, None) => false,
        }
    }

    pub(super) fn may_use_context(&self, context: &str) -> bool {
        self.reach() == Reach::Any || !self.separated || self.partition == Some(context)
    }

    /// Whether `line` is the sender's own.
    fn owns(&self, line: &Line) -> bool {
        self.user
            .line
            .as_ref()
            .is_some_and(|own| own.interface == line.interface && own.pbx == line.pbx)
    }

    /// A line the sender may act on: their own, or one their role reaches.
    pub(super) fn may_use_line(&self, line: &Line) -> bool {
        self.may_use_context(&line.context) && (self.reach() >= Reach::Context || self.owns(line))
    }

    /// A call the sender may act on: one their line is in, or one their role reaches.
    pub(super) fn may_act_on(&self, call: &Call) -> bool {
        let mine = self
            .user
            .line
            .as_ref()
            .is_some_and(|l| l.pbx == call.pbx && call.lines.contains(&l.interface));
        self.may_see(&call.contexts) && (mine || self.reach() >= Reach::Context)
    }

    pub(super) fn line(&self) -> Result<&Line, ErrorCode> {
        self.user.line.as_ref().ok_or(ErrorCode::Unallowed)
    }
}

/// What a command is planned from.
struct Input<'a> {
    req: &'a Request,
    sender: &'a Sender<'a>,
    dir: &'a Directory,
    model: &'a CallModel,
    settings: &'a CommandSettings,
}

impl Input<'_> {
    /// The sender's own line, on the PBX planned for: the one their actions go to.
    fn line(&self) -> Result<&Line, ErrorCode> {
        self.sender
            .line()
            .ok()
            .filter(|l| l.pbx == self.model.pbx())
            .ok_or(ErrorCode::Unallowed)
    }
}

/// The PBX a command goes to: a call's own (its id is `<pbx>:<Linkedid>`), the PBX of the
/// line it originates from, or of the member or agent it changes.
pub fn pbx_of(req: &Request, sender: &Sender<'_>, dir: &Directory) -> Result<String, ErrorCode> {
    let command = args::text(req, "command")?;
    let family = family(command)?;
    let on_call = matches!(family, Family::Call | Family::Transfer)
        || matches!(command, "pickup" | "intercept");
    if on_call {
        let id = args::text(req, "call_id")?;
        return id
            .split_once(':')
            .map(|(pbx, _)| pbx.to_owned())
            .ok_or(ErrorCode::Unallowed);
    }
    let line = match command {
        "originate" => args::member_line(dir, sender, args::text(req, "source")?, None)?,
        "queueadd" | "queueremove" | "queuepause" | "queueunpause" => {
            args::member_line(dir, sender, args::text(req, "member")?, None)?
        }
        _ => sender.line()?,
    };
    Ok(line.pbx.clone())
}

/// Checks an `ipbxcommand` and plans its AMI actions.
pub fn plan(
    req: &Request,
    sender: &Sender<'_>,
    dir: &Directory,
    model: &CallModel,
    settings: &CommandSettings,
) -> Result<Plan, ErrorCode> {
    let command = args::text(req, "command")?.to_owned();
    if sender.separated && sender.partition.is_none() && sender.user.role != Role::Admin {
        return Err(ErrorCode::Unallowed);
    }
    let family = family(&command)?;
    let input = Input {
        req,
        sender,
        dir,
        model,
        settings,
    };
    let steps = match family {
        Family::Dial => dial::plan(&command, &input)?,
        Family::Call => call::plan(&command, &input)?,
        Family::Transfer => transfer::plan(&command, &input)?,
        Family::Queue => queue::plan(&command, &input)?,
    };
    if steps.is_empty() {
        return Err(ErrorCode::Invalid("queues".into()));
    }
    if steps.iter().any(|s| s.packet.check().is_err()) {
        let field = req
            .fields
            .iter()
            .find(|(_, v)| v.as_str().is_some_and(|s| s.contains(['\r', '\n'])))
            .map_or("request", |(k, _)| k.as_str());
        return Err(ErrorCode::Invalid(field.to_owned()));
    }
    Ok(Plan { command, steps })
}

#[cfg(test)]
mod tests;
