//! ctid's own health, in one Prometheus registry that both `GET /metrics` and the info
//! console's `stats` read: how late events reach clients, how long calls take to be
//! answered, how complete screen pops are, what was dropped, and what ctid holds now.
//!
//! Counters and timings ctid counts as they happen live in [`Families`]; what other parts
//! already keep (AMI link counters, partition and supervision figures, sessions and calls)
//! is read from them at each scrape by [`Sources`]. Every label value comes from the
//! settings or the directory (PBXes, contexts, queues, actors, command names), or from a
//! fixed set (`result`, `direction`, `stage`), never from what a peer sends.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ctid_proto::calls::{Call, CallState, Direction, EventKind};
use ctid_proto::directory::Directory;
use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::command::Running;
use crate::directory::DirectoryHandle;
use crate::partition::Partitions;
use crate::pbx::Pbxes;
use crate::session::SessionRegistry;
use crate::supervisor::{ChildState, Report};

/// A label set of `N` labels.
pub type Labels<const N: usize> = [(&'static str, String); N];
type Counters<const N: usize> = Family<Labels<N>, Counter>;

/// Bucket bounds, in seconds.
const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SETUP_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0,
];

/// Timings are kept in microseconds, up to an hour.
const MAX_US: u64 = 3_600_000_000;

struct Timing {
    total: Histogram<u64>,
    /// Since the console's last `stats reset`.
    window: Histogram<u64>,
    sum_us: u64,
}

struct TimingsInner {
    labels: &'static [&'static str],
    buckets: &'static [f64],
    sigfig: u8,
    members: Mutex<BTreeMap<Vec<String>, Timing>>,
}

/// A histogram family backed by HDR histograms: Prometheus gets fixed buckets, the
/// console exact percentiles.
#[derive(Clone)]
pub struct Timings(Arc<TimingsInner>);

impl fmt::Debug for Timings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timings")
            .field("labels", &self.0.labels)
            .finish()
    }
}

impl Timings {
    fn new(labels: &'static [&'static str], buckets: &'static [f64], sigfig: u8) -> Self {
        Timings(Arc::new(TimingsInner {
            labels,
            buckets,
            sigfig,
            members: Mutex::default(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Vec<String>, Timing>> {
        self.0.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn empty(&self) -> Histogram<u64> {
        Histogram::new_with_bounds(1, MAX_US, self.0.sigfig).expect("valid bounds")
    }

    /// Records `d` under the label values `values`, in the order of the family's labels.
    pub fn observe(&self, values: &[&str], d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        let mut members = self.lock();
        // Families are small (a few label values): a scan spares a key per observation.
        let same = |k: &Vec<String>| k.iter().map(String::as_str).eq(values.iter().copied());
        let t = match members.iter_mut().find(|(k, _)| same(k)) {
            Some((_, t)) => t,
            None => {
                let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
                let (total, window) = (self.empty(), self.empty());
                members.entry(key).or_insert(Timing {
                    total,
                    window,
                    sum_us: 0,
                })
            }
        };
        let _ = t.total.record(us);
        let _ = t.window.record(us);
        t.sum_us = t.sum_us.saturating_add(us);
    }

    /// The timings since the last reset of the members `keep` accepts, merged.
    fn window(&self, keep: impl Fn(&[String]) -> bool) -> Histogram<u64> {
        let mut merged = self.empty();
        for (values, t) in self.lock().iter() {
            if keep(values) {
                let _ = merged.add(&t.window);
            }
        }
        merged
    }

    fn reset_window(&self) {
        for t in self.lock().values_mut() {
            t.window.reset();
        }
    }
}

impl EncodeMetric for Timings {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let members = self.lock();
        for (values, t) in members.iter() {
            let labels: Vec<(&str, &str)> = self
                .0
                .labels
                .iter()
                .copied()
                .zip(values.iter().map(String::as_str))
                .collect();
            let mut below = 0;
            let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(self.0.buckets.len() + 1);
            for &bound in self.0.buckets {
                let upto = t.total.count_between(0, (bound * 1e6) as u64);
                buckets.push((bound, upto.saturating_sub(below)));
                below = below.max(upto);
            }
            buckets.push((f64::INFINITY, t.total.len().saturating_sub(below)));
            encoder
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    t.sum_us as f64 / 1e6,
                    t.total.len(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// What ctid counts and times as it happens.
#[derive(Clone, Debug)]
pub struct Families {
    /// AMI read to client queue (`queued`), or to the client's socket (`written`).
    pub event_lag: Timings,
    /// The PBX's `Timestamp:` to the AMI read.
    pub pbx_lag: Timings,
    /// `offered` to answered, or `originate` command to answered, by context.
    pub setup: Timings,
    pub call_events: Counters<1>,
    pub offered: Counters<1>,
    pub complete: Counters<1>,
    pub gaps: Counter,
    pub dropped_records: Counter,
    pub resyncs: Counters<1>,
    pub logins: Counters<1>,
    pub commands: Counters<2>,
}

impl Families {
    fn new(r: &mut Registry) -> Self {
        let f = Families {
            event_lag: Timings::new(&["stage"], LAG_BUCKETS, 3),
            pbx_lag: Timings::new(&["pbx"], LAG_BUCKETS, 2),
            setup: Timings::new(&["context", "from"], SETUP_BUCKETS, 2),
            call_events: Counters::default(),
            offered: Counters::default(),
            complete: Counters::default(),
            gaps: Counter::default(),
            dropped_records: Counter::default(),
            resyncs: Counters::default(),
            logins: Counters::default(),
            commands: Counters::default(),
        };
        r.register(
            "ctid_event_lag_seconds",
            "AMI read to the client's queue (stage=queued, per batch) or socket (stage=written, per write)",
            f.event_lag.clone(),
        );
        r.register(
            "ctid_pbx_event_lag_seconds",
            "the PBX's event Timestamp to ctid's AMI read (PBXes that stamp their events)",
            f.pbx_lag.clone(),
        );
        r.register(
            "ctid_call_setup_seconds",
            "call offered to answered (from=offered), or dial/originate command to answered (from=originate)",
            f.setup.clone(),
        );
        r.register(
            "ctid_call_events",
            "call events the call model made",
            f.call_events.clone(),
        );
        r.register(
            "ctid_screen_pops_offered",
            "offered calls, by direction",
            f.offered.clone(),
        );
        r.register(
            "ctid_screen_pops_complete",
            "offered calls whose first event had the caller resolved in the directory, or attached data",
            f.complete.clone(),
        );
        r.register(
            "ctid_partition_gaps",
            "batches a partition missed (its mailbox was full)",
            f.gaps.clone(),
        );
        r.register(
            "ctid_call_records_dropped",
            "call records never written",
            f.dropped_records.clone(),
        );
        r.register(
            "ctid_ami_resyncs",
            "call model resyncs from Asterisk",
            f.resyncs.clone(),
        );
        r.register(
            "ctid_logins",
            "CTI logins: result=ok, refused (wrong login or password), throttled",
            f.logins.clone(),
        );
        r.register(
            "ctid_commands",
            "call control commands run, by command and result (ok, ko)",
            f.commands.clone(),
        );
        f
    }
}

/// Counter values at the console's last `stats reset`.
#[derive(Default)]
struct Baseline {
    offered: u64,
    complete: u64,
}

struct Inner {
    registry: Mutex<Registry>,
    families: Families,
    baseline: Mutex<Baseline>,
}

#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let families = Families::new(&mut registry);
        Metrics(Arc::new(Inner {
            registry: Mutex::new(registry),
            families,
            baseline: Mutex::default(),
        }))
    }
}

/// A summary of a histogram: p50, p99, p999, max and count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spread {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub count: u64,
}

fn spread(h: &Histogram<u64>, unit: u64) -> Spread {
    Spread {
        p50: h.value_at_quantile(0.5) / unit,
        p99: h.value_at_quantile(0.99) / unit,
        p999: h.value_at_quantile(0.999) / unit,
        max: h.max() / unit,
        count: h.len(),
    }
}

/// What the console's `stats` shows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub event_lag_us: Spread,
    pub setup_ms: Spread,
    pub offered: u64,
    pub complete: u64,
    pub gaps: u64,
    pub dropped_records: u64,
}

const DIRECTIONS: [&str; 3] = ["inbound", "outbound", "internal"];

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
        Direction::Internal => "internal",
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn sum(family: &Counters<1>, key: &'static str, values: &[&str]) -> u64 {
    values
        .iter()
        .map(|v| family.get_or_create(&[(key, (*v).to_owned())]).get())
        .sum()
}

impl Metrics {
    pub fn families(&self) -> &Families {
        &self.0.families
    }

    /// Adds what `sources` hold to every scrape.
    pub fn watch(&self, sources: Sources) {
        let scraped = Scraped {
            sources,
            families: self.0.families.clone(),
        };
        lock(&self.0.registry).register_collector(Box::new(scraped));
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &lock(&self.0.registry));
        out
    }

    /// A batch of events reached its clients' queues `lag` after its AMI events were read.
    pub fn event_lag(&self, lag: Duration) {
        self.0.families.event_lag.observe(&["queued"], lag);
    }

    /// A write to a client's socket ended `lag` after the oldest event in it was read.
    pub fn written_lag(&self, lag: Duration) {
        self.0.families.event_lag.observe(&["written"], lag);
    }

    /// An AMI event of `pbx` read at `read_at` carried `Timestamp: <stamp>` (both in
    /// seconds since the epoch).
    pub fn pbx_stamp(&self, pbx: &str, stamp: &str, read_at: f64) {
        let Ok(secs) = stamp.trim().parse::<f64>() else {
            return;
        };
        if !secs.is_finite() || secs < 0.0 {
            return;
        }
        let lag = Duration::from_secs_f64((read_at - secs).clamp(0.0, MAX_US as f64 / 1e6));
        self.0.families.pbx_lag.observe(&[pbx], lag);
    }

    /// Counts a call event of `pbx`, and what it says about screen pops and call setup.
    pub fn call_event(&self, pbx: &str, kind: EventKind, call: &Call, dir: &Directory) {
        let f = &self.0.families;
        f.call_events
            .get_or_create(&[("pbx", pbx.to_owned())])
            .inc();
        match kind {
            EventKind::Offered => {
                let labels = [("direction", direction(call.direction).to_owned())];
                f.offered.get_or_create(&labels).inc();
                let resolved = call.caller.number.as_deref().is_some_and(|n| {
                    call.contexts
                        .iter()
                        .any(|c| dir.user_by_number(c, n).is_some())
                });
                if resolved || !call.attached.is_empty() {
                    f.complete.get_or_create(&labels).inc();
                }
            }
            EventKind::Answered => {
                if let Some(answered) = call.answered {
                    let setup = Duration::from_secs_f64((answered - call.created).max(0.0));
                    for context in call.contexts.iter().filter(|c| dir.has_context(c)) {
                        f.setup.observe(&[context, "offered"], setup);
                    }
                }
            }
            _ => {}
        }
    }

    /// A dial or originate command of a user of `context` was answered after `d`.
    fn originated(&self, context: &str, d: Duration) {
        self.0.families.setup.observe(&[context, "originate"], d);
    }

    /// A login ended: `ok`, `refused` or `throttled`.
    pub fn login(&self, result: &'static str) {
        self.0
            .families
            .logins
            .get_or_create(&[("result", result.to_owned())])
            .inc();
    }

    /// `running`, a command of a user of `context`, counted once it ends: a dial or an
    /// originate that succeeds is also timed (its calling phone answered).
    pub fn counted(&self, command: String, context: Option<String>, running: Running) -> Running {
        let metrics = self.clone();
        let started = Instant::now();
        Box::pin(async move {
            let outcome = running.await;
            metrics.command(&command, if outcome.is_ok() { "ok" } else { "ko" });
            if let (Ok(()), Some(context), "dial" | "originate") =
                (&outcome, context, command.as_str())
            {
                metrics.originated(&context, started.elapsed());
            }
            outcome
        })
    }

    /// A call control command ended (`ok`, `ko`) or was refused; a name ctid does not
    /// know counts as `other`.
    pub fn command(&self, command: &str, result: &'static str) {
        let name = ctid_proto::commands::targets()
            .map(|(name, _)| name)
            .find(|name| *name == command)
            .unwrap_or("other");
        self.0
            .families
            .commands
            .get_or_create(&[("command", name.to_owned()), ("result", result.to_owned())])
            .inc();
    }

    pub fn resync(&self, pbx: &str) {
        self.0
            .families
            .resyncs
            .get_or_create(&[("pbx", pbx.to_owned())])
            .inc();
    }

    /// Starts the event lag, call setup and screen pop figures of `stats` afresh; drops keep
    /// counting, and `/metrics` is never reset.
    pub fn reset(&self) {
        let f = &self.0.families;
        f.event_lag.reset_window();
        f.setup.reset_window();
        *lock(&self.0.baseline) = Baseline {
            offered: sum(&f.offered, "direction", &DIRECTIONS),
            complete: sum(&f.complete, "direction", &DIRECTIONS),
        };
    }

    pub fn gap(&self) {
        self.0.families.gaps.inc();
    }

    pub fn record_dropped(&self) {
        self.0.families.dropped_records.inc();
    }

    pub fn snapshot(&self) -> Snapshot {
        let f = &self.0.families;
        let lag = f.event_lag.window(|v| v[0] == "queued");
        let setup = f.setup.window(|v| v[1] == "offered");
        let base = lock(&self.0.baseline);
        Snapshot {
            event_lag_us: spread(&lag, 1),
            setup_ms: spread(&setup, 1000),
            offered: sum(&f.offered, "direction", &DIRECTIONS).saturating_sub(base.offered),
            complete: sum(&f.complete, "direction", &DIRECTIONS).saturating_sub(base.complete),
            gaps: f.gaps.get(),
            dropped_records: f.dropped_records.get(),
        }
    }
}

/// What other parts of ctid keep, read at each scrape.
pub struct Sources {
    pub pbxes: Pbxes,
    pub partitions: Partitions,
    pub sessions: SessionRegistry,
    pub report: Report,
    pub directory: DirectoryHandle,
}

/// The sources and the screen pop counters, read at each scrape.
struct Scraped {
    sources: Sources,
    families: Families,
}

impl fmt::Debug for Scraped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scraped")
    }
}

/// One metric family of `(labels, value)` rows.
fn family<const N: usize>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels<N>, f64)>,
) -> Result<(), fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        let mut row = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => row.encode_counter::<NoLabelSet, _, f64>(&value, None)?,
            _ => row.encode_gauge(&value)?,
        }
    }
    Ok(())
}

/// The kind of a supervised actor: the last part of its path, without the name of the PBX
/// or context it serves (`root/pbx/default/ami` is `ami`).
fn actor_kind(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        use MetricType::{Counter as C, Gauge as G};
        let (s, f) = (&self.sources, &self.families);
        let links: Vec<_> = s
            .pbxes
            .iter()
            .map(|p| (p.name.to_string(), p.stats.snapshot()))
            .collect();
        let by_pbx = |count: fn(&crate::ami::LinkStatus) -> u64| {
            links
                .iter()
                .map(move |(name, l)| ([("pbx", name.clone())], count(l) as f64))
        };
        family(
            &mut encoder,
            "ctid_ami_events",
            "AMI events read",
            C,
            by_pbx(|l| l.events),
        )?;
        family(
            &mut encoder,
            "ctid_ami_reconnects",
            "AMI logins after the first",
            C,
            by_pbx(|l| l.logins.saturating_sub(1)),
        )?;
        family(
            &mut encoder,
            "ctid_ami_overflows",
            "AMI links dropped because the event router was a mailbox behind",
            C,
            by_pbx(|l| l.overflows),
        )?;
        family(
            &mut encoder,
            "ctid_ami_link_up",
            "1 when the AMI link is up and the call model synced with it",
            G,
            by_pbx(|l| u64::from(l.synced)),
        )?;

        let dir = s.directory.get();
        let mut deliveries = Vec::new();
        let mut slow = Vec::new();
        let mut live = Vec::new();
        let mut waiting: BTreeMap<(String, String), BTreeSet<String>> = dir
            .queues()
            .map(|q| ((q.pbx.clone(), q.name.clone()), BTreeSet::new()))
            .collect();
        for key in s.partitions.keys() {
            let Some(core) = s.partitions.core(&key) else {
                continue;
            };
            let core = lock(&core);
            deliveries.push(([("partition", key.clone())], core.stats.deliveries as f64));
            slow.push((
                [("partition", key.clone())],
                core.stats.slow_consumers as f64,
            ));
            for call in core.calls() {
                if call.state != CallState::Queued {
                    continue;
                }
                if let Some(ids) = call
                    .queue
                    .as_ref()
                    .and_then(|q| waiting.get_mut(&(call.pbx.clone(), q.clone())))
                {
                    ids.insert(call.id.clone());
                }
            }
            let calls: Vec<_> = core.calls().map(|c| c.contexts.clone()).collect();
            for c in dir.contexts() {
                if s.partitions.key(&c.name) == key {
                    let n = calls.iter().filter(|cs| cs.contains(&c.name)).count();
                    live.push(([("context", c.name.clone())], n as f64));
                }
            }
        }
        family(
            &mut encoder,
            "ctid_deliveries",
            "events queued to sessions",
            C,
            deliveries,
        )?;
        family(
            &mut encoder,
            "ctid_slow_consumer_drops",
            "sessions dropped as slow consumers",
            C,
            slow,
        )?;
        family(
            &mut encoder,
            "ctid_live_calls",
            "live calls, by context",
            G,
            live,
        )?;
        family(
            &mut encoder,
            "ctid_calls_waiting",
            "calls waiting in a queue of the directory",
            G,
            waiting
                .into_iter()
                .map(|((pbx, queue), ids)| ([("pbx", pbx), ("queue", queue)], ids.len() as f64)),
        )?;

        let mut sessions: BTreeMap<String, u64> = dir
            .contexts()
            .map(|c| (s.partitions.key(&c.name).to_owned(), 0))
            .collect();
        for (partition, n) in s.sessions.by_partition() {
            if let Some(count) = sessions.get_mut(&partition) {
                *count += n as u64;
            }
        }
        family(
            &mut encoder,
            "ctid_sessions",
            "logged-in CTI sessions, by partition (the context, or * when contexts are not separated)",
            G,
            sessions
                .into_iter()
                .map(|(p, n)| ([("partition", p)], n as f64)),
        )?;

        let mut restarts: BTreeMap<String, u64> = BTreeMap::new();
        let mut given_up = 0;
        for (path, status) in s.report.snapshot() {
            *restarts.entry(actor_kind(&path).to_owned()).or_default() += status.restarts;
            given_up += u64::from(status.state == ChildState::GivenUp);
        }
        family(
            &mut encoder,
            "ctid_actor_restarts",
            "restarts of supervised actors, by kind",
            C,
            restarts
                .into_iter()
                .map(|(a, n)| ([("actor", a)], n as f64)),
        )?;
        family(
            &mut encoder,
            "ctid_actors_given_up",
            "supervised actors past their restart intensity",
            G,
            [([], given_up as f64)],
        )?;

        let inbound = [("direction", "inbound".to_owned())];
        let offered = f.offered.get_or_create(&inbound).get();
        let complete = f.complete.get_or_create(&inbound).get();
        let share = if offered == 0 {
            1.0
        } else {
            complete as f64 / offered as f64
        };
        family(
            &mut encoder,
            "ctid_screen_pop_completeness",
            "share of offered inbound calls whose first event had the caller resolved in the directory, or attached data (1 before any)",
            G,
            [([("direction", "inbound".to_owned())], share)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_show_as_prometheus_histograms_and_console_windows() {
        let m = Metrics::default();
        for ms in [1, 3, 40, 2000] {
            m.event_lag(Duration::from_millis(ms));
        }
        m.written_lag(Duration::from_millis(1));
        let text = m.encode();
        assert!(
            text.contains("# TYPE ctid_event_lag_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("ctid_event_lag_seconds_count{stage=\"queued\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("ctid_event_lag_seconds_bucket{le=\"0.005\",stage=\"queued\"} 2")
                || text.contains("ctid_event_lag_seconds_bucket{stage=\"queued\",le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ctid_event_lag_seconds_count{stage=\"written\"} 1"),
            "{text}"
        );
        assert_eq!(m.snapshot().event_lag_us.count, 4);
        m.reset();
        assert_eq!(m.snapshot().event_lag_us.count, 0);
        assert!(m
            .encode()
            .contains("ctid_event_lag_seconds_count{stage=\"queued\"} 4"));
    }

    #[test]
    fn pbx_stamps_that_are_not_times_are_ignored() {
        let m = Metrics::default();
        for stamp in ["", "abc", "-5", "NaN", "inf"] {
            m.pbx_stamp("default", stamp, 100.0);
        }
        assert!(!m.encode().contains("ctid_pbx_event_lag_seconds"));
        m.pbx_stamp("default", "99.5", 100.0);
        assert!(m
            .encode()
            .contains("ctid_pbx_event_lag_seconds_sum{pbx=\"default\"} 0.5"));
    }

    #[test]
    fn command_names_ctid_does_not_know_count_as_other() {
        let m = Metrics::default();
        m.command("dial", "ok");
        m.command("x\"y\nz", "ko");
        let text = m.encode();
        assert!(text.contains("ctid_commands_total{command=\"dial\",result=\"ok\"} 1"));
        assert!(text.contains("ctid_commands_total{command=\"other\",result=\"ko\"} 1"));
    }
}
