//! A context partition: the calls, users, lines and queues of one CTI context (or of all of
//! them, as the single partition `*`, when context separation is off) and the sessions that
//! see them. Each call event is encoded once, numbered, kept for resumes, and its bytes are
//! pushed to every member's outbox.
//!
//! The state lives in a [`PartitionCore`] held outside the actor: a restarted partition
//! keeps its members, its calls and its sequence numbers. Sessions read it ([`Partitions::live`])
//! to answer their own `getlist` requests on their own threads, off the event path.

mod actor;
mod state;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use bytes::Bytes;
use ctid_proto::calls::{Call, EventKind};
use ctid_proto::cti::{timenow, ErrorCode};
use ctid_proto::directory::Directory;
use ctid_proto::lists::{Live, Scope};
use ctid_proto::wallboard::BoardSettings;

use crate::cluster::Cluster;
use crate::directory::DirectoryHandle;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::supervisor::{ChildSpec, Restart, Slot};
pub use actor::Partition;
use state::lock;
pub use state::PartitionCore;

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
