//! The call model fed sequences of operations: AMI events built from small pools of
//! channels, calls, bridges and queues (so that they collide and reach deep states), AGI
//! data, dispositions, directory changes and the passing of time. After each operation the
//! events it caused and the model itself are checked against what clients rely on.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};

use crate::ami::AmiMessage;
use crate::calls::{
    Call, CallData, CallEvent, CallModel, CallState, Disposition, EventKind, MAX_ATTACHED,
    MAX_DATA_BYTES, MAX_IVR_STEPS,
};
use crate::directory::{Directory, DEFAULT_PBX};

/// Distinct Uniqueids (and so Linkedids) the events name.
const UIDS: u8 = 12;

const EVENTS: &[&str] = &[
    "Newchannel",
    "NewCallerid",
    "NewConnectedLine",
    "Newexten",
    "VarSet",
    "Newstate",
    "DialBegin",
    "DialState",
    "DialEnd",
    "BridgeEnter",
    "BridgeLeave",
    "Hold",
    "Unhold",
    "MusicOnHoldStart",
    "MusicOnHoldStop",
    "BlindTransfer",
    "AttendedTransfer",
    "QueueCallerJoin",
    "QueueCallerLeave",
    "QueueCallerAbandon",
    "AgentCalled",
    "AgentRingNoAnswer",
    "AgentComplete",
    "AgentDump",
    "AgentConnect",
    "UserEvent",
    "Hangup",
    "Cdr",
];
const PREFIXES: &[&str] = &[
    "Dest",
    "Transferer",
    "Transferee",
    "OrigTransferer",
    "SecondTransferer",
    "TransferTarget",
];
/// Lines of both directories, a trunk, a Local channel's two halves and a stranger.
const CHANNELS: &[&str] = &[
    "PJSIP/1001-00000001",
    "PJSIP/1002-00000002",
    "PJSIP/2001-00000003",
    "PJSIP/trunk-0000000a",
    "Local/1002@default-00000004;1",
    "Local/1002@default-00000004;2",
    "PJSIP/9999-0000000b",
    "",
];
const NUMBERS: &[&str] = &["1001", "1002", "2001", "0612345678", "<unknown>", ""];
const DIALPLANS: &[&str] = &[
    "internal",
    "default",
    "tenant-b",
    "tenant-b-internal",
    "from-trunk",
];
const EXTENS: &[&str] = &["1001", "1002", "2001", "3001", "s", "0612345678"];
const DIAL_STATUSES: &[&str] = &["RINGING", "ANSWER", "BUSY", "NOANSWER", "CANCEL"];
const BRIDGES: &[&str] = &["bridge-1", "bridge-2", "bridge-3", ""];
const QUEUES: &[&str] = &["support", "sales-b", "nowhere", ""];
const INTERFACES: &[&str] = &["PJSIP/1001", "PJSIP/1002", "PJSIP/2001", "Agent/9", ""];
const USER_EVENTS: &[&str] = &["CtiIvr", "CtiAttach", "Other"];
const WORDS: &[&str] = &[
    "",
    "menu-1",
    "menu-2",
    "<unknown>",
    "42",
    "Channel",
    "Priority",
];

/// An index into one of the pools above.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Pick(u8);

impl Pick {
    fn of(self, pool: &[&'static str]) -> &'static str {
        pool[usize::from(self.0) % pool.len()]
    }
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Uid(u8);

impl Uid {
    fn text(self) -> String {
        format!("1795000000.{}", self.0 % UIDS)
    }
}

/// A key or value of dialplan data: a word, one of many keys, or one near the size cap.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Text {
    Word(Pick),
    Key(u8),
    Long(u8),
}

impl Text {
    fn text(self) -> String {
        match self {
            Text::Word(p) => p.of(WORDS).to_owned(),
            Text::Key(n) => format!("k{n}"),
            Text::Long(n) => "x".repeat(MAX_DATA_BYTES - 2 + usize::from(n % 4)),
        }
    }
}

/// The channel snapshot of an event, written with a field prefix (`Dest`, ...).
#[derive(Arbitrary, Clone, Debug)]
pub struct Chan {
    uid: Uid,
    linkedid: Option<Uid>,
    name: Pick,
    state: Option<u8>,
    caller: Option<Pick>,
    context: Option<Pick>,
    exten: Option<Pick>,
}

impl Chan {
    fn write(&self, prefix: &str, text: &mut String) {
        let mut line = |key: &str, value: &str| field(text, &format!("{prefix}{key}"), value);
        line("Channel", self.name.of(CHANNELS));
        if let Some(s) = self.state {
            line("ChannelState", &(s % 8).to_string());
        }
        if let Some(n) = self.caller {
            line("CallerIDNum", n.of(NUMBERS));
        }
        if let Some(c) = self.context {
            line("Context", c.of(DIALPLANS));
        }
        if let Some(e) = self.exten {
            line("Exten", e.of(EXTENS));
        }
        line("Uniqueid", &self.uid.text());
        if let Some(l) = self.linkedid {
            line("Linkedid", &l.text());
        }
    }
}

#[derive(Arbitrary, Clone, Debug)]
pub struct UserEvent {
    kind: Pick,
    step: Option<Text>,
    data: Vec<(Text, Text)>,
}

/// An AMI event: its name, its channels, and the other fields calls.rs reads.
#[derive(Arbitrary, Clone, Debug)]
pub struct Event {
    name: Pick,
    channel: Option<Chan>,
    others: Vec<(Pick, Chan)>,
    dial_status: Option<Pick>,
    bridge: Option<Pick>,
    queue: Option<Pick>,
    cause: Option<u8>,
    transfer: Option<(bool, Pick)>,
    agent: Option<(Pick, Pick)>,
    user_event: Option<UserEvent>,
}

fn field(text: &mut String, key: &str, value: &str) {
    text.push_str(key);
    text.push_str(": ");
    text.push_str(value);
    text.push_str("\r\n");
}

impl Event {
    fn text(&self) -> String {
        let mut text = String::new();
        field(&mut text, "Event", self.name.of(EVENTS));
        if let Some(c) = &self.channel {
            c.write("", &mut text);
        }
        for (prefix, c) in self.others.iter().take(4) {
            c.write(prefix.of(PREFIXES), &mut text);
        }
        let mut line = |key: &str, value: Option<&str>| {
            if let Some(v) = value {
                field(&mut text, key, v);
            }
        };
        line("DialStatus", self.dial_status.map(|p| p.of(DIAL_STATUSES)));
        line("BridgeUniqueid", self.bridge.map(|p| p.of(BRIDGES)));
        line("Queue", self.queue.map(|p| p.of(QUEUES)));
        line("Cause", self.cause.map(|c| c.to_string()).as_deref());
        line("Cause-txt", self.cause.map(|_| "Normal Clearing"));
        if let Some((ok, extension)) = self.transfer {
            line("Result", Some(if ok { "Success" } else { "Fail" }));
            line("Extension", Some(extension.of(EXTENS)));
        }
        if let Some((interface, member)) = self.agent {
            line("Interface", Some(interface.of(INTERFACES)));
            line("MemberName", Some(member.of(WORDS)));
        }
        // Last, since a CtiAttach's data is every field after `UserEvent`.
        if let Some(u) = &self.user_event {
            line("UserEvent", Some(u.kind.of(USER_EVENTS)));
            line("Step", u.step.map(Text::text).as_deref());
            for (k, v) in &u.data {
                line(&k.text(), Some(&v.text()));
            }
        }
        text.push_str("\r\n");
        text
    }
}

/// One thing that happens to the model. A new kind of input is a new variant here and an
/// arm in [`World::step`].
#[derive(Arbitrary, Clone, Debug)]
pub enum CallModelOp {
    Event(Event),
    /// FastAGI data for a channel, or failing that for a call.
    Attach {
        channel: Uid,
        call: Option<Uid>,
        attached: Vec<(Text, Text)>,
        ivr_steps: Vec<Text>,
    },
    Dispose {
        call: Uid,
    },
    /// The answer to a `Status` of a channel: its codec, translated or not.
    Status {
        channel: Uid,
        codec: Text,
        translated: bool,
    },
    /// The directory is replaced by the other one.
    Refresh,
    Wait {
        seconds: u8,
    },
}

/// Two directories: the second moves bob's line and the support queue to tenant-b and takes
/// alice's line away, so a refresh moves calls between contexts.
fn directories() -> &'static [Directory; 2] {
    static DIRS: OnceLock<[Directory; 2]> = OnceLock::new();
    DIRS.get_or_init(|| {
        let text = |bob: &str, support: &str, alice: bool| {
            let pw = "$argon2id$v=19$m=19456,t=2,p=1$PmUfvJSx/XoaiPI5CGZKyQ$widnLdjpam9VZ0OVSdxdkHJkTCIH1RSgZ5vw0n8DyHo";
            let line = |interface: &str, number: &str, context: &str| {
                format!(
                    "line = {{ interface = \"{interface}\", number = \"{number}\", \
                     context = \"{context}\", dialplan = \"{context}\" }}\n"
                )
            };
            let mut t = String::from(
                "[[contexts]]\nname = \"default\"\ndialplan = [\"default\", \"internal\"]\n\
                 [[contexts]]\nname = \"tenant-b\"\ndialplan = [\"tenant-b\", \"tenant-b-internal\"]\n",
            );
            for (id, login, line) in [
                (1, "alice", alice.then(|| line("PJSIP/1001", "1001", "default"))),
                (2, "bob", Some(line("PJSIP/1002", "1002", bob))),
                (3, "dave", Some(line("PJSIP/2001", "2001", "tenant-b"))),
                (4, "erin", Some(line("Local/1002@default", "1002", "default"))),
                (5, "agent", None),
            ] {
                t.push_str(&format!(
                    "[[users]]\nid = {id}\nlogin = \"{login}\"\npassword = \"{pw}\"\n\
                     firstname = \"{login}\"\n{}",
                    line.unwrap_or_default()
                ));
            }
            t.push_str(&format!(
                "[[queues]]\nname = \"support\"\ncontext = \"{support}\"\nnumber = \"3001\"\n\
                 [[queues]]\nname = \"sales-b\"\ncontext = \"tenant-b\"\n"
            ));
            Directory::parse(&t).expect("the fuzzing directories are valid")
        };
        [
            text("default", "default", true),
            text("tenant-b", "tenant-b", false),
        ]
    })
}

/// Input: operations as `arbitrary` reads them from the bytes.
pub fn fuzz_call_model(data: &[u8]) {
    run_call_model(&ops_from_bytes(data));
}

/// Operations read one after the other until the bytes run out (unlike `arbitrary`'s own
/// `Vec`, which stops at the first even byte where it expects a continuation flag).
pub fn ops_from_bytes(data: &[u8]) -> Vec<CallModelOp> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while !u.is_empty() {
        match CallModelOp::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Runs `ops` on a new model, checking after each one.
pub fn run_call_model(ops: &[CallModelOp]) {
    let mut world = World {
        model: CallModel::new(DEFAULT_PBX),
        dir: 0,
        now: 1_795_000_000.0,
        live: HashMap::new(),
        transcript: Vec::new(),
    };
    for op in ops {
        world.step(op);
    }
}

struct World {
    model: CallModel,
    /// Which of [`directories`] is in force.
    dir: usize,
    now: f64,
    /// Calls clients were offered and not told have hung up, with the milestones that may
    /// come only once (ringing, answered) already sent.
    live: HashMap<String, HashSet<EventKind>>,
    /// What was applied so far, for the failure message.
    transcript: Vec<String>,
}

impl World {
    fn step(&mut self, op: &CallModelOp) {
        let dir = &directories()[self.dir];
        let out = match op {
            CallModelOp::Event(e) => {
                let text = e.text();
                let out = self.model.apply(&AmiMessage::parse(&text), self.now, dir);
                self.transcript.push(text);
                out
            }
            CallModelOp::Attach {
                channel,
                call,
                attached,
                ivr_steps,
            } => {
                let data = CallData {
                    attached: attached.iter().map(|(k, v)| (k.text(), v.text())).collect(),
                    ivr_steps: ivr_steps.iter().map(|s| s.text()).collect(),
                };
                let (channel, call) = (channel.text(), call.map(Uid::text));
                self.transcript
                    .push(format!("attach {channel} {call:?} {data:?}\n"));
                self.model.attach(&channel, call.as_deref(), data, self.now)
            }
            CallModelOp::Dispose { call } => {
                let id = call.text();
                self.transcript.push(format!("dispose {id}\n"));
                let disposition = Disposition {
                    code: "sale".into(),
                    note: None,
                    by: "alice".into(),
                    at: self.now,
                };
                let out = self.model.set_disposition(&id, disposition);
                self.ensure(out.is_some() == self.live.contains_key(&id), || {
                    format!("set_disposition of {id} answered {out:?}")
                });
                out.unwrap_or_default()
            }
            CallModelOp::Status {
                channel,
                codec,
                translated,
            } => {
                let trans = if *translated {
                    "(ulaw@8000)->(slin@8000)"
                } else {
                    ""
                };
                let item = format!(
                    "Event: Status\r\nUniqueid: {}\r\nNativeformats: ({})\r\nReadformat: {}\r\nReadtrans: {trans}\r\nActionID: s\r\n",
                    channel.text(),
                    codec.text(),
                    codec.text()
                );
                let done = "Event: StatusComplete\r\nActionID: s\r\nEventList: Complete\r\n";
                self.transcript.push(item.clone());
                let before = (self.model.calls().count(), self.model.channel_count());
                let list = [AmiMessage::parse(&item), AmiMessage::parse(done)];
                let out = self.model.apply_status(&list, self.now);
                let after = (self.model.calls().count(), self.model.channel_count());
                self.ensure(before == after, || {
                    format!("a Status made {before:?} calls and channels {after:?}")
                });
                self.ensure(out.iter().all(|e| e.kind == EventKind::Updated), || {
                    format!("a Status told {out:?}")
                });
                out
            }
            CallModelOp::Refresh => {
                self.dir = 1 - self.dir;
                self.transcript
                    .push(format!("refresh to directory {}\n", self.dir));
                self.model.refresh(self.now, &directories()[self.dir])
            }
            CallModelOp::Wait { seconds } => {
                self.now += f64::from(*seconds);
                Vec::new()
            }
        };
        for event in &out {
            self.check_event(event);
        }
        self.check_model();
    }

    fn ensure(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            panic!(
                "{}\nafter these operations:\n{}",
                what(),
                self.transcript.join("\n")
            );
        }
    }

    /// Checks one event.
    fn check_event(&mut self, event: &CallEvent) {
        let (id, kind, call) = (&event.call.id, event.kind, &event.call);
        self.check_call(call);
        self.ensure(
            event.left.iter().all(|c| !call.contexts.contains(c)),
            || {
                format!(
                    "{kind:?} of {id} leaves {:?}, a context it is in",
                    event.left
                )
            },
        );
        if kind == EventKind::Offered {
            let again = self.live.insert(id.clone(), HashSet::new()).is_some();
            self.ensure(!again, || format!("{id} offered again before its hungup"));
            return;
        }
        let first = match self.live.get_mut(id) {
            Some(sent) => {
                !matches!(kind, EventKind::Ringing | EventKind::Answered) || sent.insert(kind)
            }
            None => {
                self.ensure(false, || {
                    format!("{kind:?} of {id}, not offered or hung up")
                });
                return;
            }
        };
        self.ensure(first, || format!("{kind:?} of {id} sent twice"));
        if kind == EventKind::Hungup {
            self.live.remove(id);
            self.ensure(
                call.state == CallState::Ended && call.ended.is_some(),
                || format!("hungup of {id} in state {:?}", call.state),
            );
        }
    }

    /// What any call shown to clients satisfies.
    fn check_call(&self, call: &Call) {
        let id = &call.id;
        self.ensure(!id.is_empty(), || "a call with no id".into());
        let dir = &directories()[self.dir];
        self.ensure(call.contexts.iter().all(|c| dir.has_context(c)), || {
            format!("{id} in contexts {:?}", call.contexts)
        });
        let fits = |s: &String| s.len() <= MAX_DATA_BYTES;
        self.ensure(
            call.attached.len() <= MAX_ATTACHED
                && call.attached.iter().all(|(k, v)| fits(k) && fits(v))
                && call.ivr_path.len() <= MAX_IVR_STEPS
                && call.ivr_path.iter().all(fits),
            || {
                format!(
                    "{id} holds too much data: {:?} {:?}",
                    call.attached.keys(),
                    call.ivr_path.len()
                )
            },
        );
    }

    /// The calls clients were told are live are the model's, each made of channels that
    /// point back to it, and the model holds no more channels than the events named.
    fn check_model(&self) {
        let calls: HashSet<&str> = self.model.calls().map(|c| c.id.as_str()).collect();
        let told: HashSet<&str> = self.live.keys().map(String::as_str).collect();
        self.ensure(calls == told, || {
            format!("the model holds calls {calls:?}, clients were told of {told:?}")
        });
        for call in self.model.calls() {
            self.check_call(call);
            let channels: Vec<&str> = self
                .model
                .channels_of(&call.id)
                .map(|c| c.uniqueid.as_str())
                .collect();
            self.ensure(!channels.is_empty(), || {
                format!("{} has no channel", call.id)
            });
            for uid in channels {
                let owner = self
                    .model
                    .channel(uid)
                    .map(|c| format!("{DEFAULT_PBX}:{}", c.linkedid));
                self.ensure(owner.as_deref() == Some(call.id.as_str()), || {
                    format!("channel {uid} of call {} belongs to {owner:?}", call.id)
                });
            }
        }
        self.ensure(
            self.model.channel_count() <= usize::from(UIDS)
                && calls.len() <= self.model.channel_count(),
            || {
                format!(
                    "{} channels and {} calls from {UIDS} Uniqueids",
                    self.model.channel_count(),
                    calls.len()
                )
            },
        );
    }
}
