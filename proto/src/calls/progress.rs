//! What happens to a call: dials, answers, bridges, holds, transfers, queues, agents, and
//! hangups, each turned into the call's milestones.

use std::collections::BTreeSet;

use super::model::{known, CallModel, TOMBSTONES};
use super::types::{attach, Agent, CallState, EventKind, HangupCause, Party};
use crate::ami::AmiMessage;
use crate::directory::Directory;

impl CallModel {
    pub(super) fn on_dial_begin(&mut self, ev: &AmiMessage, now: f64, dir: &Directory) {
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
        let dest_user = dir.user_by_interface(&self.pbx, &dest_ch.interface);
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

    pub(super) fn milestone(&mut self, call_id: &str, kind: EventKind, state: Option<CallState>) {
        if let Some(call) = self.calls.get_mut(call_id) {
            if let Some(s) = state {
                call.state = s;
            }
            self.out.push((call_id.to_owned(), kind));
        }
    }

    pub(super) fn ring(&mut self, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.rang || call.answered.is_some() {
            return;
        }
        call.rang = true;
        self.milestone(call_id, EventKind::Ringing, Some(CallState::Ringing));
    }

    pub(super) fn answer(&mut self, call_id: &str, now: f64) {
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

    pub(super) fn hold(&mut self, call_id: &str, on: bool) {
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

    pub(super) fn on_transfer(
        &mut self,
        ev: &AmiMessage,
        prefixes: &[&str],
        now: f64,
        dir: &Directory,
    ) {
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

    pub(super) fn on_queue_join(&mut self, ev: &AmiMessage, now: f64, dir: &Directory) {
        let Some(call_id) = self.touch(ev, "", now, dir).and_then(|u| self.call_of(&u)) else {
            return;
        };
        self.queue_call(&call_id, known(ev.get("Queue")), dir);
    }

    pub(super) fn queue_call(&mut self, call_id: &str, queue: Option<String>, dir: &Directory) {
        if let Some(call) = self.calls.get_mut(call_id) {
            if let Some(q) = queue.as_deref().and_then(|q| dir.queue(&self.pbx, q)) {
                call.queue_contexts.insert(q.context.clone());
            }
            call.queue = queue;
        }
        self.milestone(call_id, EventKind::Queued, Some(CallState::Queued));
    }

    pub(super) fn on_agent_connect(&mut self, ev: &AmiMessage, now: f64, dir: &Directory) {
        let Some(call_id) = self.touch(ev, "", now, dir).and_then(|u| self.call_of(&u)) else {
            return;
        };
        self.touch(ev, "Dest", now, dir);
        let interface = known(ev.get("Interface"));
        let login = interface
            .as_deref()
            .and_then(|i| dir.user_by_interface(&self.pbx, i))
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
            if uid == call.key || call.hangup_cause.is_none() {
                call.hangup_cause = Some(c);
            }
        }
        if call.channels.is_empty() {
            let mut call = self.calls.remove(&ch.linkedid).expect("looked up above");
            call.state = CallState::Ended;
            call.ended = Some(now);
            self.changed.remove(&call.key);
            self.out.push((call.key.clone(), EventKind::Hungup));
            self.ended.push((call.key, call.call));
        } else {
            self.recompute(&ch.linkedid, dir);
        }
    }
}
