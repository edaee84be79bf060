//! Slowing down password guessing. Failed logins delay the next attempts, counted twice and
//! separately: by source address (one machine trying many logins) and by login (many
//! machines trying one login). The caller passes the time: nothing here reads a clock.
//!
//! - An address (for IPv6, its /64: see [`source_of`]) gets [`ADDRESS_ALLOWANCE`] failures
//!   free (offices behind one NAT address mistype too), then each attempt from it waits
//!   250 ms, doubling per failure up to 8 s.
//! - A login waits from its first failure: 250 ms, doubling up to 8 s.
//! - Attempts made at once queue one delay apart, per address and per login: whatever the
//!   number of connections or of addresses, a login gets one password check per delay.
//! - No attempt is queued past the horizon (the login timeout): it waits that long and is
//!   closed unchecked, so it holds no turn.
//! - Failures are forgotten 15 minutes after the last one. A success clears that login's
//!   own count, and nothing else: trying a colleague's password then logging in as oneself
//!   does not reset anything.
//! - A success makes its address trusted for that login for 30 days: attempts from it skip
//!   the login's queue (not the address's). A login under attack from many addresses is
//!   thus slowed to one check per delay, while its owner, from where they logged in
//!   before, is not locked out.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::cidr::source_of;

/// Failures of an address before its attempts are slowed.
pub const ADDRESS_ALLOWANCE: u32 = 5;
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
pub const MAX_DELAY: Duration = Duration::from_secs(8);
/// Failures are forgotten this long after the last one.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(900);
/// An address a login succeeded from stays trusted for it this long.
pub const TRUST_MEMORY: Duration = Duration::from_secs(30 * 86_400);
/// Addresses, logins and trusted pairs remembered at most, each.
const MAX_KEYS: usize = 65_536;

/// The failures of one address or one login.
#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
    /// When the latest attempt already given a turn is answered.
    booked: Instant,
}

/// Failures by key, bounded in number.
#[derive(Debug)]
struct Counts<K> {
    map: HashMap<K, Failures>,
    /// Failures counted before the delays start.
    allowance: u32,
}

impl<K: Hash + Eq + Copy> Counts<K> {
    fn new(allowance: u32) -> Self {
        Counts {
            map: HashMap::new(),
            allowance,
        }
    }

    /// The wait between two attempts of `key`, if it is slowed down.
    fn step(&self, key: &K, now: Instant) -> Option<(Duration, Instant)> {
        let f = self.map.get(key)?;
        if now.saturating_duration_since(f.last) >= FAILURE_MEMORY || f.count <= self.allowance {
            return None;
        }
        let doublings = (f.count - self.allowance - 1).min(8);
        Some((
            FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY),
            f.booked,
        ))
    }

    fn book(&mut self, key: &K, turn: Instant) {
        if let Some(f) = self.map.get_mut(key) {
            f.booked = f.booked.max(turn);
        }
    }

    fn failed(&mut self, key: K, now: Instant) {
        if self.map.len() >= MAX_KEYS && !self.map.contains_key(&key) {
            self.map
                .retain(|_, f| now.saturating_duration_since(f.last) < FAILURE_MEMORY);
            if self.map.len() >= MAX_KEYS {
                return;
            }
        }
        let f = self.map.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            booked: now,
        });
        if now.saturating_duration_since(f.last) >= FAILURE_MEMORY {
            *f = Failures {
                count: 0,
                last: now,
                booked: now,
            };
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
    }
}

/// A login, as the throttle keys it: a keyed hash, so that memory stays bounded whatever
/// the logins tried, and no one can aim a collision at a given login.
type LoginKey = u64;

/// Delays for password checks, by address and by login.
#[derive(Debug)]
pub struct Throttle {
    addresses: Counts<IpAddr>,
    logins: Counts<LoginKey>,
    /// When each login last succeeded from each address.
    trusted: HashMap<(LoginKey, IpAddr), Instant>,
    hasher: RandomState,
    horizon: Duration,
}

impl Throttle {
    /// `horizon`: attempts are not queued further ahead (the login timeout).
    pub fn new(horizon: Duration) -> Self {
        Throttle {
            addresses: Counts::new(ADDRESS_ALLOWANCE),
            logins: Counts::new(0),
            trusted: HashMap::new(),
            hasher: RandomState::new(),
            horizon,
        }
    }

    fn key(&self, login: &str) -> LoginKey {
        self.hasher.hash_one(login)
    }

    fn trusts(&self, login: LoginKey, ip: IpAddr, now: Instant) -> bool {
        self.trusted
            .get(&(login, ip))
            .is_some_and(|at| now.saturating_duration_since(*at) < TRUST_MEMORY)
    }

    /// How long to wait before checking a password for `login` from `ip`; books the turn.
    pub fn delay(&mut self, login: &str, ip: IpAddr, now: Instant) -> Duration {
        let (ip, login) = (source_of(ip), self.key(login));
        let by_address = self.addresses.step(&ip, now);
        let by_login = match self.trusts(login, ip, now) {
            true => None,
            false => self.logins.step(&login, now),
        };
        let turn = [by_address, by_login]
            .into_iter()
            .flatten()
            .map(|(step, booked)| booked.max(now) + step)
            .max();
        let Some(turn) = turn else {
            return Duration::ZERO;
        };
        if turn - now > self.horizon {
            return self.horizon;
        }
        if by_address.is_some() {
            self.addresses.book(&ip, turn);
        }
        if by_login.is_some() {
            self.logins.book(&login, turn);
        }
        turn - now
    }

    /// A wrong password for `login` (None: a resume with a bad token) from `ip`.
    pub fn failed(&mut self, login: Option<&str>, ip: IpAddr, now: Instant) {
        self.addresses.failed(source_of(ip), now);
        if let Some(login) = login {
            let key = self.key(login);
            self.logins.failed(key, now);
        }
    }

    /// `login` logged in from `ip`: its own failures are forgotten, and `ip` is trusted for
    /// it.
    pub fn succeeded(&mut self, login: &str, ip: IpAddr, now: Instant) {
        let (ip, key) = (source_of(ip), self.key(login));
        self.logins.map.remove(&key);
        if self.trusted.len() >= MAX_KEYS && !self.trusted.contains_key(&(key, ip)) {
            self.trusted
                .retain(|_, at| now.saturating_duration_since(*at) < TRUST_MEMORY);
            if self.trusted.len() >= MAX_KEYS {
                return;
            }
        }
        self.trusted.insert((key, ip), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn a_login_is_slowed_from_its_first_failure_and_its_success_clears_it() {
        let mut t = Throttle::new(Duration::from_secs(30));
        let (now, a) = (Instant::now(), ip("10.0.0.1"));
        assert_eq!(t.delay("bob", a, now), Duration::ZERO);
        t.failed(Some("bob"), a, now);
        assert_eq!(ms(t.delay("bob", a, now)), 250);
        assert_eq!(t.delay("alice", a, now), Duration::ZERO, "another login");
        let later = now + Duration::from_secs(60);
        for _ in 0..10 {
            t.failed(Some("bob"), a, later);
        }
        assert_eq!(ms(t.delay("bob", ip("10.0.0.9"), later)), 8000);
        t.succeeded("bob", ip("10.0.0.9"), later);
        assert_eq!(t.delay("bob", ip("10.0.0.8"), later), Duration::ZERO);
    }

    #[test]
    fn a_success_with_ones_own_login_does_not_clear_the_addresss_failures() {
        let mut t = Throttle::new(Duration::from_secs(30));
        let (now, desk) = (Instant::now(), ip("10.0.0.1"));
        // Guessing the colleague's password, logging in as oneself in between.
        for i in 0..8 {
            t.failed(Some("bob"), desk, now);
            t.succeeded("alice", desk, now);
            if i == 0 {
                assert_eq!(ms(t.delay("bob", desk, now)), 250);
            }
        }
        let later = now + Duration::from_secs(120);
        assert_eq!(ms(t.delay("bob", desk, later)), 8000, "bob's own count");
        // The address is past its allowance: even alice, trusted there, waits.
        assert_eq!(ms(t.delay("alice", desk, later)), 9000);
    }

    #[test]
    fn an_address_has_an_allowance_then_slows_every_login_from_it() {
        let mut t = Throttle::new(Duration::from_secs(30));
        let (now, a) = (Instant::now(), ip("10.0.0.1"));
        for n in 0..ADDRESS_ALLOWANCE {
            t.failed(Some(&format!("user{n}")), a, now);
        }
        assert_eq!(t.delay("someone", a, now), Duration::ZERO);
        t.failed(Some("user9"), a, now);
        assert_eq!(ms(t.delay("someone", a, now)), 250);
        assert_eq!(t.delay("someone", ip("10.0.0.2"), now), Duration::ZERO);
        assert_eq!(
            t.delay(
                "someone",
                ip("::ffff:10.0.0.1"),
                now + Duration::from_secs(1)
            ),
            Duration::from_millis(250),
            "an IPv4-mapped address is the same address"
        );
    }

    #[test]
    fn attempts_on_one_login_from_many_addresses_queue_a_step_apart() {
        let mut t = Throttle::new(Duration::from_secs(1));
        let now = Instant::now();
        t.failed(Some("bob"), ip("10.0.0.1"), now);
        let delays: Vec<u128> = (0..6)
            .map(|i| ms(t.delay("bob", ip(&format!("10.0.1.{i}")), now)))
            .collect();
        // Past the horizon an attempt waits it out without taking a turn.
        assert_eq!(delays, [250, 500, 750, 1000, 1000, 1000]);
        assert_eq!(
            ms(t.delay("bob", ip("10.0.2.1"), now + Duration::from_secs(1))),
            250
        );
    }

    #[test]
    fn the_owner_is_not_locked_out_from_where_they_logged_in_before() {
        let mut t = Throttle::new(Duration::from_secs(5));
        let (now, desk) = (Instant::now(), ip("10.0.0.7"));
        t.succeeded("bob", desk, now);
        // An attack from many addresses: bob's login is slowed past the login timeout.
        for i in 0..50 {
            t.failed(Some("bob"), ip(&format!("192.0.2.{i}")), now);
        }
        assert_eq!(ms(t.delay("bob", ip("198.51.100.1"), now)), 5000);
        assert_eq!(
            t.delay("bob", desk, now),
            Duration::ZERO,
            "the owner's desk"
        );
        // Fifteen minutes after the attack, any address again.
        let after = now + FAILURE_MEMORY;
        assert_eq!(t.delay("bob", ip("198.51.100.1"), after), Duration::ZERO);
    }

    #[test]
    fn failures_are_forgotten_after_a_while() {
        let mut t = Throttle::new(Duration::from_secs(30));
        let (now, a) = (Instant::now(), ip("10.0.0.1"));
        for _ in 0..20 {
            t.failed(Some("bob"), a, now);
        }
        let after = now + FAILURE_MEMORY;
        assert_eq!(t.delay("bob", a, after), Duration::ZERO);
        t.failed(Some("bob"), a, after);
        assert_eq!(ms(t.delay("bob", a, after)), 250, "counted from scratch");
    }
}
