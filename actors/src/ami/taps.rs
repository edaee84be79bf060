//! Consoles watching the raw AMI streams (`dumpami`), of every PBX or of one. Each event's
//! bytes, as read, are shared by every tap that wants it: nothing is copied.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ctid_proto::ami::AmiMessage;
use tokio::sync::mpsc;

#[derive(Clone, Default)]
pub struct AmiTaps(Arc<Taps>);

#[derive(Default)]
struct Taps {
    any: AtomicBool,
    list: Mutex<Vec<Tap>>,
    next: AtomicU64,
    dropped: AtomicU64,
}

struct Tap {
    id: u64,
    /// The PBX watched; None: every PBX.
    pbx: Option<String>,
    /// Lowercase event names; empty: every event.
    names: Vec<String>,
    tx: mpsc::Sender<Bytes>,
}

/// Events queued for one tap; past it the tap loses events.
const TAP_QUEUE: usize = 1024;

impl AmiTaps {
    fn list(&self) -> MutexGuard<'_, Vec<Tap>> {
        self.0.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new tap on the events of `pbx` (every PBX if None) named in `names` (all if
    /// empty); returns its id and its feed.
    pub fn add(&self, pbx: Option<&str>, names: &[String]) -> (u64, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(TAP_QUEUE);
        let id = self.0.next.fetch_add(1, Ordering::SeqCst);
        let names = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let pbx = pbx.map(str::to_owned);
        self.list().push(Tap { id, pbx, names, tx });
        self.0.any.store(true, Ordering::SeqCst);
        (id, rx)
    }

    pub fn remove(&self, id: u64) {
        let mut list = self.list();
        list.retain(|t| t.id != id);
        self.0.any.store(!list.is_empty(), Ordering::SeqCst);
    }

    /// Events that taps could not take in time.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    pub(super) fn feed<'a>(&self, pbx: &str, events: impl Iterator<Item = &'a AmiMessage>) {
        if !self.0.any.load(Ordering::Relaxed) {
            return;
        }
        let list = self.list();
        for e in events {
            let name = e.event().unwrap_or("").to_ascii_lowercase();
            for tap in list.iter().filter(|t| {
                t.pbx.as_deref().is_none_or(|p| p == pbx)
                    && (t.names.is_empty() || t.names.contains(&name))
            }) {
                if tap.tx.try_send(e.wire_bytes()).is_err() {
                    self.0.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
