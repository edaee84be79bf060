//! A link's state, published to its consumers and kept for the console.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use actix::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Up,
    Down(String),
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkState::Connecting => f.write_str("connecting"),
            LinkState::Up => f.write_str("up"),
            LinkState::Down(reason) => write!(f, "down ({reason})"),
        }
    }
}

#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct LinkChanged {
    pub pbx: Arc<str>,
    pub state: LinkState,
}

/// A link's state and counters, shared with the console and metrics; it outlives restarts.
#[derive(Clone, Debug)]
pub struct LinkStatus {
    pub state: LinkState,
    pub since: SystemTime,
    pub events: u64,
    pub last_event: Option<SystemTime>,
    pub logins: u64,
    pub overflows: u64,
    pub discarded: u64,
    /// The link is up and the call model has resynced from it.
    pub synced: bool,
}

#[derive(Clone)]
pub struct LinkStats(Arc<Mutex<LinkStatus>>);

impl Default for LinkStats {
    fn default() -> Self {
        LinkStats(Arc::new(Mutex::new(LinkStatus {
            state: LinkState::Connecting,
            since: SystemTime::now(),
            events: 0,
            last_event: None,
            logins: 0,
            overflows: 0,
            discarded: 0,
            synced: false,
        })))
    }
}

impl LinkStats {
    pub fn snapshot(&self) -> LinkStatus {
        self.lock().clone()
    }

    pub fn set_synced(&self, synced: bool) {
        self.lock().synced = synced;
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, LinkStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
