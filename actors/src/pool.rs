//! Small pools of threads for blocking work (SQLite queries, password hashing), kept off
//! the event loops.
//!
//! A pool is fed by a bounded queue: a job that finds it full is refused at once rather
//! than queued without end. Each thread keeps a state of its own (a database connection,
//! say); a job that panics is logged and counted as a restart in the supervision
//! [`Report`], and its thread goes on serving with a fresh state.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use log::error;
use tokio::sync::oneshot;

use crate::supervisor::{panic_message, Report};

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Why a pool did not take a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("every thread is busy and the queue is full")]
    Busy,
    #[error("its threads are gone")]
    Stopped,
}

pub struct Pool<S> {
    queue: SyncSender<Job<S>>,
}

impl<S: 'static> Pool<S> {
    /// Starts `threads` threads, each with the state `make` builds, fed by a queue of
    /// `queue` jobs at most; `path` names the pool in the report.
    pub fn start(
        path: &str,
        threads: usize,
        queue: usize,
        report: &Report,
        make: impl Fn() -> S + Send + Sync + 'static,
    ) -> Pool<S> {
        let (tx, rx) = sync_channel::<Job<S>>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let make = Arc::new(make);
        report.started(path);
        for i in 0..threads.max(1) {
            let (rx, make, report, owned) =
                (rx.clone(), make.clone(), report.clone(), path.to_owned());
            let name = format!("{}-{i}", path.rsplit('/').next().unwrap_or("pool"));
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn(move || serve(&rx, &*make, &report, &owned));
            if let Err(e) = spawned {
                error!("{path}: cannot start a thread: {e}");
            }
        }
        Pool { queue: tx }
    }

    /// Queues `job`; the receiver gets its result. A job whose receiver is gone by its turn
    /// is skipped.
    pub fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<oneshot::Receiver<R>, Refused> {
        let (tx, rx) = oneshot::channel();
        let job: Job<S> = Box::new(move |state| {
            if !tx.is_closed() {
                let _ = tx.send(job(state));
            }
        });
        match self.queue.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(Refused::Busy),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Stopped),
        }
    }
}

fn serve<S>(rx: &Mutex<Receiver<Job<S>>>, make: &dyn Fn() -> S, report: &Report, path: &str) {
    let mut state = make();
    loop {
        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut state))) {
            let why = panic_message(&*p);
            error!("{path}: a job panicked ({why}); its thread goes on afresh");
            report.restarted(path, &why);
            state = make();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_panic_leaves_a_fresh_state() {
        let report = Report::default();
        let pool = Pool::start("test/pool", 1, 1, &report, || 0u32);
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let busy = pool
            .run(move |_| {
                let _ = held.recv();
            })
            .unwrap();
        // The thread may not have taken the first job yet: fill the queue either way.
        let mut queued = Vec::new();
        let refused = loop {
            match pool.run(|n: &mut u32| *n) {
                Ok(rx) => queued.push(rx),
                Err(e) => break e,
            }
        };
        assert_eq!(refused, Refused::Busy);
        assert!(queued.len() <= 1);
        hold.send(()).unwrap();
        busy.await.unwrap();
        for rx in queued {
            rx.await.unwrap();
        }

        pool.run(|n: &mut u32| *n = 7).unwrap().await.unwrap();
        assert_eq!(pool.run(|n: &mut u32| *n).unwrap().await.unwrap(), 7);
        let failed = pool.run(|_: &mut u32| -> u32 { panic!("boom") }).unwrap();
        assert!(
            failed.await.is_err(),
            "the panicked job's answer is dropped"
        );
        assert_eq!(
            pool.run(|n: &mut u32| *n).unwrap().await.unwrap(),
            0,
            "the thread serves on with a fresh state"
        );
        let status = report.get("test/pool").unwrap();
        assert_eq!(status.restarts, 1);
        assert!(status.last_failure.unwrap().1.contains("boom"));
    }
}
