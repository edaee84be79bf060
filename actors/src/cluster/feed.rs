//! An edge partition's feed: the events of its context, read from the context's stream,
//! whose sequence is the `seq` clients see.
//!
//! A partition that starts empty reads the last `keep` events of the stream (its resume
//! buffer), then the live calls bucket for the calls whose last event is older than
//! that, and is then ready: sessions may join. A partition that restarts, or whose feed
//! broke (NATS lost), goes on from the event after its last.

use std::time::Duration;

use async_nats::jetstream::consumer::{push, DeliverPolicy};
use async_nats::jetstream::{self, stream};
use ctid_proto::wire::{token, LiveCall, WireEvent};
use futures_util::StreamExt;
use log::{info, warn};
use tokio::sync::mpsc;

use super::Cluster;

/// What a partition's feed brings, in stream order.
pub enum Fed {
    /// The event of stream sequence `seq` (None: unreadable, its `seq` stays unused);
    /// `known` is the last sequence the stream had when it was read.
    Event {
        seq: u64,
        known: u64,
        event: Option<WireEvent>,
    },
    /// Live calls of the bucket whose last event came before the events read.
    Seed(Vec<LiveCall>),
    /// Caught up with the stream: sessions may join.
    Ready,
    /// A PBX's link changed (`up`, `down`), as its active ingest tells.
    Status { pbx: String, state: String },
}

/// How long a feed may take to catch up with its stream before it starts again: async-nats
/// retries a broken ordered consumer, or a stalled delivery, without a word.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// Feeds the partition of `key` from the event after `after` (0: from the last `keep`
/// events), then, if it was not `ready` before, the older live calls. The channel closes
/// when the feed breaks.
pub fn start(
    cluster: Cluster,
    key: String,
    after: u64,
    ready: bool,
    keep: usize,
) -> mpsc::Receiver<Fed> {
    let (tx, rx) = mpsc::channel(1024);
    actix_rt::spawn(async move {
        if let Err(why) = feed(&cluster, &key, after, ready, keep, &tx).await {
            warn!("cluster: feed of context {key} broke: {why}; starting it again");
        }
    });
    rx
}

async fn feed(
    cluster: &Cluster,
    key: &str,
    after: u64,
    ready: bool,
    keep: usize,
    tx: &mpsc::Sender<Fed>,
) -> Result<(), String> {
    let mut stream = cluster.context(key).await?;
    let (first, last) = {
        let info = stream
            .info()
            .await
            .map_err(|e| format!("stream of context {key}: {e}"))?;
        (info.state.first_sequence, info.state.last_sequence)
    };
    let fresh = !ready;
    let from = if after == 0 {
        (last + 1).saturating_sub(keep as u64).max(first).max(1)
    } else {
        after + 1
    };
    let mut status = cluster
        .client
        .subscribe(cluster.subject(&format!("status.{}", token(key))))
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: cluster.client.new_inbox(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("consumer of context {key}: {e}"))?;
    let nothing_to_read = consumer.cached_info().num_pending == 0;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut caught_up = false;
    if last < from || nothing_to_read {
        caught_up = catch_up(cluster, key, fresh, from, tx).await?;
    }
    let late = tokio::time::sleep(READY_WITHIN);
    tokio::pin!(late);
    // A consumer does not outlive its server: after a reconnection, it is made again.
    let mut connections = cluster.connections.clone();
    connections.mark_unchanged();
    loop {
        tokio::select! {
            _ = connections.changed() => return Err("NATS reconnected".into()),
            _ = &mut late, if !caught_up => {
                return Err(format!(
                    "not caught up within {READY_WITHIN:?} (the stream was at event {last})"
                ));
            }
            message = messages.next() => {
                let message = match message {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the stream's consumer ended".into()),
                };
                let (seq, pending) = match message.info() {
                    Ok(i) => (i.stream_sequence, i.pending),
                    Err(e) => return Err(format!("a message without its sequence: {e}")),
                };
                let event = serde_json::from_slice::<WireEvent>(&message.payload)
                    .map_err(|e| warn!("cluster: context {key}: event {seq} unreadable: {e}"))
                    .ok();
                let known = seq + pending;
                if tx.send(Fed::Event { seq, known, event }).await.is_err() {
                    return Ok(());
                }
                if !caught_up && (seq >= last || pending == 0) {
                    caught_up = catch_up(cluster, key, fresh, from, tx).await?;
                }
            }
            notice = status.next() => {
                let Some(notice) = notice else {
                    return Err("the status subscription ended".into());
                };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&notice.payload) else {
                    continue;
                };
                let (Some(pbx), Some(state)) = (v["pbx"].as_str(), v["state"].as_str()) else {
                    continue;
                };
                let fed = Fed::Status { pbx: pbx.to_owned(), state: state.to_owned() };
                if tx.send(fed).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// The partition read every event the stream had when the feed started: it gets the
/// older live calls (if it started empty), and is ready.
async fn catch_up(
    cluster: &Cluster,
    key: &str,
    fresh: bool,
    from: u64,
    tx: &mpsc::Sender<Fed>,
) -> Result<bool, String> {
    if fresh {
        let calls = tokio::time::timeout(
            READY_WITHIN,
            live_calls(cluster, &format!("{}.*", token(key))),
        )
        .await
        .map_err(|_| format!("live calls of context {key}: not read within {READY_WITHIN:?}"))??;
        let older: Vec<LiveCall> = calls.into_iter().filter(|c| c.seq < from).collect();
        info!(
            "cluster: context {key}: {} live call(s) from before event {from}",
            older.len()
        );
        let _ = tx.send(Fed::Seed(older)).await;
    }
    let _ = tx.send(Fed::Ready).await;
    Ok(true)
}

/// The live calls of the bucket whose keys match `filter` (`<context>.*`, or `>`).
pub async fn live_calls(cluster: &Cluster, filter: &str) -> Result<Vec<LiveCall>, String> {
    let bucket = cluster.calls().await?;
    let name = format!("KV_{}", bucket.name);
    let kv_stream: stream::Stream = cluster
        .js
        .get_stream(&name)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let consumer = kv_stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: cluster.client.new_inbox(),
            filter_subject: format!("$KV.{}.{filter}", bucket.name),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let mut out = Vec::new();
    for message in drain(consumer, &name).await? {
        if !deleted(&message) {
            match serde_json::from_slice::<LiveCall>(&message.payload) {
                Ok(call) => out.push(call),
                Err(e) => warn!("cluster: {} in {name} unreadable: {e}", message.subject),
            }
        }
    }
    Ok(out)
}

/// Every message an ordered consumer has now, each within 5 s.
async fn drain(
    consumer: jetstream::consumer::Consumer<push::OrderedConfig>,
    what: &str,
) -> Result<Vec<jetstream::Message>, String> {
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let message = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => break,
            Err(_) => return Err(format!("{what}: no answer within 5 s")),
        };
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        out.push(message);
        if pending == 0 {
            break;
        }
    }
    Ok(out)
}

/// A delete or purge marker of a KV bucket.
fn deleted(message: &jetstream::Message) -> bool {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get("KV-Operation"))
        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
}

/// The events of PBX `pbx` in the stream of `key` from sequence `from` on.
pub async fn tail(
    cluster: &Cluster,
    key: &str,
    pbx: &str,
    from: u64,
) -> Result<Vec<WireEvent>, String> {
    let stream = cluster.context(key).await?;
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: cluster.client.new_inbox(),
            filter_subject: cluster.context_subject(key, pbx),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("consumer of context {key}: {e}"))?;
    let messages = drain(consumer, &format!("context {key}")).await?;
    Ok(messages
        .iter()
        .filter_map(|m| serde_json::from_slice::<WireEvent>(&m.payload).ok())
        .collect())
}
