//! Every live session, as the console sees them, and the count of connections still
//! logging in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use actix::prelude::*;
use ctid_proto::cti::ErrorCode;

use crate::outbox::Outbox;
use crate::partition::{Kick, SessionId};

/// A live session as the console shows it.
#[derive(Clone)]
pub struct SessionInfo {
    pub peer: SocketAddr,
    pub listener: &'static str,
    pub login: Option<String>,
    pub partition: Option<String>,
    pub since: SystemTime,
    pub outbox: Arc<Outbox>,
    pub kick: Recipient<Kick>,
}

/// Every live session.
#[derive(Clone, Default)]
pub struct SessionRegistry(Arc<Mutex<HashMap<SessionId, SessionInfo>>>);

impl SessionRegistry {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, SessionInfo>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Vec<(SessionId, SessionInfo)> {
        let mut v: Vec<_> = self.lock().iter().map(|(id, i)| (*id, i.clone())).collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes one session; false if there is none by that id.
    pub fn kick(&self, id: SessionId, why: ErrorCode) -> bool {
        match self.lock().get(&id) {
            Some(info) => {
                info.kick.do_send(Kick(why));
                true
            }
            None => false,
        }
    }

    /// Closes every session of `listener` (all of them if None).
    pub fn kick_all(&self, listener: Option<&str>, why: ErrorCode) {
        for info in self.lock().values() {
            if listener.is_none_or(|l| l == info.listener) {
                info.kick.do_send(Kick(why.clone()));
            }
        }
    }

    pub(super) fn update(&self, id: SessionId, f: impl FnOnce(&mut SessionInfo)) {
        if let Some(info) = self.lock().get_mut(&id) {
            f(info);
        }
    }
}

/// Counts a connection as not logged in for as long as it lives.
pub struct Unauthenticated(Arc<AtomicUsize>);

impl Unauthenticated {
    /// Counts one more, unless `max` are already counted.
    pub fn try_new(count: &Arc<AtomicUsize>, max: usize) -> Option<Unauthenticated> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Unauthenticated(count.clone()))
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
