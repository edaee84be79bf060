//! Cluster nodes for tests: real NATS (the machine's, or one a test starts), a namespace
//! of the test's own, and the settings of each node.

use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::StreamExt;

/// The NATS server the cluster tests use.
pub const NATS: &str = "127.0.0.1:4222";

/// Fails with what to do when NATS is not running (the tests need it; they are not
/// skipped).
pub fn require_nats() {
    if TcpStream::connect(NATS).is_err() {
        panic!(
            "NATS is not answering on {NATS}: the cluster tests need it with JetStream. \
             Run the tests with scripts/test (it installs and starts it), or start it \
             with `nats-server -js`."
        );
    }
}

/// A namespace no other test (or run) uses.
pub fn namespace() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 10_000);
    format!(
        "t{}x{}x{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `[cluster]` table of node `node` in namespace `ns`.
pub fn table(ns: &str, node: &str, roles: &[&str], extra: &str) -> String {
    let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[cluster]\nenabled = true\nnode = \"{node}\"\nnamespace = \"{ns}\"\nnats_url = \"nats://{NATS}\"\n\
         roles = [{}]\nlease_ttl = 1\n{extra}\n",
        roles.join(", ")
    )
}

/// Deletes what namespace `ns` left on the NATS server (streams, and buckets: streams
/// too).
pub async fn clean(ns: &str) {
    let Ok(client) = async_nats::connect(NATS).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let mut names = js.stream_names();
    let mut ours = Vec::new();
    while let Some(Ok(name)) = names.next().await {
        if name.starts_with(&format!("{ns}_")) || name.starts_with(&format!("KV_{ns}_")) {
            ours.push(name);
        }
    }
    for name in ours {
        let _ = js.delete_stream(&name).await;
    }
}
