//! What the call model produces: calls as clients see them, and the events about them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::media::Media;

/// Dialplan data one call holds, at most: attached keys, IVR steps, and the longest key or
/// value. More is dropped: every event of the call carries it to every session.
pub const MAX_ATTACHED: usize = 64;
pub const MAX_IVR_STEPS: usize = 64;
pub const MAX_DATA_BYTES: usize = 1024;

/// What a FastAGI script adds to a call: attached data and IVR steps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallData {
    pub attached: BTreeMap<String, String>,
    pub ivr_steps: Vec<String>,
}

impl CallData {
    /// Adds this data to `attached` and `ivr_path` within the caps; true if they changed.
    pub(crate) fn add_to(
        self,
        attached: &mut BTreeMap<String, String>,
        ivr_path: &mut Vec<String>,
    ) -> bool {
        let mut changed = false;
        for (k, v) in self.attached {
            changed |= attach(attached, k, v);
        }
        for step in self.ivr_steps {
            changed |= add_step(ivr_path, step);
        }
        changed
    }
}

pub(crate) fn attach(attached: &mut BTreeMap<String, String>, key: String, value: String) -> bool {
    let fits = key.len() <= MAX_DATA_BYTES && value.len() <= MAX_DATA_BYTES;
    let full = attached.len() >= MAX_ATTACHED && !attached.contains_key(&key);
    if !fits || full || attached.get(&key) == Some(&value) {
        return false;
    }
    attached.insert(key, value);
    true
}

pub(crate) fn add_step(ivr_path: &mut Vec<String>, step: String) -> bool {
    if ivr_path.len() >= MAX_IVR_STEPS || step.len() > MAX_DATA_BYTES {
        return false;
    }
    ivr_path.push(step);
    true
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub number: Option<String>,
    pub name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
    Internal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    Offered,
    Ringing,
    Queued,
    Answered,
    Bridged,
    Held,
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Offered,
    Ringing,
    Answered,
    Bridged,
    Held,
    Resumed,
    Transferred,
    Queued,
    AgentConnected,
    Hungup,
    Updated,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Offered => "offered",
            EventKind::Ringing => "ringing",
            EventKind::Answered => "answered",
            EventKind::Bridged => "bridged",
            EventKind::Held => "held",
            EventKind::Resumed => "resumed",
            EventKind::Transferred => "transferred",
            EventKind::Queued => "queued",
            EventKind::AgentConnected => "agent_connected",
            EventKind::Hungup => "hungup",
            EventKind::Updated => "updated",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub name: Option<String>,
    pub interface: Option<String>,
    /// The login of the user whose line the agent answered on.
    pub login: Option<String>,
}

/// The outcome an agent gives a call (a sale, a callback, ...), with who and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Disposition {
    pub code: String,
    pub note: Option<String>,
    pub by: String,
    pub at: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangupCause {
    pub code: Option<u32>,
    pub text: Option<String>,
}

/// A call as clients see it. Unknown values are `None` (JSON null).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// `<pbx>:<Linkedid>`: unique across PBXes.
    pub id: String,
    /// The PBX the call is on.
    pub pbx: String,
    pub contexts: Vec<String>,
    pub direction: Direction,
    pub state: CallState,
    pub caller: Party,
    pub callee: Party,
    pub ani: Option<String>,
    pub dnis: Option<String>,
    pub queue: Option<String>,
    pub agent: Option<Agent>,
    pub ivr_path: Vec<String>,
    pub attached: BTreeMap<String, String>,
    pub created: f64,
    pub answered: Option<f64>,
    pub ended: Option<f64>,
    pub hangup_cause: Option<HangupCause>,
    pub disposition: Option<Disposition>,
    /// The call's row in the call records, once it ended and was stored.
    pub record_id: Option<i64>,
    /// Its codec and translation, once Asterisk said (a `Status` after it was answered).
    #[serde(default)]
    pub media: Option<Media>,
    /// Interfaces of the directory lines the call touched (phone states, dispositions);
    /// not sent: they may name another tenant's line.
    #[serde(skip)]
    pub lines: BTreeSet<String>,
}

impl Call {
    pub(crate) fn new(pbx: &str, linkedid: &str, now: f64) -> Call {
        Call {
            id: format!("{pbx}:{linkedid}"),
            pbx: pbx.to_owned(),
            contexts: Vec::new(),
            direction: Direction::Inbound,
            state: CallState::Offered,
            caller: Party::default(),
            callee: Party::default(),
            ani: None,
            dnis: None,
            queue: None,
            agent: None,
            ivr_path: Vec::new(),
            attached: BTreeMap::new(),
            created: now,
            answered: None,
            ended: None,
            hangup_cause: None,
            disposition: None,
            record_id: None,
            media: None,
            lines: BTreeSet::new(),
        }
    }
}

/// One normalized event, with the call as it is after the event.
#[derive(Clone, Debug, PartialEq)]
pub struct CallEvent {
    pub kind: EventKind,
    pub call: Call,
    /// Contexts the call no longer belongs to (it moved to another tenant's line): they
    /// must forget it.
    pub left: Vec<String>,
    /// When it happened, in epoch seconds: the PBX's time when Asterisk stamped the AMI
    /// event (`timestampevents`), else when ctid read it.
    pub at: f64,
}

/// Folds each `updated` into the previous event of the same call in `events` (the events
/// of one AMI read): that event then shows the call as it is after both. Milestones keep
/// their order; clients get fewer, fuller events.
pub fn coalesce(events: Vec<CallEvent>) -> Vec<CallEvent> {
    let mut out: Vec<CallEvent> = Vec::with_capacity(events.len());
    let mut last: HashMap<String, usize> = HashMap::new();
    for event in events {
        if event.kind == EventKind::Updated {
            // Never into a `hungup`: the update is of the call's next life.
            if let Some(&i) = last
                .get(&event.call.id)
                .filter(|&&i| out[i].kind != EventKind::Hungup)
            {
                let prev = &mut out[i];
                prev.call = event.call;
                prev.left.extend(event.left);
                continue;
            }
        }
        last.insert(event.call.id.clone(), out.len());
        out.push(event);
    }
    out
}

impl Call {
    /// Takes what an earlier view of this call knew and this one cannot (this one was
    /// rebuilt from a resync, by a node that took over the PBX): its start, answer, IVR
    /// path, attached data, queue, agent, disposition and parties.
    pub fn inherit(&mut self, earlier: &Call) {
        self.created = self.created.min(earlier.created);
        self.direction = earlier.direction;
        self.answered = match (self.answered, earlier.answered) {
            (Some(mine), Some(theirs)) => Some(mine.min(theirs)),
            (mine, theirs) => mine.or(theirs),
        };
        let keep = |mine: &mut Option<String>, theirs: &Option<String>| {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        };
        keep(&mut self.ani, &earlier.ani);
        keep(&mut self.dnis, &earlier.dnis);
        keep(&mut self.queue, &earlier.queue);
        keep(&mut self.caller.number, &earlier.caller.number);
        keep(&mut self.caller.name, &earlier.caller.name);
        keep(&mut self.callee.number, &earlier.callee.number);
        keep(&mut self.callee.name, &earlier.callee.name);
        if self.agent.is_none() {
            self.agent.clone_from(&earlier.agent);
        }
        if self.disposition.is_none() {
            self.disposition.clone_from(&earlier.disposition);
        }
        if self.media.is_none() {
            self.media.clone_from(&earlier.media);
        }
        if self.ivr_path.is_empty() {
            self.ivr_path.clone_from(&earlier.ivr_path);
        }
        for (k, v) in &earlier.attached {
            if !self.attached.contains_key(k) {
                attach(&mut self.attached, k.clone(), v.clone());
            }
        }
        self.lines.extend(earlier.lines.iter().cloned());
    }
}

impl EventKind {
    /// This event of a call that clients already saw as `earlier`: a milestone they were
    /// told already is only an `updated` (no second screen pop after a takeover).
    pub fn after(self, earlier: &Call) -> EventKind {
        let told = match self {
            EventKind::Offered => true,
            EventKind::Ringing => earlier.state != CallState::Offered,
            EventKind::Answered => earlier.answered.is_some(),
            EventKind::Queued => earlier.queue.is_some(),
            EventKind::AgentConnected => earlier.agent.is_some(),
            EventKind::Bridged => matches!(earlier.state, CallState::Bridged | CallState::Held),
            EventKind::Held => earlier.state == CallState::Held,
            _ => false,
        };
        if told {
            EventKind::Updated
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuilt_call_keeps_what_only_the_earlier_node_knew() {
        let mut earlier = Call::new("a", "1.1", 10.0);
        earlier.answered = Some(12.0);
        earlier.ivr_path = vec!["menu".into()];
        earlier.attached.insert("crm".into(), "42".into());
        earlier.queue = Some("sales".into());
        earlier.direction = Direction::Outbound;
        let mut rebuilt = Call::new("a", "1.1", 30.0);
        rebuilt.attached.insert("crm".into(), "43".into());
        rebuilt.inherit(&earlier);
        assert_eq!(rebuilt.created, 10.0);
        assert_eq!(rebuilt.answered, Some(12.0));
        assert_eq!(rebuilt.ivr_path, ["menu"]);
        assert_eq!(rebuilt.attached["crm"], "43", "the newer value stays");
        assert_eq!(rebuilt.queue.as_deref(), Some("sales"));
        assert_eq!(rebuilt.direction, Direction::Outbound);
    }

    #[test]
    fn milestones_already_told_are_updates() {
        let mut earlier = Call::new("a", "1.1", 10.0);
        assert_eq!(EventKind::Offered.after(&earlier), EventKind::Updated);
        assert_eq!(EventKind::Answered.after(&earlier), EventKind::Answered);
        earlier.answered = Some(11.0);
        assert_eq!(EventKind::Answered.after(&earlier), EventKind::Updated);
        assert_eq!(EventKind::Hungup.after(&earlier), EventKind::Hungup);
    }
}
