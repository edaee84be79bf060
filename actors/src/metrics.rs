//! ctid's own health, in one Prometheus registry that both `GET /metrics` and the info
//! console's `stats` read: how late events reach clients, how long calls take to be
//! answered, how complete screen pops are, what was dropped, and what ctid holds now.
//!
//! Counters and timings ctid counts as they happen live in [`Families`]; what other parts
//! already keep (AMI link counters, partition and supervision figures, sessions and calls)
//! is read from them at each scrape by [`Sources`]. Every label value comes from the
//! settings or the directory (PBXes, contexts, queues, actors, command names), or from a
//! fixed set (`result`, `direction`, `stage`), never from what a peer sends.

mod scrape;
mod timings;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ctid_proto::calls::{known_codec, Call, Direction, EventKind, SAMPLE_RATES};
use ctid_proto::directory::Directory;
use hdrhistogram::Histogram;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::command::Running;
use scrape::Scraped;
pub use scrape::Sources;
pub use timings::Timings;
use timings::MAX_US;

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
    /// Call events older than `health.stale_after` when a partition sent them.
    pub stale: Counter,
    /// Calls whose media became known, by codec and whether it was transcoded.
    pub media: Counters<2>,
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
            stale: Counter::default(),
            media: Counters::default(),
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
        r.register(
            "ctid_stale_events",
            "call events older than health.stale_after when sent to some session",
            f.stale.clone(),
        );
        r.register(
            "ctid_calls_by_media",
            "calls whose media became known, by codec (the sample-rate table's, other, unknown) and transcoding",
            f.media.clone(),
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

/// Codecs a call is counted under: those of the sample-rate table, `other`, or `unknown`
/// (a label per codec name the PBX sends would grow without bound).
fn codec_label(codec: Option<&str>) -> &str {
    match codec {
        Some(c) if known_codec(c) => c,
        Some(_) => "other",
        None => "unknown",
    }
}

fn media_labels(codec: &str, transcoding: bool) -> Labels<2> {
    [
        ("codec", codec.to_owned()),
        ("transcoding", transcoding.to_string()),
    ]
}

impl Metrics {
    /// `n` call events went out older than `health.stale_after`.
    pub fn stale(&self, n: u64) {
        self.0.families.stale.inc_by(n);
    }

    /// Call events sent stale so far.
    pub fn stale_events(&self) -> u64 {
        self.0.families.stale.get()
    }

    /// A call's media became known.
    pub fn media(&self, codec: Option<&str>, transcoding: bool) {
        let labels = media_labels(codec_label(codec), transcoding);
        self.0.families.media.get_or_create(&labels).inc();
    }

    /// Calls counted by [`Metrics::media`]: (codec, transcoding, calls), by codec.
    pub fn media_calls(&self) -> Vec<(String, bool, u64)> {
        let mut codecs: Vec<&str> = SAMPLE_RATES.iter().map(|(c, _)| *c).collect();
        codecs.extend(["other", "unknown"]);
        codecs.sort_unstable();
        let mut out = Vec::new();
        for codec in codecs {
            for transcoding in [false, true] {
                let labels = media_labels(codec, transcoding);
                if let Some(n) = self.0.families.media.get(&labels).map(|c| c.get()) {
                    out.push((codec.to_owned(), transcoding, n));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_codec_and_transcoding_within_a_bounded_set() {
        let m = Metrics::default();
        m.media(Some("ulaw"), false);
        m.media(Some("ulaw"), false);
        m.media(Some("g722"), true);
        m.media(Some("made-up"), false);
        m.media(None, true);
        assert_eq!(
            m.media_calls(),
            [
                ("g722".to_owned(), true, 1),
                ("other".to_owned(), false, 1),
                ("ulaw".to_owned(), false, 2),
                ("unknown".to_owned(), true, 1),
            ]
        );
        m.stale(3);
        m.stale(1);
        assert_eq!(m.stale_events(), 4);
        let text = m.encode();
        assert!(text.contains("ctid_stale_events_total 4"), "{text}");
        assert!(
            text.contains("ctid_calls_by_media_total{codec=\"ulaw\",transcoding=\"false\"} 2"),
            "{text}"
        );
    }

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
