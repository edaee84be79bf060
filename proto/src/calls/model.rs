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

use super::types::{
    add_step, attach, Agent, Call, CallData, CallEvent, CallState, Direction, Disposition,
    EventKind, HangupCause, Party,
};
use crate::ami::AmiMessage;
use crate::directory::{interface_of, Directory};

/// Hung-up channels remembered, so that late events about them are ignored.
const TOMBSTONES: usize = 16384;

/// Data for channels not seen yet, at most, and for how long (seconds).
const PENDING: usize = 4096;
const PENDING_FOR: f64 = 60.0;

/// A live call and what the model derives it from.
pub(super) struct Tracked {
    pub(super) call: Call,
    /// Uniqueids of its live channels.
    pub(super) channels: BTreeSet<String>,
    line_contexts: BTreeSet<String>,
    queue_contexts: BTreeSet<String>,
    fallback_context: Option<String>,
    rang: bool,
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
    fn new(id: &str, now: f64) -> Tracked {
        Tracked {
            call: Call::new(id, now),
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
    /// The model's event count when an event last named the channel.
    pub(super) seen: u64,
}

/// Values Asterisk uses for "unknown"; they become `None`.
fn known(v: Option<&str>) -> Option<String> {
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
    channels: HashMap<String, Channel>,
    calls: HashMap<String, Tracked>,
    bridges: HashMap<String, BTreeSet<String>>,
    tombstones: VecDeque<String>,
    dead: HashSet<String>,
    /// Milestones of the event being applied, in order.
    out: Vec<(String, EventKind)>,
    /// Calls whose visible state changed during the event being applied.
    changed: BTreeSet<String>,
    /// Calls ended during the event being applied, as they were at the end.
    ended: Vec<Call>,
    /// Data for channels the model has not seen yet, by Uniqueid, with when it came.
    pending: HashMap<String, (CallData, f64)>,
    /// The Uniqueid of pending data, by the Linkedid of its call.
    pending_calls: HashMap<String, String>,
    /// AMI events applied so far: where a list was taken in the stream.
    pub(super) tick: u64,
}

impl CallModel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values().map(|t| &t.call)
    }

    pub fn call(&self, id: &str) -> Option<&Call> {
        self.calls.get(id).map(|t| &t.call)
    }

    /// The live channels of call `id`.
    pub fn channels_of(&self, id: &str) -> impl Iterator<Item = &Channel> {
        self.calls
            .get(id)
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

    /// Adds `data` to the call of channel `uniqueid` (or, failing that, to call
    /// `linkedid`); if neither is known yet, the data waits for them (a minute at most).
    pub fn attach(
        &mut self,
        uniqueid: &str,
        linkedid: Option<&str>,
        data: CallData,
        now: f64,
    ) -> Vec<CallEvent> {
        let call = self
            .channels
            .get(uniqueid)
            .map(|c| c.linkedid.clone())
            .or_else(|| {
                linkedid
                    .filter(|l| self.calls.contains_key(*l))
                    .map(str::to_owned)
            });
        match call {
            Some(id) => {
                self.merge(&id, data);
                self.finish()
            }
            None => {
                self.pending.retain(|_, (_, at)| now - *at < PENDING_FOR);
                let live: std::collections::HashSet<&String> = self.pending.keys().collect();
                self.pending_calls.retain(|_, u| live.contains(u));
                if self.pending.len() < PENDING {
                    let entry = self
                        .pending
                        .entry(uniqueid.to_owned())
                        .or_insert((CallData::default(), now));
                    let pending = &mut entry.0;
                    data.add_to(&mut pending.attached, &mut pending.ivr_steps);
                    if let Some(l) = linkedid {
                        self.pending_calls.insert(l.to_owned(), uniqueid.to_owned());
                    }
                }
                Vec::new()
            }
        }
    }

    fn merge(&mut self, call_id: &str, data: CallData) {
        if let Some(Tracked { call, .. }) = self.calls.get_mut(call_id) {
            if data.add_to(&mut call.attached, &mut call.ivr_path) {
                self.changed.insert(call_id.to_owned());
            }
        }
    }

    /// Adds data that was waiting for channel `uid` or for its call.
    fn adopt_pending(&mut self, uid: &str, linkedid: &str) {
        let key = if self.pending.contains_key(uid) {
            Some(uid.to_owned())
        } else {
            self.pending_calls.remove(linkedid)
        };
        if let Some((data, _)) = key.and_then(|k| self.pending.remove(&k)) {
            self.merge(linkedid, data);
        }
    }

    /// Sets a live call's disposition; None if there is no such live call.
    pub fn set_disposition(
        &mut self,
        call_id: &str,
        disposition: Disposition,
    ) -> Option<Vec<CallEvent>> {
        let call = self.calls.get_mut(call_id)?;
        call.disposition = Some(disposition);
        self.changed.insert(call_id.to_owned());
        Some(self.finish())
    }

    /// Applies one AMI event; returns the call events it causes, in order.
    pub fn apply(&mut self, ev: &AmiMessage, now: f64, dir: &Directory) -> Vec<CallEvent> {
        self.tick += 1;
        let Some(name) = ev.event() else {
            return Vec::new();
        };
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
        self.finish()
    }

    /// Recomputes line membership and contexts after a directory change.
    pub fn refresh(&mut self, dir: &Directory) -> Vec<CallEvent> {
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            self.recompute_with(&id, dir, true);
        }
        self.finish()
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
                .insert(linkedid.clone(), Tracked::new(&linkedid, now));
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
                self.ended.push(call.call);
            }
        } else {
            self.recompute(old, dir);
        }
    }

    /// The call's originating channel: the one whose Uniqueid is the Linkedid, else (if
    /// that one was never seen) the oldest one still there. None once it has hung up.
    fn originator<'a>(&'a self, call: &Tracked) -> Option<&'a Channel> {
        match self.channels.get(&call.id) {
            Some(ch) => Some(ch),
            None if self.dead.contains(&call.id) => None,
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
                .user_by_interface(&ch.interface)
                .and_then(|u| u.line.as_ref())
            {
                lines.insert(line.interface.clone());
                line_contexts.insert(line.context.clone());
            }
        }
        let orig = self.originator(call);
        let orig_user = orig.and_then(|o| dir.user_by_interface(&o.interface));
        let orig_line = orig_user.and_then(|u| u.line.as_ref());
        let fallback = match orig {
            Some(o) => std::iter::once(o)
                .chain(call.channels.iter().filter_map(|u| self.channels.get(u)))
                .find_map(|c| dir.context_of_dialplan(&c.context))
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

    fn on_dial_begin(&mut self, ev: &AmiMessage, now: f64, dir: &Directory) {
        let caller = self.touch(ev, "", now, dir);
        let Some(dest) = self.touch(ev, "Dest", now, dir) else {
            return;
        };
        // Without a calling channel this is an Originate's callback leg.
        let Some(caller) = caller else {
            return;
        };
        let Some(call_id) = self.call_of(&caller) else {
            return;
        };
        let dialed = ev
            .get("Exten")
            .filter(|e| !matches!(*e, "" | "s"))
            .map(str::to_owned);
        let Some(dest_ch) = self.channels.get_mut(&dest) else {
            return;
        };
        dest_ch.dialed_by = Some(caller);
        let dest_user = dir.user_by_interface(&dest_ch.interface);
        let callee = Party {
            number: dest_user
                .and_then(|u| u.line.as_ref())
                .map(|l| l.number.clone())
                .or(dialed)
                .or_else(|| known(ev.get("DestCallerIDNum"))),
            name: dest_user.map(|u| u.fullname()).filter(|n| !n.is_empty()),
        };
        if let Some(call) = self.calls.get_mut(&call_id) {
            if call.dnis.is_none() && callee.number.is_some() {
                call.dnis = callee.number.clone();
                self.changed.insert(call_id.clone());
            }
            if call.callee != callee {
                call.callee = callee;
                self.changed.insert(call_id.clone());
            }
        }
        self.ring(&call_id);
    }

    pub(super) fn on_state(&mut self, uid: &str, now: f64) {
        let Some(ch) = self.channels.get(uid) else {
            return;
        };
        let (state, dialed, call) = (ch.state, ch.dialed_by.is_some(), ch.linkedid.clone());
        match state {
            5 if dialed => self.ring(&call),
            6 if dialed => self.answer(&call, now),
            _ => {}
        }
    }

    fn milestone(&mut self, call_id: &str, kind: EventKind, state: Option<CallState>) {
        if let Some(call) = self.calls.get_mut(call_id) {
            if let Some(s) = state {
                call.state = s;
            }
            self.out.push((call_id.to_owned(), kind));
        }
    }

    fn ring(&mut self, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.rang || call.answered.is_some() {
            return;
        }
        call.rang = true;
        self.milestone(call_id, EventKind::Ringing, Some(CallState::Ringing));
    }

    fn answer(&mut self, call_id: &str, now: f64) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.answered.is_some() {
            return;
        }
        call.answered = Some(now);
        self.milestone(call_id, EventKind::Answered, Some(CallState::Answered));
    }

    pub(super) fn enter_bridge(&mut self, uid: &str, bridge: &str, now: f64) {
        self.leave_bridge(uid);
        if let Some(ch) = self.channels.get_mut(uid) {
            ch.bridge = Some(bridge.to_owned());
        }
        let members = self.bridges.entry(bridge.to_owned()).or_default();
        members.insert(uid.to_owned());
        if members.len() < 2 {
            return;
        }
        let calls: BTreeSet<String> = members
            .iter()
            .filter_map(|u| self.channels.get(u).map(|c| c.linkedid.clone()))
            .collect();
        for call_id in calls {
            let Some(call) = self.calls.get(&call_id) else {
                continue;
            };
            if matches!(call.state, CallState::Bridged | CallState::Held) {
                continue;
            }
            self.answer(&call_id, now);
            self.milestone(&call_id, EventKind::Bridged, Some(CallState::Bridged));
        }
    }

    pub(super) fn leave_bridge(&mut self, uid: &str) {
        let Some(bridge) = self.channels.get_mut(uid).and_then(|c| c.bridge.take()) else {
            return;
        };
        if let Some(members) = self.bridges.get_mut(&bridge) {
            members.remove(uid);
            if members.is_empty() {
                self.bridges.remove(&bridge);
            }
        }
    }

    fn hold(&mut self, call_id: &str, on: bool) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if on {
            self.milestone(call_id, EventKind::Held, Some(CallState::Held));
        } else if call.state == CallState::Held {
            let bridged = call
                .channels
                .iter()
                .any(|u| self.channels.get(u).is_some_and(|c| c.bridge.is_some()));
            let state = if bridged {
                CallState::Bridged
            } else {
                CallState::Answered
            };
            self.milestone(call_id, EventKind::Resumed, Some(state));
        }
    }

    fn on_transfer(&mut self, ev: &AmiMessage, prefixes: &[&str], now: f64, dir: &Directory) {
        let mut calls = BTreeSet::new();
        for prefix in prefixes {
            if let Some(call) = self
                .touch(ev, prefix, now, dir)
                .and_then(|u| self.call_of(&u))
            {
                calls.insert(call);
            }
        }
        if ev.get("Result") != Some("Success") {
            return;
        }
        let target = known(ev.get("Extension"));
        for call_id in calls {
            let Some(call) = self.calls.get_mut(&call_id) else {
                continue;
            };
            if let Some(t) = &target {
                attach(&mut call.attached, "transfer_target".into(), t.clone());
            }
            // The transferee is connected again, to the target or to whoever now dials it.
            let bridged = call
                .channels
                .iter()
                .filter_map(|u| self.channels.get(u)?.bridge.as_ref())
                .any(|b| self.bridges.get(b).is_some_and(|m| m.len() >= 2));
            let state = if bridged {
                CallState::Bridged
            } else {
                CallState::Answered
            };
            self.milestone(&call_id, EventKind::Transferred, Some(state));
        }
    }

    fn on_queue_join(&mut self, ev: &AmiMessage, now: f64, dir: &Directory) {
        let Some(call_id) = self.touch(ev, "", now, dir).and_then(|u| self.call_of(&u)) else {
            return;
        };
        self.queue_call(&call_id, known(ev.get("Queue")), dir);
    }

    pub(super) fn queue_call(&mut self, call_id: &str, queue: Option<String>, dir: &Directory) {
        if let Some(call) = self.calls.get_mut(call_id) {
            if let Some(q) = queue.as_deref().and_then(|q| dir.queue(q)) {
                call.queue_contexts.insert(q.context.clone());
            }
            call.queue = queue;
        }
        self.milestone(call_id, EventKind::Queued, Some(CallState::Queued));
    }

    fn on_agent_connect(&mut self, ev: &AmiMessage, now: f64, dir: &Directory) {
        let Some(call_id) = self.touch(ev, "", now, dir).and_then(|u| self.call_of(&u)) else {
            return;
        };
        self.touch(ev, "Dest", now, dir);
        let interface = known(ev.get("Interface"));
        let login = interface
            .as_deref()
            .and_then(|i| dir.user_by_interface(i))
            .map(|u| u.login.clone());
        let agent = Agent {
            name: known(ev.get("MemberName")),
            interface,
            login,
        };
        if let Some(call) = self.calls.get_mut(&call_id) {
            call.agent = Some(agent);
        }
        self.answer(&call_id, now);
        self.milestone(&call_id, EventKind::AgentConnected, None);
    }

    /// `UserEvent(CtiIvr,Step: menu-1)` appends to the IVR path; `UserEvent(CtiAttach,k: v)`
    /// attaches its own fields to the call.
    fn on_user_event(&mut self, ev: &AmiMessage, now: f64, dir: &Directory) {
        let kind = ev.get("UserEvent");
        if !matches!(kind, Some("CtiIvr" | "CtiAttach")) {
            return;
        }
        let Some(call_id) = self.touch(ev, "", now, dir).and_then(|u| self.call_of(&u)) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let mut changed = false;
        if kind == Some("CtiIvr") {
            if let Some(step) = known(ev.get("Step")) {
                changed = add_step(&mut call.ivr_path, step);
            }
        } else {
            for (k, v) in ev.fields().skip_while(|(k, _)| *k != "UserEvent").skip(1) {
                if !k.is_empty() && !STANDARD_KEYS.contains(&k) {
                    changed |= attach(&mut call.attached, k.to_owned(), v.to_owned());
                }
            }
        }
        if changed {
            self.changed.insert(call_id);
        }
    }

    pub(super) fn hang_up(
        &mut self,
        uid: &str,
        cause: Option<HangupCause>,
        now: f64,
        dir: &Directory,
    ) {
        if self.dead.insert(uid.to_owned()) {
            self.tombstones.push_back(uid.to_owned());
            if self.tombstones.len() > TOMBSTONES {
                if let Some(old) = self.tombstones.pop_front() {
                    self.dead.remove(&old);
                }
            }
        }
        self.leave_bridge(uid);
        let Some(ch) = self.channels.remove(uid) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&ch.linkedid) else {
            return;
        };
        call.channels.remove(uid);
        if let Some(c) = cause {
            if uid == call.id || call.hangup_cause.is_none() {
                call.hangup_cause = Some(c);
            }
        }
        if call.channels.is_empty() {
            let mut call = self.calls.remove(&ch.linkedid).expect("looked up above");
            call.state = CallState::Ended;
            call.ended = Some(now);
            self.changed.remove(&call.id);
            self.ended.push(call.call);
        } else {
            self.recompute(&ch.linkedid, dir);
        }
    }

    /// Turns what the current event did into call events: milestones first, then an
    /// `updated` for each call that changed otherwise, then `hungup` for ended calls.
    pub(super) fn finish(&mut self) -> Vec<CallEvent> {
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
        for (id, kind) in std::mem::take(&mut self.out) {
            let Some(call) = self
                .calls
                .get(&id)
                .map(|t| &t.call)
                .or_else(|| self.ended.iter().find(|c| c.id == id))
            else {
                continue;
            };
            reported.insert(id.clone());
            events.push(CallEvent {
                kind,
                call: call.clone(),
                left: left.remove(&id).unwrap_or_default(),
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
                });
            }
        }
        for call in std::mem::take(&mut self.ended) {
            events.push(CallEvent {
                kind: EventKind::Hungup,
                call,
                left: Vec::new(),
            });
        }
        events
    }
}

/// Fields every channel event carries; a CtiAttach UserEvent's other fields are its data.
const STANDARD_KEYS: [&str; 16] = [
    "Privilege",
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
    "ActionID",
];
