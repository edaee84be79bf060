//! The directory actor: loads users, lines, queues and contexts, watches the source for
//! changes, and publishes each new version. A source that fails to load keeps the last good
//! directory, with the reason logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use ctid_proto::directory::Directory;
use log::{error, info};
use tokio::sync::watch;

use crate::net::io_reason;
use crate::supervisor::Shutdown;

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

    pub fn set(&self, dir: Directory) {
        self.0.send_replace(Arc::new(dir));
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

/// Reads and checks a directory file; the error says what is wrong, with every problem.
pub fn load_file(path: &Path) -> Result<Directory, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {}", path.display(), io_reason(&e)))?;
    Directory::parse(&text)
        .map_err(|problems| format!("{}: {}", path.display(), problems.join("; ")))
}

/// What identifies a version of the file without reading it.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Watches a directory file and publishes it again when it changes.
pub struct DirectoryWatcher {
    path: PathBuf,
    interval: Duration,
    handle: DirectoryHandle,
    seen: Option<(SystemTime, u64)>,
    checking: bool,
}

impl DirectoryWatcher {
    pub fn new(path: PathBuf, interval: Duration, handle: DirectoryHandle) -> Self {
        let seen = stamp(&path);
        DirectoryWatcher {
            path,
            interval,
            handle,
            seen,
            checking: false,
        }
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.checking {
            return;
        }
        self.checking = true;
        let path = self.path.clone();
        let seen = self.seen;
        let work = tokio::task::spawn_blocking(move || {
            let now = stamp(&path);
            if now == seen || now.is_none() {
                return (now, None);
            }
            (now, Some(load_file(&path)))
        });
        ctx.spawn(actix::fut::wrap_future::<_, Self>(work).map(|res, act, _| {
            act.checking = false;
            let Ok((stamp, loaded)) = res else {
                return;
            };
            let Some(loaded) = loaded else {
                return;
            };
            act.seen = stamp;
            match loaded {
                Ok(dir) => {
                    info!(
                        "directory {} reloaded: {} contexts, {} users, {} queues",
                        act.path.display(),
                        dir.contexts().count(),
                        dir.users().count(),
                        dir.queues().count()
                    );
                    act.handle.set(dir);
                }
                Err(e) => error!("directory not reloaded, keeping the previous one: {e}"),
            }
        }));
    }
}

impl Actor for DirectoryWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |act, ctx| act.check(ctx));
    }
}

impl Handler<Shutdown> for DirectoryWatcher {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
