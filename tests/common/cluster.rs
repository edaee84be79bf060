//! Cluster nodes for tests: real NATS (the machine's, or one a test starts), a namespace
//! of the test's own, and the settings of each node.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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

/// The `[cluster]` table of node `node` in namespace `ns`, on NATS at `nats` (host:port).
pub fn table(ns: &str, node: &str, roles: &[&str], nats: &str) -> String {
    let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[cluster]\nenabled = true\nnode = \"{node}\"\nnamespace = \"{ns}\"\nnats_url = \"nats://{nats}\"\n\
         roles = [{}]\nlease_ttl = 1\n",
        roles.join(", ")
    )
}

/// A NATS server of the test's own, to stop and start again.
pub struct PrivateNats {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PrivateNats {
    pub fn start() -> PrivateNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let mut nats = PrivateNats {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        nats.restart();
        nats
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it (again, with what JetStream stored), and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}): run scripts/test, which installs it")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
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
