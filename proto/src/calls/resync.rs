//! Resyncs: the lists Asterisk gives on demand, applied where they were taken.
//!
//! A list (CoreShowChannels, QueueStatus) describes Asterisk at the moment it was taken,
//! while events keep flowing. It arrives on the same socket as the events, so it is
//! applied in stream order: [`CallModel::mark`] notes where it was taken (its first
//! response), and the items are applied once the list is complete. A resync then changes
//! only what the list proves wrong at that mark: a channel the model knew then but the
//! list lacks has gone; a channel the list holds but the model never saw is adopted; a
//! channel named by an event since the mark is left to those newer events. A call whose
//! events were all seen gets no event from a resync.

use std::collections::HashSet;

use super::model::CallModel;
use super::types::CallEvent;
use crate::ami::AmiMessage;
use crate::directory::Directory;

/// Where a list was taken in the event stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark(u64);

/// Values Asterisk uses for "none" in list items.
fn known(v: Option<&str>) -> Option<&str> {
    v.filter(|v| !matches!(*v, "" | "<unknown>" | "<Unknown>" | "unknown"))
}

impl CallModel {
    /// The current position in the event stream, for a list about to be taken.
    pub fn mark(&self) -> Mark {
        Mark(self.tick)
    }

    /// Whether channel `uid` was named by an event after `taken`.
    fn newer(&self, uid: &str, taken: Mark) -> bool {
        self.channel(uid).is_some_and(|c| c.seen > taken.0)
    }

    /// Applies a CoreShowChannels list (its `CoreShowChannel` items) taken at `taken`.
    pub fn resync_channels(
        &mut self,
        taken: Mark,
        live: &[AmiMessage],
        now: f64,
        dir: &Directory,
    ) -> Vec<CallEvent> {
        let listed: HashSet<&str> = live
            .iter()
            .filter_map(|m| known(m.get("Uniqueid")))
            .collect();
        let gone: Vec<String> = self
            .channel_uids()
            .filter(|u| !listed.contains(u.as_str()) && !self.newer(u, taken))
            .collect();
        for uid in gone {
            self.hang_up(&uid, None, now, dir);
        }
        let mut left = Vec::new();
        let mut entered = Vec::new();
        for item in live {
            let Some(uid) = known(item.get("Uniqueid")) else {
                continue;
            };
            if self.newer(uid, taken) {
                continue;
            }
            let bridge = known(item.get("BridgeId")).map(str::to_owned);
            let state = item.get("ChannelState").and_then(|s| s.parse::<u8>().ok());
            let Some(ch) = self.channel(uid) else {
                // Never seen (or hung up: `touch` ignores those): adopted as listed.
                if let Some(uid) = self.touch(item, "", now, dir) {
                    entered.extend(bridge.map(|b| (uid, b)));
                }
                continue;
            };
            let moved = known(item.get("Linkedid")).is_some_and(|l| l != ch.linkedid);
            let caller_changed = known(item.get("CallerIDNum"))
                .is_some_and(|n| ch.caller.number.as_deref() != Some(n));
            let state_changed = state.is_some_and(|s| s != ch.state);
            let bridge_changed = ch.bridge != bridge;
            let uid = uid.to_owned();
            if moved || caller_changed {
                self.touch(item, "", now, dir);
            }
            if let (true, Some(state)) = (state_changed, state) {
                self.set_state(&uid, state);
                self.on_state(&uid, now);
            }
            if bridge_changed {
                left.push(uid.clone());
                entered.extend(bridge.map(|b| (uid, b)));
            }
        }
        for uid in left {
            self.leave_bridge(&uid);
        }
        for (uid, bridge) in entered {
            self.enter_bridge(&uid, &bridge, now);
        }
        self.finish(now)
    }

    /// Applies a QueueStatus list taken at `taken`: a caller listed in a queue the model
    /// does not know them in (its QueueCallerJoin was missed) is queued there. QueueEntry
    /// items carry no Linkedid: they are matched by channel.
    pub fn resync_queues(
        &mut self,
        taken: Mark,
        status: &[AmiMessage],
        now: f64,
        dir: &Directory,
    ) -> Vec<CallEvent> {
        for entry in status.iter().filter(|e| e.event() == Some("QueueEntry")) {
            let Some(uid) = known(entry.get("Uniqueid")) else {
                continue;
            };
            if self.newer(uid, taken) {
                continue;
            }
            let Some(call_id) = self.call_of(uid) else {
                continue;
            };
            let queue = known(entry.get("Queue")).map(str::to_owned);
            let known_there = self
                .calls
                .get(&call_id)
                .is_none_or(|c| c.agent.is_some() || c.queue == queue);
            if !known_there {
                self.queue_call(&call_id, queue, dir);
            }
        }
        self.finish(now)
    }
}
