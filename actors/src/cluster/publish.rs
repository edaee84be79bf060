//! The active ingest's side of a PBX's events: each change of a context's calls is one
//! message on the context's stream (whose sequence clients see as `seq`), stamped with the
//! lease's epoch; after its ack, the call as it is now goes to the live calls bucket (and
//! leaves it when the call ends), for the edges that start later and the ingest that takes
//! over. Once a batch is all in the bucket, the context's `applied` mark moves to its last
//! event: the bucket and the stream up to the mark agree, and a node that takes over
//! replays the stream after the mark.
//!
//! Publishing runs on a task of its own, fed by a bounded queue: the router never waits
//! for NATS. A change that cannot be published, or that does not fit in the queue, makes
//! its context a gap the router heals (every live call again, and the calls that ended);
//! until the healing batch is published, the context's other batches are refused, so that
//! the mark never passes a batch the bucket lacks.

use std::collections::{HashMap, HashSet};

use actix::prelude::*;
use async_nats::jetstream::kv;
use bytes::Bytes;
use ctid_proto::calls::{Call, EventKind};
use ctid_proto::wire::{LiveCall, WireCall, WireChange, WireEvent};
use log::{debug, warn};
use tokio::sync::{mpsc, oneshot};

use super::lease::Holding;
use super::Cluster;
use crate::partition::Change;

/// Changes waiting for the publisher, at most.
const QUEUE: usize = 4096;

/// A context's changes that were not all published (some may have been).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishFailed {
    pub key: String,
    pub changes: Vec<Change>,
}

enum Job {
    /// A context's changes; `heals`: they bring its edges up to date after a gap.
    Changes {
        key: String,
        changes: Vec<Change>,
        heals: bool,
        /// When their AMI events were read (epoch seconds).
        read: f64,
    },
    Status(String, &'static str),
    Stored(Vec<String>, oneshot::Sender<HashMap<String, Call>>),
}

/// The router's handle on its PBX's publisher.
#[derive(Clone)]
pub struct Sink(mpsc::Sender<Job>);

impl Sink {
    pub fn start(
        cluster: Cluster,
        pbx: &str,
        holding: Holding,
        failed: Recipient<PublishFailed>,
    ) -> Sink {
        let (tx, rx) = mpsc::channel(QUEUE);
        let publisher = Publisher {
            cluster,
            pbx: pbx.to_owned(),
            holding,
            failed,
            bucket: None,
            streams: HashSet::new(),
            gaps: HashSet::new(),
        };
        actix_rt::spawn(publisher.run(rx));
        Sink(tx)
    }

    /// Queues a context's changes, whose AMI events were read at `read` (epoch seconds); if
    /// the queue is full, gives them back.
    pub fn publish(
        &self,
        key: &str,
        changes: Vec<Change>,
        heals: bool,
        read: f64,
    ) -> Result<(), Vec<Change>> {
        let job = Job::Changes {
            key: key.to_owned(),
            changes,
            heals,
            read,
        };
        self.0.try_send(job).map_err(|e| match e.into_inner() {
            Job::Changes { changes, .. } => changes,
            _ => Vec::new(),
        })
    }

    /// Tells a context's edges that the PBX's link is `state` (`up`, `down`).
    pub fn status(&self, key: &str, state: &'static str) {
        let _ = self.0.try_send(Job::Status(key.to_owned(), state));
    }

    /// The live calls of this PBX, by id, as they were last published (by this node or by
    /// the one it took over from) to the contexts of `keys`.
    pub async fn stored(&self, keys: Vec<String>) -> HashMap<String, Call> {
        let (tx, rx) = oneshot::channel();
        if self.0.send(Job::Stored(keys, tx)).await.is_err() {
            return HashMap::new();
        }
        rx.await.unwrap_or_default()
    }
}

struct Publisher {
    cluster: Cluster,
    pbx: String,
    holding: Holding,
    failed: Recipient<PublishFailed>,
    bucket: Option<kv::Store>,
    /// Contexts whose stream is known to exist.
    streams: HashSet<String>,
    /// Contexts with a failed batch, waiting for their healing batch.
    gaps: HashSet<String>,
}

impl Publisher {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            match job {
                Job::Changes {
                    key,
                    changes,
                    heals,
                    read,
                } => {
                    if !heals && self.gaps.contains(&key) {
                        let _ = self.failed.try_send(PublishFailed { key, changes });
                        continue;
                    }
                    match self.publish(&key, &changes, read).await {
                        Ok(()) => {
                            self.gaps.remove(&key);
                        }
                        Err(why) => {
                            warn!("cluster: events of context {key} not published: {why}");
                            self.gaps.insert(key.clone());
                            let _ = self.failed.try_send(PublishFailed { key, changes });
                        }
                    }
                }
                Job::Status(key, state) => {
                    let subject = self
                        .cluster
                        .subject(&format!("status.{}", ctid_proto::wire::token(&key)));
                    let body = serde_json::json!({"pbx": self.pbx, "state": state});
                    let _ = self
                        .cluster
                        .client
                        .publish(subject, Bytes::from(body.to_string()))
                        .await;
                }
                Job::Stored(keys, reply) => {
                    let stored = self.stored(keys).await.unwrap_or_else(|why| {
                        warn!("cluster: live calls of PBX {} not read: {why}", self.pbx);
                        HashMap::new()
                    });
                    let _ = reply.send(stored);
                }
            }
        }
    }

    async fn bucket(&mut self) -> Result<kv::Store, String> {
        if let Some(b) = &self.bucket {
            return Ok(b.clone());
        }
        let bucket = self.cluster.calls().await?;
        self.bucket = Some(bucket.clone());
        Ok(bucket)
    }

    async fn publish(&mut self, key: &str, changes: &[Change], read: f64) -> Result<(), String> {
        let Some(epoch) = self.holding.epoch() else {
            debug!("cluster: PBX {}: no lease, nothing published", self.pbx);
            return Ok(());
        };
        if !self.streams.contains(key) {
            self.cluster.context(key).await?;
            self.streams.insert(key.to_owned());
        }
        let subject = self.cluster.context_subject(key, &self.pbx);
        let mut acks = Vec::with_capacity(changes.len());
        for change in changes {
            let (wire, live) = match change {
                Change::Call(kind, call, _) => (
                    WireChange::Call {
                        kind: *kind,
                        call: Box::new(WireCall::from(&**call)),
                    },
                    (*kind != ctid_proto::calls::EventKind::Hungup).then(|| call.clone()),
                ),
                Change::Left(id, _) => (WireChange::Left { id: id.clone() }, None),
            };
            let (id, at) = match change {
                Change::Call(_, call, at) => (call.id.clone(), *at),
                Change::Left(id, at) => (id.clone(), *at),
            };
            let event = WireEvent {
                epoch,
                pbx: self.pbx.clone(),
                change: wire,
                at: Some(at),
                read: Some(read),
            };
            let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
            let ack = self
                .cluster
                .js
                .publish(subject.clone(), body.into())
                .await
                .map_err(|e| e.to_string())?;
            acks.push((ack, id, live));
        }
        let bucket = self.bucket().await?;
        let mut last = None;
        for (ack, id, live) in acks {
            let ack = ack.await.map_err(|e| e.to_string())?;
            last = Some(ack.sequence);
            let entry = Cluster::call_key(key, &id);
            match live {
                Some(call) => {
                    let value = LiveCall {
                        seq: ack.sequence,
                        epoch,
                        call: WireCall::from(&*call),
                    };
                    let body = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
                    bucket
                        .put(entry, body.into())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                None => {
                    bucket.delete(entry).await.map_err(|e| e.to_string())?;
                }
            }
        }
        if let Some(last) = last {
            let applied = self.cluster.applied().await?;
            applied
                .put(
                    Cluster::applied_key(key, &self.pbx),
                    last.to_string().into(),
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The bucket's live calls of this PBX, then what each context's stream has after its
    /// `applied` mark (the batches the bucket may lack).
    async fn stored(&mut self, keys: Vec<String>) -> Result<HashMap<String, Call>, String> {
        let mut calls: HashMap<String, Call> = super::feed::live_calls(&self.cluster, ">")
            .await?
            .into_iter()
            .map(|live| live.call.into_call())
            .filter(|call| call.pbx == self.pbx)
            .map(|call| (call.id.clone(), call))
            .collect();
        let applied = self.cluster.applied().await?;
        for key in keys {
            let mark = applied
                .get(Cluster::applied_key(&key, &self.pbx))
                .await
                .map_err(|e| e.to_string())?
                .and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok())
                .unwrap_or(0);
            let tail = super::feed::tail(&self.cluster, &key, &self.pbx, mark + 1).await?;
            for event in tail {
                match event.change {
                    WireChange::Call {
                        kind: EventKind::Hungup,
                        call,
                    } => {
                        calls.remove(&call.call.id);
                    }
                    WireChange::Call { call, .. } => {
                        let call = call.into_call();
                        calls.insert(call.id.clone(), call);
                    }
                    WireChange::Left { .. } => {}
                }
            }
        }
        Ok(calls)
    }
}

/// A call of the bucket that the PBX no longer has, as it ends now.
pub fn ended(mut call: Call, now: f64) -> Call {
    call.state = ctid_proto::calls::CallState::Ended;
    call.ended = Some(now);
    call
}
