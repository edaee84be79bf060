//! Channels grouped into calls by Linkedid, event by event.
//!
//! Events arrive out of order and some never arrive, so every event carries enough to
//! create what it refers to, a hung-up channel is remembered (a late event cannot bring it
//! back), and a call ends when its last channel is gone. Milestones (ringing, answered,
//! ...) are emitted once each, when they first happen; any other visible change is an
//! `updated`.
//!
//! The Originate's own dial to the first party (a `DialBegin` with no calling `Channel`)
//! is a callback leg: it does not make the call ring or answer. The call rings when a real
//! dial (from the dialplan or a queue) starts, and is answered when that dial is.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::{Deref, DerefMut};

use super::media::Media;
use super::types::{
    Call, CallData, CallEvent, CallState, Direction, EventKind, HangupCause, Party,
};
use crate::ami::AmiMessage;
use crate::directory::{interface_of, Directory};

/// Hung-up channels remembered, so that late events about them are ignored.
pub(super) const TOMBSTONES: usize = 16384;

/// A live call and what the model derives it from.
pub(super) struct Tracked {
    pub(super) call: Call,
    /// The call's Linkedid: its key in the model (its id is `<pbx>:<Linkedid>`).
    pub(super) key: String,
    /// Uniqueids of its live channels.
    pub(super) channels: BTreeSet<String>,
    line_contexts: BTreeSet<String>,
    pub(super) queue_contexts: BTreeSet<String>,
    fallback_context: Option<String>,
    pub(super) rang: bool,
}

// The model reads and writes the client-visible fields through the tracked call.
impl Deref for Tracked {
    type Target = Call;
    fn deref(&self) -> &Call {
        &self.call
    }
}

impl DerefMut for Tracked {
    fn deref_mut(&mut self) -> &mut Call {
        &mut self.call
    }
}

impl Tracked {
    fn new(pbx: &str, linkedid: &str, now: f64) -> Tracked {
        Tracked {
            call: Call::new(pbx, linkedid, now),
            key: linkedid.to_owned(),
            channels: BTreeSet::new(),
            line_contexts: BTreeSet::new(),
            queue_contexts: BTreeSet::new(),
            fallback_context: None,
            rang: false,
        }
    }
}

/// A channel as the model tracks it.
#[derive(Clone, Debug)]
pub struct Channel {
    pub uniqueid: String,
    pub linkedid: String,
    pub name: String,
    pub interface: String,
    pub state: u8,
    pub caller: Party,
    pub context: String,
    pub exten: String,
    pub bridge: Option<String>,
    /// Uniqueid of the channel that dialed this one from the dialplan or a queue.
    pub dialed_by: Option<String>,
    /// What Asterisk's last `Status` of the channel said of its audio.
    pub media: Option<Media>,
    /// The model's event count when an event last named the channel.
    pub(super) seen: u64,
}

/// Values Asterisk uses for "unknown"; they become `None`.
pub(super) fn known(v: Option<&str>) -> Option<String> {
    match v {
        None | Some("") | Some("<unknown>") | Some("<Unknown>") | Some("unknown") => None,
        Some(v) => Some(v.to_owned()),
    }
}

/// A field of a prefixed channel snapshot (`Dest`, `Transferee`, ...).
fn field<'a>(ev: &'a AmiMessage, prefix: &str, name: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        ev.get(name)
    } else {
        ev.get(&format!("{prefix}{name}"))
    }
}

/// Uniqueids read `<epoch>.<sequence>`; they order numerically, not as text.
fn uid_order(uid: &str) -> (u64, u64) {
    let (a, b) = uid.split_once('.').unwrap_or((uid, "0"));
    (a.parse().unwrap_or(u64::MAX), b.parse().unwrap_or(u64::MAX))
}

/// The model of every live call of one PBX.
#[derive(Default)]
pub struct CallModel {
    /// The PBX's name: its calls' ids are `<pbx>:<Linkedid>`.
    pub(super) pbx: String,
    pub(super) channels: HashMap<String, Channel>,
    pub(super) calls: HashMap<String, Tracked>,
    pub(super) bridges: HashMap<String, BTreeSet<String>>,
    pub(super) tombstones: VecDeque<String>,
    pub(super) dead: HashSet<String>,
    /// Milestones of the event being applied, in order.
    pub(super) out: Vec<(String, EventKind)>,
    /// Calls whose visible state changed during the event being applied.
    pub(super) changed: BTreeSet<String>,
    /// Calls ended during the event being applied, by key, as they were at the end.
    pub(super) ended: Vec<(String, Call)>,
    /// Data for channels the model has not seen yet, by Uniqueid, with when it came.
    pub(super) pending: HashMap<String, (CallData, f64)>,
    /// The Uniqueid of pending data, by the Linkedid of its call.
    pub(super) pending_calls: HashMap<String, String>,
    /// AMI events applied so far: where a list was taken in the stream.
    pub(super) tick: u64,
}

impl CallModel {
    /// The model of the calls of PBX `pbx`.
    pub fn new(pbx: &str) -> Self {
        CallModel {
            pbx: pbx.to_owned(),
            ..Self::default()
        }
    }

    pub fn pbx(&self) -> &str {
        &self.pbx
    }

    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values().map(|t| &t.call)
    }

    /// The key of call `id` (`<pbx>:<Linkedid>`), if it is one of this PBX's.
    pub(super) fn key<'a>(&self, id: &'a str) -> Option<&'a str> {
        id.strip_prefix(self.pbx.as_str())?.strip_prefix(':')
    }

    /// Live call `id` (`<pbx>:<Linkedid>`).
    pub fn call(&self, id: &str) -> Option<&Call> {
        self.calls.get(self.key(id)?).map(|t| &t.call)
    }

    /// The live call of channel `uniqueid`.
    pub fn call_of_channel(&self, uniqueid: &str) -> Option<&Call> {
        let ch = self.channels.get(uniqueid)?;
        self.calls.get(&ch.linkedid).map(|t| &t.call)
    }

    /// The live channels of call `id`.
    pub fn channels_of(&self, id: &str) -> impl Iterator<Item = &Channel> {
        self.key(id)
            .and_then(|k| self.calls.get(k))
            .into_iter()
            .flat_map(|t| t.channels.iter().filter_map(|u| self.channels.get(u)))
    }

    pub fn channel(&self, uniqueid: &str) -> Option<&Channel> {
        self.channels.get(uniqueid)
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    pub(super) fn channel_uids(&self) -> impl Iterator<Item = String> + '_ {
        self.channels.keys().cloned()
    }

    pub(super) fn set_state(&mut self, uid: &str, state: u8) {
        if let Some(ch) = self.channels.get_mut(uid) {
            ch.state = state;
        }
    }

    /// Applies one AMI event read at `now`; returns the call events it causes, in order,
    /// timed by the event's `Timestamp` if Asterisk stamped it, else by `now`.
    pub fn apply(&mut self, ev: &AmiMessage, now: f64, dir: &Directory) -> Vec<CallEvent> {
        self.tick += 1;
        let Some(name) = ev.event() else {
            return Vec::new();
        };
        let at = ev.timestamp().unwrap_or(now);
        match name {
            "Newchannel" | "NewCallerid" | "NewConnectedLine" => {
                self.touch(ev, "", now, dir);
            }
            // The most frequent events: they only matter if the channel was never seen.
            "Newexten" | "VarSet"
                if ev
                    .get("Uniqueid")
                    .is_some_and(|u| !self.channels.contains_key(u)) =>
            {
                self.touch(ev, "", now, dir);
            }
            "Newstate" => {
                if let Some(uid) = self.touch(ev, "", now, dir) {
                    self.on_state(&uid, now);
                }
            }
            "DialBegin" => self.on_dial_begin(ev, now, dir),
            "DialState" => {
                let caller = self.touch(ev, "", now, dir);
                self.touch(ev, "Dest", now, dir);
                if ev.get("DialStatus") == Some("RINGING") {
                    if let Some(call) = caller.and_then(|c| self.call_of(&c)) {
                        self.ring(&call);
                    }
                }
            }
            "DialEnd" => {
                let caller = self.touch(ev, "", now, dir);
                let dest = self.touch(ev, "Dest", now, dir);
                if dest.is_some() && ev.get("DialStatus") == Some("ANSWER") {
                    if let Some(call) = caller.and_then(|c| self.call_of(&c)) {
                        self.answer(&call, now);
                    }
                }
            }
            "BridgeEnter" => {
                let uid = self.touch(ev, "", now, dir);
                if let (Some(uid), Some(bridge)) = (uid, known(ev.get("BridgeUniqueid"))) {
                    self.enter_bridge(&uid, &bridge, now);
                }
            }
            "BridgeLeave" => {
                if let Some(uid) = self.touch(ev, "", now, dir) {
                    self.leave_bridge(&uid);
                }
            }
            "Hold" | "Unhold" => {
                if let Some(call) = self.touch(ev, "", now, dir).and_then(|u| self.call_of(&u)) {
                    self.hold(&call, name == "Hold");
                }
            }
            // Music on hold in a connected call is a hold too (one made by Redirect, say);
            // a caller waiting in a queue hears it without being held.
            "MusicOnHoldStart" | "MusicOnHoldStop" => {
                if let Some(call) = self.touch(ev, "", now, dir).and_then(|u| self.call_of(&u)) {
                    let state = self.calls.get(&call).map(|c| c.state);
                    match (name, state) {
                        ("MusicOnHoldStart", Some(CallState::Answered | CallState::Bridged)) => {
                            self.hold(&call, true)
                        }
                        ("MusicOnHoldStop", Some(CallState::Held)) => self.hold(&call, false),
                        _ => {}
                    }
                }
            }
            "BlindTransfer" => self.on_transfer(ev, &["Transferer", "Transferee"], now, dir),
            "AttendedTransfer" => {
                let prefixes = [
                    "OrigTransferer",
                    "SecondTransferer",
                    "Transferee",
                    "TransferTarget",
                ];
                self.on_transfer(ev, &prefixes, now, dir)
            }
            "QueueCallerJoin" => self.on_queue_join(ev, now, dir),
            "QueueCallerLeave" | "QueueCallerAbandon" | "AgentCalled" | "AgentRingNoAnswer"
            | "AgentComplete" | "AgentDump" => {
                self.touch(ev, "", now, dir);
            }
            "AgentConnect" => self.on_agent_connect(ev, now, dir),
            "UserEvent" => self.on_user_event(ev, now, dir),
            "Hangup" => {
                let cause = HangupCause {
                    code: ev.get("Cause").and_then(|c| c.parse().ok()),
                    text: known(ev.get("Cause-txt")),
                };
                if let Some(uid) = ev.get("Uniqueid") {
                    self.hang_up(uid, Some(cause), now, dir);
                }
            }
            _ => {}
        }
        self.finish(at)
    }

    /// Recomputes line membership and contexts after a directory change at `now`.
    pub fn refresh(&mut self, now: f64, dir: &Directory) -> Vec<CallEvent> {
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            self.recompute_with(&id, dir, true);
        }
        self.finish(now)
    }

    /// Applies the items of a `Status` list that completed when ctid read it at `now`:
    /// the media of each live channel it describes, and so of its call. It neither creates
    /// nor ends anything: a channel the model does not hold (hung up, never seen) is
    /// skipped. The events are timed by the list's last `Timestamp`, if Asterisk stamped it.
    pub fn apply_status(&mut self, items: &[AmiMessage], now: f64) -> Vec<CallEvent> {
        let at = items
            .iter()
            .rev()
            .find_map(AmiMessage::timestamp)
            .unwrap_or(now);
        let mut calls = BTreeSet::new();
        for item in items.iter().filter(|i| i.event() == Some("Status")) {
            let Some(ch) = item.get("Uniqueid").and_then(|u| self.channels.get_mut(u)) else {
                continue;
            };
            let Some(media) = Media::from_status(item) else {
                continue;
            };
            if ch.media.as_ref() != Some(&media) {
                ch.media = Some(media);
                calls.insert(ch.linkedid.clone());
            }
        }
        for key in calls {
            self.recompute_media(&key);
        }
        self.finish(at)
    }

    /// The call's media from its channels' (the originator's first); kept as it was
    /// while none of its live channels has any.
    fn recompute_media(&mut self, key: &str) {
        let Some(call) = self.calls.get(key) else {
            return;
        };
        let first = self.originator(call).map(|c| c.uniqueid.as_str());
        let mut uids: Vec<&String> = call.channels.iter().collect();
        uids.sort_by_key(|u| (Some(u.as_str()) != first, uid_order(u)));
        let media = Media::of_call(
            uids.into_iter()
                .filter_map(|u| self.channels.get(u)?.media.as_ref()),
        );
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        if media.is_some() && call.media != media {
            call.media = media;
            self.changed.insert(key.to_owned());
        }
    }

    pub(super) fn call_of(&self, uid: &str) -> Option<String> {
        self.channels.get(uid).map(|c| c.linkedid.clone())
    }

    /// Creates or updates the channel an event describes (its fields prefixed by `prefix`);
    /// returns its Uniqueid, or None if the event names no live channel.
    pub(super) fn touch(
        &mut self,
        ev: &AmiMessage,
        prefix: &str,
        now: f64,
        dir: &Directory,
    ) -> Option<String> {
        let uid = known(field(ev, prefix, "Uniqueid"))?;
        if self.dead.contains(&uid) {
            return None;
        }
        let linkedid = known(field(ev, prefix, "Linkedid")).unwrap_or_else(|| uid.clone());
        let state = field(ev, prefix, "ChannelState").and_then(|s| s.parse().ok());
        let caller = Party {
            number: known(field(ev, prefix, "CallerIDNum")),
            name: known(field(ev, prefix, "CallerIDName")),
        };
        let context = field(ev, prefix, "Context").filter(|c| !c.is_empty());
        let exten = field(ev, prefix, "Exten").filter(|e| !e.is_empty());
        let tick = self.tick;
        let ch = self.channels.entry(uid.clone()).or_insert_with(|| {
            let name = field(ev, prefix, "Channel").unwrap_or("").to_owned();
            Channel {
                uniqueid: uid.clone(),
                linkedid: linkedid.clone(),
                interface: interface_of(&name).to_owned(),
                name,
                state: 0,
                caller: Party::default(),
                context: String::new(),
                exten: String::new(),
                bridge: None,
                dialed_by: None,
                media: None,
                seen: tick,
            }
        });
        ch.seen = tick;
        if let Some(s) = state {
            ch.state = s;
        }
        if caller.number.is_some() || caller.name.is_some() {
            ch.caller = caller;
        }
        if let Some(c) = context {
            if ch.context != c {
                ch.context = c.to_owned();
            }
        }
        if let Some(e) = exten {
            if ch.exten != e {
                ch.exten = e.to_owned();
            }
        }
        let moved_from = (ch.linkedid != linkedid)
            .then(|| std::mem::replace(&mut ch.linkedid, linkedid.clone()));
        if let Some(old) = moved_from {
            self.detach(&uid, &old, now, dir);
        }
        if !self.calls.contains_key(&linkedid) {
            self.calls
                .insert(linkedid.clone(), Tracked::new(&self.pbx, &linkedid, now));
            self.out.push((linkedid.clone(), EventKind::Offered));
        }
        if let Some(call) = self.calls.get_mut(&linkedid) {
            call.channels.insert(uid.clone());
        }
        if !self.pending.is_empty() {
            self.adopt_pending(&uid, &linkedid);
        }
        self.recompute(&linkedid, dir);
        Some(uid)
    }

    /// Takes channel `uid` out of call `old` (its Linkedid changed); a call left with no
    /// channel has been merged into the other one and ends.
    fn detach(&mut self, uid: &str, old: &str, now: f64, dir: &Directory) {
        let empty = match self.calls.get_mut(old) {
            Some(call) => {
                call.channels.remove(uid);
                call.channels.is_empty()
            }
            None => return,
        };
        if empty {
            if let Some(mut call) = self.calls.remove(old) {
                call.state = CallState::Ended;
                call.ended = Some(now);
                self.out.push((call.key.clone(), EventKind::Hungup));
                self.ended.push((call.key, call.call));
            }
        } else {
            self.recompute(old, dir);
        }
    }

    /// The call's originating channel: the one whose Uniqueid is the Linkedid, else (if
    /// that one was never seen) the oldest one still there. None once it has hung up.
    fn originator<'a>(&'a self, call: &Tracked) -> Option<&'a Channel> {
        match self.channels.get(&call.key) {
            Some(ch) => Some(ch),
            None if self.dead.contains(&call.key) => None,
            None => call
                .channels
                .iter()
                .min_by_key(|u| uid_order(u))
                .and_then(|u| self.channels.get(u)),
        }
    }

    /// Recomputes what derives from the call's channels and notes the call as changed if
    /// any of it did. Lines accumulate (a call belongs to every line it touched) unless
    /// `afresh`; caller, direction and DNIS stay as they were once the originator is gone.
    fn recompute_with(&mut self, call_id: &str, dir: &Directory, afresh: bool) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let (mut lines, mut line_contexts) = if afresh {
            (BTreeSet::new(), BTreeSet::new())
        } else {
            (call.lines.clone(), call.line_contexts.clone())
        };
        for ch in call.channels.iter().filter_map(|u| self.channels.get(u)) {
            if let Some(line) = dir
                .user_by_interface(&self.pbx, &ch.interface)
                .and_then(|u| u.line.as_ref())
            {
                lines.insert(line.interface.clone());
                line_contexts.insert(line.context.clone());
            }
        }
        let orig = self.originator(call);
        let orig_user = orig.and_then(|o| dir.user_by_interface(&self.pbx, &o.interface));
        let orig_line = orig_user.and_then(|u| u.line.as_ref());
        let fallback = match orig {
            Some(o) => std::iter::once(o)
                .chain(call.channels.iter().filter_map(|u| self.channels.get(u)))
                .find_map(|c| dir.context_of_dialplan(&self.pbx, &c.context))
                .map(str::to_owned),
            None => call.fallback_context.clone(),
        };
        let caller = match (orig, orig_line) {
            (Some(o), Some(line)) if o.caller.number.is_none() => Party {
                number: Some(line.number.clone()),
                name: orig_user.map(|u| u.fullname()).filter(|n| !n.is_empty()),
            },
            (Some(o), _) => o.caller.clone(),
            (None, _) => call.caller.clone(),
        };
        let direction = match (orig, orig_line) {
            (None, _) => call.direction,
            (Some(_), None) => Direction::Inbound,
            (Some(_), Some(own)) if lines.iter().any(|l| *l != own.interface) => {
                Direction::Internal
            }
            (Some(_), Some(_)) => Direction::Outbound,
        };
        let dnis = orig
            .filter(|_| orig_line.is_none())
            .map(|o| o.exten.clone())
            .filter(|e| !matches!(e.as_str(), "" | "s"));
        // A phone's own channel starts at the number it dialed: the callee, until a dial says.
        let dialed = match (orig, orig_line) {
            (Some(o), Some(line))
                if !matches!(o.exten.as_str(), "" | "s") && o.exten != line.number =>
            {
                let callee = dir.user_by_number(&line.context, &o.exten);
                Some(Party {
                    number: Some(o.exten.clone()),
                    name: callee.map(|u| u.fullname()).filter(|n| !n.is_empty()),
                })
            }
            _ => None,
        };
        let call = self.calls.get_mut(call_id).expect("looked up above");
        if let Some(callee) = dialed.filter(|_| call.callee == Party::default()) {
            call.dnis = call.dnis.take().or_else(|| callee.number.clone());
            call.callee = callee;
            self.changed.insert(call_id.to_owned());
        }
        let mut changed = call.lines != lines
            || call.line_contexts != line_contexts
            || call.fallback_context != fallback
            || call.caller != caller
            || call.direction != direction;
        call.lines = lines;
        call.line_contexts = line_contexts;
        call.fallback_context = fallback;
        call.caller = caller;
        call.direction = direction;
        if call.ani.is_none() && call.caller.number.is_some() {
            call.ani = call.caller.number.clone();
            changed = true;
        }
        if call.dnis.is_none() && dnis.is_some() {
            call.dnis = dnis;
            changed = true;
        }
        if changed {
            self.changed.insert(call_id.to_owned());
        }
    }

    pub(super) fn recompute(&mut self, call_id: &str, dir: &Directory) {
        self.recompute_with(call_id, dir, false);
    }

    /// Turns what the current event did into call events, at time `at`: milestones first,
    /// then an `updated` for each call that changed otherwise, then `hungup` for ended calls.
    pub(super) fn finish(&mut self, at: f64) -> Vec<CallEvent> {
        let mut left: HashMap<String, Vec<String>> = HashMap::new();
        let ids: BTreeSet<String> = self
            .changed
            .iter()
            .cloned()
            .chain(self.out.iter().map(|(id, _)| id.clone()))
            .collect();
        for id in &ids {
            let Some(call) = self.calls.get_mut(id) else {
                continue;
            };
            let contexts: Vec<String> =
                if call.line_contexts.is_empty() && call.queue_contexts.is_empty() {
                    call.fallback_context.iter().cloned().collect()
                } else {
                    call.line_contexts
                        .union(&call.queue_contexts)
                        .cloned()
                        .collect()
                };
            if contexts != call.contexts {
                let gone: Vec<String> = call
                    .contexts
                    .iter()
                    .filter(|c| !contexts.contains(c))
                    .cloned()
                    .collect();
                if !gone.is_empty() {
                    left.insert(id.clone(), gone);
                }
                call.contexts = contexts;
                self.changed.insert(id.clone());
            }
        }
        let mut events = Vec::new();
        let mut reported = HashSet::new();
        // A call's `hungup` comes where it ended: a call ended and made again by one event
        // is offered after the end of its first life.
        for (id, kind) in std::mem::take(&mut self.out) {
            if kind == EventKind::Hungup {
                if let Some(i) = self.ended.iter().position(|(k, _)| *k == id) {
                    let (_, call) = self.ended.remove(i);
                    reported.insert(id);
                    events.push(CallEvent {
                        kind,
                        call,
                        left: Vec::new(),
                        at,
                    });
                }
                continue;
            }
            let Some(call) = self
                .calls
                .get(&id)
                .map(|t| &t.call)
                .or_else(|| self.ended.iter().find(|(k, _)| *k == id).map(|(_, c)| c))
            else {
                continue;
            };
            reported.insert(id.clone());
            events.push(CallEvent {
                kind,
                call: call.clone(),
                left: left.remove(&id).unwrap_or_default(),
                at,
            });
        }
        for id in std::mem::take(&mut self.changed) {
            if reported.contains(&id) {
                continue;
            }
            if let Some(call) = self.calls.get(&id) {
                events.push(CallEvent {
                    kind: EventKind::Updated,
                    call: call.call.clone(),
                    left: left.remove(&id).unwrap_or_default(),
                    at,
                });
            }
        }
        for (_, call) in std::mem::take(&mut self.ended) {
            events.push(CallEvent {
                kind: EventKind::Hungup,
                call,
                left: Vec::new(),
                at,
            });
        }
        events
    }
}
