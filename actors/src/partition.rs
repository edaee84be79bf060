//! A context partition: the calls, users, lines and queues of one CTI context (or of all of
//! them, as the single partition `*`, when context separation is off) and the sessions that
//! see them. Each call event is encoded once, numbered, kept for resumes, and its bytes are
//! pushed to every member's outbox.
//!
//! The state lives in a [`PartitionCore`] held outside the actor: a restarted partition
//! keeps its members, its calls and its sequence numbers. Sessions read it ([`Partitions::live`])
//! to answer their own `getlist` requests on their own threads, off the event path.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use bytes::Bytes;
use ctid_proto::calls::{Call, CallState, EventKind};
use ctid_proto::cti::{encode_call_event, replayed, timenow, ErrorCode, Reply};
use ctid_proto::directory::Directory;
use ctid_proto::lists::{config_changes, Live, Scope};
use ctid_proto::wallboard::{board, BoardSettings, LagWindow, QueueTally};
use ctid_proto::wire::{LiveCall, WireChange, WireEvent};
use log::info;
use serde::Serialize;

use crate::cluster::feed::{self, Fed};
use crate::cluster::Cluster;
use crate::directory::DirectoryHandle;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::supervisor::{ChildSpec, Restart, Shutdown, Slot};

/// The partition key of every context when context separation is off.
pub const ALL: &str = "*";

pub type SessionId = u64;

/// Tells a session to close, with why.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Kick(pub ErrorCode);

/// A subscribed session.
pub struct Member {
    pub user_id: u64,
    pub availstate: String,
    pub outbox: Arc<Outbox>,
    pub session: Recipient<Kick>,
}

/// One change for the partition's sessions, with when it happened (epoch seconds: the
/// PBX's time of its AMI event, or when ctid read or made it).
#[derive(Clone, Debug)]
pub enum Change {
    Call(EventKind, Arc<Call>, f64),
    /// The call moved to another context: forget it.
    Left(String, f64),
}

/// Call events for one partition, in order, with when their AMI events were read.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PartitionEvents {
    pub received: Instant,
    pub changes: Vec<Change>,
}

/// The calls the router knows are alive; the partition ends any other it holds (the router
/// restarted and resynced, and missed their end).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconcile {
    pub live: HashSet<String>,
}

/// A PBX link went down, or came back up and resynced: the sessions are told.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PbxStatus {
    pub pbx: Arc<str>,
    pub state: &'static str,
}

/// Builds the line a session gets right before its events, given the current sequence.
pub type Ack = Box<dyn FnOnce(u64) -> Bytes + Send>;

/// A session joining: `ack` is queued first, then (for a resume) every kept event after
/// `resume_after`, then live events, with no gap and no duplicate.
pub struct Subscribe {
    pub session: SessionId,
    pub member: Member,
    pub resume_after: Option<u64>,
    pub ack: Ack,
}

/// Counters of one partition.
#[derive(Clone, Debug, Default)]
pub struct PartitionStats {
    pub events: u64,
    pub deliveries: u64,
    pub slow_consumers: u64,
}

/// Bounds of the replay buffer, and how old an event may be when it goes out before it is
/// marked `stale`.
#[derive(Clone, Copy, Debug)]
pub struct ReplayLimits {
    pub events: usize,
    pub bytes: usize,
    pub stale_after: Duration,
}

pub struct PartitionCore {
    key: String,
    calls: HashMap<String, Arc<Call>>,
    members: HashMap<SessionId, Member>,
    /// Sessions by user id.
    by_user: HashMap<u64, Vec<SessionId>>,
    seq: u64,
    replay: VecDeque<(u64, Bytes)>,
    replay_bytes: usize,
    limits: ReplayLimits,
    pub stats: PartitionStats,
    /// Sessions may join (in cluster mode, once the feed caught up with the stream).
    ready: bool,
    /// The last sequence known to exist upstream (cluster mode: in the context's stream).
    known: u64,
    /// The newest lease epoch seen per PBX (cluster mode): older ones are dropped.
    epochs: HashMap<String, u64>,
    metrics: Metrics,
    /// Queue figures of today, and the event lags of the last minute, for wallboards.
    tally: QueueTally,
    lags: LagWindow,
    /// Members that asked for the wallboard, and the last board they were sent.
    boards: HashSet<SessionId>,
    last_board: Option<serde_json::Value>,
    /// When the AMI events being published were read, for the lag to the clients' sockets.
    received: Option<Instant>,
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

    fn with_readiness(
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
            // Sent by a node too old to say: as old as it is now.
            let at = event.at.unwrap_or_else(timenow);
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
    fn fan_out(&mut self, lines: &[Bytes]) -> Vec<Member> {
        let mut slow = Vec::new();
        let received = self.received.take();
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
    fn board(&self, dir: &Directory, now: f64) -> serde_json::Value {
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
    fn tick_board(&mut self, dir: &Directory) -> Vec<Member> {
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

    fn join(&mut self, id: SessionId, member: Member) {
        self.by_user.entry(member.user_id).or_default().push(id);
        self.members.insert(id, member);
    }

    fn leave(&mut self, id: SessionId) -> Option<Member> {
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

    fn subscribe(&mut self, sub: Subscribe) -> Result<u64, ErrorCode> {
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
    fn reconcile(&mut self, live: &HashSet<String>) -> Vec<Member> {
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

fn lock(core: &Mutex<PartitionCore>) -> MutexGuard<'_, PartitionCore> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// What partition `key` lets its sessions see.
fn scope(key: &str) -> Scope<'_> {
    if key == ALL {
        Scope::All
    } else {
        Scope::Context(key)
    }
}

/// A partition's live address and its state.
type Entry = (Slot<Partition>, Arc<Mutex<PartitionCore>>);

/// Every partition by key, with its core; shared by the router, the sessions and the
/// console.
#[derive(Clone)]
pub struct Partitions {
    map: Arc<RwLock<HashMap<String, Entry>>>,
    separated: bool,
    limits: ReplayLimits,
    directory: DirectoryHandle,
    metrics: Metrics,
    /// Where partitions run, in turn: never on the AMI link's thread.
    arbiters: Arc<[ArbiterHandle]>,
    /// Cluster mode: the NATS connection the partitions read their streams from.
    cluster: Option<Cluster>,
    /// Cluster mode: the contexts this edge serves (empty: all).
    only: Arc<[String]>,
    board: BoardSettings,
}

impl Partitions {
    pub fn new(
        separated: bool,
        limits: ReplayLimits,
        directory: DirectoryHandle,
        metrics: Metrics,
        arbiters: Vec<ArbiterHandle>,
    ) -> Self {
        Partitions {
            map: Arc::default(),
            separated,
            limits,
            directory,
            metrics,
            arbiters: arbiters.into(),
            cluster: None,
            only: Arc::new([]),
            board: BoardSettings::default(),
        }
    }

    /// What the wallboards count as within the service level, and as today.
    pub fn with_board(mut self, board: BoardSettings) -> Self {
        self.board = board;
        self
    }

    /// The wallboard of partition `key` now; None if there is no such partition.
    pub fn board(&self, key: &str) -> Option<serde_json::Value> {
        let core = self.core(key)?;
        let board = lock(&core).board(&self.directory.get(), timenow());
        Some(board)
    }

    /// Session `session`, a member of partition `key`, gets its wallboard from now on;
    /// false if there is no such partition.
    pub fn watch_board(&self, key: &str, session: SessionId) -> bool {
        let Some(core) = self.core(key) else {
            return false;
        };
        let slow = lock(&core).watch_board(session, &self.directory.get());
        Partition::kick(slow);
        true
    }

    /// Cluster mode: partitions are fed from their context's stream, and only the contexts
    /// in `only` (if any) are served.
    pub fn fed_by(mut self, cluster: Cluster, only: Vec<String>) -> Self {
        self.cluster = Some(cluster);
        self.only = only.into();
        self
    }

    pub fn separated(&self) -> bool {
        self.separated
    }

    /// The partition key of a context.
    pub fn key<'a>(&self, context: &'a str) -> &'a str {
        if self.separated {
            context
        } else {
            ALL
        }
    }

    /// The keys the directory calls for: one per context, or `*`.
    pub fn wanted(&self, dir: &Directory) -> Vec<String> {
        if self.separated {
            dir.contexts()
                .map(|c| c.name.clone())
                .filter(|c| self.only.is_empty() || self.only.contains(c))
                .collect()
        } else {
            vec![ALL.to_owned()]
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn slot(&self, key: &str) -> Option<Slot<Partition>> {
        self.read().get(key).map(|(s, _)| s.clone())
    }

    pub fn core(&self, key: &str) -> Option<Arc<Mutex<PartitionCore>>> {
        self.read().get(key).map(|(_, c)| c.clone())
    }

    /// What partition `key` shows in lists, taken under its lock and built on by the caller.
    pub fn live(&self, key: &str) -> Live {
        self.core(key).map(|c| lock(&c).live()).unwrap_or_default()
    }

    /// What every partition holds, together: a call of several contexts once.
    pub fn live_all(&self) -> Live {
        let mut all = Live::default();
        let mut seen = std::collections::HashSet::new();
        for key in self.keys() {
            let live = self.live(&key);
            all.calls
                .extend(live.calls.into_iter().filter(|c| seen.insert(c.id.clone())));
            all.presence.extend(live.presence);
        }
        all
    }

    /// Makes a session a member of partition `key`, under its lock: nothing to wait for,
    /// even while the partition's actor is busy or restarting. None if there is no such
    /// partition.
    pub fn subscribe(&self, key: &str, sub: Subscribe) -> Option<Result<u64, ErrorCode>> {
        self.core(key).map(|c| lock(&c).subscribe(sub))
    }

    pub fn unsubscribe(&self, key: &str, session: SessionId) {
        if let Some(core) = self.core(key) {
            lock(&core).leave(session);
        }
    }

    /// The partitions not yet caught up with their context's stream (cluster mode), whose
    /// logins and resumes are answered `busy`.
    pub fn catching_up(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .read()
            .iter()
            .filter(|(_, (_, core))| !lock(core).ready)
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.read().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The child spec of partition `key`, registering it on first use.
    pub fn spec(&self, key: &str) -> ChildSpec {
        let (slot, core, index) = {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            let index = map.len();
            let ready = self.cluster.is_none();
            let (slot, core) = map
                .entry(key.to_owned())
                .or_insert_with(|| {
                    let metrics = self.metrics.clone();
                    let core =
                        PartitionCore::with_readiness(key, self.limits, ready, metrics, self.board);
                    (Slot::new(), core)
                })
                .clone();
            (slot, core, index)
        };
        let key = key.to_owned();
        let (directory, metrics) = (self.directory.clone(), self.metrics.clone());
        let feed = self.cluster.clone().map(|c| (c, self.limits.events));
        let spec = ChildSpec::new(key.clone(), Restart::Permanent, slot, move |_| Partition {
            key: key.clone(),
            core: core.clone(),
            told: directory.get(),
            directory: directory.clone(),
            metrics: metrics.clone(),
            feed: feed.clone(),
        });
        match self.arbiters.get(index % self.arbiters.len().max(1)) {
            Some(arbiter) => spec.on(arbiter.clone()),
            None => spec,
        }
    }
}

pub struct Partition {
    key: String,
    core: Arc<Mutex<PartitionCore>>,
    directory: DirectoryHandle,
    /// The directory version the sessions were last told about.
    told: Arc<Directory>,
    metrics: Metrics,
    /// Cluster mode: where its events come from, and how many it reads when it starts.
    feed: Option<(Cluster, usize)>,
}

impl Partition {
    fn kick(slow: Vec<Member>) {
        for member in slow {
            member.session.do_send(Kick(ErrorCode::SlowConsumer));
        }
    }

    /// Whether a user (by id) still belongs to this partition in `dir`.
    fn keeps(&self, dir: &Directory, user_id: u64) -> bool {
        dir.user(user_id)
            .is_some_and(|u| self.key == ALL || u.context() == Some(self.key.as_str()))
    }
}

impl Actor for Partition {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        ctx.add_stream(self.directory.changes());
        self.follow(ctx);
        ctx.run_interval(BOARD_PERIOD, |act, _| {
            let slow = lock(&act.core).tick_board(&act.directory.get());
            Self::kick(slow);
        });
    }
}

/// How often wallboards are sent what changed: the page ticks waits between two.
const BOARD_PERIOD: Duration = Duration::from_secs(1);

/// How long a broken feed waits before it starts again.
const FEED_RETRY: Duration = Duration::from_secs(1);

impl Partition {
    /// Cluster mode: reads the context's stream from the event after the last one held.
    fn follow(&mut self, ctx: &mut Context<Self>) {
        let Some((cluster, keep)) = self.feed.clone() else {
            return;
        };
        let (after, ready) = {
            let core = lock(&self.core);
            (core.seq, core.ready)
        };
        let fed = feed::start(cluster, self.key.clone(), after, ready, keep);
        ctx.add_stream(futures_util::stream::unfold(fed, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
    }
}

impl StreamHandler<Fed> for Partition {
    fn handle(&mut self, fed: Fed, _: &mut Context<Self>) {
        let mut core = lock(&self.core);
        let slow = match fed {
            Fed::Event { seq, known, event } => core.publish_at(seq, known, event),
            Fed::Seed(calls) => {
                core.seed(calls);
                Vec::new()
            }
            Fed::Ready => {
                info!(
                    "partition {}: caught up with its stream at event {}",
                    self.key, core.seq
                );
                core.set_ready();
                Vec::new()
            }
            Fed::Status { pbx, state } => {
                let line = Reply::new("pbx_status")
                    .with("pbx", pbx)
                    .with("state", state)
                    .encode(timenow());
                core.fan_out(&[line])
            }
        };
        drop(core);
        Self::kick(slow);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(FEED_RETRY, |act, ctx| act.follow(ctx));
    }
}

impl StreamHandler<Arc<Directory>> for Partition {
    /// Tells the sessions what changed in the directory; those of users deleted or moved
    /// to another context are closed.
    fn handle(&mut self, new: Arc<Directory>, _: &mut Context<Self>) {
        let old = std::mem::replace(&mut self.told, new.clone());
        let mut core = lock(&self.core);
        let gone: Vec<SessionId> = core
            .members
            .iter()
            .filter(|(_, m)| !self.keeps(&new, m.user_id))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(member) = core.leave(id) {
                member.session.do_send(Kick(ErrorCode::UserChanged));
            }
        }
        let now = timenow();
        let lines: Vec<Bytes> = config_changes(&old, &new, scope(&self.key))
            .into_iter()
            .map(|r| r.encode(now))
            .collect();
        if lines.is_empty() {
            return;
        }
        let slow = core.fan_out(&lines);
        drop(core);
        Self::kick(slow);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<PartitionEvents> for Partition {
    type Result = ();

    fn handle(&mut self, msg: PartitionEvents, _: &mut Context<Self>) {
        let mut core = lock(&self.core);
        core.received = Some(msg.received);
        let slow = core.publish(msg.changes);
        let lag = msg.received.elapsed();
        core.lags.record(timenow(), lag.as_secs_f64() * 1000.0);
        drop(core);
        self.metrics.event_lag(lag);
        Self::kick(slow);
    }
}

impl Handler<Reconcile> for Partition {
    type Result = ();

    fn handle(&mut self, msg: Reconcile, _: &mut Context<Self>) {
        let slow = lock(&self.core).reconcile(&msg.live);
        Self::kick(slow);
    }
}

impl Handler<PbxStatus> for Partition {
    type Result = ();

    fn handle(&mut self, msg: PbxStatus, _: &mut Context<Self>) {
        let line = Reply::new("pbx_status")
            .with("pbx", msg.pbx.to_string())
            .with("state", msg.state)
            .encode(timenow());
        let slow = lock(&self.core).fan_out(&[line]);
        Self::kick(slow);
    }
}

impl Handler<Shutdown> for Partition {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Budget;
    use serde_json::json;

    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<Kick> for Sink {
        type Result = ();
        fn handle(&mut self, _: Kick, _: &mut Context<Self>) {}
    }

    fn call(id: &str) -> Arc<Call> {
        let dir = Directory::default();
        let mut model = ctid_proto::calls::CallModel::new(ctid_proto::directory::DEFAULT_PBX);
        let ev = ctid_proto::ami::AmiMessage::parse(&format!(
            "Event: Newchannel\r\nChannel: PJSIP/x-1\r\nUniqueid: {id}\r\nLinkedid: {id}\r\n"
        ));
        Arc::new(model.apply(&ev, 1.0, &dir).remove(0).call)
    }

    fn member(outbox: &Arc<Outbox>) -> Member {
        Member {
            user_id: 1,
            availstate: "available".into(),
            outbox: outbox.clone(),
            session: Sink.start().recipient(),
        }
    }

    #[actix_rt::test]
    async fn resume_replays_what_was_missed_then_lives_on() {
        let core = PartitionCore::new(
            "default",
            ReplayLimits {
                events: 100,
                bytes: 1 << 20,
                stale_after: Duration::from_secs(3600),
            },
        );
        let mut c = lock(&core);
        c.publish(vec![Change::Call(
            EventKind::Offered,
            call("1.1"),
            timenow(),
        )]);
        c.publish(vec![
            Change::Call(EventKind::Offered, call("1.2"), timenow()),
            Change::Call(EventKind::Hungup, call("1.1"), timenow()),
        ]);
        assert_eq!(c.seq(), 3);
        let outbox = Outbox::new(Budget {
            max_bytes: 1 << 20,
            max_messages: 100,
        });
        let seq = c
            .subscribe(Subscribe {
                session: 7,
                member: member(&outbox),
                resume_after: Some(1),
                ack: Box::new(|seq| Reply::new("resume").with("seq", seq).encode(0.0)),
            })
            .unwrap();
        assert_eq!(seq, 3);
        c.publish(vec![Change::Call(
            EventKind::Hungup,
            call("1.2"),
            timenow(),
        )]);
        let got = outbox.queued_json();
        let seqs: Vec<u64> = got
            .iter()
            .skip(1)
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(got[0]["class"], "resume");
        assert_eq!(seqs, [2, 3, 4]);
        assert_eq!(got[1]["call"]["contexts"], serde_json::json!(["default"]));
    }

    /// An event older than `stale_after` goes out stale and is counted, once some session
    /// gets it; a resume replays it as replayed, not stale.
    #[actix_rt::test]
    async fn an_old_event_goes_out_stale_and_is_replayed_fresh() {
        let metrics = Metrics::default();
        let limits = ReplayLimits {
            events: 100,
            bytes: 1 << 20,
            stale_after: Duration::from_secs(2),
        };
        let core = PartitionCore::with_readiness(
            "default",
            limits,
            true,
            metrics.clone(),
            BoardSettings::default(),
        );
        let mut c = lock(&core);
        let old = timenow() - 60.0;
        c.publish(vec![Change::Call(EventKind::Offered, call("5.1"), old)]);
        assert_eq!(metrics.stale_events(), 0, "sent to nobody");
        let outbox = Outbox::new(Budget {
            max_bytes: 1 << 20,
            max_messages: 100,
        });
        let sub = |after| Subscribe {
            session: 1,
            member: member(&outbox),
            resume_after: after,
            ack: Box::new(|_| Bytes::from_static(b"{}\n")),
        };
        c.subscribe(sub(None)).unwrap();
        c.publish(vec![
            Change::Call(EventKind::Updated, call("5.1"), old),
            Change::Left("default:5.1".into(), timenow()),
        ]);
        assert_eq!(metrics.stale_events(), 1);
        let live = outbox.queued_json();
        assert_eq!(
            (&live[1]["stale"], &live[2]["stale"]),
            (&json!(true), &json!(false))
        );
        assert_eq!(
            live[1]["event_time"],
            ctid_proto::rfc3339::format_millis(old)
        );
        assert!(live[1].get("replayed").is_none());

        c.leave(1);
        let again = Outbox::new(Budget {
            max_bytes: 1 << 20,
            max_messages: 100,
        });
        let resume = Subscribe {
            member: member(&again),
            ..sub(Some(0))
        };
        c.subscribe(resume).unwrap();
        let replayed = again.queued_json();
        assert_eq!(replayed.len(), 4, "the ack, then three events");
        for e in &replayed[1..] {
            assert_eq!(
                (&e["replayed"], &e["stale"]),
                (&json!(true), &json!(false)),
                "{e}"
            );
        }
        assert_eq!(replayed[3]["event"], "left");
    }

    /// A reconcile ended the call while its record was being written; the `hungup` that
    /// follows the write must not end it a second time.
    #[actix_rt::test]
    async fn a_call_ended_by_a_reconcile_ends_once() {
        let core = PartitionCore::new(
            "default",
            ReplayLimits {
                events: 100,
                bytes: 1 << 20,
                stale_after: Duration::from_secs(3600),
            },
        );
        let mut c = lock(&core);
        c.publish(vec![Change::Call(
            EventKind::Offered,
            call("3.1"),
            timenow(),
        )]);
        c.reconcile(&HashSet::new());
        c.publish(vec![Change::Call(
            EventKind::Hungup,
            call("3.1"),
            timenow(),
        )]);
        assert_eq!(c.seq(), 2, "offered, then one hungup");
    }

    fn wire(epoch: u64, kind: EventKind, id: &str) -> Option<WireEvent> {
        Some(WireEvent {
            epoch,
            pbx: "default".into(),
            at: Some(timenow()),
            change: WireChange::Call {
                kind,
                call: Box::new(ctid_proto::wire::WireCall::from(&*call(id))),
            },
        })
    }

    /// Cluster mode: events of an ingest whose lease was taken over are dropped, and their
    /// numbers are not reused.
    #[actix_rt::test]
    async fn a_stale_epoch_is_dropped_and_its_seq_left_unused() {
        let core = PartitionCore::with_readiness(
            "default",
            ReplayLimits {
                events: 100,
                bytes: 1 << 20,
                stale_after: Duration::from_secs(3600),
            },
            false,
            Metrics::default(),
            BoardSettings::default(),
        );
        let mut c = lock(&core);
        c.publish_at(1, 3, wire(5, EventKind::Offered, "1.1"));
        c.publish_at(2, 3, wire(4, EventKind::Offered, "1.2"));
        c.publish_at(3, 3, wire(6, EventKind::Updated, "1.1"));
        c.publish_at(3, 3, wire(6, EventKind::Hungup, "1.1"));
        assert_eq!(c.seq(), 3);
        let ids: Vec<&str> = c.calls().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["default:1.1"], "1.2 was dropped, a repeated seq too");
        let kept: Vec<u64> = c.replay.iter().map(|(s, _)| *s).collect();
        assert_eq!(kept, [1, 3]);
    }

    #[actix_rt::test]
    async fn a_resume_older_than_the_buffer_needs_a_resync() {
        let core = PartitionCore::new(
            "default",
            ReplayLimits {
                events: 2,
                bytes: 1 << 20,
                stale_after: Duration::from_secs(3600),
            },
        );
        let mut c = lock(&core);
        for i in 0..5 {
            c.publish(vec![Change::Call(
                EventKind::Offered,
                call(&format!("2.{i}")),
                timenow(),
            )]);
        }
        let outbox = Outbox::new(Budget {
            max_bytes: 1 << 20,
            max_messages: 100,
        });
        let sub = |after| Subscribe {
            session: 1,
            member: member(&outbox),
            resume_after: Some(after),
            ack: Box::new(|_| Bytes::from_static(b"{}\n")),
        };
        assert_eq!(c.subscribe(sub(2)), Err(ErrorCode::ResyncRequired));
        assert_eq!(c.subscribe(sub(9)), Err(ErrorCode::ResyncRequired));
        assert_eq!(c.subscribe(sub(3)), Ok(5));
    }

    /// A wallboard watcher gets the board at once, then only when it changed: a queued
    /// call, and nothing while nothing happens.
    #[actix_rt::test]
    async fn a_wallboard_goes_to_its_watchers_only_and_only_when_it_changed() {
        let dir = Directory::parse(
            "[[contexts]]\nname = \"default\"\ndialplan = [\"default\"]\n\
             [[queues]]\nname = \"support\"\ncontext = \"default\"\n",
        )
        .unwrap();
        let core = PartitionCore::new(
            "default",
            ReplayLimits {
                events: 100,
                bytes: 1 << 20,
                stale_after: Duration::from_secs(3600),
            },
        );
        let mut c = lock(&core);
        let outbox = |_| {
            Outbox::new(Budget {
                max_bytes: 1 << 20,
                max_messages: 100,
            })
        };
        let (watcher, other) = (outbox(1), outbox(2));
        for (id, o) in [(1, &watcher), (2, &other)] {
            c.subscribe(Subscribe {
                session: id,
                member: member(o),
                resume_after: None,
                ack: Box::new(|_| Bytes::from_static(b"{}\n")),
            })
            .unwrap();
        }
        assert!(c.watch_board(1, &dir).is_empty());
        let boards = |o: &Outbox| {
            o.queued_json()
                .into_iter()
                .filter(|m| m["class"] == "queue_stats")
                .collect::<Vec<_>>()
        };
        assert_eq!(boards(&watcher).len(), 1, "at once");
        c.tick_board(&dir);
        c.tick_board(&dir);
        assert_eq!(boards(&watcher).len(), 1, "nothing changed");
        let mut queued = (*call("4.1")).clone();
        queued.state = CallState::Queued;
        queued.queue = Some("support".into());
        c.publish(vec![Change::Call(
            EventKind::Queued,
            Arc::new(queued),
            timenow(),
        )]);
        c.tick_board(&dir);
        let got = boards(&watcher);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1]["queues"][0]["waiting"], 1);
        assert!(boards(&other).is_empty(), "only to who asked");
    }
}
