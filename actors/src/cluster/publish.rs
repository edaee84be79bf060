//! The active ingest's side of a PBX's events: each change of a context's calls is one
//! message on the context's stream (whose sequence clients see as `seq`), stamped with the
//! lease's epoch; after its ack, the call as it is now goes to the live calls bucket (and
//! leaves it when the call ends), for the edges that start later.
//!
//! Publishing runs on a task of its own, fed by a bounded queue: the router never waits
//! for NATS. A change that cannot be published, or that does not fit in the queue, makes
//! its context a gap the router heals (every live call again, and the calls that ended).

use std::collections::{HashMap, HashSet};

use actix::prelude::*;
use async_nats::jetstream::kv;
use async_nats::HeaderMap;
use bytes::Bytes;
use ctid_proto::calls::Call;
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
    Changes(String, Vec<Change>),
    Status(String, &'static str),
    Stored(oneshot::Sender<HashMap<String, Call>>),
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
            sent: 0,
        };
        actix_rt::spawn(publisher.run(rx));
        Sink(tx)
    }

    /// Queues a context's changes; if the queue is full, gives them back.
    pub fn publish(&self, key: &str, changes: Vec<Change>) -> Result<(), Vec<Change>> {
        self.0
            .try_send(Job::Changes(key.to_owned(), changes))
            .map_err(|e| match e.into_inner() {
                Job::Changes(_, changes) => changes,
                _ => Vec::new(),
            })
    }

    /// Tells a context's edges that the PBX's link is `state` (`up`, `down`).
    pub fn status(&self, key: &str, state: &'static str) {
        let _ = self.0.try_send(Job::Status(key.to_owned(), state));
    }

    /// The live calls of this PBX in the bucket, by id, as they were last published (by
    /// this node or by the one it took over from).
    pub async fn stored(&self) -> HashMap<String, Call> {
        let (tx, rx) = oneshot::channel();
        if self.0.send(Job::Stored(tx)).await.is_err() {
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
    /// Messages published, for their ids (JetStream drops a duplicate id).
    sent: u64,
}

impl Publisher {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            match job {
                Job::Changes(key, changes) => {
                    if let Err(why) = self.publish(&key, &changes).await {
                        warn!("cluster: events of context {key} not published: {why}");
                        let _ = self.failed.try_send(PublishFailed { key, changes });
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
                Job::Stored(reply) => {
                    let stored = self.stored().await.unwrap_or_else(|why| {
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

    async fn publish(&mut self, key: &str, changes: &[Change]) -> Result<(), String> {
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
                Change::Call(kind, call) => (
                    WireChange::Call {
                        kind: *kind,
                        call: Box::new(WireCall::from(&**call)),
                    },
                    (*kind != ctid_proto::calls::EventKind::Hungup).then(|| call.clone()),
                ),
                Change::Left(id) => (WireChange::Left { id: id.clone() }, None),
            };
            let id = match change {
                Change::Call(_, call) => call.id.clone(),
                Change::Left(id) => id.clone(),
            };
            let event = WireEvent {
                epoch,
                pbx: self.pbx.clone(),
                change: wire,
            };
            let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
            self.sent += 1;
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{}.{epoch}.{}", self.pbx, self.sent).as_str(),
            );
            let ack = self
                .cluster
                .js
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .map_err(|e| e.to_string())?;
            acks.push((ack, id, live));
        }
        let bucket = self.bucket().await?;
        for (ack, id, live) in acks {
            let ack = ack.await.map_err(|e| e.to_string())?;
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
        Ok(())
    }

    async fn stored(&mut self) -> Result<HashMap<String, Call>, String> {
        let calls = super::feed::live_calls(&self.cluster, ">").await?;
        Ok(calls
            .into_iter()
            .map(|live| live.call.into_call())
            .filter(|call| call.pbx == self.pbx)
            .map(|call| (call.id.clone(), call))
            .collect())
    }
}

/// A call of the bucket that the PBX no longer has, as it ends now.
pub fn ended(mut call: Call, now: f64) -> Call {
    call.state = ctid_proto::calls::CallState::Ended;
    call.ended = Some(now);
    call
}
