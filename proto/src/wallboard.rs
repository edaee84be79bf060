//! The figures of a supervisors' wallboard, for one context: per queue, the calls waiting
//! and since when, today's answered and abandoned calls, the share answered within the
//! service level, answered and abandoned per 15 minutes, and calls waiting per minute over
//! the last 30 minutes; each agent's state; and the event lag of the last minute.
//!
//! Pure: fed with the context's call events and the time, read as a [`Board`] snapshot.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::calls::{Call, CallState, EventKind};
use crate::directory::Directory;
use crate::lists::{Live, Scope};

/// The answer time within which a call counts as answered within the service level,
/// unless the settings say otherwise.
pub const DEFAULT_SERVICE_LEVEL: f64 = 20.0;

/// The length of the answered/abandoned periods, and how much waiting history is kept.
const PERIOD: f64 = 15.0 * 60.0;
const MINUTE: f64 = 60.0;
const HISTORY_MINUTES: usize = 30;
const DAY: f64 = 86_400.0;

/// What "today" means: days start at midnight UTC shifted by `utc_offset` seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoardSettings {
    pub service_level: f64,
    pub utc_offset: f64,
}

impl Default for BoardSettings {
    fn default() -> Self {
        BoardSettings {
            service_level: DEFAULT_SERVICE_LEVEL,
            utc_offset: 0.0,
        }
    }
}

/// Today's figures of one queue.
#[derive(Clone, Debug, Default, PartialEq)]
struct QueueDay {
    answered: u64,
    abandoned: u64,
    within: u64,
    /// Answered and abandoned by period start (epoch seconds).
    periods: BTreeMap<i64, (u64, u64)>,
}

/// Queue figures of one context, kept as its call events go by.
#[derive(Clone, Debug)]
pub struct QueueTally {
    settings: BoardSettings,
    /// Start of the day the figures are of (epoch seconds).
    day: f64,
    days: HashMap<String, QueueDay>,
    /// Calls in a queue now, by call id: the queue and when they entered it.
    waiting: HashMap<String, (String, f64)>,
    /// The most calls waiting in each queue during each minute (by minute start).
    history: VecDeque<(i64, HashMap<String, u64>)>,
}

impl QueueTally {
    pub fn new(settings: BoardSettings, now: f64) -> QueueTally {
        QueueTally {
            settings,
            day: day_start(now, settings.utc_offset),
            days: HashMap::new(),
            waiting: HashMap::new(),
            history: VecDeque::new(),
        }
    }

    pub fn settings(&self) -> BoardSettings {
        self.settings
    }

    /// Takes one call event of the context, at `now`. A call waits from its `queued`
    /// event until a queue member takes it (answered) or it ends (abandoned): ringing a
    /// member, it still waits.
    pub fn observe(&mut self, kind: EventKind, call: &Call, now: f64) {
        self.roll(now);
        let ended = kind == EventKind::Hungup;
        let waits_in = self.waiting.get(&call.id).map(|(q, _)| q.clone());
        let joined = match (&call.queue, &waits_in) {
            (Some(_), None) => kind == EventKind::Queued || call.state == CallState::Queued,
            (Some(q), Some(old)) => q != old && call.state == CallState::Queued,
            (None, _) => false,
        };
        if joined && !ended && call.agent.is_none() {
            let queue = call.queue.clone().unwrap_or_default();
            self.waiting.insert(call.id.clone(), (queue, now));
        } else if ended || call.agent.is_some() {
            if let Some((queue, since)) = self.waiting.remove(&call.id) {
                self.count(queue, call.agent.is_some(), now - since, now);
            }
        }
        self.sample(now);
    }

    fn count(&mut self, queue: String, taken: bool, waited: f64, now: f64) {
        let day = self.days.entry(queue).or_default();
        let period = day
            .periods
            .entry(period_start(now, self.settings.utc_offset))
            .or_default();
        if taken {
            day.answered += 1;
            day.within += u64::from(waited <= self.settings.service_level);
            period.0 += 1;
        } else {
            day.abandoned += 1;
            period.1 += 1;
        }
    }

    /// The call moved to another context: it no longer waits here.
    pub fn forget(&mut self, call_id: &str, now: f64) {
        self.waiting.remove(call_id);
        self.sample(now);
    }

    /// Notes the time passing: a new day starts the counts again, a new minute a new
    /// history point.
    pub fn tick(&mut self, now: f64) {
        self.roll(now);
        self.sample(now);
    }

    fn roll(&mut self, now: f64) {
        let today = day_start(now, self.settings.utc_offset);
        if today > self.day {
            self.day = today;
            self.days.clear();
        }
    }

    fn counts(&self) -> HashMap<String, u64> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for (queue, _) in self.waiting.values() {
            *counts.entry(queue.clone()).or_default() += 1;
        }
        counts
    }

    fn sample(&mut self, now: f64) {
        let minute = (now / MINUTE).floor() as i64 * MINUTE as i64;
        let counts = self.counts();
        match self.history.back_mut() {
            Some((m, most)) if *m == minute => {
                for (queue, n) in counts {
                    let top = most.entry(queue).or_default();
                    *top = (*top).max(n);
                }
            }
            _ => {
                self.history.push_back((minute, counts));
                // The newest point before the window stays: it holds for the minutes
                // after it that had none.
                let oldest = minute - (HISTORY_MINUTES as i64 - 1) * MINUTE as i64;
                while self.history.get(1).is_some_and(|(m, _)| *m <= oldest) {
                    self.history.pop_front();
                }
            }
        }
    }

    /// The figures of `queues` (the context's queue names) at `now`; other queues a call
    /// of the context went through are left out.
    pub fn queues(&self, queues: &[&str], now: f64) -> Vec<QueueFigures> {
        let offset = self.settings.utc_offset;
        let today = day_start(now, offset);
        let first_minute = (now / MINUTE).floor() as i64 * MINUTE as i64
            - (HISTORY_MINUTES as i64 - 1) * MINUTE as i64;
        queues
            .iter()
            .map(|name| {
                let waits: Vec<f64> = self
                    .waiting
                    .values()
                    .filter(|(q, _)| q == name)
                    .map(|(_, since)| *since)
                    .collect();
                let empty = QueueDay::default();
                let day = match self.days.get(*name) {
                    Some(day) if self.day >= today => day,
                    _ => &empty,
                };
                let mut history = Vec::with_capacity(HISTORY_MINUTES);
                let mut points = self.history.iter().peekable();
                let mut last = 0;
                for i in 0..HISTORY_MINUTES as i64 {
                    let minute = first_minute + i * MINUTE as i64;
                    while let Some((m, most)) = points.next_if(|(m, _)| *m <= minute) {
                        last = most.get(*name).copied().unwrap_or(0);
                        if *m == minute {
                            break;
                        }
                    }
                    history.push(last);
                }
                let periods = day
                    .periods
                    .iter()
                    .filter(|(start, _)| **start as f64 >= today)
                    .map(|(start, (a, b))| [(*start).max(0) as u64, *a, *b])
                    .collect();
                QueueFigures {
                    name: (*name).to_owned(),
                    waiting: waits.len(),
                    oldest_since: waits.into_iter().reduce(f64::min),
                    answered: day.answered,
                    abandoned: day.abandoned,
                    within_service_level: day.within,
                    service_level: (day.answered + day.abandoned > 0)
                        .then(|| day.within as f64 / (day.answered + day.abandoned) as f64),
                    history_start: first_minute as f64,
                    history,
                    periods,
                }
            })
            .collect()
    }
}

fn day_start(now: f64, offset: f64) -> f64 {
    ((now + offset) / DAY).floor() * DAY - offset
}

fn period_start(now: f64, offset: f64) -> i64 {
    (((now + offset) / PERIOD).floor() * PERIOD - offset) as i64
}

/// One queue on the board.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueueFigures {
    pub name: String,
    pub waiting: usize,
    /// When the call waiting longest entered the queue (epoch seconds).
    pub oldest_since: Option<f64>,
    pub answered: u64,
    pub abandoned: u64,
    pub within_service_level: u64,
    /// `within_service_level` over the calls answered or abandoned today; null before any.
    pub service_level: Option<f64>,
    /// The start of the first of the 30 minutes of `history`.
    pub history_start: f64,
    /// The most calls waiting during each minute, oldest first, the current one last.
    pub history: Vec<u64>,
    /// `[period start, answered, abandoned]` for each 15 minutes of today that had some.
    pub periods: Vec<[u64; 3]>,
}

/// What an agent is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Idle,
    Ringing,
    OnCall,
    Paused,
    LoggedOut,
}

/// The call an agent is in, as the board shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentCall {
    pub id: String,
    pub caller: Option<String>,
    pub queue: Option<String>,
}

/// One user with a line of the context.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentRow {
    pub id: u64,
    pub login: String,
    pub name: String,
    pub role: &'static str,
    pub line: String,
    pub number: String,
    pub state: AgentState,
    /// When the call they are on was answered.
    pub since: Option<f64>,
    pub call: Option<AgentCall>,
}

/// Each user with a line in `scope`, with the state the live calls and their desktop's
/// presence give: in a call (answered, held or bridged), ringing (in a call not answered
/// yet), logged out (no desktop connected), paused (a presence other than `available`),
/// else idle.
pub fn agents(dir: &Directory, scope: Scope<'_>, live: &Live) -> Vec<AgentRow> {
    // The live calls of each line, by PBX and interface: one pass over the calls.
    let mut by_line: HashMap<(&str, &str), Vec<&Call>> = HashMap::new();
    for call in live.calls.iter().filter(|c| c.state != CallState::Ended) {
        for line in &call.lines {
            by_line.entry((&call.pbx, line)).or_default().push(call);
        }
    }
    let mut rows = Vec::new();
    for user in dir.users() {
        let Some(line) = user.line.as_ref().filter(|l| scope.sees(Some(&l.context))) else {
            continue;
        };
        let calls = by_line
            .get(&(line.pbx.as_str(), line.interface.as_str()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let talking = calls.iter().find(|c| {
            matches!(
                c.state,
                CallState::Answered | CallState::Bridged | CallState::Held
            )
        });
        let current = talking.or_else(|| calls.first());
        let presence = live.presence.get(&user.id).map(String::as_str);
        let state = match (talking, current, presence) {
            (Some(_), _, _) => AgentState::OnCall,
            (None, Some(_), _) => AgentState::Ringing,
            (None, None, None) => AgentState::LoggedOut,
            (None, None, Some("available")) => AgentState::Idle,
            (None, None, Some(_)) => AgentState::Paused,
        };
        let since = talking.map(|c| c.answered.unwrap_or(c.created));
        rows.push(AgentRow {
            id: user.id,
            login: user.login.clone(),
            name: user.fullname(),
            role: user.role.name(),
            line: line.interface.clone(),
            number: line.number.clone(),
            state,
            since,
            call: current.map(|c| AgentCall {
                id: c.id.clone(),
                caller: c.caller.name.clone().or_else(|| c.caller.number.clone()),
                queue: c.queue.clone(),
            }),
        });
    }
    rows
}

/// Event lags of the last minute, in a histogram per second: bounded whatever the rate.
#[derive(Clone, Debug, Default)]
pub struct LagWindow {
    seconds: VecDeque<(i64, [u32; LAG_BINS])>,
}

const LAG_BINS: usize = 80;
/// The upper bound of the first bin, in milliseconds; each next bin is 2^(1/4) wider.
const LAG_FIRST_MS: f64 = 0.01;

fn lag_bin(ms: f64) -> usize {
    if ms <= LAG_FIRST_MS {
        return 0;
    }
    let bin = ((ms / LAG_FIRST_MS).log2() * 4.0).ceil();
    (bin as usize).min(LAG_BINS - 1)
}

fn bin_upper(bin: usize) -> f64 {
    LAG_FIRST_MS * 2f64.powf(bin as f64 / 4.0)
}

impl LagWindow {
    /// Records a lag of `ms` milliseconds seen at `now`.
    pub fn record(&mut self, now: f64, ms: f64) {
        let second = now.floor() as i64;
        if self.seconds.back().is_none_or(|(s, _)| *s != second) {
            self.seconds.push_back((second, [0; LAG_BINS]));
            while self.seconds.front().is_some_and(|(s, _)| *s <= second - 60) {
                self.seconds.pop_front();
            }
        }
        if let Some((_, bins)) = self.seconds.back_mut() {
            let bin = &mut bins[lag_bin(ms.max(0.0))];
            *bin = bin.saturating_add(1);
        }
    }

    /// The 99th percentile of the lags of the minute before `now` (within the 19% of a
    /// bin's width, rounded up), in milliseconds; None without any.
    pub fn p99(&self, now: f64) -> Option<f64> {
        let from = now.floor() as i64 - 59;
        let mut bins = [0u64; LAG_BINS];
        for (_, counts) in self.seconds.iter().filter(|(s, _)| *s >= from) {
            for (sum, n) in bins.iter_mut().zip(counts) {
                *sum += u64::from(*n);
            }
        }
        let total: u64 = bins.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (total * 99).div_ceil(100);
        let mut seen = 0;
        for (bin, n) in bins.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bin_upper(bin));
            }
        }
        None
    }
}

/// A `queue_stats` push: everything the board shows that call events do not carry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Board {
    pub context: String,
    pub service_level_seconds: f64,
    /// When "today" started (epoch seconds).
    pub day_start: f64,
    pub queues: Vec<QueueFigures>,
    pub agents: Vec<AgentRow>,
    /// The 99th percentile of the event lag (AMI read to clients' queues) over the last
    /// minute, in milliseconds.
    pub lag_p99_ms: Option<f64>,
}

/// The board of `context` at `now`.
pub fn board(
    context: &str,
    dir: &Directory,
    tally: &QueueTally,
    live: &Live,
    lags: &LagWindow,
    now: f64,
) -> Board {
    let scope = if context == "*" {
        Scope::All
    } else {
        Scope::Context(context)
    };
    let names: Vec<&str> = dir
        .queues()
        .filter(|q| scope.sees(Some(&q.context)))
        .map(|q| q.name.as_str())
        .collect();
    let settings = tally.settings();
    Board {
        context: context.to_owned(),
        service_level_seconds: settings.service_level,
        day_start: day_start(now, settings.utc_offset),
        queues: tally.queues(&names, now),
        agents: agents(dir, scope, live),
        lag_p99_ms: lags.p99(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::Agent;
    use std::sync::Arc;

    fn call(id: &str, state: CallState, queue: Option<&str>) -> Call {
        let mut c = Call::new("default", id, 0.0);
        c.state = state;
        c.queue = queue.map(str::to_owned);
        c
    }

    fn taken(mut c: Call, at: f64) -> Call {
        c.agent = Some(Agent {
            name: Some("Alice".into()),
            interface: Some("PJSIP/1001".into()),
            login: Some("alice".into()),
        });
        c.state = CallState::Bridged;
        c.answered = Some(at);
        c
    }

    /// 2026-12-01 09:00:00 UTC.
    const NINE: f64 = 1_796_115_600.0;

    #[test]
    fn answered_abandoned_and_service_level_of_today() {
        let mut t = QueueTally::new(BoardSettings::default(), NINE);
        let q = Some("support");
        let a = call("1", CallState::Queued, q);
        let b = call("2", CallState::Queued, q);
        let c = call("3", CallState::Queued, q);
        t.observe(EventKind::Queued, &a, NINE);
        t.observe(EventKind::Queued, &b, NINE + 1.0);
        t.observe(EventKind::Queued, &c, NINE + 2.0);
        let f = &t.queues(&["support"], NINE + 5.0)[0];
        assert_eq!((f.waiting, f.oldest_since), (3, Some(NINE)));
        t.observe(
            EventKind::AgentConnected,
            &taken(a, NINE + 10.0),
            NINE + 10.0,
        );
        t.observe(
            EventKind::AgentConnected,
            &taken(b, NINE + 31.0),
            NINE + 31.0,
        );
        let mut gone = c.clone();
        gone.state = CallState::Ended;
        t.observe(EventKind::Hungup, &gone, NINE + 40.0);
        let f = &t.queues(&["support"], NINE + 60.0)[0];
        assert_eq!((f.waiting, f.oldest_since), (0, None));
        assert_eq!((f.answered, f.abandoned, f.within_service_level), (2, 1, 1));
        assert_eq!(f.service_level, Some(1.0 / 3.0));
        assert_eq!(f.periods, vec![[NINE as u64, 2, 1]]);
    }

    #[test]
    fn a_repeated_queued_event_keeps_the_entry_time_and_updates_change_nothing() {
        let mut t = QueueTally::new(BoardSettings::default(), NINE);
        let a = call("1", CallState::Queued, Some("support"));
        t.observe(EventKind::Queued, &a, NINE);
        t.observe(EventKind::Updated, &a, NINE + 3.0);
        let f = &t.queues(&["support"], NINE + 4.0)[0];
        assert_eq!(f.oldest_since, Some(NINE));
        t.observe(
            EventKind::Updated,
            &call("9", CallState::Bridged, None),
            NINE,
        );
        assert_eq!(t.queues(&["support"], NINE + 4.0)[0].answered, 0);
    }

    #[test]
    fn a_call_ringing_a_member_still_waits_and_a_new_day_starts_from_zero() {
        let mut t = QueueTally::new(BoardSettings::default(), NINE);
        let a = call("1", CallState::Queued, Some("sales"));
        t.observe(EventKind::Queued, &a, NINE);
        t.observe(
            EventKind::Ringing,
            &call("1", CallState::Ringing, Some("sales")),
            NINE + 1.0,
        );
        t.observe(
            EventKind::Answered,
            &call("1", CallState::Answered, Some("sales")),
            NINE + 2.0,
        );
        assert_eq!(t.queues(&["sales"], NINE + 2.0)[0].waiting, 1);
        t.observe(EventKind::AgentConnected, &taken(a, NINE + 2.0), NINE + 2.0);
        let f = &t.queues(&["sales"], NINE + 4.0)[0];
        assert_eq!((f.waiting, f.answered, f.abandoned), (0, 1, 0));
        let tomorrow = NINE + DAY;
        t.tick(tomorrow);
        let f = &t.queues(&["sales"], tomorrow)[0];
        assert_eq!((f.answered, f.periods.len()), (0, 0));
        assert_eq!(f.service_level, None);
    }

    #[test]
    fn the_day_follows_the_utc_offset() {
        let settings = BoardSettings {
            service_level: 20.0,
            utc_offset: -10.0 * 3600.0,
        };
        let t = QueueTally::new(settings, NINE);
        assert_eq!(t.day, NINE - DAY + 10.0 * 3600.0 - 9.0 * 3600.0);
        assert_eq!(period_start(NINE + 899.0, settings.utc_offset), NINE as i64);
    }

    #[test]
    fn waiting_history_keeps_each_minutes_peak_for_thirty_minutes() {
        let mut t = QueueTally::new(BoardSettings::default(), NINE);
        let q = Some("support");
        t.observe(EventKind::Queued, &call("1", CallState::Queued, q), NINE);
        t.observe(
            EventKind::Queued,
            &call("2", CallState::Queued, q),
            NINE + 10.0,
        );
        t.forget("default:2", NINE + 20.0);
        t.tick(NINE + 61.0);
        t.tick(NINE + 125.0);
        let f = &t.queues(&["support", "sales"], NINE + 125.0);
        assert_eq!(f[0].history.len(), HISTORY_MINUTES);
        assert_eq!(f[0].history_start, NINE - 27.0 * MINUTE);
        assert_eq!(f[0].history[27..], [2, 1, 1]);
        assert!(f[0].history[..27].iter().all(|n| *n == 0));
        assert!(f[1].history.iter().all(|n| *n == 0));
        t.tick(NINE + 40.0 * MINUTE);
        let f = &t.queues(&["support"], NINE + 40.0 * MINUTE)[0];
        assert!(f.history.iter().all(|n| *n == 1), "{:?}", f.history);
        assert_eq!(t.history.len(), 2, "older minutes dropped");
    }

    #[test]
    fn lag_p99_of_the_last_minute() {
        let mut w = LagWindow::default();
        assert_eq!(w.p99(NINE), None);
        for i in 0..990 {
            w.record(NINE + (i % 50) as f64, 1.0);
        }
        for _ in 0..10 {
            w.record(NINE + 50.0, 200.0);
        }
        let p = w.p99(NINE + 50.0).unwrap();
        assert!((1.0..1.2).contains(&p), "{p}");
        for _ in 0..20 {
            w.record(NINE + 51.0, 200.0);
        }
        let p = w.p99(NINE + 51.0).unwrap();
        assert!((200.0..240.0).contains(&p), "{p}");
        assert_eq!(w.p99(NINE + 200.0), None, "a minute later, forgotten");
    }

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$PmUfvJSx/XoaiPI5CGZKyQ$widnLdjpam9VZ0OVSdxdkHJkTCIH1RSgZ5vw0n8DyHo";

    fn directory() -> Directory {
        Directory::parse(&format!(
            "[[contexts]]\nname = \"default\"\ndialplan = [\"default\"]\n\
             [[contexts]]\nname = \"b\"\ndialplan = [\"b\"]\n\
             [[queues]]\nname = \"support\"\ncontext = \"default\"\n\
             [[queues]]\nname = \"other\"\ncontext = \"b\"\n\
             [[users]]\nid = 1\nlogin = \"alice\"\npassword = \"{HASH}\"\nfirstname = \"Alice\"\n\
             line = {{ interface = \"PJSIP/1001\", number = \"1001\", context = \"default\", dialplan = \"default\" }}\n\
             [[users]]\nid = 2\nlogin = \"bob\"\npassword = \"{HASH}\"\nfirstname = \"Bob\"\n\
             line = {{ interface = \"PJSIP/1002\", number = \"1002\", context = \"default\", dialplan = \"default\" }}\n\
             [[users]]\nid = 3\nlogin = \"carol\"\npassword = \"{HASH}\"\nrole = \"supervisor\"\n\
             line = {{ interface = \"PJSIP/1003\", number = \"1003\", context = \"default\", dialplan = \"default\" }}\n\
             [[users]]\nid = 4\nlogin = \"dave\"\npassword = \"{HASH}\"\n\
             line = {{ interface = \"PJSIP/2001\", number = \"2001\", context = \"b\", dialplan = \"b\" }}\n"
        ))
        .unwrap()
    }

    #[test]
    fn agent_states_come_from_calls_and_presence() {
        let dir = directory();
        let mut ringing = call("1", CallState::Ringing, Some("support"));
        ringing.created = 5.0;
        ringing.caller.number = Some("0611".into());
        ringing.lines.insert("PJSIP/1001".into());
        let mut talking = taken(call("2", CallState::Queued, Some("support")), 7.0);
        talking.lines.insert("PJSIP/1002".into());
        let mut live = Live {
            calls: vec![Arc::new(ringing), Arc::new(talking)],
            ..Live::default()
        };
        live.presence.insert(1, "available".into());
        live.presence.insert(3, "away".into());
        let rows = agents(&dir, Scope::Context("default"), &live);
        let states: Vec<_> = rows.iter().map(|r| (r.login.as_str(), r.state)).collect();
        assert_eq!(
            states,
            [
                ("alice", AgentState::Ringing),
                ("bob", AgentState::OnCall),
                ("carol", AgentState::Paused),
            ]
        );
        assert_eq!(rows[0].since, None);
        assert_eq!(
            rows[0].call.as_ref().unwrap().caller.as_deref(),
            Some("0611")
        );
        assert_eq!(rows[1].since, Some(7.0));
        assert_eq!(rows[2].role, "supervisor");
        live.calls.clear();
        let rows = agents(&dir, Scope::Context("default"), &live);
        assert_eq!(rows[0].state, AgentState::Idle);
        assert_eq!(rows[1].state, AgentState::LoggedOut);
    }

    #[test]
    fn a_board_names_only_its_own_contexts_queues_and_agents() {
        let dir = directory();
        let mut t = QueueTally::new(BoardSettings::default(), NINE);
        t.observe(
            EventKind::Queued,
            &call("1", CallState::Queued, Some("other")),
            NINE,
        );
        let b = board(
            "default",
            &dir,
            &t,
            &Live::default(),
            &LagWindow::default(),
            NINE,
        );
        let queues: Vec<_> = b.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(queues, ["support"]);
        assert_eq!(b.queues[0].waiting, 0);
        assert!(b.agents.iter().all(|a| a.login != "dave"));
        assert_eq!(b.day_start, NINE - 9.0 * 3600.0);
    }
}
