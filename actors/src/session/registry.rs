//! Every live session, as the console sees them, and the connections still logging in.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
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

    /// Logged-in sessions, by partition.
    pub fn by_partition(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for info in self.lock().values() {
            if let Some(p) = &info.partition {
                *counts.entry(p.clone()).or_default() += 1;
            }
        }
        counts
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

/// The connections still logging in, in all and by source address. One address cannot take
/// every slot: past its own share its new connections are refused, not everyone's.
pub struct LoginSlots {
    max: usize,
    per_address: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Which limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotLimit {
    /// `sessions.max_unauthenticated`.
    All,
    /// `sessions.max_unauthenticated_per_address`.
    Address,
}

impl LoginSlots {
    pub fn new(max: usize, per_address: usize) -> Arc<LoginSlots> {
        Arc::new(LoginSlots {
            max,
            per_address,
            counts: Mutex::default(),
        })
    }

    fn counts(&self) -> MutexGuard<'_, (usize, HashMap<IpAddr, usize>)> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections still logging in.
    pub fn len(&self) -> usize {
        self.counts().0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts a connection as not logged in for as long as it lives.
pub struct Unauthenticated {
    slots: Arc<LoginSlots>,
    ip: IpAddr,
}

impl Unauthenticated {
    /// Counts one more from `ip` (its /64 for IPv6), unless a limit is reached.
    pub fn try_new(slots: &Arc<LoginSlots>, ip: IpAddr) -> Result<Unauthenticated, SlotLimit> {
        let ip = ctid_proto::cidr::source_of(ip);
        let mut counts = slots.counts();
        let (all, by_address) = &mut *counts;
        if *all >= slots.max {
            return Err(SlotLimit::All);
        }
        let mine = by_address.entry(ip).or_default();
        if *mine >= slots.per_address {
            return Err(SlotLimit::Address);
        }
        *mine += 1;
        *all += 1;
        Ok(Unauthenticated {
            slots: slots.clone(),
            ip,
        })
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        let mut counts = self.slots.counts();
        let (all, by_address) = &mut *counts;
        *all = all.saturating_sub(1);
        if let Some(mine) = by_address.get_mut(&self.ip) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                by_address.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_take_every_slot() {
        let slots = LoginSlots::new(3, 2);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = Unauthenticated::try_new(&slots, a).unwrap();
        let _second = Unauthenticated::try_new(&slots, a).unwrap();
        assert_eq!(
            Unauthenticated::try_new(&slots, a).err(),
            Some(SlotLimit::Address)
        );
        let _other = Unauthenticated::try_new(&slots, b).unwrap();
        assert_eq!(
            Unauthenticated::try_new(&slots, b).err(),
            Some(SlotLimit::All)
        );
        drop(first);
        assert_eq!(slots.len(), 2);
        assert!(Unauthenticated::try_new(&slots, a).is_ok());
    }
}
