//! The directory actor: loads users, lines, queues and contexts from a file (checked for
//! changes every `directory.check_interval`) or from a web service (polled every
//! `timeouts.update_period`), and publishes each new version. A source that fails keeps
//! the last good directory, with the reason logged once per run of failures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use ctid_proto::directory::Directory;
use ctid_proto::http::{response_body, Url};
use log::{error, info};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::net::io_reason;
use crate::settings::human_duration;
use crate::supervisor::Shutdown;

/// Largest directory a web service may send.
const MAX_BODY: usize = 64 << 20;
/// How soon a failing source is tried again, at most.
const RETRY: Duration = Duration::from_secs(10);

/// The current directory, readable by anyone, and a way to hear about new versions. It
/// lives outside the actors, so that a restart loses nothing.
#[derive(Clone)]
pub struct DirectoryHandle(Arc<watch::Sender<Arc<Directory>>>);

impl DirectoryHandle {
    pub fn new(dir: Directory) -> Self {
        DirectoryHandle(Arc::new(watch::channel(Arc::new(dir)).0))
    }

    pub fn get(&self) -> Arc<Directory> {
        self.0.borrow().clone()
    }

    /// Makes `dir` the current directory; subscribers hear of it only if it differs.
    pub fn set(&self, dir: Directory) -> Arc<Directory> {
        self.0.send_if_modified(|current| {
            let changed = **current != dir;
            if changed {
                *current = Arc::new(dir);
            }
            changed
        });
        self.get()
    }

    /// A stream of new versions (not the current one).
    pub fn changes(&self) -> impl futures_util::Stream<Item = Arc<Directory>> + 'static {
        let mut rx = self.0.subscribe();
        rx.mark_unchanged();
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let dir = rx.borrow_and_update().clone();
            Some((dir, rx))
        })
    }
}

/// Where the directory comes from.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    /// An `http://` URL answering the directory in JSON.
    Url(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Url(url) => f.write_str(url),
        }
    }
}

/// Reads and checks a directory file whose lines and queues are on `pbxes`; the error says
/// what is wrong, with every problem.
pub fn load_file(path: &Path, pbxes: &[String]) -> Result<Directory, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {}", path.display(), io_reason(&e)))?;
    Directory::parse_for(&text, pbxes)
        .map_err(|problems| format!("{}: {}", path.display(), problems.join("; ")))
}

/// Fetches and checks a directory from a web service.
pub async fn load_url(url: &str, timeout: Duration, pbxes: &[String]) -> Result<Directory, String> {
    let parsed = Url::parse(url)?;
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect((parsed.host.as_str(), parsed.port))
            .await
            .map_err(|e| io_reason(&e))?;
        stream
            .write_all(&parsed.get_request())
            .await
            .map_err(|e| io_reason(&e))?;
        let mut response = Vec::new();
        let mut limited = (&mut stream).take(MAX_BODY as u64 + 1);
        limited
            .read_to_end(&mut response)
            .await
            .map_err(|e| io_reason(&e))?;
        if response.len() > MAX_BODY {
            return Err(format!("larger than {} MiB", MAX_BODY >> 20));
        }
        Ok(response)
    };
    let response = tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("{url}: no answer within {}", human_duration(timeout)))?
        .map_err(|e| format!("{url}: {e}"))?;
    let body = response_body(&response).map_err(|e| format!("{url}: {e}"))?;
    let text = std::str::from_utf8(body).map_err(|_| format!("{url}: the body is not UTF-8"))?;
    Directory::parse_json(text, pbxes).map_err(|problems| format!("{url}: {}", problems.join("; ")))
}

/// What identifies a version of the file without reading it.
type Stamp = (SystemTime, u64);

/// A loading's outcome, with the file's stamp when it was read.
type Loaded = (Option<Stamp>, Result<Directory, String>);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads the directory again now, whether or not it looks changed; answers the new one.
#[derive(Message)]
#[rtype(result = "Result<Arc<Directory>, String>")]
pub struct ReloadNow;

/// Watches the directory source and publishes it again when it changes.
pub struct DirectoryWatcher {
    source: Source,
    /// The configured PBXes, which lines and queues name.
    pbxes: Arc<[String]>,
    interval: Duration,
    timeout: Duration,
    handle: DirectoryHandle,
    seen: Option<Stamp>,
    checking: bool,
    failing: bool,
}

impl DirectoryWatcher {
    /// `interval` is how often the source is checked; `timeout` bounds a fetch.
    pub fn new(
        source: Source,
        pbxes: Arc<[String]>,
        interval: Duration,
        timeout: Duration,
        handle: DirectoryHandle,
    ) -> Self {
        let seen = match &source {
            Source::File(path) => stamp(path),
            Source::Url(_) => None,
        };
        DirectoryWatcher {
            source,
            pbxes,
            interval,
            timeout,
            handle,
            seen,
            checking: false,
            failing: false,
        }
    }

    /// Loads the source (off the event loop): None if the file did not change and
    /// `force` is off.
    fn load(&self, force: bool) -> ResponseFuture<Option<Loaded>> {
        match self.source.clone() {
            Source::File(path) => {
                let (seen, pbxes) = (self.seen, self.pbxes.clone());
                Box::pin(async move {
                    let work = tokio::task::spawn_blocking(move || {
                        let now = stamp(&path);
                        if !force && (now == seen || now.is_none()) {
                            return None;
                        }
                        Some((now, load_file(&path, &pbxes)))
                    });
                    work.await.ok().flatten()
                })
            }
            Source::Url(url) => {
                let (timeout, pbxes) = (self.timeout, self.pbxes.clone());
                Box::pin(async move { Some((None, load_url(&url, timeout, &pbxes).await)) })
            }
        }
    }

    /// Publishes a newly loaded directory, or logs why it was not.
    fn loaded(
        &mut self,
        stamp: Option<Stamp>,
        loaded: Result<Directory, String>,
    ) -> Result<Arc<Directory>, String> {
        self.seen = stamp.or(self.seen);
        match loaded {
            Ok(dir) => {
                if self.failing {
                    info!("directory {} is readable again", self.source);
                }
                self.failing = false;
                info!(
                    "directory {} loaded: {} contexts, {} users, {} queues",
                    self.source,
                    dir.contexts().count(),
                    dir.users().count(),
                    dir.queues().count()
                );
                Ok(self.handle.set(dir))
            }
            Err(e) => {
                if !self.failing {
                    error!("directory not reloaded, keeping the previous one: {e}");
                }
                self.failing = true;
                Err(e)
            }
        }
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.checking {
            return;
        }
        self.checking = true;
        let load = self.load(false);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(load).map(|res, act, ctx| {
                act.checking = false;
                if let Some((stamp, loaded)) = res {
                    let _ = act.loaded(stamp, loaded);
                }
                act.schedule(ctx);
            }),
        );
    }

    /// The next check: after the interval, or sooner while the source fails.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let wait = if self.failing {
            self.interval.min(RETRY)
        } else {
            self.interval
        };
        ctx.run_later(wait, |act, ctx| act.check(ctx));
    }
}

impl Actor for DirectoryWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A web service is read at once: ctid starts without it, with an empty directory.
        if matches!(self.source, Source::Url(_)) {
            self.check(ctx);
        } else {
            self.schedule(ctx);
        }
    }
}

impl Handler<ReloadNow> for DirectoryWatcher {
    type Result = ResponseActFuture<Self, Result<Arc<Directory>, String>>;

    fn handle(&mut self, _: ReloadNow, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            actix::fut::wrap_future::<_, Self>(self.load(true)).map(|res, act, _| match res {
                Some((stamp, loaded)) => act.loaded(stamp, loaded),
                None => Err(format!("{}: cannot be read", act.source)),
            }),
        )
    }
}

impl Handler<Shutdown> for DirectoryWatcher {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// Serves `body` once, as a web service would.
    async fn serve_once(status: &'static str, body: String) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = s.read(&mut request).await;
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        });
        port
    }

    #[tokio::test]
    async fn only_a_changed_directory_is_published() {
        let parse = |t: &str| Directory::parse(t).unwrap();
        let a = "[[contexts]]\nname = \"a\"\n";
        let handle = DirectoryHandle::new(parse(a));
        let mut changes = Box::pin(handle.changes());
        handle.set(parse(a));
        handle.set(parse("[[contexts]]\nname = \"b\"\n"));
        let next = changes.next().await.unwrap();
        assert!(
            next.has_context("b"),
            "the unchanged version was not published"
        );
    }

    #[tokio::test]
    async fn a_directory_comes_from_a_web_service() {
        let port = serve_once(
            "200 OK",
            r#"{"contexts":[{"name":"a","dialplan":["a"]}]}"#.into(),
        )
        .await;
        let pbxes = [ctid_proto::directory::DEFAULT_PBX.to_owned()];
        let dir = load_url(
            &format!("http://127.0.0.1:{port}/d.json"),
            Duration::from_secs(5),
            &pbxes,
        )
        .await
        .unwrap();
        assert!(dir.has_context("a"));
        let port = serve_once("503 Service Unavailable", String::new()).await;
        let err = load_url(
            &format!("http://127.0.0.1:{port}/"),
            Duration::from_secs(5),
            &pbxes,
        )
        .await
        .unwrap_err();
        assert!(err.ends_with("HTTP 503 Service Unavailable"), "{err}");
        let port = serve_once("200 OK", r#"{"contexts":[{"name":1}]}"#.into()).await;
        assert!(load_url(
            &format!("http://127.0.0.1:{port}/"),
            Duration::from_secs(5),
            &pbxes
        )
        .await
        .is_err());
    }
}
