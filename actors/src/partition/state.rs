//! A partition's state, kept apart from its actor so that a restart loses nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ctid_proto::calls::{Call, CallState, EventKind};
use ctid_proto::cti::{encode_call_event, replayed, timenow, ErrorCode, Reply};
use ctid_proto::directory::Directory;
use ctid_proto::lists::Live;
use ctid_proto::wallboard::{board, BoardSettings, LagWindow, QueueTally};
use ctid_proto::wire::{LiveCall, WireChange, WireEvent};
use serde::Serialize;

use super::{scope, Change, Member, PartitionStats, ReplayLimits, SessionId, Subscribe};
use crate::metrics::Metrics;

pub struct PartitionCore {
    key: String,
    calls: HashMap<String, Arc<Call>>,
    pub(super) members: HashMap<SessionId, Member>,
    /// Sessions by user id.
    by_user: HashMap<u64, Vec<SessionId>>,
    pub(super) seq: u64,
    replay: VecDeque<(u64, Bytes)>,
    replay_bytes: usize,
    limits: ReplayLimits,
    pub stats: PartitionStats,
    /// Sessions may join (in cluster mode, once the feed caught up with the stream).
    pub(super) ready: bool,
    /// The last sequence known to exist upstream (cluster mode: in the context's stream).
    known: u64,
    /// The newest lease epoch seen per PBX (cluster mode): older ones are dropped.
    epochs: HashMap<String, u64>,
    metrics: Metrics,
    /// Queue figures of today, and the event lags of the last minute, for wallboards.
    tally: QueueTally,
    pub(super) lags: LagWindow,
    /// Members that asked for the wallboard, and the last board they were sent.
    boards: HashSet<SessionId>,
    last_board: Option<serde_json::Value>,
    /// When the AMI events being published were read, for the lag to the clients' sockets.
    pub(super) received: Option<Instant>,
}

// Ends with `stale`, as every call event does (see `ctid_proto::cti::replayed`).
#[derive(Serialize)]
struct LeftLine<'a> {
    class: &'static str,
    event: &'static str,
    call: LeftCall<'a>,
    seq: u64,
    event_time: String,
    timenow: f64,
    stale: bool,
}

#[derive(Serialize)]
struct LeftCall<'a> {
    id: &'a str,
}

fn slow_notice() -> Bytes {
    Reply::new("disconnect")
        .with("error_string", ErrorCode::SlowConsumer.to_string())
        .encode(timenow())
}

impl PartitionCore {
    pub fn new(key: &str, limits: ReplayLimits) -> Arc<Mutex<PartitionCore>> {
        Self::with_readiness(
            key,
            limits,
            true,
            Metrics::default(),
            BoardSettings::default(),
        )
    }

    pub(super) fn with_readiness(
        key: &str,
        limits: ReplayLimits,
        ready: bool,
        metrics: Metrics,
        board: BoardSettings,
    ) -> Arc<Mutex<PartitionCore>> {
        Arc::new(Mutex::new(PartitionCore {
            key: key.to_owned(),
            calls: HashMap::new(),
            members: HashMap::new(),
            by_user: HashMap::new(),
            seq: 0,
            replay: VecDeque::new(),
            replay_bytes: 0,
            limits,
            stats: PartitionStats::default(),
            ready,
            known: 0,
            epochs: HashMap::new(),
            metrics,
            tally: QueueTally::new(board, timenow()),
            lags: LagWindow::default(),
            boards: HashSet::new(),
            last_board: None,
            received: None,
        }))
    }

    /// Numbers and encodes a change; with whether it went out stale.
    fn encode(&mut self, change: Change, now: f64) -> Option<(u64, Bytes, bool)> {
        match &change {
            Change::Call(kind, call, _) => self.tally.observe(*kind, call, now),
            Change::Left(id, _) => self.tally.forget(id, now),
        }
        let stale = |at: f64| now - at > self.limits.stale_after.as_secs_f64();
        let (line, stale) = match change {
            // Already ended here (by a reconcile): a call ends once.
            Change::Call(EventKind::Hungup, call, _) if !self.calls.contains_key(&call.id) => {
                return None;
            }
            Change::Call(kind, call, at) => {
                let stale = stale(at);
                self.seq += 1;
                let shown = scope(&self.key).show(&call);
                let line = encode_call_event(kind, shown, self.seq, now, at, stale);
                if kind == EventKind::Hungup {
                    self.calls.remove(&call.id);
                } else {
                    self.calls.insert(call.id.clone(), call);
                }
                (line, stale)
            }
            Change::Left(id, at) => {
                let stale = stale(at);
                self.calls.remove(&id)?;
                self.seq += 1;
                let line = serde_json::to_vec(&LeftLine {
                    class: "call_event",
                    event: "left",
                    call: LeftCall { id: &id },
                    seq: self.seq,
                    event_time: ctid_proto::rfc3339::format_millis(at),
                    timenow: now,
                    stale,
                })
                .unwrap_or_default();
                let mut line = line;
                line.push(b'\n');
                (Bytes::from(line), stale)
            }
        };
        Some((self.seq, line, stale))
    }

    fn remember(&mut self, seq: u64, line: &Bytes) {
        self.replay.push_back((seq, line.clone()));
        self.replay_bytes += line.len();
        while self.replay.len() > self.limits.events || self.replay_bytes > self.limits.bytes {
            match self.replay.pop_front() {
                Some((_, old)) => self.replay_bytes -= old.len(),
                None => break,
            }
        }
    }

    /// Numbers, encodes and keeps the changes, and pushes them to every member. Returns the
    /// members dropped as slow consumers.
    pub fn publish(&mut self, changes: Vec<Change>) -> Vec<Member> {
        let now = timenow();
        let lines: Vec<(u64, Bytes, bool)> = changes
            .into_iter()
            .filter_map(|c| self.encode(c, now))
            .collect();
        let mut stale = 0;
        for (seq, line, late) in &lines {
            self.remember(*seq, line);
            stale += u64::from(*late);
        }
        self.stats.events += lines.len() as u64;
        // Counted when sent: an edge catching up with its stream sends to nobody.
        if stale > 0 && !self.members.is_empty() {
            self.metrics.stale(stale);
        }
        let lines: Vec<Bytes> = lines.into_iter().map(|(_, line, _)| line).collect();
        self.fan_out(&lines)
    }

    /// Cluster mode: publishes the event of stream sequence `seq` (an event whose lease
    /// epoch is older than one seen for its PBX is dropped; its `seq` stays unused).
    pub fn publish_at(&mut self, seq: u64, known: u64, event: Option<WireEvent>) -> Vec<Member> {
        self.known = self.known.max(known);
        if seq <= self.seq {
            return Vec::new();
        }
        let change = event.and_then(|event| {
            let newest = self.epochs.entry(event.pbx).or_insert(event.epoch);
            if event.epoch < *newest {
                return None;
            }
            *newest = event.epoch;
            let now = timenow();
            // Live events only: those read while catching up are as late as the stream.
            let lag = event
                .read
                .filter(|_| self.ready)
                .and_then(|read| Duration::try_from_secs_f64((now - read).max(0.0)).ok());
            if let Some(lag) = lag {
                self.lags.record(now, lag.as_secs_f64() * 1000.0);
                self.metrics.event_lag(lag);
                self.received = Instant::now().checked_sub(lag);
            }
            // Sent by a node too old to say: as old as it is now.
            let at = event.at.unwrap_or(now);
            Some(match event.change {
                WireChange::Call { kind, call } => {
                    Change::Call(kind, Arc::new(call.into_call()), at)
                }
                WireChange::Left { id } => Change::Left(id, at),
            })
        });
        let slow = match change {
            Some(change) => {
                self.seq = seq - 1;
                self.publish(vec![change])
            }
            None => Vec::new(),
        };
        self.seq = seq;
        slow
    }

    /// Cluster mode: live calls older than the events read, taken as they are.
    pub fn seed(&mut self, calls: Vec<LiveCall>) {
        for live in calls {
            let newest = self.epochs.entry(live.call.call.pbx.clone()).or_insert(0);
            *newest = (*newest).max(live.epoch);
            let call = live.call.into_call();
            self.calls
                .entry(call.id.clone())
                .or_insert_with(|| Arc::new(call));
        }
    }

    pub fn set_ready(&mut self) {
        self.ready = true;
    }

    /// Queues `lines` for every member, one wake-up each; returns the members dropped as
    /// slow consumers.
    pub(super) fn fan_out(&mut self, lines: &[Bytes]) -> Vec<Member> {
        let received = self.received.take();
        // Nothing to send: a read time would stick to the next, unrelated write's lag.
        if lines.is_empty() {
            return Vec::new();
        }
        let mut slow = Vec::new();
        for (id, member) in &self.members {
            let delivered = lines
                .iter()
                .all(|line| member.outbox.push(line.clone(), slow_notice, false).is_ok());
            if delivered {
                member.outbox.wake_since(received);
            } else {
                slow.push(*id);
            }
        }
        self.stats.deliveries += (lines.len() * (self.members.len() - slow.len())) as u64;
        self.stats.slow_consumers += slow.len() as u64;
        slow.into_iter().filter_map(|id| self.leave(id)).collect()
    }

    /// Queues `line` for the members of `ids` only; returns those dropped as slow
    /// consumers.
    fn push_to(&mut self, ids: &[SessionId], line: &Bytes) -> Vec<Member> {
        let slow: Vec<SessionId> = ids
            .iter()
            .filter(|id| {
                self.members.get(id).is_some_and(|member| {
                    let queued = member.outbox.push(line.clone(), slow_notice, false).is_ok();
                    if queued {
                        member.outbox.wake_since(None);
                    }
                    !queued
                })
            })
            .copied()
            .collect();
        self.stats.slow_consumers += slow.len() as u64;
        slow.into_iter().filter_map(|id| self.leave(id)).collect()
    }

    /// The wallboard of this partition now, as its members see it.
    pub(super) fn board(&self, dir: &Directory, now: f64) -> serde_json::Value {
        let live = self.live();
        let board = board(&self.key, dir, &self.tally, &live, &self.lags, now);
        serde_json::to_value(board).unwrap_or_default()
    }

    fn board_line(board: &serde_json::Value, now: f64) -> Bytes {
        let mut reply = Reply::new("queue_stats");
        if let serde_json::Value::Object(fields) = board {
            for (k, v) in fields {
                reply = reply.with(k, v.clone());
            }
        }
        reply.encode(now)
    }

    /// Member `id` gets the wallboard now, and each change of it from now on. Returns the
    /// members dropped as slow consumers.
    pub fn watch_board(&mut self, id: SessionId, dir: &Directory) -> Vec<Member> {
        if !self.members.contains_key(&id) {
            return Vec::new();
        }
        let now = timenow();
        let board = self.board(dir, now);
        let line = Self::board_line(&board, now);
        // The first watcher's board is what the others (none yet) were last sent.
        if self.boards.is_empty() {
            self.last_board = Some(board);
        }
        self.boards.insert(id);
        self.push_to(&[id], &line)
    }

    /// Notes the time passing (a new minute, a new day) and sends the wallboard to its
    /// watchers if it changed.
    pub(super) fn tick_board(&mut self, dir: &Directory) -> Vec<Member> {
        let now = timenow();
        self.tally.tick(now);
        if self.boards.is_empty() {
            self.last_board = None;
            return Vec::new();
        }
        let board = self.board(dir, now);
        if self.last_board.as_ref() == Some(&board) {
            return Vec::new();
        }
        let line = Self::board_line(&board, now);
        self.last_board = Some(board);
        let ids: Vec<SessionId> = self.boards.iter().copied().collect();
        self.push_to(&ids, &line)
    }

    pub(super) fn join(&mut self, id: SessionId, member: Member) {
        self.by_user.entry(member.user_id).or_default().push(id);
        self.members.insert(id, member);
    }

    pub(super) fn leave(&mut self, id: SessionId) -> Option<Member> {
        self.boards.remove(&id);
        let member = self.members.remove(&id)?;
        if let Some(sessions) = self.by_user.get_mut(&member.user_id) {
            sessions.retain(|s| *s != id);
            if sessions.is_empty() {
                self.by_user.remove(&member.user_id);
            }
        }
        Some(member)
    }

    /// What lists show: the live calls, and the presence of each connected user.
    pub fn live(&self) -> Live {
        let presence = self
            .by_user
            .iter()
            .filter_map(|(user, sessions)| {
                let member = self.members.get(sessions.first()?)?;
                Some((*user, member.availstate.clone()))
            })
            .collect();
        Live {
            calls: self.calls.values().cloned().collect(),
            presence,
            pbxes: Default::default(),
        }
    }

    pub(super) fn subscribe(&mut self, sub: Subscribe) -> Result<u64, ErrorCode> {
        if !self.ready {
            return Err(ErrorCode::Busy);
        }
        let replay: Vec<Bytes> = match sub.resume_after {
            None => Vec::new(),
            // Another edge was further along the same stream: this one soon will be.
            Some(after) if after > self.seq && after <= self.known => return Err(ErrorCode::Busy),
            Some(after) if after > self.seq => return Err(ErrorCode::ResyncRequired),
            Some(after) => {
                let oldest = self.replay.front().map_or(self.seq + 1, |(s, _)| *s);
                if after + 1 < oldest {
                    return Err(ErrorCode::ResyncRequired);
                }
                self.replay
                    .iter()
                    .filter(|(s, _)| *s > after)
                    .map(|(_, l)| replayed(l))
                    .collect()
            }
        };
        let outbox = &sub.member.outbox;
        let mut ok = outbox.push((sub.ack)(self.seq), slow_notice, false).is_ok();
        for line in replay {
            ok = ok && outbox.push(line, slow_notice, false).is_ok();
        }
        outbox.wake_since(None);
        if !ok {
            return Err(ErrorCode::SlowConsumer);
        }
        self.join(sub.session, sub.member);
        Ok(self.seq)
    }

    /// Ends the calls the router no longer knows.
    pub(super) fn reconcile(&mut self, live: &HashSet<String>) -> Vec<Member> {
        let stale: Vec<Arc<Call>> = self
            .calls
            .values()
            .filter(|c| !live.contains(&c.id))
            .cloned()
            .collect();
        let now = timenow();
        let changes = stale
            .into_iter()
            .map(|c| {
                let mut ended = (*c).clone();
                ended.state = CallState::Ended;
                ended.ended = Some(now);
                Change::Call(EventKind::Hungup, Arc::new(ended), now)
            })
            .collect::<Vec<_>>();
        if changes.is_empty() {
            return Vec::new();
        }
        self.publish(changes)
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn calls(&self) -> impl Iterator<Item = &Arc<Call>> {
        self.calls.values()
    }
}

pub(super) fn lock(core: &Mutex<PartitionCore>) -> MutexGuard<'_, PartitionCore> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
