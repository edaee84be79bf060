//! What other parts of ctid already keep, encoded at each scrape.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ctid_proto::calls::CallState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::{lock, Families, Labels};
use crate::directory::DirectoryHandle;
use crate::partition::Partitions;
use crate::pbx::Pbxes;
use crate::session::SessionRegistry;
use crate::supervisor::{ChildState, Report};

/// What other parts of ctid keep, read at each scrape.
pub struct Sources {
    pub pbxes: Pbxes,
    pub partitions: Partitions,
    pub sessions: SessionRegistry,
    pub report: Report,
    pub directory: DirectoryHandle,
}

/// The sources and the screen pop counters, read at each scrape.
pub(super) struct Scraped {
    pub(super) sources: Sources,
    pub(super) families: Families,
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
