//! Who may reach a listener: `listen.<name>.allow`, a list of address ranges. A connection
//! or datagram from elsewhere is closed or dropped unread, counted for the console's
//! `stats`, and logged at most every ten seconds.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ctid_proto::cidr::Cidr;
use log::warn;

const LOG_EVERY: Duration = Duration::from_secs(10);

/// A listener's allowed ranges and its count of refusals. Clones share the count.
#[derive(Clone, Debug)]
pub struct AllowList {
    name: &'static str,
    ranges: Arc<[Cidr]>,
    refused: Arc<AtomicU64>,
    /// Until when refusals are not logged.
    quiet_until: Arc<Mutex<Option<Instant>>>,
}

impl AllowList {
    pub fn new(name: &'static str, ranges: &[Cidr]) -> AllowList {
        AllowList {
            name,
            ranges: ranges.into(),
            refused: Arc::default(),
            quiet_until: Arc::default(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether `ip` may reach the listener; a refusal is counted and logged.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.ranges.iter().any(|r| r.contains(ip)) {
            return true;
        }
        let count = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut quiet = self.quiet_until.lock().unwrap_or_else(|p| p.into_inner());
        if quiet.is_none_or(|t| now >= t) {
            warn!(
                "{}: refused {ip}: not in listen.{}.allow ({count} refused since start)",
                self.name, self.name
            );
            *quiet = Some(now + LOG_EVERY);
        }
        false
    }

    /// Connections or datagrams refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_outside_the_ranges_are_refused_and_counted() {
        let list = AllowList::new("info", &Cidr::loopback());
        assert!(list.permits("127.0.0.9".parse().unwrap()));
        assert!(list.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!list.permits("10.0.0.1".parse().unwrap()));
        assert!(!list.clone().permits("::2".parse().unwrap()));
        assert_eq!(list.refused(), 2);
    }
}
