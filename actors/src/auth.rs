//! Login support for CTI sessions: password checks on their own threads, slowing down
//! repeated failures (by address and by login), and resume tokens.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ctid_proto::throttle::Throttle;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::cluster::tokens::SharedTokens;
use crate::pool::{Pool, Refused};
use crate::supervisor::Report;

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

/// Slows down password guessing, by address and by login (see
/// [`ctid_proto::throttle`]).
#[derive(Clone)]
pub struct LoginThrottle(Arc<Mutex<Throttle>>);

impl LoginThrottle {
    /// `horizon`: attempts are not queued further ahead than this (the login timeout).
    pub fn new(horizon: Duration) -> Self {
        LoginThrottle(Arc::new(Mutex::new(Throttle::new(horizon))))
    }

    /// How long to wait before checking a password for `login` from `ip`.
    pub fn delay(&self, login: &str, ip: IpAddr) -> Duration {
        lock(&self.0).delay(login, ip, Instant::now())
    }

    /// A wrong password for `login`, or a bad resume token (None), from `ip`.
    pub fn failed(&self, login: Option<&str>, ip: IpAddr) {
        lock(&self.0).failed(login, ip, Instant::now());
    }

    pub fn succeeded(&self, login: &str, ip: IpAddr) {
        lock(&self.0).succeeded(login, ip, Instant::now());
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

/// What a token is stored and looked up as: its SHA-256. The map compares digests, whose
/// timing says nothing usable about the token that would match; and no token is kept in
/// the clear.
pub(crate) type TokenKey = [u8; 32];

pub(crate) fn token_key(token: &str) -> TokenKey {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    key
}

#[derive(Default)]
struct Tokens {
    map: HashMap<TokenKey, (Resumable, TokenState)>,
    /// Detached tokens in expiry order (the window is the same for all).
    expiry: VecDeque<(Instant, TokenKey)>,
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
                let live: Vec<(TokenKey, Resumable)> = lock(&inner)
                    .map
                    .iter()
                    .filter(|(_, (_, state))| matches!(state, TokenState::Live))
                    .map(|(key, (what, _))| (*key, what.clone()))
                    .collect();
                for (key, what) in live {
                    shared.put(&key, &what).await;
                }
            }
        });
        self
    }

    fn share(&self, key: &TokenKey, what: Option<Resumable>) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let key = *key;
        actix_rt::spawn(async move {
            match what {
                Some(what) => shared.put(&key, &what).await,
                None => shared.forget(&key).await,
            }
        });
    }

    /// Cluster mode: takes a token another edge issued.
    pub async fn take_shared(&self, token: &str, within: Duration) -> Option<Resumable> {
        let (shared, key) = (self.shared.as_ref()?, token_key(token));
        let taken = shared.take(&key, within).await?;
        // A session of this edge may hold it still (its client left without a word): it
        // must not share it again when it closes.
        lock(&self.inner).map.remove(&key);
        Some(taken)
    }

    fn purge(tokens: &mut Tokens) {
        let now = Instant::now();
        while let Some((until, _)) = tokens.expiry.front() {
            if *until > now {
                break;
            }
            if let Some((_, key)) = tokens.expiry.pop_front() {
                if matches!(tokens.map.get(&key), Some((_, TokenState::Detached { until })) if *until <= now)
                {
                    tokens.map.remove(&key);
                }
            }
        }
    }

    /// A new token for a connected session.
    pub fn issue(&self, what: Resumable) -> Result<String, NoRandom> {
        let token = random_hex(16)?;
        let key = token_key(&token);
        self.share(&key, Some(what.clone()));
        let mut tokens = lock(&self.inner);
        Self::purge(&mut tokens);
        tokens.map.insert(key, (what, TokenState::Live));
        Ok(token)
    }

    /// The session of `token` disconnected: the token can be resumed for the window.
    pub fn detach(&self, token: &str) {
        let (until, key) = (Instant::now() + self.window, token_key(token));
        let mut tokens = lock(&self.inner);
        if let Some((what, state)) = tokens.map.get_mut(&key) {
            *state = TokenState::Detached { until };
            // The window starts now on every edge too.
            self.share(&key, Some(what.clone()));
            tokens.expiry.push_back((until, key));
        }
        Self::purge(&mut tokens);
    }

    /// Forgets a token (its session logged out, or its resume was refused).
    pub fn revoke(&self, token: &str) {
        let key = token_key(token);
        lock(&self.inner).map.remove(&key);
        self.share(&key, None);
    }

    /// Puts back a token taken for a resume that could not complete yet (`busy`): the
    /// client may try again with it.
    pub fn restore(&self, token: &str, what: Resumable) {
        let (until, key) = (Instant::now() + self.window, token_key(token));
        self.share(&key, Some(what.clone()));
        let mut tokens = lock(&self.inner);
        tokens
            .map
            .insert(key, (what, TokenState::Detached { until }));
        tokens.expiry.push_back((until, key));
    }

    /// Uses up a detached, unexpired token.
    pub fn take(&self, token: &str) -> Option<Resumable> {
        let key = token_key(token);
        let mut tokens = lock(&self.inner);
        Self::purge(&mut tokens);
        match tokens.map.get(&key) {
            Some((_, TokenState::Detached { .. })) => {
                self.share(&key, None);
                tokens.map.remove(&key).map(|(r, _)| r)
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
}
