//! Resume tokens any edge can take: each token an edge issues is also put in the tokens
//! bucket (under its SHA-256: the bucket never holds a usable token), renewed while its
//! session is connected, and gone a resume window after the last renewal (the bucket's
//! max age). Taking one is a read and a revision-checked delete: one edge wins.

use std::time::Duration;

use async_nats::jetstream::kv;
use log::{debug, warn};
use tokio::sync::OnceCell;

use super::Cluster;
use crate::auth::{Resumable, TokenKey};

/// The cluster's tokens bucket.
#[derive(Clone)]
pub struct SharedTokens {
    cluster: Cluster,
    bucket: std::sync::Arc<OnceCell<kv::Store>>,
}

/// The bucket key of a token, from its digest.
fn key(digest: &TokenKey) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl SharedTokens {
    pub fn new(cluster: Cluster) -> SharedTokens {
        SharedTokens {
            cluster,
            bucket: Default::default(),
        }
    }

    async fn bucket(&self) -> Result<&kv::Store, String> {
        self.bucket.get_or_try_init(|| self.cluster.tokens()).await
    }

    /// Puts (or renews) a token.
    pub async fn put(&self, token: &TokenKey, what: &Resumable) {
        let outcome = match (self.bucket().await, serde_json::to_vec(what)) {
            (Ok(b), Ok(body)) => b
                .put(key(token), body.into())
                .await
                .map_err(|e| e.to_string()),
            (Err(e), _) => Err(e),
            (_, Err(e)) => Err(e.to_string()),
        };
        if let Err(e) = outcome {
            debug!("cluster: a resume token was not shared: {e}");
        }
    }

    /// Forgets a token.
    pub async fn forget(&self, token: &TokenKey) {
        if let Ok(b) = self.bucket().await {
            let _ = b.purge(key(token)).await;
        }
    }

    /// Takes a token another edge issued: once, by one edge.
    pub async fn take(&self, token: &TokenKey, within: Duration) -> Option<Resumable> {
        let taking = async {
            let bucket = self.bucket().await.ok()?;
            let k = key(token);
            let entry = bucket.entry(k.clone()).await.ok()??;
            if entry.operation != kv::Operation::Put {
                return None;
            }
            let what = serde_json::from_slice::<Resumable>(&entry.value).ok()?;
            bucket
                .delete_expect_revision(&k, Some(entry.revision))
                .await
                .ok()?;
            Some(what)
        };
        match tokio::time::timeout(within, taking).await {
            Ok(taken) => taken,
            Err(_) => {
                warn!("cluster: the tokens bucket did not answer within {within:?}");
                None
            }
        }
    }
}
