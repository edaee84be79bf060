//! Which ingest node is active for a PBX: the one holding its lease, a key of the leases
//! bucket created if absent and renewed by revision-checked updates. A lease not renewed
//! vanishes `lease_ttl` after its last renewal (the bucket's max age), and a standby then
//! takes it. The revision that created a lease is its epoch: it grows with each holder, and
//! edges drop events of an older epoch than one they have seen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use async_nats::jetstream::kv;
use ctid_proto::wire::token;
use log::{info, warn};

use super::Cluster;
use crate::supervisor::Shutdown;

/// Whether this node holds a PBX's lease, and until when for sure: shared with the
/// PBX's publisher, which publishes nothing past it.
#[derive(Clone, Default)]
pub struct Holding(Arc<Held>);

#[derive(Default)]
struct Held {
    epoch: AtomicU64,
    until: Mutex<Option<Instant>>,
}

impl Holding {
    /// The epoch of the lease held now, if any.
    pub fn epoch(&self) -> Option<u64> {
        let until = *self.0.until.lock().unwrap_or_else(|p| p.into_inner());
        until
            .filter(|u| Instant::now() < *u)
            .map(|_| self.0.epoch.load(Ordering::SeqCst))
    }

    fn hold(&self, epoch: u64, until: Instant) {
        self.0.epoch.store(epoch, Ordering::SeqCst);
        *self.0.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    fn release(&self) {
        *self.0.until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

enum State {
    Standby,
    Active { revision: u64 },
}

/// What a lease keeper does when its node gains or loses the lease (starts or stops the
/// PBX's link and router).
pub type OnChange = Box<dyn Fn(bool) + Send>;

/// Holds, or waits for, the lease of one PBX.
pub struct LeaseKeeper {
    cluster: Cluster,
    pbx: String,
    holding: Holding,
    on_change: OnChange,
    state: State,
    bucket: Option<kv::Store>,
    /// An operation on NATS is under way.
    busy: bool,
    /// The last failure was logged (it is logged once per run of failures).
    failing: bool,
}

impl LeaseKeeper {
    pub fn new(cluster: Cluster, pbx: &str, holding: Holding, on_change: OnChange) -> Self {
        LeaseKeeper {
            cluster,
            pbx: pbx.to_owned(),
            holding,
            on_change,
            state: State::Standby,
            bucket: None,
            busy: false,
            failing: false,
        }
    }

    fn period(&self) -> Duration {
        self.cluster.lease_ttl / 3
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        // A lease not renewed in time is gone, whatever NATS says later.
        if matches!(self.state, State::Active { .. }) && self.holding.epoch().is_none() {
            warn!(
                "cluster: lease for PBX {} expired unrenewed; standing by",
                self.pbx
            );
            self.lose();
        }
        if self.busy {
            return;
        }
        self.busy = true;
        let cluster = self.cluster.clone();
        let bucket = self.bucket.clone();
        let (key, node) = (token(&self.pbx), self.cluster.node.clone());
        let revision = match self.state {
            State::Standby => None,
            State::Active { revision } => Some(revision),
        };
        let asked = Instant::now();
        let within = self.period();
        let work = async move {
            let bucket = match bucket {
                Some(b) => b,
                None => cluster.leases().await.map_err(Failure::Nats)?,
            };
            let outcome = match revision {
                None => bucket
                    .create(&key, node.into())
                    .await
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => Failure::Held,
                        _ => Failure::Nats(e.to_string()),
                    }),
                Some(rev) => {
                    bucket
                        .update(&key, node.into(), rev)
                        .await
                        .map_err(|e| match e.kind() {
                            kv::UpdateErrorKind::WrongLastRevision => Failure::Held,
                            _ => Failure::Nats(e.to_string()),
                        })
                }
            };
            outcome.map(|rev| (bucket, rev))
        };
        let work = async move {
            tokio::time::timeout(within, work)
                .await
                .unwrap_or_else(|_| Err(Failure::Nats("no answer in time".into())))
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(work).map(move |res, act, _| {
                act.busy = false;
                act.settle(res, asked);
            }),
        );
    }

    fn settle(&mut self, res: Result<(kv::Store, u64), Failure>, asked: Instant) {
        let ttl = self.cluster.lease_ttl;
        match (res, &self.state) {
            (Ok((bucket, revision)), State::Standby) => {
                self.bucket = Some(bucket);
                self.failing = false;
                info!(
                    "cluster: lease for PBX {} acquired by {} (epoch {revision})",
                    self.pbx, self.cluster.node
                );
                self.state = State::Active { revision };
                self.holding.hold(revision, asked + ttl);
                (self.on_change)(true);
            }
            (Ok((_, revision)), State::Active { .. }) => {
                self.failing = false;
                self.state = State::Active { revision };
                let epoch = self.holding.0.epoch.load(Ordering::SeqCst);
                self.holding.hold(epoch, asked + ttl);
            }
            (Err(Failure::Held), State::Standby) => self.failing = false,
            (Err(Failure::Held), State::Active { .. }) => {
                warn!("cluster: lease for PBX {} lost to another node", self.pbx);
                self.lose();
            }
            (Err(Failure::Nats(why)), state) => {
                if !self.failing {
                    warn!("cluster: lease for PBX {}: {why}", self.pbx);
                    self.failing = true;
                }
                if matches!(state, State::Active { .. }) && self.holding.epoch().is_none() {
                    warn!(
                        "cluster: lease for PBX {} expired unrenewed; standing by",
                        self.pbx
                    );
                    self.lose();
                }
            }
        }
    }

    fn lose(&mut self) {
        self.state = State::Standby;
        self.holding.release();
        (self.on_change)(false);
    }
}

enum Failure {
    /// Another node holds the lease.
    Held,
    Nats(String),
}

impl Actor for LeaseKeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(self.period(), |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if matches!(self.state, State::Active { .. }) {
            self.holding.release();
            (self.on_change)(false);
        }
    }
}

impl Handler<Shutdown> for LeaseKeeper {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        // Give the lease back at once, so that a standby need not wait for it to expire.
        if let (State::Active { revision }, Some(bucket)) = (&self.state, self.bucket.clone()) {
            let (key, revision) = (token(&self.pbx), *revision);
            ctx.wait(actix::fut::wrap_future(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    bucket.delete_expect_revision(&key, Some(revision)),
                )
                .await;
            }));
        }
        ctx.stop();
    }
}
