//! A context partition: the calls, users, lines and queues of one CTI context (or of all of
//! them, as the single partition `*`, when context separation is off) and the sessions that
//! see them. Each call event is encoded once, numbered, kept for resumes, and its bytes are
//! pushed to every member's outbox.
//!
//! The state lives in a [`PartitionCore`] held outside the actor: a restarted partition
//! keeps its members, its calls and its sequence numbers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use ctid_proto::calls::{Call, CallState, EventKind};
use ctid_proto::cti::{encode_call_event, timenow, ErrorCode, Reply};
use ctid_proto::directory::{Directory, User};
use serde::Serialize;
use serde_json::{json, Map, Value};

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

/// One change for the partition's sessions.
#[derive(Clone, Debug)]
pub enum Change {
    Call(EventKind, Arc<Call>),
    /// The call moved to another context: forget it.
    Left(String),
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

/// Builds the line a session gets right before its events, given the current sequence.
pub type Ack = Box<dyn FnOnce(u64) -> Bytes + Send>;

/// Subscribes a session: `ack` is queued first, then (for a resume) every kept event after
/// `resume_after`, then live events, with no gap and no duplicate.
#[derive(Message)]
#[rtype(result = "Result<u64, ErrorCode>")]
pub struct Subscribe {
    pub session: SessionId,
    pub member: Member,
    pub resume_after: Option<u64>,
    pub ack: Ack,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub session: SessionId,
}

/// A `getlist` request.
#[derive(Message, Debug)]
#[rtype(result = "Result<Reply, ErrorCode>")]
pub struct GetList {
    pub function: String,
    pub listname: String,
    pub tid: Option<String>,
}

/// Counters of one partition.
#[derive(Clone, Debug, Default)]
pub struct PartitionStats {
    pub events: u64,
    pub deliveries: u64,
    pub slow_consumers: u64,
}

/// Bounds of the replay buffer.
#[derive(Clone, Copy, Debug)]
pub struct ReplayLimits {
    pub events: usize,
    pub bytes: usize,
}

pub struct PartitionCore {
    key: String,
    /// Show each call with only this partition's context (context separation).
    project: bool,
    calls: HashMap<String, Arc<Call>>,
    members: HashMap<SessionId, Member>,
    seq: u64,
    replay: VecDeque<(u64, Bytes)>,
    replay_bytes: usize,
    limits: ReplayLimits,
    pub stats: PartitionStats,
}

#[derive(Serialize)]
struct LeftLine<'a> {
    class: &'static str,
    event: &'static str,
    call: LeftCall<'a>,
    seq: u64,
    timenow: f64,
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
        Arc::new(Mutex::new(PartitionCore {
            key: key.to_owned(),
            project: key != ALL,
            calls: HashMap::new(),
            members: HashMap::new(),
            seq: 0,
            replay: VecDeque::new(),
            replay_bytes: 0,
            limits,
            stats: PartitionStats::default(),
        }))
    }

    fn encode(&mut self, change: Change, now: f64) -> Option<(u64, Bytes)> {
        let line = match change {
            // Already ended here (by a reconcile): a call ends once.
            Change::Call(EventKind::Hungup, call) if !self.calls.contains_key(&call.id) => {
                return None;
            }
            Change::Call(kind, call) => {
                let shown = if self.project {
                    let mut own = (*call).clone();
                    own.contexts = vec![self.key.clone()];
                    Arc::new(own)
                } else {
                    call
                };
                self.seq += 1;
                let line = encode_call_event(kind, &shown, self.seq, now);
                if kind == EventKind::Hungup {
                    self.calls.remove(&shown.id);
                } else {
                    self.calls.insert(shown.id.clone(), shown);
                }
                line
            }
            Change::Left(id) => {
                self.calls.remove(&id)?;
                self.seq += 1;
                let line = serde_json::to_vec(&LeftLine {
                    class: "call_event",
                    event: "left",
                    call: LeftCall { id: &id },
                    seq: self.seq,
                    timenow: now,
                })
                .unwrap_or_default();
                let mut line = line;
                line.push(b'\n');
                Bytes::from(line)
            }
        };
        Some((self.seq, line))
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
        let lines: Vec<(u64, Bytes)> = changes
            .into_iter()
            .filter_map(|c| self.encode(c, now))
            .collect();
        for (seq, line) in &lines {
            self.remember(*seq, line);
        }
        self.stats.events += lines.len() as u64;
        let lines: Vec<Bytes> = lines.into_iter().map(|(_, line)| line).collect();
        self.fan_out(&lines)
    }

    /// Queues `lines` for every member, one wake-up each; returns the members dropped as
    /// slow consumers.
    fn fan_out(&mut self, lines: &[Bytes]) -> Vec<Member> {
        let mut slow = Vec::new();
        for (id, member) in &self.members {
            let delivered = lines
                .iter()
                .all(|line| member.outbox.push(line.clone(), slow_notice, false).is_ok());
            if delivered {
                member.outbox.wake();
            } else {
                slow.push(*id);
            }
        }
        self.stats.deliveries += (lines.len() * (self.members.len() - slow.len())) as u64;
        self.stats.slow_consumers += slow.len() as u64;
        slow.into_iter()
            .filter_map(|id| self.members.remove(&id))
            .collect()
    }

    fn subscribe(&mut self, sub: Subscribe) -> Result<u64, ErrorCode> {
        let replay: Vec<Bytes> = match sub.resume_after {
            None => Vec::new(),
            Some(after) if after > self.seq => return Err(ErrorCode::ResyncRequired),
            Some(after) => {
                let oldest = self.replay.front().map_or(self.seq + 1, |(s, _)| *s);
                if after + 1 < oldest {
                    return Err(ErrorCode::ResyncRequired);
                }
                self.replay
                    .iter()
                    .filter(|(s, _)| *s > after)
                    .map(|(_, l)| l.clone())
                    .collect()
            }
        };
        let outbox = &sub.member.outbox;
        let mut ok = outbox.push((sub.ack)(self.seq), slow_notice, false).is_ok();
        for line in replay {
            ok = ok && outbox.push(line, slow_notice, false).is_ok();
        }
        outbox.wake();
        if !ok {
            return Err(ErrorCode::SlowConsumer);
        }
        self.members.insert(sub.session, sub.member);
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
        let changes = stale
            .into_iter()
            .map(|c| {
                let mut ended = (*c).clone();
                ended.state = CallState::Ended;
                ended.ended = Some(timenow());
                Change::Call(EventKind::Hungup, Arc::new(ended))
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
}

impl Partitions {
    pub fn new(
        separated: bool,
        limits: ReplayLimits,
        directory: DirectoryHandle,
        metrics: Metrics,
    ) -> Self {
        Partitions {
            map: Arc::default(),
            separated,
            limits,
            directory,
            metrics,
        }
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
            dir.contexts().map(|c| c.name.clone()).collect()
        } else {
            vec![ALL.to_owned()]
        }
    }

    pub fn slot(&self, key: &str) -> Option<Slot<Partition>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|(s, _)| s.clone())
    }

    pub fn core(&self, key: &str) -> Option<Arc<Mutex<PartitionCore>>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map(|(_, c)| c.clone())
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// The child spec of partition `key`, registering it on first use.
    pub fn spec(&self, key: &str) -> ChildSpec {
        let (slot, core) = {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_owned())
                .or_insert_with(|| (Slot::new(), PartitionCore::new(key, self.limits)))
                .clone()
        };
        let key = key.to_owned();
        let (directory, metrics) = (self.directory.clone(), self.metrics.clone());
        ChildSpec::new(key.clone(), Restart::Permanent, slot, move |_| Partition {
            key: key.clone(),
            core: core.clone(),
            told: directory.get(),
            directory: directory.clone(),
            metrics: metrics.clone(),
        })
    }
}

pub struct Partition {
    key: String,
    core: Arc<Mutex<PartitionCore>>,
    directory: DirectoryHandle,
    /// The directory version the sessions were last told about.
    told: Arc<Directory>,
    metrics: Metrics,
}

/// A list item: its id, config and status.
type Item = (String, Value, Value);

/// The lists whose changes are pushed to sessions.
const CONFIG_LISTS: [&str; 3] = ["users", "phones", "queues"];

impl Partition {
    fn kick(slow: Vec<Member>) {
        for member in slow {
            member.session.do_send(Kick(ErrorCode::SlowConsumer));
        }
    }

    fn sees(&self, context: Option<&str>) -> bool {
        self.key == ALL || context == Some(self.key.as_str())
    }

    fn user_config(user: &User) -> Value {
        json!({
            "id": user.id.to_string(),
            "login": user.login,
            "firstname": user.firstname,
            "lastname": user.lastname,
            "fullname": user.fullname(),
            "context": user.context(),
            "linelist": user.line.iter().map(|l| l.interface.clone()).collect::<Vec<_>>(),
        })
    }

    /// The items of a list this partition sees: id, config and status, by id.
    fn items(
        &self,
        dir: &Directory,
        core: &PartitionCore,
        listname: &str,
    ) -> Result<Vec<Item>, ErrorCode> {
        let mut items: Vec<Item> = Vec::new();
        match listname {
            "users" => {
                for u in dir.users().filter(|u| self.sees(u.context())) {
                    let state = core.members.values().find(|m| m.user_id == u.id);
                    let status = json!({
                        "connection": if state.is_some() { "connected" } else { "disconnected" },
                        "availstate": state.map_or("disconnected", |m| m.availstate.as_str()),
                    });
                    items.push((u.id.to_string(), Self::user_config(u), status));
                }
            }
            "phones" => {
                for u in dir.users() {
                    let Some(line) = u.line.as_ref().filter(|l| self.sees(Some(&l.context))) else {
                        continue;
                    };
                    let calls: Vec<&str> = core
                        .calls
                        .values()
                        .filter(|c| c.lines.contains(&line.interface))
                        .map(|c| c.id.as_str())
                        .collect();
                    let config = json!({
                        "id": line.interface,
                        "interface": line.interface,
                        "number": line.number,
                        "context": line.context,
                        "userid": u.id.to_string(),
                    });
                    let status = json!({"state": if calls.is_empty() { "idle" } else { "busy" }, "calls": calls});
                    items.push((line.interface.clone(), config, status));
                }
            }
            "queues" => {
                for q in dir.queues().filter(|q| self.sees(Some(&q.context))) {
                    let waiting = core
                        .calls
                        .values()
                        .filter(|c| {
                            c.state == CallState::Queued && c.queue.as_deref() == Some(&q.name)
                        })
                        .count();
                    let config = json!({"id": q.name, "name": q.name, "number": q.number, "context": q.context});
                    items.push((q.name.clone(), config, json!({"waiting": waiting})));
                }
            }
            "calls" => {
                for c in core.calls.values() {
                    let config = serde_json::to_value(&**c).unwrap_or(Value::Null);
                    items.push((c.id.clone(), config, json!({"state": c.state})));
                }
            }
            _ => return Err(ErrorCode::UnknownFunction),
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(items)
    }

    fn get_list(&self, req: &GetList) -> Result<Reply, ErrorCode> {
        let dir = self.directory.get();
        let items = self.items(&dir, &lock(&self.core), &req.listname)?;
        let reply = Reply::new("getlist")
            .with("function", req.function.clone())
            .with("listname", req.listname.clone())
            .with("tipbxid", "xivo");
        let pick = |by_status: bool| -> Result<Value, ErrorCode> {
            let value = |(_, config, status): &(String, Value, Value)| {
                if by_status {
                    status.clone()
                } else {
                    config.clone()
                }
            };
            match &req.tid {
                Some(tid) => items
                    .iter()
                    .find(|(id, _, _)| id == tid)
                    .map(value)
                    .ok_or(ErrorCode::Unallowed),
                None => Ok(Value::Object(
                    items
                        .iter()
                        .map(|i| (i.0.clone(), value(i)))
                        .collect::<Map<_, _>>(),
                )),
            }
        };
        match req.function.as_str() {
            "listid" => Ok(reply.with(
                "list",
                items
                    .iter()
                    .map(|i| Value::from(i.0.clone()))
                    .collect::<Vec<_>>(),
            )),
            "updateconfig" => Ok(reply
                .with("tid", req.tid.clone())
                .with("config", pick(false)?)),
            "updatestatus" => Ok(reply
                .with("tid", req.tid.clone())
                .with("status", pick(true)?)),
            _ => Err(ErrorCode::UnknownFunction),
        }
    }
}

impl Partition {
    /// `addconfig`, `delconfig` and `updateconfig` lines for what changed between two
    /// directories, as this partition's sessions see them.
    fn config_changes(
        &self,
        old: &Directory,
        new: &Directory,
        core: &PartitionCore,
    ) -> Vec<bytes::Bytes> {
        let now = timenow();
        let mut lines = Vec::new();
        for listname in CONFIG_LISTS {
            let (Ok(before), Ok(after)) = (
                self.items(old, core, listname),
                self.items(new, core, listname),
            ) else {
                continue;
            };
            let before: HashMap<&str, &Value> =
                before.iter().map(|(id, c, _)| (id.as_str(), c)).collect();
            let after_ids: HashSet<&str> = after.iter().map(|(id, _, _)| id.as_str()).collect();
            let push = |function: &str, extra: Reply| {
                extra
                    .with("class", "getlist")
                    .with("function", function)
                    .with("listname", listname)
                    .with("tipbxid", "xivo")
                    .encode(now)
            };
            let added: Vec<Value> = after
                .iter()
                .filter(|(id, _, _)| !before.contains_key(id.as_str()))
                .map(|(id, _, _)| id.clone().into())
                .collect();
            let removed: Vec<Value> = before
                .keys()
                .filter(|id| !after_ids.contains(*id))
                .map(|id| (*id).into())
                .collect();
            if !added.is_empty() {
                lines.push(push("addconfig", Reply::new("").with("list", added)));
            }
            if !removed.is_empty() {
                lines.push(push("delconfig", Reply::new("").with("list", removed)));
            }
            for (id, config, _) in &after {
                if before.get(id.as_str()).is_some_and(|c| *c != config) {
                    lines.push(push(
                        "updateconfig",
                        Reply::new("")
                            .with("tid", id.clone())
                            .with("config", config.clone()),
                    ));
                }
            }
        }
        lines
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
            if let Some(member) = core.members.remove(&id) {
                member.session.do_send(Kick(ErrorCode::UserChanged));
            }
        }
        let lines = self.config_changes(&old, &new, &core);
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
        let slow = lock(&self.core).publish(msg.changes);
        self.metrics.event_lag(msg.received.elapsed());
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

impl Handler<Subscribe> for Partition {
    type Result = Result<u64, ErrorCode>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        lock(&self.core).subscribe(msg)
    }
}

impl Handler<Unsubscribe> for Partition {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        lock(&self.core).members.remove(&msg.session);
    }
}

impl Handler<GetList> for Partition {
    type Result = Result<Reply, ErrorCode>;

    fn handle(&mut self, msg: GetList, _: &mut Context<Self>) -> Self::Result {
        self.get_list(&msg)
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
        let mut model = ctid_proto::calls::CallModel::new();
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
            },
        );
        let mut c = lock(&core);
        c.publish(vec![Change::Call(EventKind::Offered, call("1.1"))]);
        c.publish(vec![
            Change::Call(EventKind::Offered, call("1.2")),
            Change::Call(EventKind::Hungup, call("1.1")),
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
        c.publish(vec![Change::Call(EventKind::Hungup, call("1.2"))]);
        let got = outbox.queued_json();
        let seqs: Vec<u64> = got
            .iter()
            .skip(1)
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(got[0]["class"], "resume");
        assert_eq!(seqs, [2, 3, 4]);
        assert_eq!(got[1]["call"]["contexts"], json!(["default"]));
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
            },
        );
        let mut c = lock(&core);
        c.publish(vec![Change::Call(EventKind::Offered, call("3.1"))]);
        c.reconcile(&HashSet::new());
        c.publish(vec![Change::Call(EventKind::Hungup, call("3.1"))]);
        assert_eq!(c.seq(), 2, "offered, then one hungup");
    }

    #[actix_rt::test]
    async fn a_resume_older_than_the_buffer_needs_a_resync() {
        let core = PartitionCore::new(
            "default",
            ReplayLimits {
                events: 2,
                bytes: 1 << 20,
            },
        );
        let mut c = lock(&core);
        for i in 0..5 {
            c.publish(vec![Change::Call(
                EventKind::Offered,
                call(&format!("2.{i}")),
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
}
