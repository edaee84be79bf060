//! OTP-style supervision for actix actors.
//!
//! actix restarts an actor whose context stops, but a panic in a handler just ends the
//! actor's task and closes its address. Here every child runs inside `catch_unwind`, so a
//! panic and an error exit are both seen; each child has a restart intensity (at most R
//! restarts in T seconds), past which its supervisor stops its whole subtree and fails in
//! turn, escalating to its own supervisor. Holders of a [`Slot`] always reach the live
//! instance of a child across restarts.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use futures_util::future::{AbortHandle, Abortable};
use futures_util::FutureExt;
use log::{error, info, warn};
use tokio::sync::oneshot;

use crate::settings::human_duration;

mod report;
mod slot;

pub use report::{ChildState, ChildStatus, Report};
pub use slot::{Outlet, Slot};

/// Lets a supervised actor say why it stopped; an actor that stops without a note stopped
/// normally.
#[derive(Clone, Default)]
pub struct ExitNote(Arc<Mutex<Option<String>>>);

impl ExitNote {
    pub fn fail(&self, reason: impl Into<String>) {
        *lock(&self.0) = Some(reason.into());
    }

    fn take(&self) -> Option<String> {
        lock(&self.0).take()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Asks a supervised actor to stop cleanly.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub reason: &'static str,
}

/// How a child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Normal,
    Failed(String),
    Panicked(String),
    /// Did not stop within the grace period and was dropped.
    Killed,
}

impl Exit {
    fn describe(&self) -> String {
        match self {
            Exit::Normal => "stopped".into(),
            Exit::Failed(r) => format!("failed: {r}"),
            Exit::Panicked(m) => format!("panicked: {m}"),
            Exit::Killed => "killed after the shutdown grace period".into(),
        }
    }
}

pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into())
}

/// When a stopped child is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted.
    Permanent,
    /// Restarted only after a failure or a panic.
    Transient,
}

/// At most `max_restarts` restarts of one child within `period`.
#[derive(Clone, Copy, Debug)]
pub struct Intensity {
    pub max_restarts: u32,
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 5,
            period: Duration::from_secs(10),
        }
    }
}

/// A running child as its supervisor sees it.
struct Running {
    exit: oneshot::Receiver<Exit>,
    stop: Box<dyn Fn(Shutdown) + Send>,
    abort: AbortHandle,
}

/// Starts one instance, given the child's path in the tree and where to run it.
type Starter = dyn Fn(&str, Option<&ArbiterHandle>) -> Running + Send + Sync;

/// How to start (and restart) one child.
#[derive(Clone)]
pub struct ChildSpec {
    name: String,
    restart: Restart,
    arbiter: Option<ArbiterHandle>,
    start: Arc<Starter>,
}

impl ChildSpec {
    /// A child built by `make` each time it starts; `slot` always holds its live address.
    pub fn new<A, F>(name: impl Into<String>, restart: Restart, slot: Slot<A>, make: F) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Shutdown>,
        F: Fn(ExitNote) -> A + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        ChildSpec {
            name: name.into(),
            restart,
            arbiter: None,
            start: Arc::new(move |_path, arbiter| launch(slot.clone(), make.clone(), arbiter)),
        }
    }

    /// A nested supervisor: it fails, and so escalates, when one of its children exceeds
    /// its intensity.
    pub fn supervisor(
        name: impl Into<String>,
        intensity: Intensity,
        children: Vec<ChildSpec>,
        report: Report,
        slot: Slot<Supervisor>,
    ) -> Self {
        ChildSpec {
            name: name.into(),
            restart: Restart::Permanent,
            arbiter: None,
            start: {
                let specs: Specs = Arc::new(Mutex::new(children));
                Arc::new(move |path, arbiter| {
                    let make = Supervisor::maker(path, intensity, specs.clone(), report.clone());
                    launch(slot.clone(), make, arbiter)
                })
            },
        }
    }

    /// Runs the child on `arbiter` rather than on its supervisor's.
    pub fn on(mut self, arbiter: ArbiterHandle) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Starts one instance of an actor under `catch_unwind` and reports how it ended.
fn launch<A, F>(slot: Slot<A>, make: Arc<F>, arbiter: Option<&ArbiterHandle>) -> Running
where
    A: Actor<Context = Context<A>> + Handler<Shutdown>,
    F: Fn(ExitNote) -> A + Send + Sync + 'static,
{
    let (exit_tx, exit_rx) = oneshot::channel();
    let (abort, registration) = AbortHandle::new_pair();
    let run_slot = slot.clone();
    let run = move || {
        let ctx = Context::<A>::new();
        let addr = ctx.address();
        let note = ExitNote::default();
        let actor = match std::panic::catch_unwind(AssertUnwindSafe(|| make(note.clone()))) {
            Ok(actor) => actor,
            Err(p) => {
                let _ = exit_tx.send(Exit::Panicked(panic_message(&*p)));
                return;
            }
        };
        run_slot.set(Some(addr.clone()));
        actix_rt::spawn(async move {
            let mut fut = Box::pin(Abortable::new(ctx.into_future(actor), registration));
            let outcome = AssertUnwindSafe(fut.as_mut()).catch_unwind().await;
            // Dropping a live actix context polls it once more to run `stopping`/`stopped`,
            // which may panic again after a first panic.
            let dropped = std::panic::catch_unwind(AssertUnwindSafe(move || drop(fut)));
            run_slot.clear_if(&addr);
            let exit = match (outcome, dropped) {
                (Err(p), _) | (Ok(_), Err(p)) => Exit::Panicked(panic_message(&*p)),
                (Ok(Err(_aborted)), Ok(())) => Exit::Killed,
                (Ok(Ok(())), Ok(())) => note.take().map_or(Exit::Normal, Exit::Failed),
            };
            let _ = exit_tx.send(exit);
        });
    };
    match arbiter {
        // If the arbiter is gone the closure is dropped, and so is `exit_tx`: the
        // supervisor then sees the child fail.
        Some(arbiter) => {
            arbiter.spawn_fn(run);
        }
        None => run(),
    }
    Running {
        exit: exit_rx,
        stop: Box::new(move |msg| {
            if let Some(addr) = slot.get() {
                addr.do_send(msg);
            }
        }),
        abort,
    }
}

struct Child {
    spec: ChildSpec,
    path: String,
    running: Option<Running>,
    generation: u64,
    restarts: VecDeque<Instant>,
    /// Stopped by [`StopChild`]: not restarted until started again.
    retired: bool,
}

/// Time a stopping child gets before it is dropped.
const GRACE: Duration = Duration::from_secs(5);

/// A supervisor's child specs, kept across its restarts: children added while it ran
/// ([`StartChild`]) are started again by its next instance.
type Specs = Arc<Mutex<Vec<ChildSpec>>>;

/// A supervisor actor: starts its children in order, restarts them by their policy, and
/// stops them in reverse order.
pub struct Supervisor {
    path: String,
    intensity: Intensity,
    specs: Specs,
    children: Vec<Child>,
    report: Report,
    note: ExitNote,
    /// Set once the supervisor is stopping, with what its children are told.
    stopping: Option<Shutdown>,
}

impl Supervisor {
    fn new(
        path: impl Into<String>,
        intensity: Intensity,
        specs: Specs,
        report: Report,
        note: ExitNote,
    ) -> Self {
        let path = path.into();
        let children = lock(&specs)
            .iter()
            .cloned()
            .map(|spec| Child {
                path: format!("{path}/{}", spec.name),
                spec,
                running: None,
                generation: 0,
                restarts: VecDeque::new(),
                retired: false,
            })
            .collect();
        Supervisor {
            path,
            intensity,
            specs,
            children,
            report,
            note,
            stopping: None,
        }
    }

    /// Builds a fresh instance of this supervisor at each (re)start.
    fn maker(
        path: &str,
        intensity: Intensity,
        specs: Specs,
        report: Report,
    ) -> Arc<impl Fn(ExitNote) -> Supervisor + Send + Sync + 'static> {
        let path = path.to_owned();
        Arc::new(move |note| {
            Supervisor::new(path.clone(), intensity, specs.clone(), report.clone(), note)
        })
    }

    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
        let child = &mut self.children[index];
        child.generation += 1;
        let generation = child.generation;
        let mut running = (child.spec.start)(&child.path, child.spec.arbiter.as_ref());
        let exit = std::mem::replace(&mut running.exit, oneshot::channel().1);
        child.running = Some(running);
        self.report.started(&child.path);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(exit).map(move |exit, act, ctx| {
                let exit = exit.unwrap_or_else(|_| Exit::Failed("its arbiter is gone".into()));
                act.child_exited(index, generation, exit, ctx);
            }),
        );
    }

    fn child_exited(&mut self, index: usize, generation: u64, exit: Exit, ctx: &mut Context<Self>) {
        let intensity = self.intensity;
        let child = &mut self.children[index];
        if child.generation != generation {
            return;
        }
        child.running = None;
        if self.stopping.is_some() {
            self.report.exited(&child.path, &exit, false, false);
            self.stop_next(ctx);
            return;
        }
        if child.retired {
            info!("{} stopped", child.path);
            self.report.exited(&child.path, &exit, false, false);
            return;
        }
        if exit == Exit::Normal && child.spec.restart == Restart::Transient {
            info!("{} stopped", child.path);
            self.report.exited(&child.path, &exit, false, false);
            return;
        }
        let now = Instant::now();
        while child
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > intensity.period)
        {
            child.restarts.pop_front();
        }
        if child.restarts.len() >= intensity.max_restarts as usize {
            let reason = format!(
                "{} {} {} times within {}; giving up",
                child.path,
                exit.describe(),
                intensity.max_restarts + 1,
                human_duration(intensity.period)
            );
            error!("{reason}; stopping {}", self.path);
            self.report.exited(&child.path, &exit, false, true);
            self.note.fail(reason);
            self.stop_children(
                Shutdown {
                    reason: "supervisor gave up",
                },
                ctx,
            );
            return;
        }
        child.restarts.push_back(now);
        let attempt = child.restarts.len();
        let line = format!(
            "{} {}; restarting ({attempt} of {} within {})",
            child.path,
            exit.describe(),
            intensity.max_restarts,
            human_duration(intensity.period)
        );
        match exit {
            Exit::Normal => warn!("{line}"),
            _ => error!("{line}"),
        }
        self.report.exited(&child.path, &exit, true, false);
        self.start_child(index, ctx);
    }

    /// Starts stopping: children are stopped one at a time, last started first, then this
    /// supervisor stops.
    fn stop_children(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        self.stopping = Some(msg);
        self.stop_next(ctx);
    }

    fn stop_next(&mut self, ctx: &mut Context<Self>) {
        let Some(msg) = self.stopping else {
            return;
        };
        let Some(index) = self.children.iter().rposition(|c| c.running.is_some()) else {
            ctx.stop();
            return;
        };
        let child = &self.children[index];
        let generation = child.generation;
        if let Some(running) = &child.running {
            (running.stop)(msg);
        }
        ctx.run_later(GRACE, move |act, _ctx| {
            let child = &act.children[index];
            if let (Some(running), true) = (&child.running, child.generation == generation) {
                warn!(
                    "{} did not stop within {}",
                    child.path,
                    human_duration(GRACE)
                );
                running.abort.abort();
            }
        });
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for index in 0..self.children.len() {
            self.start_child(index, ctx);
        }
    }
}

/// Adds a child to a running supervisor (OTP's `start_child`); a child of the same name
/// already there is left as it is.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartChild(pub ChildSpec);

impl Handler<StartChild> for Supervisor {
    type Result = ();

    fn handle(&mut self, StartChild(spec): StartChild, ctx: &mut Context<Self>) {
        if self.stopping.is_some() {
            return;
        }
        let index = match self.children.iter().position(|c| c.spec.name == spec.name) {
            // A child stopped by StopChild starts again; if it is still stopping, its exit
            // restarts it.
            Some(i) if self.children[i].retired => {
                let child = &mut self.children[i];
                child.retired = false;
                child.spec = spec.clone();
                if child.running.is_some() {
                    lock(&self.specs).push(spec);
                    return;
                }
                i
            }
            Some(_) => return,
            None => {
                self.children.push(Child {
                    path: format!("{}/{}", self.path, spec.name),
                    spec: spec.clone(),
                    running: None,
                    generation: 0,
                    restarts: VecDeque::new(),
                    retired: false,
                });
                self.children.len() - 1
            }
        };
        lock(&self.specs).push(spec);
        info!("{} added", self.children[index].path);
        self.start_child(index, ctx);
    }
}

/// Stops a child of a running supervisor for good (until a [`StartChild`] of the same
/// name): it is not restarted, nor started again by the supervisor's next instance.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopChild(pub String);

impl Handler<StopChild> for Supervisor {
    type Result = ();

    fn handle(&mut self, StopChild(name): StopChild, _: &mut Context<Self>) {
        lock(&self.specs).retain(|s| s.name != name);
        let Some(child) = self.children.iter_mut().find(|c| c.spec.name == name) else {
            return;
        };
        child.retired = true;
        if let Some(running) = &child.running {
            (running.stop)(Shutdown {
                reason: "stopped by its supervisor",
            });
        }
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        if self.stopping.is_none() {
            self.stop_children(msg, ctx);
        }
    }
}

/// The root of a supervision tree, started outside any supervisor.
pub struct Root {
    slot: Slot<Supervisor>,
    exit: oneshot::Receiver<Exit>,
}

impl Root {
    /// Starts the root supervisor on the current arbiter.
    pub fn start(
        path: &str,
        intensity: Intensity,
        children: Vec<ChildSpec>,
        report: Report,
    ) -> Root {
        let slot = Slot::new();
        let specs = Arc::new(Mutex::new(children));
        let running = launch(
            slot.clone(),
            Supervisor::maker(path, intensity, specs, report),
            None,
        );
        Root {
            slot,
            exit: running.exit,
        }
    }

    /// A handle to ask the tree to stop.
    pub fn stopper(&self) -> Slot<Supervisor> {
        self.slot.clone()
    }

    /// Resolves when the tree has stopped, with how.
    pub async fn stopped(self) -> Exit {
        self.exit
            .await
            .unwrap_or_else(|_| Exit::Failed("the root supervisor vanished".into()))
    }
}
