//! Dialplan data on calls: what FastAGI scripts and `UserEvent`s attach (data, IVR steps),
//! kept for a while when it comes before its channel, and dispositions.

use std::collections::HashSet;

use super::model::{known, CallModel, Tracked};
use super::types::{add_step, attach, Call, CallData, CallEvent, Disposition};
use crate::ami::AmiMessage;
use crate::directory::Directory;

/// Data for channels not seen yet, at most, and for how long (seconds).
const PENDING: usize = 4096;
const PENDING_FOR: f64 = 60.0;

impl CallModel {
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
                self.finish(now)
            }
            None => {
                self.pending.retain(|_, (_, at)| now - *at < PENDING_FOR);
                let live: HashSet<&String> = self.pending.keys().collect();
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

    pub(super) fn merge(&mut self, call_id: &str, data: CallData) {
        if let Some(Tracked { call, .. }) = self.calls.get_mut(call_id) {
            if data.add_to(&mut call.attached, &mut call.ivr_path) {
                self.changed.insert(call_id.to_owned());
            }
        }
    }

    /// Adds data that was waiting for channel `uid` or for its call.
    pub(super) fn adopt_pending(&mut self, uid: &str, linkedid: &str) {
        let key = if self.pending.contains_key(uid) {
            Some(uid.to_owned())
        } else {
            self.pending_calls.remove(linkedid)
        };
        if let Some((data, _)) = key.and_then(|k| self.pending.remove(&k)) {
            self.merge(linkedid, data);
        }
    }

    /// Sets live call `call_id`'s disposition; None if there is no such live call.
    pub fn set_disposition(
        &mut self,
        call_id: &str,
        disposition: Disposition,
    ) -> Option<Vec<CallEvent>> {
        let key = self.key(call_id)?.to_owned();
        let call = self.calls.get_mut(&key)?;
        let at = disposition.at;
        call.disposition = Some(disposition);
        self.changed.insert(key);
        Some(self.finish(at))
    }

    /// Live call `call_id` takes what an earlier view of it knew ([`Call::inherit`]);
    /// false if there is no such live call.
    pub fn inherit(&mut self, call_id: &str, earlier: &Call) -> bool {
        let Some(key) = self.key(call_id).map(str::to_owned) else {
            return false;
        };
        match self.calls.get_mut(&key) {
            Some(call) => {
                call.call.inherit(earlier);
                true
            }
            None => false,
        }
    }

    /// `UserEvent(CtiIvr,Step: menu-1)` appends to the IVR path; `UserEvent(CtiAttach,k: v)`
    /// attaches its own fields to the call.
    pub(super) fn on_user_event(&mut self, ev: &AmiMessage, now: f64, dir: &Directory) {
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
