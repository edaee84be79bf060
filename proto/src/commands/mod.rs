//! Call control: a client's `ipbxcommand` checked against who sends it, then turned into
//! the AMI actions that carry it out.
//!
//! A user acts only on lines, calls and queues of their own context (any context when
//! context separation is off) and dials only from their own line. A call of another context
//! is refused exactly like a call that does not exist: clients learn nothing about other
//! tenants. Nothing here does I/O; the session sends the planned actions.
//!
//! Each family of commands has its module, which names what the command acts on
//! ([`args`]) and plans its actions: [`dial`], [`call`], [`transfer`], [`queue`].

mod args;
mod call;
mod dial;
mod queue;
mod transfer;

use crate::ami::AmiPacket;
use crate::calls::CallModel;
use crate::cti::{ErrorCode, Request};
use crate::directory::{Directory, Line, User};

pub use dial::originate_reason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Dial,
    Call,
    Transfer,
    Queue,
}

/// Every `command` of `ipbxcommand`, and the family that plans it.
const TABLE: [(&str, Family); 21] = [
    ("dial", Family::Dial),
    ("originate", Family::Dial),
    ("pickup", Family::Dial),
    ("intercept", Family::Dial),
    ("hangup", Family::Call),
    ("hold", Family::Call),
    ("resume", Family::Call),
    ("park", Family::Call),
    ("record", Family::Call),
    ("transfer", Family::Transfer),
    ("atxfer", Family::Transfer),
    ("atxfer_complete", Family::Transfer),
    ("atxfer_cancel", Family::Transfer),
    ("agentlogin", Family::Queue),
    ("agentlogout", Family::Queue),
    ("agentpause", Family::Queue),
    ("agentunpause", Family::Queue),
    ("queueadd", Family::Queue),
    ("queueremove", Family::Queue),
    ("queuepause", Family::Queue),
    ("queueunpause", Family::Queue),
];

/// Every `command` of `ipbxcommand`, as `login_capas` lists them.
pub fn commands() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(name, _)| *name)
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
    pub(super) fn may_see(&self, contexts: &[String]) -> bool {
        match (self.separated, self.partition) {
            (false, _) => true,
            (true, Some(own)) => contexts.iter().any(|c| c == own),
            (true, None) => false,
        }
    }

    pub(super) fn may_use_context(&self, context: &str) -> bool {
        !self.separated || self.partition == Some(context)
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
    let family = TABLE
        .iter()
        .find(|(name, _)| *name == command)
        .map(|(_, family)| *family)
        .ok_or(ErrorCode::UnknownFunction)?;
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
    if sender.separated && sender.partition.is_none() {
        return Err(ErrorCode::Unallowed);
    }
    let family = TABLE
        .iter()
        .find(|(name, _)| *name == command)
        .map(|(_, family)| *family)
        .ok_or(ErrorCode::UnknownFunction)?;
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
mod tests {
    use super::*;
    use crate::ami::AmiMessage;
    use crate::directory::DEFAULT_PBX;

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
        let mut m = CallModel::new(DEFAULT_PBX);
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
        let hangup = r#"{"class":"ipbxcommand","command":"hangup","call_id":"default:5.1"}"#;
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
            r#"{"class":"ipbxcommand","command":"transfer","call_id":"default:5.1","destination":"1003"}"#,
        );
        assert_eq!(
            p,
            ["Action: BlindTransfer|Channel: PJSIP/1002-00000002|Context: a-in|Exten: 1003||"]
        );
        let p = sent(
            "bob",
            r#"{"class":"ipbxcommand","command":"atxfer","call_id":"default:5.1","destination":"1003"}"#,
        );
        assert!(p[0].starts_with("Action: Atxfer|Channel: PJSIP/1002-00000002|"));
        let p = sent(
            "bob",
            r#"{"class":"ipbxcommand","command":"atxfer_cancel","call_id":"default:5.1"}"#,
        );
        assert_eq!(p, ["Action: CancelAtxfer|Channel: PJSIP/1002-00000002||"]);
        // Park sends the other party to the parking lot; it comes back to bob.
        let park = sent(
            "bob",
            r#"{"class":"ipbxcommand","command":"park","call_id":"default:5.1"}"#,
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
            r#"{"class":"ipbxcommand","command":"hold","call_id":"default:5.1"}"#,
        );
        assert_eq!(
            p,
            ["Action: Redirect|Channel: PJSIP/1002-00000002|Context: ctid-hold|Exten: hold|Priority: 1|ExtraChannel: PJSIP/1001-00000001|ExtraContext: ctid-hold|ExtraExten: wait|ExtraPriority: 1||"]
        );
        let p = sent(
            "alice",
            r#"{"class":"ipbxcommand","command":"resume","call_id":"default:5.1"}"#,
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
        assert_eq!(run("alice", r#"{"class":"ipbxcommand","command":"record","call_id":"default:5.1","subcommand":"pause"}"#, true).unwrap_err(), ErrorCode::Invalid("subcommand".into()));
    }
}
