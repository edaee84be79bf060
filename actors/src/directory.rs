//! The directory actor: loads users, lines, queues and contexts from a file (checked for
//! changes every `directory.check_interval`) or from a web service (polled every
//! `timeouts.update_period`), and publishes each new version. A source that fails keeps
//! the last good directory, with the reason logged once per run of failures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use ctid_proto::directory::Directory;
use log::{error, info, warn};
use tokio::sync::watch;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::net::io_reason;
use crate::settings::human_duration;
use crate::settings::{DirectorySettings, Secret};
use crate::supervisor::Shutdown;
use crate::tls::load_certs;

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
    /// A web service answering the directory in JSON.
    Web(Arc<WebDirectory>),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Web(web) => f.write_str(&web.url),
        }
    }
}

/// A directory web service and the client that asks it: https (or http, when allowed),
/// with its bearer token; no redirect, no proxy from the environment.
pub struct WebDirectory {
    pub url: String,
    token: Option<Secret>,
    agent: ureq::Agent,
    timeout: Duration,
}

impl std::fmt::Debug for WebDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebDirectory")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Why a directory URL cannot be used: not http(s), plain http without the setting, or
/// credentials in it (they would be logged with the URL).
pub fn check_url(url: &str, allow_plain_http: bool) -> Result<(), String> {
    let rest = match url.split_once("://") {
        Some(("https", rest)) => rest,
        Some(("http", rest)) if allow_plain_http => rest,
        Some(("http", _)) => {
            return Err(
                "plain http lets anyone on the path change the directory: use https, or set directory.allow_plain_http = true".into(),
            )
        }
        _ => return Err(format!("{url:?} is not an https:// URL")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(
            "credentials in the URL (user:password@) are not supported: use directory.token".into(),
        );
    }
    url.parse::<ureq::http::Uri>()
        .map(|_| ())
        .map_err(|e| format!("{url:?} is not a valid URL ({e})"))
}

impl WebDirectory {
    /// The client for `settings.url`; the CA file is read now, so that a bad one stops
    /// start-up instead of every poll.
    pub fn new(settings: &DirectorySettings, timeout: Duration) -> Result<WebDirectory, String> {
        let url = settings.url.clone().ok_or("no directory.url")?;
        check_url(&url, settings.allow_plain_http)?;
        let roots = match &settings.tls_ca {
            None => RootCerts::WebPki,
            Some(ca) => {
                let certs = load_certs(ca).map_err(|e| e.to_string())?;
                RootCerts::Specific(Arc::new(
                    certs
                        .iter()
                        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                        .collect(),
                ))
            }
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(roots)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .https_only(!settings.allow_plain_http)
            .max_redirects(0)
            .proxy(None)
            .timeout_global(Some(timeout))
            .user_agent("ctid")
            .build()
            .new_agent();
        Ok(WebDirectory {
            url,
            token: settings.token.clone().filter(|t| !t.is_empty()),
            agent,
            timeout,
        })
    }

    /// The body of the service's answer. Blocking: run it off the event loop.
    fn fetch(&self) -> Result<String, String> {
        let mut request = self
            .agent
            .get(&self.url)
            .header("Accept", "application/json");
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {}", token.expose()));
        }
        let mut response = request.call().map_err(|e| match e {
            ureq::Error::StatusCode(code) => format!("HTTP {code}"),
            ureq::Error::Timeout(_) => format!("no answer within {}", human_duration(self.timeout)),
            ureq::Error::BodyExceedsLimit(_) => format!("larger than {} MiB", MAX_BODY >> 20),
            other => other.to_string(),
        })?;
        response
            .body_mut()
            .with_config()
            .limit(MAX_BODY as u64)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => format!("larger than {} MiB", MAX_BODY >> 20),
                other => other.to_string(),
            })
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

/// Fetches and checks a directory from a web service, off the event loop.
pub async fn load_url(web: Arc<WebDirectory>, pbxes: Arc<[String]>) -> Result<Directory, String> {
    let url = web.url.clone();
    let fetched = tokio::task::spawn_blocking(move || web.fetch())
        .await
        .map_err(|_| format!("{url}: the fetch failed"))?;
    let text = fetched.map_err(|e| format!("{url}: {e}"))?;
    Directory::parse_json(&text, &pbxes)
        .map_err(|problems| format!("{url}: {}", problems.join("; ")))
}

/// What identifies a version of the file without reading it.
type Stamp = (SystemTime, u64);

/// A loading's outcome, with the file's stamp when it was read.
type Loaded = (Option<Stamp>, Result<Directory, String>);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// How long a changed file must stay the same before it is read: one written in place
/// (truncated, then written) is not taken half-written.
const SETTLE: Duration = Duration::from_secs(1);

/// Changes in a row seen before the file settled, before a warning says so.
const RESTLESS: u32 = 10;

/// What a look at the source found.
enum Read {
    /// The file is as last read (or missing, unless forced).
    Unchanged,
    /// The file changed since it was last seen: it is read once it stays so.
    Changing(Stamp),
    Loaded(Box<Loaded>),
}

/// Reads the directory file if it changed since `seen` and has stayed as `settling` says
/// for [`SETTLE`] (on this machine's monotonic clock, whatever the file's times say), or
/// at once if `force`; and only if it did not change while read. A part of a file may
/// parse, and would close the sessions of the users it lacks.
fn read_settled(
    path: &Path,
    pbxes: &[String],
    seen: Option<Stamp>,
    settling: Option<(Stamp, Instant)>,
    force: bool,
) -> Read {
    let Some(now) = stamp(path) else {
        return match force {
            true => Read::Loaded(Box::new((None, load_file(path, pbxes)))),
            false => Read::Unchanged,
        };
    };
    if !force && Some(now) == seen {
        return Read::Unchanged;
    }
    let settled = settling.is_some_and(|(s, since)| s == now && since.elapsed() >= SETTLE);
    if !force && !settled {
        return Read::Changing(now);
    }
    let loaded = load_file(path, pbxes);
    match stamp(path) {
        Some(after) if after != now => Read::Changing(after),
        _ => Read::Loaded(Box::new((Some(now), loaded))),
    }
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
    handle: DirectoryHandle,
    seen: Option<Stamp>,
    /// A change not read yet, and since when the file has looked so.
    settling: Option<(Stamp, Instant)>,
    /// Changes in a row seen before the file settled.
    restless: u32,
    checking: bool,
    failing: bool,
}

impl DirectoryWatcher {
    /// `interval` is how often the source is checked.
    pub fn new(
        source: Source,
        pbxes: Arc<[String]>,
        interval: Duration,
        handle: DirectoryHandle,
    ) -> Self {
        let seen = match &source {
            Source::File(path) => stamp(path),
            Source::Web(_) => None,
        };
        DirectoryWatcher {
            source,
            pbxes,
            interval,
            handle,
            seen,
            settling: None,
            restless: 0,
            checking: false,
            failing: false,
        }
    }

    /// Looks at the source, and loads it if it is to be read (off the event loop).
    fn load(&self, force: bool) -> ResponseFuture<Read> {
        match self.source.clone() {
            Source::File(path) => {
                let (seen, settling, pbxes) = (self.seen, self.settling, self.pbxes.clone());
                Box::pin(async move {
                    let work = tokio::task::spawn_blocking(move || {
                        read_settled(&path, &pbxes, seen, settling, force)
                    });
                    work.await.unwrap_or_else(|e| {
                        Read::Loaded(Box::new((None, Err(format!("its reading failed: {e}")))))
                    })
                })
            }
            Source::Web(web) => {
                let pbxes = self.pbxes.clone();
                Box::pin(async move { Read::Loaded(Box::new((None, load_url(web, pbxes).await))) })
            }
        }
    }

    /// Notes a change not read yet; the file must look so for [`SETTLE`] from now on.
    fn changing(&mut self, now: Stamp) {
        if self.settling.is_some_and(|(s, _)| s == now) {
            return;
        }
        self.settling = Some((now, Instant::now()));
        self.restless += 1;
        if self.restless == RESTLESS {
            warn!(
                "directory {} keeps changing: it is read once it has stayed the same for {}",
                self.source,
                human_duration(SETTLE)
            );
        }
    }

    /// Publishes a newly loaded directory, or logs why it was not.
    fn loaded(
        &mut self,
        stamp: Option<Stamp>,
        loaded: Result<Directory, String>,
    ) -> Result<Arc<Directory>, String> {
        self.seen = stamp.or(self.seen);
        (self.settling, self.restless) = (None, 0);
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
            actix::fut::wrap_future::<_, Self>(load).map(|read, act, ctx| {
                act.checking = false;
                match read {
                    Read::Unchanged => (act.settling, act.restless) = (None, 0),
                    Read::Changing(now) => act.changing(now),
                    Read::Loaded(read) => {
                        let (stamp, loaded) = *read;
                        let _ = act.loaded(stamp, loaded);
                    }
                }
                act.schedule(ctx);
            }),
        );
    }

    /// The next check: after the interval, sooner while the source fails or a change
    /// settles.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let wait = if self.settling.is_some() {
            self.interval.min(SETTLE)
        } else if self.failing {
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
        if matches!(self.source, Source::Web(_)) {
            self.check(ctx);
        } else {
            self.schedule(ctx);
        }
    }
}

impl Handler<ReloadNow> for DirectoryWatcher {
    type Result = ResponseActFuture<Self, Result<Arc<Directory>, String>>;

    fn handle(&mut self, _: ReloadNow, _: &mut Context<Self>) -> Self::Result {
        Box::pin(actix::fut::wrap_future::<_, Self>(self.load(true)).map(
            |read, act, _| match read {
                Read::Loaded(read) => act.loaded(read.0, read.1),
                Read::Changing(now) => {
                    act.changing(now);
                    Err(format!(
                        "{}: changed while read; read once it has settled",
                        act.source
                    ))
                }
                Read::Unchanged => Err(format!("{}: cannot be read", act.source)),
            },
        ))
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    #[actix_rt::test]
    async fn a_file_written_in_place_is_read_only_once_whole() {
        let contexts = |names: &[&str]| -> String {
            names
                .iter()
                .map(|n| format!("[[contexts]]\nname = \"{n}\"\n"))
                .collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.toml");
        std::fs::write(&path, contexts(&["a", "b"])).unwrap();
        let pbxes: Arc<[String]> = [ctid_proto::directory::DEFAULT_PBX.to_owned()].into();
        let handle = DirectoryHandle::new(load_file(&path, &pbxes).unwrap());
        let mut changes = Box::pin(handle.changes());
        let every = Duration::from_millis(50);
        let _watcher =
            DirectoryWatcher::new(Source::File(path.clone()), pbxes, every, handle).start();
        tokio::time::sleep(Duration::from_millis(200)).await;

        // Truncated, then written in two steps; the first part alone parses.
        std::fs::write(&path, contexts(&["a"])).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&path, contexts(&["a", "b", "c"])).unwrap();
        let next = tokio::time::timeout(Duration::from_secs(20), changes.next())
            .await
            .expect("the whole file was never published")
            .unwrap();
        assert!(
            next.has_context("b") && next.has_context("c"),
            "a part of the file was published"
        );
    }

    fn web(port: u16) -> Arc<WebDirectory> {
        let settings = DirectorySettings {
            url: Some(format!("http://127.0.0.1:{port}/d.json")),
            allow_plain_http: true,
            ..DirectorySettings::default()
        };
        Arc::new(WebDirectory::new(&settings, Duration::from_secs(5)).unwrap())
    }

    #[tokio::test]
    async fn a_directory_comes_from_a_web_service() {
        let port = serve_once(
            "200 OK",
            r#"{"contexts":[{"name":"a","dialplan":["a"]}]}"#.into(),
        )
        .await;
        let pbxes: Arc<[String]> = [ctid_proto::directory::DEFAULT_PBX.to_owned()].into();
        let dir = load_url(web(port), pbxes.clone()).await.unwrap();
        assert!(dir.has_context("a"));
        let port = serve_once("503 Service Unavailable", String::new()).await;
        let err = load_url(web(port), pbxes.clone()).await.unwrap_err();
        assert!(err.ends_with("HTTP 503"), "{err}");
        let port = serve_once("200 OK", r#"{"contexts":[{"name":1}]}"#.into()).await;
        assert!(load_url(web(port), pbxes).await.is_err());
    }

    #[test]
    fn urls_are_https_unless_plain_http_is_allowed_and_carry_no_credentials() {
        assert!(check_url("https://dir.example/ctid.json", false).is_ok());
        assert!(check_url("http://dir.example/ctid.json", false)
            .unwrap_err()
            .contains("directory.allow_plain_http"));
        assert!(check_url("http://dir.example/ctid.json", true).is_ok());
        assert!(check_url("ftp://dir.example/", true).is_err());
        let err = check_url("https://ctid:s3cret@dir.example/d.json", false).unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
