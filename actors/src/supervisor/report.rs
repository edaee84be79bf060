//! What the supervisors tell the info console: each actor's state, restarts and last
//! failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{lock, Exit};

/// The state of one supervised actor, as the info console shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildState {
    Running,
    Stopped,
    /// Exceeded its restart intensity.
    GivenUp,
}

#[derive(Clone, Debug)]
pub struct ChildStatus {
    pub state: ChildState,
    pub started: SystemTime,
    pub restarts: u64,
    pub last_failure: Option<(SystemTime, String)>,
}

/// Restart counts and last failures of every supervised actor, by path (`root/ami`).
#[derive(Clone, Default)]
pub struct Report(Arc<Mutex<BTreeMap<String, ChildStatus>>>);

impl Report {
    pub fn snapshot(&self) -> BTreeMap<String, ChildStatus> {
        lock(&self.0).clone()
    }

    pub fn get(&self, path: &str) -> Option<ChildStatus> {
        lock(&self.0).get(path).cloned()
    }

    pub(crate) fn started(&self, path: &str) {
        let mut map = lock(&self.0);
        let entry = map.entry(path.to_owned()).or_insert(ChildStatus {
            state: ChildState::Running,
            started: SystemTime::now(),
            restarts: 0,
            last_failure: None,
        });
        entry.state = ChildState::Running;
        entry.started = SystemTime::now();
    }

    /// A worker thread (not an actor) caught a panic and goes on with a fresh state.
    pub(crate) fn restarted(&self, path: &str, why: &str) {
        self.started(path);
        let mut map = lock(&self.0);
        if let Some(entry) = map.get_mut(path) {
            entry.restarts += 1;
            entry.last_failure = Some((SystemTime::now(), format!("panicked: {why}")));
        }
    }

    pub(super) fn exited(&self, path: &str, exit: &Exit, restarting: bool, given_up: bool) {
        let mut map = lock(&self.0);
        let Some(entry) = map.get_mut(path) else {
            return;
        };
        if !matches!(exit, Exit::Normal) {
            entry.last_failure = Some((SystemTime::now(), exit.describe()));
        }
        if restarting {
            entry.restarts += 1;
        }
        entry.state = if given_up {
            ChildState::GivenUp
        } else {
            ChildState::Stopped
        };
    }
}
