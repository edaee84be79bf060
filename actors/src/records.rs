//! The call records' writer: one thread that writes ended calls and dispositions in the
//! order they come, many to a commit, and prunes records past their retention.
//!
//! Whoever records a call waits for its commit at most `store.write_timeout`; past it the
//! record stays queued and is retried, with backoff, until it is written. At most
//! `store.queue_max` writes wait; past that each record refused is counted and logged. A
//! write that panics is logged and counted, and the writer goes on with a fresh
//! connection. A record that cannot be written at all (it panics, or breaks a constraint,
//! alone in its batch) is dropped, counted and logged, so that it cannot hold back the
//! records behind it for ever. The same holds on either database.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ctid_proto::calls::Call;
use ctid_proto::cti::timenow;
use log::{error, info, warn};
use tokio::sync::{oneshot, Notify};

use crate::metrics::Metrics;
use crate::settings::{human_duration, StoreSettings};
use crate::store::{
    dispose, insert_call, prune, Conn, DbError, Dispose, Fault, Store, StoreFailure,
};
use crate::supervisor::{panic_message, Report};

/// Writes committed together, at most.
const BATCH: usize = 256;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Old records are deleted this many at a time, between batches of new ones.
const PRUNE_BATCH: usize = 1000;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PRUNE_RETRY: Duration = Duration::from_secs(60);
/// How long the writer sleeps when it has nothing to do and nothing to prune.
const IDLE: Duration = Duration::from_secs(3600);
const PATH: &str = "ctid/store/writer";

#[derive(Clone)]
enum Job {
    Record(Arc<Call>),
    Dispose(Dispose),
}

enum Done {
    Recorded(i64),
    Disposed(bool),
}

/// A disposition request, answered at once or waiting for the writer.
enum Asked {
    Answered(bool),
    Waiting(oneshot::Receiver<Done>),
}

struct Entry {
    job: Job,
    /// Who waits for the outcome. A disposition nobody waits for any more is skipped
    /// (its requester was told it failed); a record is written whatever happens.
    reply: Option<oneshot::Sender<Done>>,
}

impl Entry {
    fn wanted(&self) -> bool {
        match (&self.job, &self.reply) {
            (Job::Dispose(_), Some(reply)) => !reply.is_closed(),
            _ => true,
        }
    }
}

#[derive(Default)]
struct Queue {
    /// In order; the writer removes entries only once they are committed.
    entries: VecDeque<Entry>,
    /// Since when writes are late or failing; None while they are on time.
    trouble: Option<Instant>,
    failure_logged: bool,
    /// Every handle is gone: the writer stops once the queue is empty.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    progress: Notify,
    max: usize,
    metrics: Metrics,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes the queue when the last handle goes.
struct Front(Arc<Shared>);

impl Drop for Front {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.work.notify_all();
    }
}

/// Where ended calls are recorded and dispositions of recorded calls are set.
#[derive(Clone)]
pub struct Records {
    front: Arc<Front>,
    timeout: Duration,
}

impl Records {
    /// Starts the writer thread on the database of `settings` (checked and migrated already).
    pub fn start(settings: &StoreSettings, report: &Report, metrics: &Metrics) -> Records {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            work: Condvar::new(),
            progress: Notify::new(),
            max: settings.queue_max,
            metrics: metrics.clone(),
        });
        let retention = (settings.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(settings.retention_days) * 86400));
        let writer = Writer {
            shared: shared.clone(),
            store: Store::new(settings.database.clone(), settings.sync),
            report: report.clone(),
            careful: 0,
            retry: FIRST_RETRY,
            retention,
            next_prune: Instant::now(),
            pruned: 0,
        };
        report.started(PATH);
        if let Err(e) = std::thread::Builder::new()
            .name("records".into())
            .spawn(move || writer.run())
        {
            error!("{PATH}: cannot start its thread: {e}; call records are not written");
        }
        Records {
            front: Arc::new(Front(shared)),
            timeout: settings.write_timeout,
        }
    }

    fn shared(&self) -> &Shared {
        &self.front.0
    }

    /// How long writes have been late or failing, if they are.
    pub fn trouble(&self) -> Option<Duration> {
        self.shared().lock().trouble.map(|t| t.elapsed())
    }

    /// Queues ended calls, in order. Resolves to their record ids once they are on disk,
    /// or within the write timeout to None for those that are not yet (they stay queued)
    /// or never will be (the queue was full).
    pub fn record(&self, calls: Vec<Call>) -> impl Future<Output = Vec<Option<i64>>> + 'static {
        let shared = self.front.0.clone();
        let mut waits = Vec::with_capacity(calls.len());
        {
            let mut queue = shared.lock();
            for call in calls {
                if queue.entries.len() >= shared.max {
                    shared.metrics.record_dropped();
                    error!(
                        "call record of {} dropped: {} writes already wait for the store (store.queue_max)",
                        call.id, shared.max
                    );
                    waits.push(None);
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                queue.entries.push_back(Entry {
                    job: Job::Record(Arc::new(call)),
                    reply: Some(tx),
                });
                waits.push(Some(rx));
            }
        }
        shared.work.notify_one();
        let timeout = self.timeout;
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut ids = Vec::with_capacity(waits.len());
            let mut late = false;
            for wait in waits {
                let id = match wait {
                    Some(rx) => match tokio::time::timeout_at(deadline, rx).await {
                        Ok(Ok(Done::Recorded(id))) => Some(id),
                        Ok(_) => None,
                        Err(_) => {
                            late = true;
                            None
                        }
                    },
                    None => None,
                };
                ids.push(id);
            }
            if late {
                let mut queue = shared.lock();
                if queue.trouble.is_none() {
                    // The wait that found the store late began a timeout ago.
                    let began = Instant::now().checked_sub(timeout);
                    queue.trouble = Some(began.unwrap_or_else(Instant::now));
                    warn!(
                        "call records are not on disk within {} (store.write_timeout): hungup events go out without record_id, the records stay queued ({} waiting)",
                        human_duration(timeout),
                        queue.entries.len()
                    );
                }
            }
            ids
        }
    }

    /// Sets the disposition of an ended call. A call still queued gets it after its record
    /// (true at once if the user may set it); otherwise the store answers, within the
    /// write timeout.
    pub fn dispose(
        &self,
        d: Dispose,
    ) -> impl Future<Output = Result<bool, StoreFailure>> + 'static {
        let timeout = self.timeout;
        let asked = self.queue_disposition(d);
        async move {
            match asked? {
                Asked::Answered(allowed) => Ok(allowed),
                Asked::Waiting(rx) => match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(Done::Disposed(done))) => Ok(done),
                    Ok(_) => Err(StoreFailure::Failed(
                        "the disposition was not written".into(),
                    )),
                    Err(_) => Err(StoreFailure::Late(timeout)),
                },
            }
        }
    }

    fn queue_disposition(&self, d: Dispose) -> Result<Asked, StoreFailure> {
        let shared = self.shared();
        let mut queue = shared.lock();
        let queued = queue.entries.iter().rev().find_map(|e| match &e.job {
            Job::Record(call) if call.id == d.call_id => Some(d.by.may_dispose_call(call)),
            _ => None,
        });
        if queued == Some(false) {
            return Ok(Asked::Answered(false));
        }
        if queue.entries.len() >= shared.max {
            return Err(StoreFailure::Busy);
        }
        let (reply, asked) = match queued {
            Some(_) => (None, Asked::Answered(true)),
            None => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Asked::Waiting(rx))
            }
        };
        queue.entries.push_back(Entry {
            job: Job::Dispose(d),
            reply,
        });
        drop(queue);
        shared.work.notify_one();
        Ok(asked)
    }

    /// Waits until every queued write is on disk, at most `within`; returns how many are
    /// left.
    pub async fn drained(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        let shared = self.shared();
        loop {
            let progress = shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let left = shared.lock().entries.len();
            if left == 0 || tokio::time::timeout_at(deadline, progress).await.is_err() {
                return left;
            }
        }
    }
}

/// Writes a batch in one transaction; the outcome of each job, in order.
fn write_batch(conn: &mut Conn, batch: &[(Job, bool)]) -> Result<Vec<Done>, DbError> {
    conn.transaction(|tx| {
        batch
            .iter()
            .map(|(job, wanted)| {
                Ok(match job {
                    Job::Record(call) => Done::Recorded(insert_call(tx, call)?),
                    Job::Dispose(d) if *wanted => Done::Disposed(dispose(tx, d)?),
                    Job::Dispose(_) => Done::Disposed(false),
                })
            })
            .collect()
    })
}

struct Writer {
    shared: Arc<Shared>,
    store: Store,
    report: Report,
    /// Jobs to write one at a time, to find the one a failed batch cannot get past.
    careful: usize,
    /// Wait before the next attempt after a failure.
    retry: Duration,
    retention: Option<Duration>,
    next_prune: Instant,
    /// Records deleted in the current pruning run.
    pruned: usize,
}

impl Writer {
    fn run(mut self) {
        while let Some(batch) = self.next_batch() {
            if !batch.is_empty() {
                self.write(&batch);
            }
            self.prune_some();
        }
    }

    fn prune_due(&self) -> bool {
        self.retention.is_some() && Instant::now() >= self.next_prune
    }

    /// The next jobs to write (none when only pruning is due); None once closed and empty.
    fn next_batch(&mut self) -> Option<Vec<(Job, bool)>> {
        let mut queue = self.shared.lock();
        while queue.entries.is_empty() {
            if queue.closed {
                return None;
            }
            if self.prune_due() {
                return Some(Vec::new());
            }
            let idle = match self.retention {
                Some(_) => self.next_prune.saturating_duration_since(Instant::now()),
                None => IDLE,
            };
            queue = match self.shared.work.wait_timeout(queue, idle) {
                Ok((q, _)) => q,
                Err(p) => p.into_inner().0,
            };
        }
        let n = if self.careful > 0 { 1 } else { BATCH };
        Some(
            queue
                .entries
                .iter()
                .take(n)
                .map(|e| (e.job.clone(), e.wanted()))
                .collect(),
        )
    }

    fn write(&mut self, batch: &[(Job, bool)]) {
        let store = &mut self.store;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            store.run(|conn| write_batch(conn, batch))
        }));
        match outcome {
            Ok(Ok(done)) => self.committed(done),
            Ok(Err(e)) if e.fault == Fault::Data => self.poisoned(batch.len(), &e.reason),
            Ok(Err(e)) => self.failed(&e),
            Err(p) => {
                let why = panic_message(&*p);
                error!("{PATH}: writing call records panicked ({why}); going on afresh");
                self.report.restarted(PATH, &why);
                self.store.close();
                self.poisoned(batch.len(), &format!("panicked: {why}"));
            }
        }
    }

    fn committed(&mut self, done: Vec<Done>) {
        let mut queue = self.shared.lock();
        for outcome in done {
            if let Some(Entry {
                reply: Some(reply), ..
            }) = queue.entries.pop_front()
            {
                let _ = reply.send(outcome);
            }
            self.careful = self.careful.saturating_sub(1);
        }
        if let Some(since) = queue.trouble.take() {
            queue.failure_logged = false;
            info!(
                "call records are written again, after {} late or failing ({} waiting)",
                human_duration(since.elapsed()),
                queue.entries.len()
            );
        }
        drop(queue);
        self.retry = FIRST_RETRY;
        self.shared.progress.notify_waiters();
    }

    /// A batch that cannot be written as it is: its jobs are tried one at a time, and a
    /// job that fails alone is dropped.
    fn poisoned(&mut self, n: usize, why: &str) {
        if n > 1 {
            warn!("{n} call record writes failed together ({why}); writing them one at a time");
            self.careful = n;
            return;
        }
        self.careful = self.careful.saturating_sub(1);
        let mut queue = self.shared.lock();
        match queue.entries.pop_front().map(|e| e.job) {
            Some(Job::Record(call)) => {
                self.shared.metrics.record_dropped();
                error!(
                    "call record of {} dropped: it cannot be written ({why})",
                    call.id
                );
            }
            Some(Job::Dispose(d)) => {
                error!(
                    "disposition of {} dropped: it cannot be written ({why})",
                    d.call_id
                );
            }
            None => {}
        }
        drop(queue);
        self.shared.progress.notify_waiters();
    }

    /// The store failed (locked, disk full, gone): the batch is tried again after a while.
    fn failed(&mut self, e: &DbError) {
        {
            let mut queue = self.shared.lock();
            if !queue.failure_logged {
                queue.failure_logged = true;
                queue.trouble.get_or_insert_with(Instant::now);
                error!(
                    "call records cannot be written: {}; retrying ({} waiting)",
                    e.reason,
                    queue.entries.len()
                );
            }
        }
        std::thread::sleep(self.retry);
        self.retry = (self.retry * 2).min(MAX_RETRY);
    }

    /// Deletes one batch of records past their retention, when due.
    fn prune_some(&mut self) {
        let Some(keep) = self.retention.filter(|_| self.prune_due()) else {
            return;
        };
        let before = timenow() - keep.as_secs_f64();
        let store = &mut self.store;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            store.run(|conn| prune(conn, before, PRUNE_BATCH))
        }));
        let days = keep.as_secs() / 86400;
        match outcome {
            Ok(Ok(n)) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                self.pruned += n;
                if n < PRUNE_BATCH {
                    if self.pruned > 0 {
                        info!(
                            "call records: {} older than {days} days deleted (store.retention_days)",
                            self.pruned
                        );
                    }
                    self.pruned = 0;
                    self.next_prune = Instant::now() + PRUNE_EVERY;
                }
            }
            Ok(Err(e)) => {
                warn!(
                    "call records: deleting those older than {days} days failed ({}); trying again in {}",
                    e.reason,
                    human_duration(PRUNE_RETRY)
                );
                self.next_prune = Instant::now() + PRUNE_RETRY;
            }
            Err(p) => {
                let why = panic_message(&*p);
                error!("{PATH}: pruning panicked ({why}); going on afresh");
                self.report.restarted(PATH, &why);
                self.store.close();
                self.next_prune = Instant::now() + PRUNE_RETRY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{ended_call, on_both_databases, record, TestDb};
    use crate::store::{Datum, Disposer};
    use ctid_proto::calls::Disposition;

    /// Settings for `db`, migrated already, as start-up leaves them.
    fn settings(db: &TestDb, queue_max: usize) -> StoreSettings {
        db.with(|_| ());
        StoreSettings {
            database: db.database.clone(),
            queue_max,
            write_timeout: Duration::from_millis(300),
            ..StoreSettings::default()
        }
    }

    fn calls(ids: &[&str]) -> Vec<Call> {
        ids.iter()
            .map(|id| ended_call(id, "a", "555", 100.0))
            .collect()
    }

    fn rows(db: &TestDb) -> Vec<(String, Option<String>)> {
        db.rows("SELECT call_id, disposition_code FROM calls ORDER BY record_id")
            .into_iter()
            .map(|r| match &r[..] {
                [Datum::Text(id), Datum::Text(code)] => (id.clone(), Some(code.clone())),
                [Datum::Text(id), Datum::Null] => (id.clone(), None),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn disposition(call_id: &str) -> Dispose {
        Dispose {
            call_id: call_id.into(),
            disposition: Disposition {
                code: "sale".into(),
                note: None,
                by: "boss".into(),
                at: 1.0,
            },
            by: Disposer {
                login: "boss".into(),
                line: None,
                context: Some("a".into()),
                role: ctid_proto::rights::Role::Supervisor,
            },
        }
    }

    on_both_databases! {
        async fn records_come_back_with_their_ids_in_order(db) {
            let s = settings(db, 10);
            let records = Records::start(&s, &Report::default(), &Metrics::default());
            let ids = records.record(calls(&["1.1", "1.2", "1.3"])).await;
            assert!(ids.iter().all(Option::is_some), "{ids:?}");
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
            assert!(records.dispose(disposition("1.2")).await.unwrap());
            assert!(!records.dispose(disposition("9.9")).await.unwrap());
            let again = records.record(calls(&["1.1"])).await;
            assert_eq!(again, ids[..1], "a record written twice is one row");
            let stored = rows(db);
            assert_eq!(stored.len(), 3);
            assert_eq!(stored[1], ("1.2".into(), Some("sale".into())));
        }
    }

    on_both_databases! {
        async fn a_stalled_store_keeps_records_queued_and_writes_them_later(db) {
            let s = settings(db, 3);
            let metrics = Metrics::default();
            let records = Records::start(&s, &Report::default(), &metrics);
            let held = db.lock();
            let ids = records.record(calls(&["2.1", "2.2"])).await;
            assert_eq!(ids, [None, None], "not on disk within the bound");
            assert!(
                records.dispose(disposition("2.1")).await.unwrap(),
                "a queued call takes its disposition at once"
            );
            let mut refused = disposition("2.2");
            refused.by.context = Some("b".into());
            assert!(!records.dispose(refused).await.unwrap());
            assert_eq!(
                records.record(calls(&["2.3"])).await,
                [None],
                "the queue is full"
            );
            assert!(matches!(
                records.dispose(disposition("2.2")).await,
                Err(StoreFailure::Busy)
            ));
            assert_eq!(metrics.snapshot().dropped_records, 1);
            assert!(rows(db).is_empty());
            drop(held);
            assert_eq!(records.drained(Duration::from_secs(20)).await, 0);
            assert_eq!(
                rows(db),
                [("2.1".into(), Some("sale".into())), ("2.2".into(), None)],
                "in order, with the disposition"
            );
        }
    }

    on_both_databases! {
        async fn a_record_that_cannot_be_written_does_not_hold_back_the_others(db) {
            let s = settings(db, 10);
            db.raw(
                "CREATE TRIGGER refuse BEFORE INSERT ON calls WHEN NEW.call_id = '3.2'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     IF NEW.call_id = '3.2' THEN RAISE EXCEPTION 'refused'; END IF;
                     RETURN NEW;
                 END $$;
                 CREATE TRIGGER refuse BEFORE INSERT ON calls
                     FOR EACH ROW EXECUTE FUNCTION refuse();",
            );
            let metrics = Metrics::default();
            let records = Records::start(&s, &Report::default(), &metrics);
            let ids = records.record(calls(&["3.1", "3.2", "3.3"])).await;
            assert!(
                ids[0].is_some() && ids[1].is_none() && ids[2].is_some(),
                "{ids:?}"
            );
            assert_eq!(metrics.snapshot().dropped_records, 1);
            let written: Vec<String> = rows(db).into_iter().map(|r| r.0).collect();
            assert_eq!(written, ["3.1", "3.3"]);
        }
    }

    on_both_databases! {
        async fn records_past_their_retention_are_deleted(db) {
            let s = StoreSettings {
                retention_days: 1,
                ..settings(db, 10)
            };
            let now = timenow();
            db.with(|conn| {
                let old = [("4.1", 3.0), ("4.2", 0.5)]
                    .map(|(id, age)| ended_call(id, "a", "555", now - age * 86400.0));
                record(conn, &old).unwrap();
            });
            let _records = Records::start(&s, &Report::default(), &Metrics::default());
            let start = Instant::now();
            while rows(db).len() > 1 {
                assert!(start.elapsed() < Duration::from_secs(20), "never pruned");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(rows(db), [("4.2".into(), None)]);
            let contexts = db.rows("SELECT count(*) FROM call_contexts");
            assert_eq!(contexts, [[Datum::Int(1)]]);
        }
    }
}
