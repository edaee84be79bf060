//! Histogram families backed by HDR histograms.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Timings are kept in microseconds, up to an hour.
pub(super) const MAX_US: u64 = 3_600_000_000;

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
    pub(super) fn new(
        labels: &'static [&'static str],
        buckets: &'static [f64],
        sigfig: u8,
    ) -> Self {
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
    pub(super) fn window(&self, keep: impl Fn(&[String]) -> bool) -> Histogram<u64> {
        let mut merged = self.empty();
        for (values, t) in self.lock().iter() {
            if keep(values) {
                let _ = merged.add(&t.window);
            }
        }
        merged
    }

    pub(super) fn reset_window(&self) {
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
