//! The supervision tree: restarts after panics and errors, restart intensity, escalation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use ctid_actors::supervisor::{
    ChildSpec, ChildState, Exit, ExitNote, Intensity, Report, Restart, Root, Shutdown, Slot,
    StartChild,
};

/// Counts the messages it served; panics or fails on request.
struct Worker {
    served: usize,
    name: &'static str,
    note: ExitNote,
    panic_on_start: bool,
    stops: Arc<Mutex<Vec<&'static str>>>,
}

impl Worker {
    fn new(name: &'static str, note: ExitNote) -> Self {
        Worker {
            served: 0,
            name,
            note,
            panic_on_start: false,
            stops: Arc::default(),
        }
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        if self.panic_on_start {
            panic!("{} cannot start", self.name);
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.stops.lock().unwrap().push(self.name);
    }
}

#[derive(Message)]
#[rtype(result = "usize")]
struct Work;

#[derive(Message)]
#[rtype(result = "()")]
struct Boom;

#[derive(Message)]
#[rtype(result = "()")]
struct Fail(&'static str);

#[derive(Message)]
#[rtype(result = "()")]
struct Quit;

impl Handler<Work> for Worker {
    type Result = usize;
    fn handle(&mut self, _: Work, _: &mut Context<Self>) -> usize {
        self.served += 1;
        self.served
    }
}

impl Handler<Boom> for Worker {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
        panic!("boom in {}", self.name);
    }
}

impl Handler<Fail> for Worker {
    type Result = ();
    fn handle(&mut self, Fail(why): Fail, ctx: &mut Context<Self>) {
        self.note.fail(why);
        ctx.stop();
    }
}

impl Handler<Quit> for Worker {
    type Result = ();
    fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Shutdown> for Worker {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

const WAIT: Duration = Duration::from_secs(10);

async fn restarted(slot: &Slot<Worker>, old: &Addr<Worker>) -> Addr<Worker> {
    tokio::time::timeout(WAIT, slot.next_after(Some(old)))
        .await
        .expect("the child was not restarted")
}

fn worker_spec(slot: &Slot<Worker>, restart: Restart) -> ChildSpec {
    ChildSpec::new("worker", restart, slot.clone(), |note| {
        Worker::new("worker", note)
    })
}

#[actix_rt::test]
async fn a_child_that_panics_is_restarted_and_serves_the_next_message() {
    let slot = Slot::new();
    let report = Report::default();
    let root = Root::start(
        "root",
        Intensity::default(),
        vec![worker_spec(&slot, Restart::Permanent)],
        report.clone(),
    );
    let first = slot.next_after(None).await;
    assert_eq!(first.send(Work).await.unwrap(), 1);
    assert_eq!(first.send(Work).await.unwrap(), 2);

    first.do_send(Boom);
    let second = restarted(&slot, &first).await;
    // A holder of the slot reaches the new instance, which starts afresh.
    assert_eq!(slot.get().unwrap().send(Work).await.unwrap(), 1);
    assert!(
        first.send(Work).await.is_err(),
        "the old address must be closed"
    );
    assert_eq!(second, slot.get().unwrap());

    let status = report.get("root/worker").unwrap();
    assert_eq!(status.restarts, 1);
    assert_eq!(status.state, ChildState::Running);
    let (_, why) = status.last_failure.unwrap();
    assert!(why.contains("panicked: boom in worker"), "{why}");

    root.stopper()
        .get()
        .unwrap()
        .do_send(Shutdown { reason: "test" });
    assert_eq!(root.stopped().await, Exit::Normal);
}

#[actix_rt::test]
async fn a_child_that_fails_is_restarted_with_its_reason_recorded() {
    let slot = Slot::new();
    let report = Report::default();
    let _root = Root::start(
        "root",
        Intensity::default(),
        vec![worker_spec(&slot, Restart::Permanent)],
        report.clone(),
    );
    let first = slot.next_after(None).await;
    first.do_send(Fail("database gone"));
    let second = restarted(&slot, &first).await;
    assert_eq!(second.send(Work).await.unwrap(), 1);
    let (_, why) = report.get("root/worker").unwrap().last_failure.unwrap();
    assert_eq!(why, "failed: database gone");
}

#[actix_rt::test]
async fn a_child_failing_in_a_loop_is_given_up_and_the_failure_escalates() {
    let report = Report::default();
    let spec = ChildSpec::new("looper", Restart::Permanent, Slot::new(), |note| Worker {
        panic_on_start: true,
        ..Worker::new("looper", note)
    });
    let intensity = Intensity {
        max_restarts: 3,
        period: Duration::from_secs(60),
    };
    let root = Root::start("root", intensity, vec![spec], report.clone());
    let exit = tokio::time::timeout(WAIT, root.stopped()).await.unwrap();
    let Exit::Failed(why) = exit else {
        panic!("the root should fail, it ended with {exit:?}")
    };
    assert!(
        why.contains("root/looper panicked: looper cannot start 4 times"),
        "{why}"
    );
    let status = report.get("root/looper").unwrap();
    assert_eq!((status.restarts, status.state), (3, ChildState::GivenUp));
}

#[actix_rt::test]
async fn a_nested_supervisor_that_gives_up_is_restarted_by_its_parent() {
    let report = Report::default();
    let looper = ChildSpec::new("looper", Restart::Permanent, Slot::new(), |note| Worker {
        panic_on_start: true,
        ..Worker::new("looper", note)
    });
    let inner = ChildSpec::supervisor(
        "inner",
        Intensity {
            max_restarts: 1,
            period: Duration::from_secs(60),
        },
        vec![looper],
        report.clone(),
        Slot::new(),
    );
    let outer = Intensity {
        max_restarts: 2,
        period: Duration::from_secs(60),
    };
    let root = Root::start("root", outer, vec![inner], report.clone());
    let exit = tokio::time::timeout(WAIT, root.stopped()).await.unwrap();
    assert!(
        matches!(exit, Exit::Failed(ref why) if why.contains("root/inner")),
        "{exit:?}"
    );
    assert_eq!(report.get("root/inner").unwrap().restarts, 2);
    assert_eq!(
        report.get("root/inner/looper").unwrap().state,
        ChildState::GivenUp
    );
}

#[actix_rt::test]
async fn a_transient_child_that_stops_normally_stays_stopped() {
    let slot = Slot::new();
    let report = Report::default();
    let _root = Root::start(
        "root",
        Intensity::default(),
        vec![worker_spec(&slot, Restart::Transient)],
        report.clone(),
    );
    let first = slot.next_after(None).await;
    first.do_send(Quit);
    for _ in 0..100 {
        if report.get("root/worker").unwrap().state == ChildState::Stopped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = report.get("root/worker").unwrap();
    assert_eq!((status.state, status.restarts), (ChildState::Stopped, 0));
    assert!(slot.get().is_none());
}

#[actix_rt::test]
async fn shutdown_stops_children_last_started_first() {
    let stops: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let started = Arc::new(AtomicUsize::new(0));
    let spec = |name: &'static str| {
        let stops = stops.clone();
        let started = started.clone();
        ChildSpec::new(name, Restart::Permanent, Slot::new(), move |note| {
            started.fetch_add(1, Ordering::SeqCst);
            Worker {
                stops: stops.clone(),
                ..Worker::new(name, note)
            }
        })
    };
    let root = Root::start(
        "root",
        Intensity::default(),
        vec![spec("first"), spec("second"), spec("third")],
        Report::default(),
    );
    let stopper = root.stopper().next_after(None).await;
    while started.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stopper.do_send(Shutdown { reason: "test" });
    assert_eq!(root.stopped().await, Exit::Normal);
    assert_eq!(*stops.lock().unwrap(), ["third", "second", "first"]);
}

#[actix_rt::test]
async fn a_child_on_another_arbiter_is_supervised_too() {
    let arbiter = actix_rt::Arbiter::new();
    let slot = Slot::new();
    let report = Report::default();
    let _root = Root::start(
        "root",
        Intensity::default(),
        vec![worker_spec(&slot, Restart::Permanent).on(arbiter.handle())],
        report.clone(),
    );
    let first = tokio::time::timeout(WAIT, slot.next_after(None))
        .await
        .unwrap();
    first.do_send(Boom);
    let second = restarted(&slot, &first).await;
    assert_eq!(second.send(Work).await.unwrap(), 1);
    assert_eq!(report.get("root/worker").unwrap().restarts, 1);
    arbiter.stop();
}

#[actix_rt::test]
async fn a_child_can_be_added_to_a_running_supervisor() {
    let report = Report::default();
    let inner_slot = Slot::new();
    let inner = ChildSpec::supervisor(
        "inner",
        Intensity::default(),
        vec![],
        report.clone(),
        inner_slot.clone(),
    );
    let _root = Root::start("root", Intensity::default(), vec![inner], report.clone());
    let inner = tokio::time::timeout(WAIT, inner_slot.next_after(None))
        .await
        .unwrap();
    let slot = Slot::new();
    inner.do_send(StartChild(worker_spec(&slot, Restart::Permanent)));
    inner.do_send(StartChild(worker_spec(&Slot::new(), Restart::Permanent)));
    let worker = tokio::time::timeout(WAIT, slot.next_after(None))
        .await
        .unwrap();
    assert_eq!(worker.send(Work).await.unwrap(), 1);
    assert_eq!(
        report.get("root/inner/worker").unwrap().state,
        ChildState::Running
    );
    assert_eq!(
        report.snapshot().len(),
        2,
        "the second spec of the same name is ignored"
    );
}

#[actix_rt::test]
async fn a_restarted_supervisor_starts_the_children_added_to_it_again() {
    let report = Report::default();
    let inner_slot = Slot::new();
    let fragile = Intensity {
        max_restarts: 0,
        period: Duration::from_secs(10),
    };
    let inner = ChildSpec::supervisor("inner", fragile, vec![], report.clone(), inner_slot.clone());
    let _root = Root::start("root", Intensity::default(), vec![inner], report.clone());
    let first_inner = tokio::time::timeout(WAIT, inner_slot.next_after(None))
        .await
        .unwrap();
    let slot = Slot::new();
    first_inner.do_send(StartChild(worker_spec(&slot, Restart::Permanent)));
    let worker = tokio::time::timeout(WAIT, slot.next_after(None))
        .await
        .unwrap();
    // The worker's panic exceeds the inner supervisor's intensity: it fails, and the root
    // starts a new one, which must bring the added worker back.
    worker.do_send(Boom);
    tokio::time::timeout(WAIT, inner_slot.next_after(Some(&first_inner)))
        .await
        .expect("the inner supervisor was not restarted");
    let again = restarted(&slot, &worker).await;
    assert_eq!(again.send(Work).await.unwrap(), 1);
    assert_eq!(report.get("root/inner").unwrap().restarts, 1);
}
