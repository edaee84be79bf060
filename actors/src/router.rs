//! The router: takes the events of the AMI link, runs the call model, and sends each call
//! event to the partitions of the call's contexts.
//!
//! It resyncs from Asterisk (CoreShowChannels, QueueStatus) whenever the link comes up,
//! when it starts (after a restart its model is empty), and periodically, so that a lost
//! Hangup cannot keep a call alive forever. The lists come in the event stream, and are
//! applied there: see `ctid_proto::calls::resync`. A partition whose mailbox was full
//! misses events; the next batch it gets starts with every live call of its context, so
//! its clients converge again.
//!
//! When a call is answered or bridged, it asks for the `Status` of the call's channels, in
//! the stream too: their codecs become the call's `media`.

mod in_stream;
mod requests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ctid_proto::calls::{coalesce, Call, CallEvent, CallModel, EventKind};
use ctid_proto::commands::CommandSettings;
use ctid_proto::cti::timenow;
use ctid_proto::directory::Directory;
use futures_util::StreamExt;
use log::{error, info};

use crate::ami::{AmiEvents, AmiItem, AmiLink, LinkChanged, LinkState, LinkStats};
use crate::cluster::lease::Holding;
use crate::cluster::publish::{ended, PublishFailed, Sink};
use crate::cluster::Cluster;
use crate::directory::DirectoryHandle;
use crate::media::MediaAsks;
use crate::metrics::Metrics;
use crate::partition::{Change, PartitionEvents, Partitions, PbxStatus, Reconcile, ALL};
use crate::store::Stores;
use crate::supervisor::{Outlet, Shutdown, Slot};
use in_stream::{Resyncing, RESYNC_RETRY_MIN};
pub use requests::{PlanCommand, Resync, RunAgi, SetDisposition};

/// Batches of AMI events the router may have queued before the link counts it overloaded.
const MAILBOX: usize = 1024;

#[derive(Message)]
#[rtype(result = "()")]
struct DirectoryChanged(Arc<Directory>);

pub struct Router {
    model: CallModel,
    pbx: Arc<str>,
    /// The link state the PBX's sessions were last told (`up`, `down`).
    told: Option<&'static str>,
    /// A state to tell once the hungups waiting for their records are out.
    deferred: Option<&'static str>,
    directory: DirectoryHandle,
    partitions: Partitions,
    outlets: HashMap<String, Outlet<PartitionEvents>>,
    /// Partitions that missed events and must be brought up to date.
    gaps: BTreeSet<String>,
    /// Ended calls whose `hungup` waits for their record, with their contexts.
    ending: HashMap<String, Vec<String>>,
    link: Slot<AmiLink>,
    link_stats: LinkStats,
    resync_every: Duration,
    resyncing: Option<Resyncing>,
    /// The wait before a failed resync is asked for again.
    resync_retry: Duration,
    resyncs: u64,
    /// A resync not over within this is abandoned (its lists were lost with the link).
    resync_bound: Duration,
    store: Option<Stores>,
    commands: CommandSettings,
    metrics: Metrics,
    /// Cluster mode: the NATS cluster and this node's lease of the PBX.
    cluster: Option<(Cluster, Holding)>,
    /// Cluster mode: where call events go (the contexts' streams), instead of partitions.
    sink: Option<Sink>,
    /// Cluster mode: live calls as the edges last heard of them (from the node this one
    /// took over from) that this model has not seen yet.
    restoring: HashMap<String, Call>,
    /// Cluster mode: ended calls whose `hungup` was not published, by context.
    ghosts: HashMap<String, Vec<Arc<Call>>>,
    /// Channels whose `Status` (media) is asked for, or waits to be.
    media: MediaAsks,
}

/// What the router needs besides the directory and the partitions.
#[derive(Clone)]
pub struct RouterConfig {
    /// The PBX whose calls this router follows.
    pub pbx: Arc<str>,
    pub link: Slot<AmiLink>,
    pub link_stats: LinkStats,
    pub resync_every: Duration,
    /// How long an AMI action may take.
    pub socket_timeout: Duration,
    /// Where ended calls are recorded; None if call records are off.
    pub store: Option<Stores>,
    pub commands: CommandSettings,
    pub metrics: Metrics,
    /// Cluster mode: events go to the contexts' streams, while this node holds the lease.
    pub cluster: Option<(Cluster, Holding)>,
}

/// How long a context whose events could not be published waits before it is healed.
const HEAL_AFTER: Duration = Duration::from_secs(1);

impl Router {
    pub fn new(directory: DirectoryHandle, partitions: Partitions, config: RouterConfig) -> Self {
        Router {
            model: CallModel::new(&config.pbx),
            pbx: config.pbx,
            told: None,
            deferred: None,
            directory,
            partitions,
            outlets: HashMap::new(),
            gaps: BTreeSet::new(),
            ending: HashMap::new(),
            link: config.link,
            link_stats: config.link_stats,
            resync_every: config.resync_every,
            resyncing: None,
            resyncs: 0,
            resync_retry: RESYNC_RETRY_MIN,
            resync_bound: config.socket_timeout * 3,
            store: config.store,
            commands: config.commands,
            metrics: config.metrics,
            cluster: config.cluster,
            sink: None,
            restoring: HashMap::new(),
            ghosts: HashMap::new(),
            media: MediaAsks::default(),
        }
    }

    /// The outlet of partition `key`, if it exists; a missing one is looked up again next
    /// time (its context may be added at any time).
    fn outlet(&mut self, key: &str) -> Option<&mut Outlet<PartitionEvents>> {
        if !self.outlets.contains_key(key) {
            let slot = self.partitions.slot(key)?;
            self.outlets.insert(key.to_owned(), slot.outlet());
        }
        self.outlets.get_mut(key)
    }

    /// The partition keys a call event goes to.
    fn keys(&self, event: &CallEvent) -> Vec<String> {
        if self.partitions.separated() {
            event.call.contexts.clone()
        } else {
            vec![ALL.to_owned()]
        }
    }

    /// Dispatches call events; ended calls are recorded first, and their `hungup` goes
    /// out once the record is on disk (with its record id), or after the store's write
    /// timeout (without).
    fn record_then_dispatch(
        &mut self,
        mut events: Vec<CallEvent>,
        received: Instant,
        ctx: &mut Context<Self>,
    ) {
        self.restore(&mut events);
        self.ask_media(&events, ctx);
        let Some(store) = self.store.as_ref().map(|s| s.writer.clone()) else {
            return self.dispatch(events, received);
        };
        let (ended, now): (Vec<CallEvent>, Vec<CallEvent>) = events
            .into_iter()
            .partition(|e| e.kind == EventKind::Hungup);
        self.dispatch(now, received);
        if ended.is_empty() {
            return;
        }
        let recorded = store.record(ended.iter().map(|e| e.call.clone()).collect());
        for event in &ended {
            self.ending
                .insert(event.call.id.clone(), event.call.contexts.clone());
        }
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(recorded).map(move |ids, act, _| {
                let mut ended = ended;
                for (event, id) in ended.iter_mut().zip(ids) {
                    act.ending.remove(&event.call.id);
                    event.call.record_id = id;
                }
                act.dispatch(ended, received);
                if let Some(state) = act.ending.is_empty().then(|| act.deferred.take()).flatten() {
                    act.announce(state);
                }
            }),
        );
    }

    fn dispatch(&mut self, events: Vec<CallEvent>, received: Instant) {
        let mut by_key: HashMap<String, Vec<Change>> = HashMap::new();
        let dir = self.directory.get();
        for event in events {
            self.metrics
                .call_event(&self.pbx, event.kind, &event.call, &dir);
            let keys = self.keys(&event);
            if self.partitions.separated() {
                for gone in &event.left {
                    by_key
                        .entry(gone.clone())
                        .or_default()
                        .push(Change::Left(event.call.id.clone(), event.at));
                }
            }
            let call = Arc::new(event.call);
            for key in keys {
                by_key.entry(key).or_default().push(Change::Call(
                    event.kind,
                    call.clone(),
                    event.at,
                ));
            }
        }
        for (key, changes) in by_key {
            self.send(key, changes, received);
        }
    }

    /// Cluster mode, until the first resync is over: calls the edges knew from the node
    /// this one took over from take what it knew of them, and milestones the edges were
    /// told already are updates.
    fn restore(&mut self, events: &mut [CallEvent]) {
        for event in events {
            let Some(earlier) = self.restoring.get(&event.call.id) else {
                continue;
            };
            self.model.inherit(&event.call.id, earlier);
            event.call.inherit(earlier);
            event.kind = event.kind.after(earlier);
            if event.kind == EventKind::Hungup {
                self.restoring.remove(&event.call.id);
            }
        }
    }

    /// Cluster mode, once a takeover's first resync is over: ends the calls the edges still
    /// hold that the PBX no longer has (they ended while no node held its link), with their
    /// records, and asks for the media of the answered ones whose media the node before did
    /// not learn.
    fn end_restored(&mut self, ctx: &mut Context<Self>) {
        if self.restoring.is_empty() {
            return;
        }
        let restored = std::mem::take(&mut self.restoring);
        let unknown: Vec<&str> = restored
            .keys()
            .map(String::as_str)
            .filter(|id| {
                let call = self.model.call(id);
                call.is_some_and(|c| c.answered.is_some() && c.media.is_none())
            })
            .collect();
        self.ask_media_of(unknown, ctx);
        let now = timenow();
        let ended: Vec<CallEvent> = restored
            .into_values()
            .filter(|call| {
                self.model.call(&call.id).is_none() && !self.ending.contains_key(&call.id)
            })
            .map(|call| CallEvent {
                kind: EventKind::Hungup,
                call: ended(call, now),
                left: Vec::new(),
                at: now,
            })
            .collect();
        if ended.is_empty() {
            return;
        }
        info!(
            "AMI {}: {} call(s) ended while no node held the PBX: hung up",
            self.pbx,
            ended.len()
        );
        self.record_then_dispatch(ended, Instant::now(), ctx);
    }

    fn send(&mut self, key: String, mut changes: Vec<Change>, received: Instant) {
        let healing = self.gaps.contains(&key);
        if healing {
            let mut current = self.live_changes(&key);
            if let Some(ghosts) = self.ghosts.remove(&key) {
                let now = timenow();
                current.extend(
                    ghosts
                        .into_iter()
                        .map(|c| Change::Call(EventKind::Hungup, c, now)),
                );
            }
            current.append(&mut changes);
            changes = current;
        }
        if let Some(sink) = &self.sink {
            let read = timenow() - received.elapsed().as_secs_f64();
            match sink.publish(&key, changes, healing, read) {
                Ok(()) => {
                    self.gaps.remove(&key);
                }
                Err(changes) => self.missed(key, changes, "is a full publishing queue behind"),
            }
            return;
        }
        let events = PartitionEvents { received, changes };
        let missed = match self.outlet(&key).map(|o| o.try_send(events)) {
            Some(Ok(())) => {
                if healing {
                    self.gaps.remove(&key);
                    self.reconcile(&key);
                }
                return;
            }
            Some(Err(SendError::Full(_))) => "is a full mailbox behind",
            Some(Err(SendError::Closed(_))) => "is not running (restarting?)",
            None => "does not exist (yet)",
        };
        self.metrics.gap();
        if self.gaps.insert(key.clone()) {
            error!("partition {key} {missed}; its clients miss events until it takes them again");
        }
    }

    /// Cluster mode: a context's events were not published; it is healed soon.
    fn missed(&mut self, key: String, changes: Vec<Change>, why: &str) {
        let ended = changes.into_iter().filter_map(|c| match c {
            Change::Call(EventKind::Hungup, call, _) => Some(call),
            _ => None,
        });
        self.ghosts.entry(key.clone()).or_default().extend(ended);
        self.metrics.gap();
        if self.gaps.insert(key.clone()) {
            error!("context {key} {why}; its clients miss events until it is healed");
        }
    }

    fn heal(&mut self, key: String) {
        if self.gaps.contains(&key) {
            self.send(key, Vec::new(), Instant::now());
        }
    }

    fn in_partition(&self, key: &str, contexts: &[String]) -> bool {
        key == ALL || contexts.iter().any(|c| c == key)
    }

    /// The calls of a partition that have not ended for its clients: live ones, and
    /// ended ones whose `hungup` waits for their record.
    fn live_ids(&self, key: &str) -> HashSet<String> {
        let ending = self
            .ending
            .iter()
            .map(|(id, contexts)| (id, contexts.as_slice()));
        self.model
            .calls()
            .map(|c| (&c.id, c.contexts.as_slice()))
            .chain(ending)
            .filter(|(_, contexts)| self.in_partition(key, contexts))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Tells the sessions of the contexts that use this PBX that its link is `state`: `down`
    /// when it is lost, `up` once it came back and resynced.
    fn tell(&mut self, state: &'static str) {
        self.link_stats.set_synced(state == "up");
        if self.told.replace(state) == Some(state) {
            return;
        }
        // After the hungups still waiting for their records (a resync's, say).
        if !self.ending.is_empty() {
            self.deferred = Some(state);
            return;
        }
        self.announce(state);
    }

    /// The partition keys of this PBX's contexts.
    fn pbx_keys(&self) -> BTreeSet<String> {
        if self.partitions.separated() {
            let dir = self.directory.get();
            dir.contexts_of_pbx(&self.pbx)
                .into_iter()
                .map(str::to_owned)
                .collect()
        } else {
            BTreeSet::from([ALL.to_owned()])
        }
    }

    fn announce(&mut self, state: &'static str) {
        for key in self.pbx_keys() {
            if let Some(sink) = &self.sink {
                sink.status(&key, state);
                continue;
            }
            if let Some(partition) = self.partitions.slot(&key).and_then(|s| s.get()) {
                partition.do_send(PbxStatus {
                    pbx: self.pbx.clone(),
                    state,
                });
            }
        }
    }

    /// Tells a partition which calls are alive, so that it ends the others.
    fn reconcile(&self, key: &str) {
        if let Some(partition) = self.partitions.slot(key).and_then(|s| s.get()) {
            partition.do_send(Reconcile {
                live: self.live_ids(key),
            });
        }
    }

    /// Every live call of a partition, as `updated` events.
    fn live_changes(&self, key: &str) -> Vec<Change> {
        let now = timenow();
        self.model
            .calls()
            .filter(|c| self.in_partition(key, &c.contexts))
            .map(|c| Change::Call(EventKind::Updated, Arc::new(c.clone()), now))
            .collect()
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        ctx.add_stream(self.directory.changes().map(DirectoryChanged));
        if !self.resync_every.is_zero() {
            ctx.run_interval(self.resync_every, |act, ctx| act.resync(ctx));
        }
        if let Some((cluster, holding)) = self.cluster.clone() {
            let sink = Sink::start(cluster, &self.pbx, holding, ctx.address().recipient());
            self.sink = Some(sink.clone());
            let keys = self.pbx_keys().into_iter().collect();
            // What the edges hold, before any event of this PBX is handled.
            ctx.wait(
                actix::fut::wrap_future::<_, Self>(async move { sink.stored(keys).await }).map(
                    |stored, act, ctx| {
                        if !stored.is_empty() {
                            info!(
                                "AMI {}: {} live call(s) taken over from the cluster",
                                act.pbx,
                                stored.len()
                            );
                        }
                        act.restoring = stored;
                        if act.link_stats.snapshot().state == LinkState::Up {
                            act.resync(ctx);
                        }
                    },
                ),
            );
            return;
        }
        if self.link_stats.snapshot().state == LinkState::Up {
            self.resync(ctx);
        }
    }
}

impl Handler<PublishFailed> for Router {
    type Result = ();

    fn handle(&mut self, failed: PublishFailed, ctx: &mut Context<Self>) {
        let key = failed.key.clone();
        self.missed(failed.key, failed.changes, "lost events on NATS");
        ctx.run_later(HEAL_AFTER, move |act, _| act.heal(key));
    }
}

impl Handler<AmiEvents> for Router {
    type Result = ();

    fn handle(&mut self, batch: AmiEvents, ctx: &mut Context<Self>) {
        let dir = self.directory.get();
        let read_at = timenow() - batch.received.elapsed().as_secs_f64();
        let now = (read_at * 1000.0).round() / 1000.0;
        let mut out = Vec::new();
        let mut resynced = false;
        for item in batch.items {
            match item {
                AmiItem::Event(event) => {
                    if let Some(stamp) = event.get("Timestamp") {
                        self.metrics.pbx_stamp(&self.pbx, stamp, read_at);
                    }
                    out.extend(self.model.apply(&event, now, &dir))
                }
                AmiItem::ListTaken(tag) => {
                    let mark = self.model.mark();
                    if let Some(entry) = self.resyncing.as_mut().and_then(|r| r.lists.get_mut(&tag))
                    {
                        entry.1 = Some(mark);
                    }
                }
                AmiItem::ListDone(tag, items) => match self.media.done(tag) {
                    Some(uid) => {
                        out.extend(self.media_done(&uid, items, now));
                        self.pump_media(ctx);
                    }
                    None => {
                        let (events, completed) = self.list_done(tag, items, now, &dir, ctx);
                        out.extend(events);
                        resynced |= completed;
                    }
                },
            }
        }
        if !out.is_empty() {
            self.record_then_dispatch(coalesce(out), batch.received, ctx);
        }
        if resynced {
            self.resynced(ctx);
        }
    }
}

impl Router {
    /// A resync completed: what it proved is told, and the link is up.
    fn resynced(&mut self, ctx: &mut Context<Self>) {
        if self.sink.is_some() {
            self.end_restored(ctx);
        } else {
            for key in self.partitions.keys() {
                self.reconcile(&key);
            }
        }
        self.tell("up");
    }
}

impl Handler<LinkChanged> for Router {
    type Result = ();

    fn handle(&mut self, msg: LinkChanged, ctx: &mut Context<Self>) {
        match msg.state {
            LinkState::Up => self.resync(ctx),
            // Its lists went with the link.
            LinkState::Down(_) => {
                self.resyncing = None;
                self.media.forget_waiting();
                self.tell("down");
            }
            LinkState::Connecting => {}
        }
    }
}

impl StreamHandler<DirectoryChanged> for Router {
    fn handle(&mut self, DirectoryChanged(dir): DirectoryChanged, ctx: &mut Context<Self>) {
        let events = self.model.refresh(timenow(), &dir);
        self.record_then_dispatch(events, Instant::now(), ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<Shutdown> for Router {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
