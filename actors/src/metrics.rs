//! ctid's own health: how late events reach clients, how long calls take to be answered,
//! how complete screen pops are, what was dropped, how many events went out stale, and the
//! codecs of calls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ctid_proto::calls::{known_codec, Call, EventKind};
use hdrhistogram::Histogram;

struct Inner {
    /// AMI read to client queue, per batch, in microseconds.
    event_lag: Histogram<u64>,
    /// Offered to answered, in milliseconds.
    setup: Histogram<u64>,
    offered: u64,
    /// Offered calls whose first event carried the caller's number and name.
    complete: u64,
    /// Batches a partition missed (its mailbox was full).
    gaps: u64,
    /// Call records never written (the store's queue was full, or the record unwritable).
    dropped_records: u64,
    /// Call events older than `health.stale_after` when a partition sent them.
    stale: u64,
    /// Calls whose media became known, by codec and whether it was transcoded.
    media: BTreeMap<(String, bool), u64>,
}

#[derive(Clone)]
pub struct Metrics(Arc<Mutex<Inner>>);

impl Default for Metrics {
    fn default() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        Metrics(Arc::new(Mutex::new(Inner {
            event_lag: histogram(),
            setup: histogram(),
            offered: 0,
            complete: 0,
            gaps: 0,
            dropped_records: 0,
            stale: 0,
            media: BTreeMap::new(),
        })))
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

fn spread(h: &Histogram<u64>) -> Spread {
    Spread {
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        count: h.len(),
    }
}

/// A snapshot of the metrics.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub event_lag_us: Spread,
    pub setup_ms: Spread,
    pub offered: u64,
    pub complete: u64,
    pub gaps: u64,
    pub dropped_records: u64,
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A batch of events reached its clients' queues `lag` after its AMI events were read.
    pub fn event_lag(&self, lag: Duration) {
        let _ = self.lock().event_lag.record(lag.as_micros().max(1) as u64);
    }

    /// Counts what a call event says about screen pops and call setup.
    pub fn call_event(&self, kind: EventKind, call: &Call) {
        let mut m = self.lock();
        match kind {
            EventKind::Offered => {
                m.offered += 1;
                if call.caller.number.is_some() && call.caller.name.is_some() {
                    m.complete += 1;
                }
            }
            EventKind::Answered => {
                if let Some(answered) = call.answered {
                    let ms = ((answered - call.created) * 1000.0).max(1.0) as u64;
                    let _ = m.setup.record(ms);
                }
            }
            _ => {}
        }
    }

    /// Starts the event lag, call setup and screen pop figures afresh; drops keep counting.
    pub fn reset(&self) {
        let mut m = self.lock();
        m.event_lag.reset();
        m.setup.reset();
        m.offered = 0;
        m.complete = 0;
    }

    pub fn gap(&self) {
        self.lock().gaps += 1;
    }

    pub fn record_dropped(&self) {
        self.lock().dropped_records += 1;
    }

    pub fn snapshot(&self) -> Snapshot {
        let m = self.lock();
        Snapshot {
            event_lag_us: spread(&m.event_lag),
            setup_ms: spread(&m.setup),
            offered: m.offered,
            complete: m.complete,
            gaps: m.gaps,
            dropped_records: m.dropped_records,
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

impl Metrics {
    /// `n` call events went out older than `health.stale_after`.
    pub fn stale(&self, n: u64) {
        self.lock().stale += n;
    }

    /// Call events sent stale so far.
    pub fn stale_events(&self) -> u64 {
        self.lock().stale
    }

    /// A call's media became known.
    pub fn media(&self, codec: Option<&str>, transcoding: bool) {
        let key = (codec_label(codec).to_owned(), transcoding);
        *self.lock().media.entry(key).or_default() += 1;
    }

    /// Calls counted by [`Metrics::media`]: (codec, transcoding, calls), by codec.
    pub fn media_calls(&self) -> Vec<(String, bool, u64)> {
        self.lock()
            .media
            .iter()
            .map(|((codec, transcoding), n)| (codec.clone(), *transcoding, *n))
            .collect()
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
    }
}
