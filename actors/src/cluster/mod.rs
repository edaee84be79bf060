//! Cluster mode: several ctid nodes sharing the work over NATS JetStream (docs/cluster.md).
//!
//! - [`lease`]: which ingest node is active for each PBX (a KV lease with an epoch);
//! - [`publish`]: the active ingest publishes each context's call events to the context's
//!   stream, and keeps its live calls in a KV bucket;
//! - [`feed`]: an edge's partitions read their context's stream (its sequence is the
//!   context's `seq`) after the live calls;
//! - [`remote`]: commands, dispositions, reloads and directory notices between nodes;
//! - [`tokens`]: resume tokens any edge can take.

pub mod feed;
pub mod lease;
pub mod publish;
pub mod remote;
pub mod tokens;

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use ctid_proto::wire::token;
use futures_util::StreamExt;
use log::{info, warn};

use crate::directory::{DirectoryWatcher, ReloadNow};
use crate::settings::ClusterSettings;
use crate::supervisor::Slot;

/// How the cluster's streams keep events: enough for resumes, like a partition's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub events: usize,
    pub bytes: usize,
    /// How long a resume token lives after its session's edge stopped renewing it.
    pub resume_window: Duration,
}

/// A connection to the cluster's NATS server, and the names of what ctid keeps there.
#[derive(Clone)]
pub struct Cluster {
    pub node: String,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    ns: String,
    retention: Retention,
    pub lease_ttl: Duration,
    /// Counts the connections to NATS: consumers start again after a reconnection.
    pub connections: tokio::sync::watch::Receiver<u64>,
}

/// How long a JetStream API call may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Connects (in the background: NATS may come later; ctid retries meanwhile).
    pub async fn connect(s: &ClusterSettings, retention: Retention) -> Result<Cluster, String> {
        let (connected, connections) = tokio::sync::watch::channel(0u64);
        let connected = std::sync::Arc::new(connected);
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("ctid {}", s.node))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(API_TIMEOUT)
            .event_callback(move |event| {
                let connected = connected.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            warn!("cluster: NATS disconnected, reconnecting")
                        }
                        async_nats::Event::Connected => {
                            info!("cluster: NATS connected");
                            connected.send_modify(|n| *n += 1);
                        }
                        other => log::debug!("cluster: NATS {other}"),
                    }
                }
            });
        if let Some(creds) = &s.nats_creds {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| format!("cluster.nats_creds: {e}"))?;
        }
        if let Some(ca) = &s.nats_tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let client = options
            .connect(s.nats_url.as_str())
            .await
            .map_err(|e| format!("cluster.nats_url: {e}"))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(API_TIMEOUT);
        Ok(Cluster {
            node: s.node.clone(),
            client,
            js,
            ns: s.namespace.clone(),
            retention,
            lease_ttl: s.lease_ttl,
            connections,
        })
    }

    /// `<ns>.<what>`: a subject of this cluster.
    pub fn subject(&self, what: &str) -> String {
        format!("{}.{what}", self.ns)
    }

    /// The stream of a partition key (a context, or `*` without separation).
    pub fn context_stream(&self, key: &str) -> String {
        format!("{}_ctx_{}", self.ns, token(key))
    }

    /// The subject a PBX's events for `key` are published on.
    pub fn context_subject(&self, key: &str, pbx: &str) -> String {
        format!("{}.ctx.{}.{}", self.ns, token(key), token(pbx))
    }

    /// The stream of a partition key, created if missing.
    pub async fn context(&self, key: &str) -> Result<stream::Stream, String> {
        let config = stream::Config {
            name: self.context_stream(key),
            subjects: vec![format!("{}.ctx.{}.*", self.ns, token(key))],
            max_messages: self.retention.events as i64,
            max_bytes: self.retention.bytes as i64,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(60),
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| format!("stream for context {key}: {e}"))
    }

    /// A key-value bucket, created if missing. Its stream is created here, as a bucket's
    /// would be: async-nats's own creation asks for account details NATS 2.9 does not give.
    async fn bucket(&self, name: &str, max_age: Duration) -> Result<kv::Store, String> {
        let bucket = format!("{}_{name}", self.ns);
        if let Ok(store) = self.js.get_key_value(&bucket).await {
            return Ok(store);
        }
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| format!("bucket {bucket}: {e}"))?;
        self.js
            .get_key_value(&bucket)
            .await
            .map_err(|e| format!("bucket {bucket}: {e}"))
    }

    /// Ingest leases, one key per PBX, gone `lease_ttl` after their last renewal.
    pub async fn leases(&self) -> Result<kv::Store, String> {
        self.bucket("leases", self.lease_ttl).await
    }

    /// Live calls, one key per context and call, deleted when the call ends.
    pub async fn calls(&self) -> Result<kv::Store, String> {
        self.bucket("calls", Duration::ZERO).await
    }

    /// How far each context's stream is in the live calls bucket, per PBX.
    pub async fn applied(&self) -> Result<kv::Store, String> {
        self.bucket("applied", Duration::ZERO).await
    }

    /// The key of a context's `applied` mark for a PBX.
    pub fn applied_key(key: &str, pbx: &str) -> String {
        format!("{}.{}", token(key), token(pbx))
    }

    /// Resume tokens, gone a resume window after their last renewal.
    pub async fn tokens(&self) -> Result<kv::Store, String> {
        self.bucket("tokens", self.retention.resume_window).await
    }

    /// The key of a live call in the calls bucket.
    pub fn call_key(key: &str, call_id: &str) -> String {
        format!("{}.{}", token(key), token(call_id))
    }
}

/// Web Interface notices, passed on to every node: each re-reads the directory.
#[derive(Clone)]
pub struct Notices(Cluster);

impl Notices {
    pub fn new(cluster: Cluster) -> Notices {
        Notices(cluster)
    }

    fn subject(&self) -> String {
        self.0.subject("directory")
    }

    /// Tells the other nodes that the directory changed.
    pub async fn directory_changed(&self) {
        let sent = self
            .0
            .client
            .publish(self.subject(), self.0.node.clone().into())
            .await;
        if let Err(e) = sent {
            warn!("cluster: the other nodes were not told of a directory change: {e}");
        }
    }

    /// Re-reads the directory whenever another node was told it changed.
    pub fn follow(&self, directory: Slot<DirectoryWatcher>) {
        let (notices, me) = (self.clone(), self.0.node.clone());
        actix_rt::spawn(async move {
            loop {
                let mut told = match notices.0.client.subscribe(notices.subject()).await {
                    Ok(s) => s,
                    Err(e) => {
                        warn!("cluster: directory notices: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                while let Some(notice) = told.next().await {
                    let from = String::from_utf8_lossy(&notice.payload);
                    if from == me {
                        continue;
                    }
                    info!("cluster: directory changed (told by node {from}): re-reading it");
                    if let Some(watcher) = directory.get() {
                        watcher.do_send(ReloadNow);
                    }
                }
            }
        });
    }
}
