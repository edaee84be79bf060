//! The router: takes the events of the AMI link, runs the call model, and sends each call
//! event to the partitions of the call's contexts.
//!
//! It resyncs from Asterisk (CoreShowChannels, QueueStatus) whenever the link comes up,
//! when it starts (after a restart its model is empty), and periodically, so that a lost
//! Hangup cannot keep a call alive forever. The lists come in the event stream, and are
//! applied there: see `ctid_proto::calls::resync`. A partition whose mailbox was full
//! misses events; the next batch it gets starts with every live call of its context, so
//! its clients converge again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ctid_proto::agi::AgiRequest;
use ctid_proto::ami::{AmiMessage, AmiPacket};
use ctid_proto::calls::{coalesce, Call, CallEvent, CallModel, Disposition, EventKind, Mark};
use ctid_proto::commands::{plan, CommandSettings, Plan, Sender};
use ctid_proto::cti::{timenow, ErrorCode, Request};
use ctid_proto::directory::{Directory, User};
use futures_util::StreamExt;
use log::{debug, error, info, warn};

use crate::ami::{
    AmiError, AmiEvents, AmiItem, AmiLink, AmiRequest, LinkChanged, LinkState, LinkStats, ListTag,
};
use crate::ask::{ask, Unanswered};
use crate::cluster::lease::Holding;
use crate::cluster::publish::{ended, PublishFailed, Sink};
use crate::cluster::Cluster;
use crate::directory::DirectoryHandle;
use crate::metrics::Metrics;
use crate::partition::{Change, PartitionEvents, Partitions, PbxStatus, Reconcile, ALL};
use crate::store::{Dispose, Disposer, LastAgent, Stores};
use crate::supervisor::{Outlet, Shutdown, Slot};

/// Batches of AMI events the router may have queued before the link counts it overloaded.
const MAILBOX: usize = 1024;

#[derive(Message)]
#[rtype(result = "()")]
struct DirectoryChanged(Arc<Directory>);

/// Tags of in-stream lists, unique across router restarts.
static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    Channels,
    Queues,
}

/// A resync under way: the lists it asked for, and where Asterisk took each.
struct Resyncing {
    number: u64,
    lists: HashMap<ListTag, (List, Option<Mark>)>,
}

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
            resync_bound: config.socket_timeout * 3,
            store: config.store,
            commands: config.commands,
            metrics: config.metrics,
            cluster: config.cluster,
            sink: None,
            restoring: HashMap::new(),
            ghosts: HashMap::new(),
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
                        .push(Change::Left(event.call.id.clone()));
                }
            }
            let call = Arc::new(event.call);
            for key in keys {
                by_key
                    .entry(key)
                    .or_default()
                    .push(Change::Call(event.kind, call.clone()));
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

    /// Cluster mode: ends the calls the edges still hold that the PBX no longer has (they
    /// ended while no node held its link), with their records.
    fn end_restored(&mut self, ctx: &mut Context<Self>) {
        if self.restoring.is_empty() {
            return;
        }
        let now = timenow();
        let ended: Vec<CallEvent> = std::mem::take(&mut self.restoring)
            .into_values()
            .filter(|call| {
                self.model.call(&call.id).is_none() && !self.ending.contains_key(&call.id)
            })
            .map(|call| CallEvent {
                kind: EventKind::Hungup,
                call: ended(call, now),
                left: Vec::new(),
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
                current.extend(
                    ghosts
                        .into_iter()
                        .map(|c| Change::Call(EventKind::Hungup, c)),
                );
            }
            current.append(&mut changes);
            changes = current;
        }
        if let Some(sink) = &self.sink {
            match sink.publish(&key, changes, healing) {
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
            Change::Call(EventKind::Hungup, call) => Some(call),
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
        self.model
            .calls()
            .filter(|c| self.in_partition(key, &c.contexts))
            .map(|c| Change::Call(EventKind::Updated, Arc::new(c.clone())))
            .collect()
    }

    /// Asks Asterisk for its channels and queue entries, in the event stream.
    fn resync(&mut self, ctx: &mut Context<Self>) {
        if self.resyncing.is_some() {
            return;
        }
        let Some(link) = self.link.get() else {
            return;
        };
        self.resyncs += 1;
        self.metrics.resync(&self.pbx);
        let number = self.resyncs;
        let tag = || NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        let (channels, queues) = (tag(), tag());
        self.resyncing = Some(Resyncing {
            number,
            lists: HashMap::from([
                (channels, (List::Channels, None)),
                (queues, (List::Queues, None)),
            ]),
        });
        let limit = self.resync_bound;
        let asking = async move {
            let list = |action, tag| {
                let request = AmiRequest::in_stream(AmiPacket::action(action), tag);
                ask(&link, request, limit)
            };
            let sent = list("CoreShowChannels", channels).await;
            let queues_sent = list("QueueStatus", queues).await;
            (sent, queues_sent)
        };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(asking).map(
            move |(sent, queues_sent), act, _| {
                let failed = |r: Result<Result<_, AmiError>, Unanswered>| match r {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(Unanswered::Late) => Some("the AMI link is busy".to_owned()),
                    Err(Unanswered::Gone) => Some("the AMI link stopped".to_owned()),
                };
                let Some(resync) = act.resyncing.as_mut().filter(|r| r.number == number) else {
                    return;
                };
                if let Some(why) = failed(queues_sent) {
                    debug!("resync: QueueStatus not sent: {why}");
                    resync.lists.remove(&queues);
                }
                if let Some(why) = failed(sent) {
                    warn!("resync with Asterisk failed: {why}");
                    act.resyncing = None;
                }
            },
        ));
        ctx.run_later(self.resync_bound, move |act, _| {
            if act.resyncing.as_ref().is_some_and(|r| r.number == number) {
                warn!(
                    "resync with Asterisk abandoned: its lists did not come back within {}",
                    crate::settings::human_duration(act.resync_bound)
                );
                act.resyncing = None;
            }
        });
    }

    /// Applies a list of the resync under way where it completed in the stream.
    fn list_done(
        &mut self,
        tag: ListTag,
        items: Result<Vec<AmiMessage>, AmiError>,
        now: f64,
        dir: &Directory,
    ) -> Vec<CallEvent> {
        let Some(resync) = self.resyncing.as_mut() else {
            return Vec::new();
        };
        let Some((list, taken)) = resync.lists.remove(&tag) else {
            return Vec::new();
        };
        let done = resync.lists.is_empty();
        let taken = taken.unwrap_or_else(|| self.model.mark());
        let events = match (list, items) {
            (List::Channels, Ok(live)) => self.model.resync_channels(taken, &live, now, dir),
            (List::Queues, Ok(waiting)) => self.model.resync_queues(taken, &waiting, dir),
            (List::Channels, Err(e)) => {
                warn!("resync with Asterisk failed: CoreShowChannels: {e}");
                self.resyncing = None;
                return Vec::new();
            }
            // Without queue data (an Asterisk without app_queue), calls are still resynced.
            (List::Queues, Err(e)) => {
                debug!("resync: QueueStatus failed: {e}");
                Vec::new()
            }
        };
        if done {
            self.resyncing = None;
            info!(
                "AMI {}: resynced with Asterisk: {} live channels in {} calls",
                self.pbx,
                self.model.channel_count(),
                self.model.calls().count()
            );
        }
        events
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
                AmiItem::ListDone(tag, items) => {
                    out.extend(self.list_done(tag, items, now, &dir));
                    resynced |= self.resyncing.is_none();
                }
            }
        }
        if !out.is_empty() {
            self.record_then_dispatch(coalesce(out), batch.received, ctx);
        }
        if resynced {
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
}

impl Handler<LinkChanged> for Router {
    type Result = ();

    fn handle(&mut self, msg: LinkChanged, ctx: &mut Context<Self>) {
        match msg.state {
            LinkState::Up => self.resync(ctx),
            // Its lists went with the link.
            LinkState::Down(_) => {
                self.resyncing = None;
                self.tell("down");
            }
            LinkState::Connecting => {}
        }
    }
}

impl StreamHandler<DirectoryChanged> for Router {
    fn handle(&mut self, DirectoryChanged(dir): DirectoryChanged, ctx: &mut Context<Self>) {
        let events = self.model.refresh(&dir);
        self.record_then_dispatch(events, Instant::now(), ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

/// Checks a client's `ipbxcommand` against the call model and plans its AMI actions.
#[derive(Message)]
#[rtype(result = "Result<Plan, ErrorCode>")]
pub struct PlanCommand {
    pub request: Request,
    pub user: User,
    /// The user's partition key; None for a user who sees nothing.
    pub partition: Option<String>,
}

impl Handler<PlanCommand> for Router {
    type Result = Result<Plan, ErrorCode>;

    fn handle(&mut self, msg: PlanCommand, _: &mut Context<Self>) -> Self::Result {
        let sender = Sender {
            user: &msg.user,
            partition: msg.partition.as_deref(),
            separated: self.partitions.separated(),
        };
        plan(
            &msg.request,
            &sender,
            &self.directory.get(),
            &self.model,
            &self.commands,
        )
    }
}

/// Sets a call's disposition: a live call's here (its clients see it), an ended one's in
/// the call records.
#[derive(Message)]
#[rtype(result = "Result<(), ErrorCode>")]
pub struct SetDisposition {
    pub call_id: String,
    pub disposition: Disposition,
    pub by: Disposer,
}

impl SetDisposition {
    /// `user`'s disposition of a call, from their partition.
    pub fn by(
        user: &User,
        partition: Option<&str>,
        call_id: String,
        code: String,
        note: Option<String>,
        at: f64,
    ) -> SetDisposition {
        SetDisposition {
            call_id,
            disposition: Disposition {
                code,
                note,
                by: user.login.clone(),
                at,
            },
            by: Disposer {
                login: user.login.clone(),
                line: user.line.as_ref().map(|l| l.interface.clone()),
                context: partition.filter(|p| *p != ALL).map(str::to_owned),
                role: user.role,
            },
        }
    }
}

impl Handler<SetDisposition> for Router {
    type Result = ResponseFuture<Result<(), ErrorCode>>;

    fn handle(&mut self, msg: SetDisposition, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(call) = self.model.call(&msg.call_id) {
            if !msg.by.may_dispose_call(call) {
                return Box::pin(std::future::ready(Err(ErrorCode::Unallowed)));
            }
            let events = self
                .model
                .set_disposition(&msg.call_id, msg.disposition)
                .unwrap_or_default();
            self.record_then_dispatch(events, Instant::now(), ctx);
            return Box::pin(std::future::ready(Ok(())));
        }
        let Some(store) = self.store.as_ref().map(|s| s.writer.clone()) else {
            return Box::pin(std::future::ready(Err(ErrorCode::StoreUnavailable)));
        };
        let disposed = store.dispose(Dispose {
            call_id: msg.call_id,
            disposition: msg.disposition,
            by: msg.by,
        });
        Box::pin(async move {
            match disposed.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(ErrorCode::Unallowed),
                Err(e) => {
                    error!("disposition not written: {e}");
                    Err(e.code())
                }
            }
        })
    }
}

/// Resyncs the call model with Asterisk now (the dialplan was reloaded).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync;

impl Handler<Resync> for Router {
    type Result = ();

    fn handle(&mut self, _: Resync, ctx: &mut Context<Self>) {
        self.resync(ctx);
    }
}

/// Runs a FastAGI script for the channel that called it; the answer is the channel
/// variables to set, or why the script failed.
#[derive(Message)]
#[rtype(result = "Result<Vec<(String, String)>, String>")]
pub struct RunAgi {
    pub request: AgiRequest,
    /// The channel's Linkedid, asked of Asterisk by the FastAGI server.
    pub linkedid: Option<String>,
}

/// Values Asterisk gives for no caller ID name.
fn no_name(name: Option<&str>, number: Option<&str>) -> bool {
    match name {
        None | Some("") | Some("unknown") | Some("<unknown>") => true,
        Some(n) => Some(n) == number,
    }
}

impl Router {
    /// The context of the call of an AGI channel: its call's, else its dialplan context's.
    fn agi_context(&self, req: &AgiRequest) -> Option<String> {
        let call = req
            .get("uniqueid")
            .and_then(|u| self.model.call_of_channel(u));
        match call.and_then(|c| c.contexts.first()) {
            Some(context) => Some(context.clone()),
            None => req.get("context").and_then(|d| {
                self.directory
                    .get()
                    .context_of_dialplan(&self.pbx, d)
                    .map(str::to_owned)
            }),
        }
    }
}

impl Handler<RunAgi> for Router {
    type Result = ResponseFuture<Result<Vec<(String, String)>, String>>;

    fn handle(
        &mut self,
        RunAgi { request, linkedid }: RunAgi,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let ready = |r| -> Self::Result { Box::pin(std::future::ready(r)) };
        let number = request
            .get("callerid")
            .filter(|n| !matches!(*n, "" | "unknown"))
            .map(str::to_owned);
        match request.script.as_str() {
            "callerid" => {
                if !no_name(request.get("calleridname"), number.as_deref()) {
                    return ready(Ok(Vec::new()));
                }
                let dir = self.directory.get();
                let user = match (number.as_deref(), self.agi_context(&request)) {
                    (Some(n), Some(context)) => dir.user_by_number(&context, n),
                    (Some(n), None) if !self.partitions.separated() => dir
                        .users()
                        .find(|u| u.line.as_ref().is_some_and(|l| l.number == n)),
                    _ => None,
                };
                let name = user.map(|u| u.fullname()).filter(|n| !n.is_empty());
                ready(Ok(name
                    .map(|n| ("CALLERID(name)".to_owned(), n))
                    .into_iter()
                    .collect()))
            }
            "ivr" | "attach" => {
                let data = match request.call_data() {
                    Ok(d) => d,
                    Err(e) => return ready(Err(e)),
                };
                let Some(uid) = request.get("uniqueid") else {
                    return ready(Err("the request has no agi_uniqueid".into()));
                };
                let events = self.model.attach(uid, linkedid.as_deref(), data, timenow());
                self.record_then_dispatch(events, Instant::now(), ctx);
                ready(Ok(Vec::new()))
            }
            "route" => {
                let (Some(store), Some(number)) =
                    (self.store.as_ref().map(|s| s.reader.clone()), number)
                else {
                    return ready(Ok(vec![("CTID_LAST_AGENT".into(), String::new())]));
                };
                let context = self
                    .agi_context(&request)
                    .filter(|_| self.partitions.separated());
                let directory = self.directory.clone();
                let asked = store.last_agent(LastAgent { number, context });
                Box::pin(async move {
                    // Without an answer in time the dialplan goes on as for a new caller.
                    let login = asked.await.unwrap_or_else(|e| {
                        warn!("fagi: route without call records: {e}");
                        None
                    });
                    let line = login.as_deref().and_then(|l| {
                        directory
                            .get()
                            .user_by_login(l)
                            .and_then(|u| u.line.clone())
                    });
                    Ok(vec![
                        ("CTID_LAST_AGENT".into(), login.unwrap_or_default()),
                        (
                            "CTID_LAST_AGENT_NUMBER".into(),
                            line.map(|l| l.number).unwrap_or_default(),
                        ),
                    ])
                })
            }
            other => ready(Err(format!("unknown script {other:?}"))),
        }
    }
}

impl Handler<Shutdown> for Router {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
