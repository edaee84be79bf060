//! Login support for CTI sessions: password checks on their own threads, slowing down
//! repeated failures from one address, and resume tokens.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use crate::cluster::tokens::SharedTokens;
use crate::pool::{Pool, Refused};
use crate::supervisor::Report;

/// A default-strength argon2id hash that no password matches: checked for unknown logins,
/// so that they take as long as known ones and do not reveal which logins exist.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Y3RpZC1kdW1teS1zYWx0IQ$qR2mdEsoIxNl6oQaJqdaKIvhP+DkXLkw2sv2UcjYGrQ";

/// Checks waiting for a thread, at most, per thread; more are refused at once. Past a few
/// seconds' worth a check would come after its client's login timeout anyway.
const CHECKS_QUEUED: usize = 64;

/// Checks passwords on threads of their own: argon2 is slow on purpose and must never run
/// on an event loop. A check whose client is gone by its turn is skipped.
#[derive(Clone)]
pub struct PasswordChecker {
    pool: Arc<Pool<()>>,
}

impl PasswordChecker {
    pub fn start(threads: usize, report: &Report) -> PasswordChecker {
        let pool = Pool::start(
            "ctid/passwords",
            threads,
            threads.max(1) * CHECKS_QUEUED,
            report,
            || (),
        );
        PasswordChecker {
            pool: Arc::new(pool),
        }
    }

    /// Whether `password` is the one `phc` was made from (false if the check failed);
    /// refused at once when too many checks wait.
    pub fn verify(
        &self,
        phc: String,
        password: String,
    ) -> Result<impl Future<Output = bool> + 'static, Refused> {
        let answer = self
            .pool
            .run(move |_| ctid_proto::directory::verify_password(&phc, &password))?;
        Ok(async move { answer.await.unwrap_or(false) })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Failures from one address are forgotten after this long without another.
const FAILURE_MEMORY: Duration = Duration::from_secs(900);
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Addresses remembered at most.
const MAX_ADDRESSES: usize = 65536;

/// Slows down logins from an address after failed ones: one answer per 250 ms after the
/// first failure, per 500 ms after the second, ... per 8 s at most. Attempts made at once
/// on parallel connections queue one step apart, so they do not share one delay.
#[derive(Clone)]
pub struct LoginThrottle {
    failures: Arc<Mutex<HashMap<IpAddr, Failures>>>,
    /// Attempts are not queued further ahead than this (the login timeout): one that would
    /// wait longer is closed by that timeout before its check, and must not hold a turn.
    horizon: Duration,
}

struct Failures {
    count: u32,
    last: Instant,
    /// When the latest attempt already given a delay is answered.
    booked: Instant,
}

impl LoginThrottle {
    pub fn new(horizon: Duration) -> Self {
        LoginThrottle {
            failures: Arc::default(),
            horizon,
        }
    }

    /// How long to wait before answering a login from `ip`.
    pub fn delay(&self, ip: IpAddr) -> Duration {
        self.delay_at(ip, Instant::now())
    }

    fn delay_at(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut map = lock(&self.failures);
        let Some(f) = map.get_mut(&ip) else {
            return Duration::ZERO;
        };
        if now.saturating_duration_since(f.last) >= FAILURE_MEMORY {
            return Duration::ZERO;
        }
        let step = FIRST_DELAY
            .saturating_mul(1 << (f.count - 1).min(8))
            .min(MAX_DELAY);
        let turn = f.booked.max(now) + step;
        if turn - now > self.horizon {
            return self.horizon;
        }
        f.booked = turn;
        turn - now
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut map = lock(&self.failures);
        if map.len() >= MAX_ADDRESSES {
            map.retain(|_, f| f.last.elapsed() < FAILURE_MEMORY);
        }
        if map.len() < MAX_ADDRESSES || map.contains_key(&ip) {
            let now = Instant::now();
            let f = map.entry(ip).or_insert(Failures {
                count: 0,
                last: now,
                booked: now,
            });
            if f.last.elapsed() >= FAILURE_MEMORY {
                f.count = 0;
                f.booked = now;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
        }
    }

    pub fn succeeded(&self, ip: IpAddr) {
        lock(&self.failures).remove(&ip);
    }
}

/// The system's random number generator failed: no token can be made safely.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct NoRandom;

/// `N` random bytes from the system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], NoRandom> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| NoRandom)?;
    Ok(bytes)
}

/// `n` random bytes from the system's CSPRNG, as lowercase hex.
pub fn random_hex(n: usize) -> Result<String, NoRandom> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new().fill(&mut bytes).map_err(|_| NoRandom)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A session that may be resumed: who, in which partition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resumable {
    pub user_id: u64,
    pub partition: Option<String>,
}

#[derive(Debug)]
enum TokenState {
    /// Its session is connected.
    Live,
    Detached {
        until: Instant,
    },
}

#[derive(Default)]
struct Tokens {
    map: HashMap<String, (Resumable, TokenState)>,
    /// Detached tokens in expiry order (the window is the same for all).
    expiry: VecDeque<(Instant, String)>,
}

/// Resume tokens: 128 random bits each, single use, valid for the resume window after their
/// session disconnects.
#[derive(Clone)]
pub struct ResumeTokens {
    inner: Arc<Mutex<Tokens>>,
    window: Duration,
    /// Cluster mode: the tokens every edge can take.
    shared: Option<SharedTokens>,
}

impl ResumeTokens {
    pub fn new(window: Duration) -> Self {
        ResumeTokens {
            inner: Arc::default(),
            window,
            shared: None,
        }
    }

    /// Cluster mode: tokens are shared with every edge, and renewed there while their
    /// sessions are connected here.
    pub fn shared(mut self, shared: SharedTokens) -> Self {
        self.shared = Some(shared.clone());
        let (inner, every) = (
            self.inner.clone(),
            (self.window / 3).max(Duration::from_secs(1)),
        );
        actix_rt::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let live: Vec<(String, Resumable)> = lock(&inner)
                    .map
                    .iter()
                    .filter(|(_, (_, state))| matches!(state, TokenState::Live))
                    .map(|(token, (what, _))| (token.clone(), what.clone()))
                    .collect();
                for (token, what) in live {
                    shared.put(&token, &what).await;
                }
            }
        });
        self
    }

    fn share(&self, token: &str, what: Option<Resumable>) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let token = token.to_owned();
        actix_rt::spawn(async move {
            match what {
                Some(what) => shared.put(&token, &what).await,
                None => shared.forget(&token).await,
            }
        });
    }

    /// Cluster mode: takes a token another edge issued.
    pub async fn take_shared(&self, token: &str, within: Duration) -> Option<Resumable> {
        let shared = self.shared.as_ref()?;
        let taken = shared.take(token, within).await?;
        // A session of this edge may hold it still (its client left without a word): it
        // must not share it again when it closes.
        lock(&self.inner).map.remove(token);
        Some(taken)
    }

    fn purge(tokens: &mut Tokens) {
        let now = Instant::now();
        while let Some((until, _)) = tokens.expiry.front() {
            if *until > now {
                break;
            }
            if let Some((_, token)) = tokens.expiry.pop_front() {
                if matches!(tokens.map.get(&token), Some((_, TokenState::Detached { until })) if *until <= now)
                {
                    tokens.map.remove(&token);
                }
            }
        }
    }

    /// A new token for a connected session.
    pub fn issue(&self, what: Resumable) -> Result<String, NoRandom> {
        let token = random_hex(16)?;
        self.share(&token, Some(what.clone()));
        let mut tokens = lock(&self.inner);
        Self::purge(&mut tokens);
        tokens.map.insert(token.clone(), (what, TokenState::Live));
        Ok(token)
    }

    /// The session of `token` disconnected: the token can be resumed for the window.
    pub fn detach(&self, token: &str) {
        let until = Instant::now() + self.window;
        let mut tokens = lock(&self.inner);
        if let Some((what, state)) = tokens.map.get_mut(token) {
            *state = TokenState::Detached { until };
            // The window starts now on every edge too.
            self.share(token, Some(what.clone()));
            tokens.expiry.push_back((until, token.to_owned()));
        }
        Self::purge(&mut tokens);
    }

    /// Forgets a token (its session logged out, or its resume was refused).
    pub fn revoke(&self, token: &str) {
        lock(&self.inner).map.remove(token);
        self.share(token, None);
    }

    /// Puts back a token taken for a resume that could not complete yet (`busy`): the
    /// client may try again with it.
    pub fn restore(&self, token: &str, what: Resumable) {
        let until = Instant::now() + self.window;
        self.share(token, Some(what.clone()));
        let mut tokens = lock(&self.inner);
        tokens
            .map
            .insert(token.to_owned(), (what, TokenState::Detached { until }));
        tokens.expiry.push_back((until, token.to_owned()));
    }

    /// Uses up a detached, unexpired token.
    pub fn take(&self, token: &str) -> Option<Resumable> {
        let mut tokens = lock(&self.inner);
        Self::purge(&mut tokens);
        match tokens.map.get(token) {
            Some((_, TokenState::Detached { .. })) => {
                self.share(token, None);
                tokens.map.remove(token).map(|(r, _)| r)
            }
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_slow_an_address_down_and_success_forgives() {
        let t = LoginThrottle::new(Duration::from_secs(30));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(t.delay(ip), Duration::ZERO);
        t.failed(ip);
        let now = Instant::now();
        assert_eq!(t.delay_at(ip, now), Duration::from_millis(250));
        // Once that attempt was answered, the next waits one step again.
        let later = now + Duration::from_secs(1);
        assert_eq!(t.delay_at(ip, later), Duration::from_millis(250));
        for _ in 0..10 {
            t.failed(ip);
        }
        let much_later = later + Duration::from_secs(60);
        assert_eq!(t.delay_at(ip, much_later), Duration::from_secs(8));
        assert_eq!(t.delay("10.0.0.2".parse().unwrap()), Duration::ZERO);
        t.succeeded(ip);
        assert_eq!(t.delay(ip), Duration::ZERO);
    }

    #[test]
    fn attempts_at_once_from_one_address_queue_a_step_apart() {
        let t = LoginThrottle::new(Duration::from_secs(1));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        t.failed(ip);
        let now = Instant::now();
        let delays: Vec<_> = (0..6).map(|_| t.delay_at(ip, now).as_millis()).collect();
        // Past the horizon an attempt waits it out without taking a turn.
        assert_eq!(delays, [250, 500, 750, 1000, 1000, 1000]);
        assert_eq!(
            t.delay_at(ip, now + Duration::from_secs(1)).as_millis(),
            250
        );
    }

    #[test]
    fn a_token_resumes_once_only_after_its_session_left() {
        let tokens = ResumeTokens::new(Duration::from_secs(60));
        let what = Resumable {
            user_id: 1,
            partition: Some("default".into()),
        };
        let token = tokens.issue(what.clone()).unwrap();
        assert_eq!(token.len(), 32);
        assert_eq!(
            tokens.take(&token),
            None,
            "a live session cannot be taken over"
        );
        tokens.detach(&token);
        assert_eq!(tokens.take(&token), Some(what));
        assert_eq!(tokens.take(&token), None, "single use");
        assert_ne!(
            tokens
                .issue(Resumable {
                    user_id: 1,
                    partition: None
                })
                .unwrap(),
            token
        );
    }

    #[test]
    fn a_token_expires_with_the_window() {
        let tokens = ResumeTokens::new(Duration::ZERO);
        let token = tokens
            .issue(Resumable {
                user_id: 1,
                partition: None,
            })
            .unwrap();
        tokens.detach(&token);
        assert_eq!(tokens.take(&token), None);
        assert!(tokens.is_empty());
    }

    #[test]
    fn the_dummy_hash_matches_nothing() {
        assert!(!ctid_proto::directory::verify_password(DUMMY_HASH, ""));
        assert!(!ctid_proto::directory::verify_password(
            DUMMY_HASH, "password"
        ));
    }
}
