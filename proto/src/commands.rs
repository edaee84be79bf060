//! Call control: a client's `ipbxcommand` checked against who sends it, then turned into
//! the AMI actions that carry it out.
//!
//! A user acts only on lines, calls and queues of their own context (any context when
//! context separation is off) and dials only from their own line. A call of another context
//! is refused exactly like a call that does not exist: clients learn nothing about other
//! tenants. Nothing here does I/O; the session sends the planned actions.

use serde_json::Value;

use crate::ami::AmiPacket;
use crate::calls::{CallModel, CallState, Channel};
use crate::cti::{ErrorCode, Request};
use crate::directory::{Directory, Line, User};

/// Every `command` of `ipbxcommand`.
pub const COMMANDS: [&str; 21] = [
    "dial",
    "originate",
    "hangup",
    "transfer",
    "atxfer",
    "atxfer_complete",
    "atxfer_cancel",
    "hold",
    "resume",
    "pickup",
    "intercept",
    "park",
    "record",
    "agentlogin",
    "agentlogout",
    "agentpause",
    "agentunpause",
    "queueadd",
    "queueremove",
    "queuepause",
    "queueunpause",
];

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
    fn new(packet: AmiPacket) -> Step {
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
    fn may_see(&self, contexts: &[String]) -> bool {
        match (self.separated, self.partition) {
            (false, _) => true,
            (true, Some(own)) => contexts.iter().any(|c| c == own),
            (true, None) => false,
        }
    }

    fn may_use_context(&self, context: &str) -> bool {
        !self.separated || self.partition == Some(context)
    }

    fn line(&self) -> Result<&Line, ErrorCode> {
        self.user.line.as_ref().ok_or(ErrorCode::Unallowed)
    }
}

/// A number that may reach the dialplan: digits, letters and `*#+._-`, at most 40.
fn valid_exten(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"*#+._-".contains(&b))
}

fn text<'a>(req: &'a Request, key: &str) -> Result<&'a str, ErrorCode> {
    req.str(key)
        .ok_or_else(|| ErrorCode::Missing(vec![key.to_owned()]))
}

fn exten<'a>(req: &'a Request, key: &str) -> Result<&'a str, ErrorCode> {
    let value = text(req, key)?;
    if valid_exten(value) {
        Ok(value)
    } else {
        Err(ErrorCode::Invalid(key.to_owned()))
    }
}

fn caller_id(user: &User, line: &Line) -> String {
    let name = user.fullname().replace(['"', '<', '>'], "");
    format!("\"{name}\" <{}>", line.number)
}

/// The channels of a call the sender may act on, and the call itself.
struct Target<'a> {
    channels: Vec<&'a Channel>,
    state: CallState,
}

impl<'a> Target<'a> {
    /// The sender's own channel in the call: the one of their line, in a bridge if any.
    fn own(&self, line: &Line) -> Option<&'a Channel> {
        let mine: Vec<&&Channel> = self
            .channels
            .iter()
            .filter(|c| c.interface == line.interface)
            .collect();
        mine.iter()
            .find(|c| c.bridge.is_some())
            .or(mine.first())
            .map(|c| **c)
    }

    /// The party the sender talks to: in the same bridge, else an answered channel of
    /// another device.
    fn peer(&self, own: &Channel, hold_context: &str) -> Option<&'a Channel> {
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
    }
}

fn target<'a>(
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

/// The line of a directory member given by number or interface, if the sender may use it.
fn member_line<'d>(
    dir: &'d Directory,
    sender: &Sender<'_>,
    member: &str,
) -> Result<&'d Line, ErrorCode> {
    dir.users()
        .filter_map(|u| u.line.as_ref())
        .find(|l| {
            (l.interface == member || l.number == member) && sender.may_use_context(&l.context)
        })
        .ok_or(ErrorCode::Unallowed)
}

fn queue_names(
    dir: &Directory,
    sender: &Sender<'_>,
    req: &Request,
) -> Result<Vec<String>, ErrorCode> {
    let allowed = |name: &str| {
        dir.queue(name)
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
            .filter(|q| sender.may_use_context(&q.context))
            .map(|q| q.name.clone())
            .collect()),
    }
}

/// Checks an `ipbxcommand` and plans its AMI actions.
pub fn plan(
    req: &Request,
    sender: &Sender<'_>,
    dir: &Directory,
    model: &CallModel,
    settings: &CommandSettings,
) -> Result<Plan, ErrorCode> {
    let command = text(req, "command")?.to_owned();
    if sender.separated && sender.partition.is_none() {
        return Err(ErrorCode::Unallowed);
    }
    let one = |p: AmiPacket| vec![Step::new(p)];
    let steps = match command.as_str() {
        "dial" => {
            let line = sender.line()?;
            let destination = exten(req, "destination")?;
            vec![originate(sender.user, line, destination, settings)]
        }
        "originate" => {
            let source = member_line(dir, sender, text(req, "source")?)?;
            let owner = dir
                .user_by_interface(&source.interface)
                .ok_or(ErrorCode::Unallowed)?;
            let destination = exten(req, "destination")?;
            vec![originate(owner, source, destination, settings)]
        }
        "hangup" => {
            let t = target(model, sender, req)?;
            t.channels
                .iter()
                .map(|c| Step {
                    tolerate: Some("No such channel"),
                    ..Step::new(AmiPacket::action("Hangup").field("Channel", c.name.clone()))
                })
                .collect()
        }
        "transfer" | "atxfer" => {
            let line = sender.line()?;
            let destination = exten(req, "destination")?;
            let t = target(model, sender, req)?;
            let own = t.own(line).ok_or(ErrorCode::Unallowed)?;
            let action = if command == "transfer" {
                "BlindTransfer"
            } else {
                "Atxfer"
            };
            one(AmiPacket::action(action)
                .field("Channel", own.name.clone())
                .field("Context", line.dialplan.clone())
                .field("Exten", destination.to_owned()))
        }
        "atxfer_complete" | "atxfer_cancel" => {
            let line = sender.line()?;
            let t = target(model, sender, req)?;
            let own = t.own(line).ok_or(ErrorCode::Unallowed)?;
            // The transferer leaving completes an attended transfer.
            let action = if command == "atxfer_complete" {
                "Hangup"
            } else {
                "CancelAtxfer"
            };
            one(AmiPacket::action(action).field("Channel", own.name.clone()))
        }
        "hold" | "resume" => {
            let line = sender.line()?;
            let t = target(model, sender, req)?;
            let own = t.own(line).ok_or(ErrorCode::Unallowed)?;
            let peer = t
                .peer(own, &settings.hold_context)
                .ok_or(ErrorCode::Unallowed)?;
            let ctx = settings.hold_context.clone();
            if command == "hold" {
                one(AmiPacket::action("Redirect")
                    .field("Channel", peer.name.clone())
                    .field("Context", ctx.clone())
                    .field("Exten", "hold")
                    .field("Priority", "1")
                    .field("ExtraChannel", own.name.clone())
                    .field("ExtraContext", ctx)
                    .field("ExtraExten", "wait")
                    .field("ExtraPriority", "1"))
            } else {
                one(AmiPacket::action("Bridge")
                    .field("Channel1", own.name.clone())
                    .field("Channel2", peer.name.clone())
                    .field("Tone", "no"))
            }
        }
        "pickup" | "intercept" => {
            let line = sender.line()?;
            let t = target(model, sender, req)?;
            if t.state != CallState::Ringing {
                return Err(ErrorCode::Invalid("call_id".into()));
            }
            let ringing = t
                .channels
                .iter()
                .find(|c| c.state == 5)
                .ok_or(ErrorCode::Invalid("call_id".into()))?;
            let mut step = Step::new(
                AmiPacket::action("Originate")
                    .field("Channel", line.interface.clone())
                    .field("Application", "PickupChan")
                    .field("Data", ringing.name.clone())
                    .field("CallerID", caller_id(sender.user, line))
                    .field("Timeout", settings.originate_timeout_ms.to_string())
                    .field("Async", "true"),
            );
            step.wait = Wait::Event("OriginateResponse");
            vec![step]
        }
        "park" => {
            let line = sender.line()?;
            let t = target(model, sender, req)?;
            let own = t.own(line).ok_or(ErrorCode::Unallowed)?;
            let peer = t
                .peer(own, &settings.hold_context)
                .ok_or(ErrorCode::Unallowed)?;
            one(AmiPacket::action("Park")
                .field("Channel", peer.name.clone())
                .field("TimeoutChannel", own.name.clone()))
        }
        "record" => {
            let line = sender.line()?;
            let t = target(model, sender, req)?;
            let own = t.own(line).ok_or(ErrorCode::Unallowed)?;
            match text(req, "subcommand")? {
                "start" => one(AmiPacket::action("MixMonitor")
                    .field("Channel", own.name.clone())
                    .field(
                        "File",
                        format!("ctid-{}-{}.wav", own.linkedid, sender.user.login),
                    )
                    .field("Options", "b")),
                "stop" => {
                    one(AmiPacket::action("StopMixMonitor").field("Channel", own.name.clone()))
                }
                _ => return Err(ErrorCode::Invalid("subcommand".into())),
            }
        }
        "agentlogin" | "agentlogout" => {
            let line = sender.line()?;
            let queues = queue_names(dir, sender, req)?;
            queues
                .into_iter()
                .map(|q| {
                    let packet = if command == "agentlogin" {
                        AmiPacket::action("QueueAdd")
                            .field("Queue", q)
                            .field("Interface", line.interface.clone())
                            .field("MemberName", sender.user.fullname())
                    } else {
                        AmiPacket::action("QueueRemove")
                            .field("Queue", q)
                            .field("Interface", line.interface.clone())
                    };
                    Step::new(packet)
                })
                .collect()
        }
        "agentpause" | "agentunpause" => {
            let line = sender.line()?;
            let mut packet = AmiPacket::action("QueuePause")
                .field("Interface", line.interface.clone())
                .field(
                    "Paused",
                    if command == "agentpause" {
                        "true"
                    } else {
                        "false"
                    },
                );
            if let Some(reason) = req.str("reason") {
                packet.push("Reason", reason.to_owned());
            }
            one(packet)
        }
        "queueadd" | "queueremove" | "queuepause" | "queueunpause" => {
            let queue = text(req, "queue")?;
            if !dir
                .queue(queue)
                .is_some_and(|q| sender.may_use_context(&q.context))
            {
                return Err(ErrorCode::Unallowed);
            }
            let member = member_line(dir, sender, text(req, "member")?)?;
            let packet = match command.as_str() {
                "queueadd" => AmiPacket::action("QueueAdd")
                    .field("Queue", queue.to_owned())
                    .field("Interface", member.interface.clone()),
                "queueremove" => AmiPacket::action("QueueRemove")
                    .field("Queue", queue.to_owned())
                    .field("Interface", member.interface.clone()),
                _ => {
                    let paused = command == "queuepause"
                        && req
                            .fields
                            .get("paused")
                            .and_then(Value::as_bool)
                            .unwrap_or(true);
                    let mut p = AmiPacket::action("QueuePause")
                        .field("Queue", queue.to_owned())
                        .field("Interface", member.interface.clone())
                        .field("Paused", paused.to_string());
                    if let Some(reason) = req.str("reason") {
                        p.push("Reason", reason.to_owned());
                    }
                    p
                }
            };
            one(packet)
        }
        _ => return Err(ErrorCode::UnknownFunction),
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

fn originate(user: &User, line: &Line, destination: &str, settings: &CommandSettings) -> Step {
    let mut step = Step::new(
        AmiPacket::action("Originate")
            .field("Channel", line.interface.clone())
            .field("Context", line.dialplan.clone())
            .field("Exten", destination.to_owned())
            .field("Priority", "1")
            .field("CallerID", caller_id(user, line))
            .field("Timeout", settings.originate_timeout_ms.to_string())
            .field("Async", "true"),
    );
    step.wait = Wait::Event("OriginateResponse");
    step
}

/// What an OriginateResponse's `Reason` (an Asterisk control frame code) means.
pub fn originate_reason(reason: Option<&str>) -> String {
    match reason {
        Some("0") => "the call could not be placed".into(),
        Some("1") => "hung up".into(),
        Some("3") => "no answer".into(),
        Some("5") => "busy".into(),
        Some("8") => "congestion".into(),
        Some(other) => format!("failed (reason {other})"),
        None => "failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::AmiMessage;

    const PW: &str =
        "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHRzYWx0$LEoDiKolAdO6CICRtIsNfS7pzASNysREYbKPF9VwGok";

    fn dir() -> Directory {
        Directory::parse(&format!(
            "[[contexts]]\nname = \"a\"\ndialplan = [\"a-in\"]\n[[contexts]]\nname = \"b\"\ndialplan = [\"b-in\"]\n\
             [[queues]]\nname = \"qa\"\ncontext = \"a\"\n[[queues]]\nname = \"qb\"\ncontext = \"b\"\n\
             [[users]]\nid = 1\nlogin = \"alice\"\npassword = \"{PW}\"\nfirstname = \"Alice\"\n\
             line = {{ interface = \"PJSIP/1001\", number = \"1001\", context = \"a\", dialplan = \"a-in\" }}\n\
             [[users]]\nid = 2\nlogin = \"bob\"\npassword = \"{PW}\"\n\
             line = {{ interface = \"PJSIP/1002\", number = \"1002\", context = \"a\", dialplan = \"a-in\" }}\n\
             [[users]]\nid = 3\nlogin = \"dave\"\npassword = \"{PW}\"\n\
             line = {{ interface = \"PJSIP/2001\", number = \"2001\", context = \"b\", dialplan = \"b-in\" }}\n\
             [[users]]\nid = 4\nlogin = \"erin\"\npassword = \"{PW}\"\n"
        ))
        .unwrap()
    }

    /// A bridged call from 1001 to 1002, id "5.1".
    fn model(dir: &Directory) -> CallModel {
        let mut m = CallModel::new();
        let chan = |name: &str, uid: &str, state: u8| {
            format!("Channel: {name}\r\nUniqueid: {uid}\r\nLinkedid: 5.1\r\nChannelState: {state}\r\nContext: a-in\r\nExten: 1002\r\n")
        };
        for ev in [
            format!(
                "Event: Newchannel\r\n{}",
                chan("PJSIP/1001-00000001", "5.1", 6)
            ),
            format!(
                "Event: Newchannel\r\n{}",
                chan("PJSIP/1002-00000002", "5.2", 6)
            ),
            format!(
                "Event: BridgeEnter\r\nBridgeUniqueid: br\r\n{}",
                chan("PJSIP/1001-00000001", "5.1", 6)
            ),
            format!(
                "Event: BridgeEnter\r\nBridgeUniqueid: br\r\n{}",
                chan("PJSIP/1002-00000002", "5.2", 6)
            ),
        ] {
            m.apply(&AmiMessage::parse(&ev), 1.0, dir);
        }
        m
    }

    fn run(login: &str, json: &str, separated: bool) -> Result<Plan, ErrorCode> {
        let dir = dir();
        let model = model(&dir);
        let user = dir.user_by_login(login).unwrap();
        let partition = if separated { user.context() } else { Some("*") };
        let sender = Sender {
            user,
            partition,
            separated,
        };
        plan(
            &Request::parse(json.as_bytes()).unwrap(),
            &sender,
            &dir,
            &model,
            &CommandSettings::default(),
        )
    }

    /// What a command of `login`, with context separation, sends to Asterisk.
    fn sent(login: &str, json: &str) -> Vec<String> {
        wire(&run(login, json, true).unwrap())
    }

    fn wire(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| {
                String::from_utf8(s.packet.to_bytes().to_vec())
                    .unwrap()
                    .replace("\r\n", "|")
            })
            .collect()
    }

    #[test]
    fn dial_originates_from_the_users_own_line() {
        let p = run(
            "alice",
            r#"{"class":"ipbxcommand","command":"dial","destination":"1002"}"#,
            true,
        )
        .unwrap();
        assert_eq!(
            wire(&p),
            ["Action: Originate|Channel: PJSIP/1001|Context: a-in|Exten: 1002|Priority: 1|CallerID: \"Alice\" <1001>|Timeout: 30000|Async: true||"]
        );
        assert_eq!(p.steps[0].wait, Wait::Event("OriginateResponse"));
    }

    #[test]
    fn destinations_that_could_inject_are_refused() {
        for bad in ["", "10 02", "1002\r\nAction: Logoff", "1002;x", "1002,1"] {
            let json =
                serde_json::json!({"class":"ipbxcommand","command":"dial","destination": bad})
                    .to_string();
            assert_eq!(
                run("alice", &json, true).unwrap_err(),
                ErrorCode::Invalid("destination".into()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_line_break_in_any_field_is_refused_by_name() {
        assert_eq!(
            run(
                "alice",
                r#"{"class":"ipbxcommand","command":"agentpause","reason":"lunch\r\nAction: Logoff"}"#,
                true
            )
            .unwrap_err(),
            ErrorCode::Invalid("reason".into())
        );
    }

    #[test]
    fn a_user_acts_only_within_their_context() {
        let hangup = r#"{"class":"ipbxcommand","command":"hangup","call_id":"5.1"}"#;
        assert_eq!(wire(&run("bob", hangup, true).unwrap()).len(), 2);
        assert_eq!(run("dave", hangup, true).unwrap_err(), ErrorCode::Unallowed);
        assert_eq!(
            run(
                "dave",
                r#"{"class":"ipbxcommand","command":"hangup","call_id":"nope"}"#,
                true
            )
            .unwrap_err(),
            ErrorCode::Unallowed
        );
        assert!(
            run("dave", hangup, false).is_ok(),
            "without separation every context is open"
        );
        // Erin has no line: nothing at all.
        assert_eq!(
            run(
                "erin",
                r#"{"class":"ipbxcommand","command":"dial","destination":"1"}"#,
                true
            )
            .unwrap_err(),
            ErrorCode::Unallowed
        );
        // Originate from another context's line, or queue actions on another context's queue.
        assert_eq!(run("alice", r#"{"class":"ipbxcommand","command":"originate","source":"2001","destination":"1"}"#, true).unwrap_err(), ErrorCode::Unallowed);
        assert_eq!(
            run(
                "alice",
                r#"{"class":"ipbxcommand","command":"queueadd","queue":"qb","member":"1001"}"#,
                true
            )
            .unwrap_err(),
            ErrorCode::Unallowed
        );
        assert_eq!(
            run(
                "alice",
                r#"{"class":"ipbxcommand","command":"queueadd","queue":"qa","member":"2001"}"#,
                true
            )
            .unwrap_err(),
            ErrorCode::Unallowed
        );
    }

    #[test]
    fn transfers_act_on_the_users_own_channel() {
        let p = sent(
            "bob",
            r#"{"class":"ipbxcommand","command":"transfer","call_id":"5.1","destination":"1003"}"#,
        );
        assert_eq!(
            p,
            ["Action: BlindTransfer|Channel: PJSIP/1002-00000002|Context: a-in|Exten: 1003||"]
        );
        let p = sent(
            "bob",
            r#"{"class":"ipbxcommand","command":"atxfer","call_id":"5.1","destination":"1003"}"#,
        );
        assert!(p[0].starts_with("Action: Atxfer|Channel: PJSIP/1002-00000002|"));
        let p = sent(
            "bob",
            r#"{"class":"ipbxcommand","command":"atxfer_cancel","call_id":"5.1"}"#,
        );
        assert_eq!(p, ["Action: CancelAtxfer|Channel: PJSIP/1002-00000002||"]);
        // Park sends the other party to the parking lot; it comes back to bob.
        let park = sent(
            "bob",
            r#"{"class":"ipbxcommand","command":"park","call_id":"5.1"}"#,
        );
        assert_eq!(
            park,
            ["Action: Park|Channel: PJSIP/1001-00000001|TimeoutChannel: PJSIP/1002-00000002||"]
        );
    }

    #[test]
    fn hold_redirects_both_parties_and_resume_bridges_them() {
        let p = sent(
            "alice",
            r#"{"class":"ipbxcommand","command":"hold","call_id":"5.1"}"#,
        );
        assert_eq!(
            p,
            ["Action: Redirect|Channel: PJSIP/1002-00000002|Context: ctid-hold|Exten: hold|Priority: 1|ExtraChannel: PJSIP/1001-00000001|ExtraContext: ctid-hold|ExtraExten: wait|ExtraPriority: 1||"]
        );
        let p = sent(
            "alice",
            r#"{"class":"ipbxcommand","command":"resume","call_id":"5.1"}"#,
        );
        assert_eq!(p, ["Action: Bridge|Channel1: PJSIP/1001-00000001|Channel2: PJSIP/1002-00000002|Tone: no||"]);
    }

    #[test]
    fn agent_and_queue_actions() {
        let p = sent("alice", r#"{"class":"ipbxcommand","command":"agentlogin"}"#);
        assert_eq!(
            p,
            ["Action: QueueAdd|Queue: qa|Interface: PJSIP/1001|MemberName: Alice||"]
        );
        let p = sent(
            "alice",
            r#"{"class":"ipbxcommand","command":"agentpause","reason":"lunch"}"#,
        );
        assert_eq!(
            p,
            ["Action: QueuePause|Interface: PJSIP/1001|Paused: true|Reason: lunch||"]
        );
        let p = sent(
            "alice",
            r#"{"class":"ipbxcommand","command":"queuepause","queue":"qa","member":"1002","paused":false}"#,
        );
        assert_eq!(
            p,
            ["Action: QueuePause|Queue: qa|Interface: PJSIP/1002|Paused: false||"]
        );
        assert_eq!(
            run(
                "alice",
                r#"{"class":"ipbxcommand","command":"agentlogin","queues":["qb"]}"#,
                true
            )
            .unwrap_err(),
            ErrorCode::Unallowed
        );
    }

    #[test]
    fn every_advertised_command_is_known() {
        for command in COMMANDS {
            let json = serde_json::json!({"class": "ipbxcommand", "command": command}).to_string();
            assert_ne!(
                run("alice", &json, true).err(),
                Some(ErrorCode::UnknownFunction),
                "{command}"
            );
        }
    }

    #[test]
    fn queueunpause_is_a_pause_set_to_false() {
        let p = sent(
            "alice",
            r#"{"class":"ipbxcommand","command":"queueunpause","queue":"qa","member":"1002"}"#,
        );
        assert_eq!(
            p,
            ["Action: QueuePause|Queue: qa|Interface: PJSIP/1002|Paused: false||"]
        );
    }

    #[test]
    fn unknown_commands_and_missing_fields() {
        assert_eq!(
            run("alice", r#"{"class":"ipbxcommand","command":"fly"}"#, true).unwrap_err(),
            ErrorCode::UnknownFunction
        );
        assert_eq!(
            run("alice", r#"{"class":"ipbxcommand"}"#, true).unwrap_err(),
            ErrorCode::Missing(vec!["command".into()])
        );
        assert_eq!(
            run(
                "alice",
                r#"{"class":"ipbxcommand","command":"hangup"}"#,
                true
            )
            .unwrap_err(),
            ErrorCode::Missing(vec!["call_id".into()])
        );
        assert_eq!(run("alice", r#"{"class":"ipbxcommand","command":"record","call_id":"5.1","subcommand":"pause"}"#, true).unwrap_err(), ErrorCode::Invalid("subcommand".into()));
    }
}
