//! A simulated Asterisk for ctid's tests, benchmarks and demos: an AMI server that accepts
//! logins (plain and MD5, right and wrong secrets), answers the actions ctid sends (call
//! control included: an Originate places a call, a Hangup ends one), replays recorded
//! fixture streams, generates synthetic calls at a given rate, and drops its connections on
//! demand. It reuses ctid's own AMI codec.

pub mod calls;
pub mod queue;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use ctid_proto::ami::{md5_key, AmiCodec, AmiFrame, AmiMessage, AmiPacket, MessageKind};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use calls::{Call, CallPlan, ChannelTable, Stage};
use queue::{QueueCall, QueuePlan};

pub const BANNER: &str = "Asterisk Call Manager/11.0.0";

/// Events queued for one client before it counts as too slow (Asterisk drops such a
/// client after its `writetimeout`).
const EVENT_BACKLOG: usize = 1 << 16;

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub listen: SocketAddr,
    pub username: String,
    pub secret: String,
    /// Events sent to each client right after its login (see [`recorded_events`]).
    pub on_login: Vec<Bytes>,
    /// How long an originated call rings, then lasts once answered.
    pub originate_ring: Duration,
    pub originate_talk: Duration,
    /// Record when each call's stages were sent (for latency measurements).
    pub trace: bool,
    /// Codecs of the calls' channels: callees (phones) have the first, callers each in
    /// turn, call after call; a caller on another codec than the phones' is translated
    /// (`Readtrans`, `Writetrans` in its `Status`).
    pub codecs: Vec<String>,
    /// Stamp every event with `Timestamp`, as Asterisk does with `timestampevents = yes`.
    pub timestamps: bool,
    /// How far behind the real time the stamps are (a PBX whose clock is late, or events
    /// that took this long to arrive).
    pub clock_behind: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: "cti".into(),
            secret: "ctipass".into(),
            on_login: Vec::new(),
            originate_ring: Duration::from_millis(200),
            originate_talk: Duration::from_secs(5),
            trace: false,
            codecs: ["ulaw", "alaw", "g722", "opus"].map(String::from).to_vec(),
            timestamps: false,
            clock_behind: Duration::ZERO,
        }
    }
}

/// The events of a recorded AMI stream (a fixtures/ami file), as wire bytes, and how many
/// there are. Responses and the events of the recording's own login are left out.
pub fn recorded_events(recording: &[u8]) -> (Bytes, usize) {
    let mut codec = AmiCodec::default();
    let mut buf = BytesMut::from(recording);
    let mut out = BytesMut::new();
    let mut count = 0;
    while let Ok(Some(frame)) = tokio_util::codec::Decoder::decode_eof(&mut codec, &mut buf) {
        if let AmiFrame::Message(m) = frame {
            if m.kind() == MessageKind::Event
                && !matches!(m.event(), Some("FullyBooted" | "SuccessfulAuth"))
            {
                out.extend_from_slice(m.wire_text().as_bytes());
                count += 1;
            }
        }
    }
    (out.freeze(), count)
}

/// One login attempt, as the simulator saw it.
#[derive(Clone, Debug)]
pub struct LoginAttempt {
    pub at: Instant,
    pub username: String,
    pub md5: bool,
    pub accepted: bool,
}

/// When a call's start, answer and hangup events were sent.
pub type Stamps = [Option<Instant>; 3];

/// Stamps of every call, by call id (its first channel's Uniqueid).
pub type Trace = Arc<Mutex<HashMap<String, Stamps>>>;

/// Live synthetic calls and when their next stage is due.
#[derive(Default)]
struct Schedule {
    calls: HashMap<u64, (Call, Duration)>,
    due: BinaryHeap<Reverse<(tokio::time::Instant, u64, Stage)>>,
    next_seq: u64,
}

struct Shared {
    cfg: SimConfig,
    events: broadcast::Sender<Bytes>,
    drops: watch::Sender<u64>,
    logins: Mutex<Vec<LoginAttempt>>,
    actions: Mutex<Vec<AmiMessage>>,
    channels: Mutex<ChannelTable>,
    schedule: Mutex<Schedule>,
    /// Calls in or out of a queue, by number.
    queued: Mutex<HashMap<u64, QueueCall>>,
    next_queued: AtomicU64,
    /// Held while the channel table and the event stream change together, and while a
    /// list is taken: a list then shows what the events before it in the stream made, as
    /// Asterisk's do.
    order: Mutex<()>,
    wake: Notify,
    trace: Trace,
    /// Actions answered with an error, by lowercase name, with its message.
    failures: Mutex<HashMap<String, String>>,
    connections: AtomicUsize,
    muted: AtomicBool,
    next_id: AtomicU64,
    epoch: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn uniqueid(&self) -> String {
        format!(
            "{}.{}",
            self.epoch,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn broadcast(&self, packets: &[AmiPacket]) {
        let mut buf = BytesMut::new();
        for p in packets {
            buf.extend_from_slice(&self.stamped(p).to_bytes());
        }
        let _ = self.events.send(buf.freeze());
    }

    /// An event with a `Timestamp` now (less `clock_behind`), if events are stamped.
    fn stamped(&self, packet: &AmiPacket) -> AmiPacket {
        if !self.cfg.timestamps || packet.get("Event").is_none() {
            return packet.clone();
        }
        let now = SystemTime::now()
            .checked_sub(self.cfg.clock_behind)
            .unwrap_or(UNIX_EPOCH);
        let t = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        packet
            .clone()
            .field("Timestamp", format!("{:.6}", t.as_secs_f64()))
    }

    fn stamp(&self, call: &Call, stage: usize) {
        if self.cfg.trace {
            lock(&self.trace)
                .entry(call.caller.uniqueid.clone())
                .or_default()[stage] = Some(Instant::now());
        }
    }

    /// Sends a new call's first events and schedules its answer.
    fn start_call(
        &self,
        make: impl FnOnce(u64, &mut dyn FnMut() -> String) -> Call,
        ring: Duration,
        talk: Duration,
    ) -> Call {
        let mut schedule = lock(&self.schedule);
        let seq = schedule.next_seq;
        schedule.next_seq += 1;
        let mut call = make(seq, &mut || self.uniqueid()).with_codecs(&self.cfg.codecs, seq);
        let events = call.start_events();
        let order = lock(&self.order);
        lock(&self.channels).update(&call, false);
        self.broadcast(&events);
        drop(order);
        self.stamp(&call, 0);
        schedule.due.push(Reverse((
            tokio::time::Instant::now() + ring,
            seq,
            Stage::Answer,
        )));
        schedule.calls.insert(seq, (call.clone(), talk));
        drop(schedule);
        self.wake.notify_one();
        call
    }

    /// Sends the events of every stage due by `now`.
    fn run_due(&self, now: tokio::time::Instant) {
        let mut schedule = lock(&self.schedule);
        let _order = lock(&self.order);
        let mut packets = Vec::new();
        while let Some(Reverse((at, seq, stage))) = schedule.due.peek().copied() {
            if at > now {
                break;
            }
            schedule.due.pop();
            let Some((call, talk)) = schedule.calls.get_mut(&seq) else {
                continue;
            };
            packets.extend(call.events(stage));
            let talk = *talk;
            match stage {
                Stage::Answer => {
                    lock(&self.channels).update(call, false);
                    self.stamp(call, 1);
                    schedule.due.push(Reverse((now + talk, seq, Stage::Hangup)));
                }
                Stage::Hangup => {
                    lock(&self.channels).update(call, true);
                    self.stamp(call, 2);
                    schedule.calls.remove(&seq);
                }
            }
        }
        if !packets.is_empty() {
            self.broadcast(&packets);
        }
    }

    /// Ends the call that has a channel named `channel`; false if there is none.
    fn hang_up(&self, channel: &str) -> bool {
        let seq = lock(&self.schedule)
            .calls
            .iter()
            .find(|(_, (c, _))| c.caller.name == channel || c.callee.name == channel)
            .map(|(seq, _)| *seq);
        seq.is_some_and(|seq| self.end(seq))
    }

    /// Ends call `seq` now; false if it already ended.
    fn end(&self, seq: u64) -> bool {
        let mut schedule = lock(&self.schedule);
        let Some((mut call, _)) = schedule.calls.remove(&seq) else {
            return false;
        };
        let events = call.events(Stage::Hangup);
        let _order = lock(&self.order);
        lock(&self.channels).update(&call, true);
        self.stamp(&call, 2);
        self.broadcast(&events);
        true
    }

    fn queue_call(&self, context: &str, queue: &str, number: &str, name: &str) -> (u64, String) {
        let seq = self.next_queued.fetch_add(1, Ordering::Relaxed);
        let mut call = QueueCall::new(context, queue, number, name, seq, &mut || self.uniqueid());
        let id = call.caller.uniqueid.clone();
        let events = call.join();
        lock(&self.queued).insert(seq, call);
        self.step_queued(seq, false, |_, _| events);
        (seq, id)
    }

    /// Changes queue call `seq` with `step`, and sends the events it makes; false if
    /// there is no such call. `end` forgets it.
    fn step_queued(
        &self,
        seq: u64,
        end: bool,
        step: impl FnOnce(&mut QueueCall, &mut dyn FnMut() -> String) -> Vec<AmiPacket>,
    ) -> bool {
        let mut queued = lock(&self.queued);
        let Some(call) = queued.get_mut(&seq) else {
            return false;
        };
        let events = step(call, &mut || self.uniqueid());
        let chans = call.channels();
        if end {
            queued.remove(&seq);
        }
        let order = lock(&self.order);
        lock(&self.channels).set(&chans, end);
        self.broadcast(&events);
        drop(order);
        true
    }

    fn has_channel(&self, name: &str) -> bool {
        lock(&self.channels)
            .channels()
            .iter()
            .any(|c| c.name == name)
    }
}

/// Fires the stages of synthetic calls when they are due.
async fn schedule(shared: Arc<Shared>) {
    loop {
        let next = lock(&shared.schedule)
            .due
            .peek()
            .map(|Reverse((at, _, _))| *at);
        let woken = shared.wake.notified();
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => shared.run_due(tokio::time::Instant::now()),
                    _ = woken => {}
                }
            }
            None => woken.await,
        }
    }
}

/// A running simulator; it stops when dropped.
pub struct PbxSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PbxSim {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.drop_connections();
    }
}

impl PbxSim {
    /// Binds and starts accepting AMI clients (on the current tokio runtime).
    pub async fn start(cfg: SimConfig) -> io::Result<PbxSim> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let shared = Arc::new(Shared {
            cfg,
            events: broadcast::channel(EVENT_BACKLOG).0,
            drops: watch::channel(0).0,
            logins: Mutex::default(),
            actions: Mutex::default(),
            channels: Mutex::default(),
            schedule: Mutex::default(),
            queued: Mutex::default(),
            next_queued: AtomicU64::new(1),
            order: Mutex::default(),
            wake: Notify::new(),
            trace: Trace::default(),
            failures: Mutex::default(),
            connections: AtomicUsize::new(0),
            muted: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            epoch,
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let shared = accepting.clone();
                tokio::spawn(async move {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = serve(stream, &shared).await {
                        log::debug!("pbxsim: {peer}: {e}");
                    }
                    shared.connections.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        let scheduler = tokio::spawn(schedule(shared.clone()));
        Ok(PbxSim {
            addr,
            shared,
            tasks: vec![accept, scheduler],
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every login attempt so far.
    pub fn logins(&self) -> Vec<LoginAttempt> {
        lock(&self.shared.logins).clone()
    }

    /// Every action received so far (logins included), in order.
    pub fn actions(&self) -> Vec<AmiMessage> {
        lock(&self.shared.actions).clone()
    }

    /// Clients connected now.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Closes every client connection, as a crashing or restarting Asterisk would.
    pub fn drop_connections(&self) {
        self.shared.drops.send_modify(|g| *g += 1);
    }

    /// While muted the simulator reads actions but answers none (a hung Asterisk).
    pub fn set_muted(&self, muted: bool) {
        self.shared.muted.store(muted, Ordering::SeqCst);
    }

    /// Answers every action named `action` with `Response: Error` and `message` from now
    /// on (None: answers it normally again).
    pub fn fail(&self, action: &str, message: Option<&str>) {
        let mut failures = lock(&self.shared.failures);
        match message {
            Some(m) => failures.insert(action.to_ascii_lowercase(), m.to_owned()),
            None => failures.remove(&action.to_ascii_lowercase()),
        };
    }

    /// Sends events to every logged-in client that has events on.
    pub fn emit(&self, packets: &[AmiPacket]) {
        self.shared.broadcast(packets);
    }

    /// Sends the events of a recorded AMI stream (a fixtures/ami file) to every logged-in
    /// client now; returns how many.
    pub fn replay(&self, recording: &[u8]) -> usize {
        let (bytes, count) = recorded_events(recording);
        let _ = self.shared.events.send(bytes);
        count
    }

    /// Places one call from phone `tech/from` to `to` in dialplan context `context`; returns
    /// its id (the caller channel's Uniqueid) and the caller and callee channel names.
    pub fn place_call(
        &self,
        context: &str,
        tech: &str,
        from: &str,
        to: &str,
        ring: Duration,
        talk: Duration,
    ) -> (String, String, String) {
        let call = self.shared.start_call(
            |seq, ids| Call::between(context, tech, from, to, seq, ids),
            ring,
            talk,
        );
        (call.caller.uniqueid, call.caller.name, call.callee.name)
    }

    /// An outside caller, `number` shown as `name`, enters `queue` from dialplan
    /// `context`; returns the call's number for the other queue steps, and its id (the
    /// caller channel's Uniqueid).
    pub fn queue_call(
        &self,
        context: &str,
        queue: &str,
        number: &str,
        name: &str,
    ) -> (u64, String) {
        self.shared.queue_call(context, queue, number, name)
    }

    /// The queue rings member `interface` (`PJSIP/1001`), named `member`, for call `seq`.
    pub fn ring_member(&self, seq: u64, interface: &str, member: &str) -> bool {
        self.shared
            .step_queued(seq, false, |c, ids| c.ring(interface, member, ids()))
    }

    /// The member rung for call `seq` answers and takes it.
    pub fn connect_member(&self, seq: u64) -> bool {
        self.shared.step_queued(seq, false, |c, _| c.connect())
    }

    /// Queue call `seq` ends: hung up after its talk, or abandoned if no member took it
    /// (after waiting `waited`).
    pub fn end_queue_call(&self, seq: u64, waited: Duration) -> bool {
        self.shared.step_queued(seq, true, |c, _| c.hang_up(waited))
    }

    /// Generates queue calls by `plan` until its limit or until the handle is dropped
    /// (calls under way still end).
    pub fn run_queues(&self, plan: QueuePlan) -> CallsHandle {
        let started = Arc::new(AtomicU64::new(0));
        let counter = started.clone();
        let task = tokio::spawn(generate_queued(self.shared.clone(), plan, counter));
        CallsHandle { task, started }
    }

    /// Live calls, and how many of them are answered (bridged).
    pub fn calls(&self) -> (usize, usize) {
        let schedule = lock(&self.shared.schedule);
        let bridged = schedule
            .calls
            .values()
            .filter(|(c, _)| !c.caller.bridge.is_empty())
            .count();
        (schedule.calls.len(), bridged)
    }

    /// Ends every live call, one after another, evenly spread over `window` (a burst of
    /// hangups); the task answers how many it ended.
    pub fn hang_up_all(&self, window: Duration) -> JoinHandle<usize> {
        let shared = self.shared.clone();
        let mut live: Vec<u64> = lock(&shared.schedule).calls.keys().copied().collect();
        live.sort_unstable();
        tokio::spawn(async move {
            let begin = tokio::time::Instant::now();
            let step = window / live.len().max(1) as u32;
            let mut ended = 0;
            for (i, seq) in live.into_iter().enumerate() {
                tokio::time::sleep_until(begin + step * i as u32).await;
                ended += usize::from(shared.end(seq));
            }
            ended
        })
    }

    /// When each call's stages were sent (filled only with `SimConfig::trace`).
    pub fn trace(&self) -> Trace {
        self.shared.trace.clone()
    }

    /// Generates calls by `plan` until the plan's limit or until the handle is dropped.
    pub fn run_calls(&self, plan: CallPlan) -> CallsHandle {
        let shared = self.shared.clone();
        let started = Arc::new(AtomicU64::new(0));
        let counter = started.clone();
        let task = tokio::spawn(async move { generate(shared, plan, counter).await });
        CallsHandle { task, started }
    }
}

/// A running call generator; dropping it stops it (calls under way still end).
pub struct CallsHandle {
    task: JoinHandle<()>,
    started: Arc<AtomicU64>,
}

impl CallsHandle {
    /// Calls started so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
}

impl Drop for CallsHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn generate(shared: Arc<Shared>, plan: CallPlan, started: Arc<AtomicU64>) {
    if plan.tenants.is_empty() || plan.rate <= 0.0 {
        return;
    }
    let begin = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / plan.rate);
    let mut n = 0u64;
    while plan.limit.is_none_or(|l| n < l) {
        tokio::time::sleep_until(begin + interval.mul_f64(n as f64)).await;
        let now = tokio::time::Instant::now();
        while plan.limit.is_none_or(|l| n < l) && begin + interval.mul_f64(n as f64) <= now {
            let tenant = &plan.tenants[(n as usize) % plan.tenants.len()];
            let make = |seq, ids: &mut dyn FnMut() -> String| {
                let call = Call::new(tenant, seq, ids);
                if plan.caller_up {
                    call.caller_up()
                } else {
                    call
                }
            };
            shared.start_call(make, plan.ring, plan.talk);
            n += 1;
            started.store(n, Ordering::Relaxed);
        }
    }
}

/// The members free to take a call, per queue of a plan: (interface, name).
type FreeMembers = Vec<Vec<(String, String)>>;

/// One queue call of a plan: it waits for a free member of its queue, up to the caller's
/// patience; a member rings, answers, talks, and is free again after the hangup.
async fn queued_call(
    shared: Arc<Shared>,
    plan: Arc<QueuePlan>,
    free: Arc<Mutex<FreeMembers>>,
    n: u64,
) {
    let spec = n as usize % plan.queues.len();
    let q = &plan.queues[spec];
    let number = format!("+3361{:07}", fastrand::u32(0..10_000_000));
    let (seq, _) = shared.queue_call(&q.context, &q.queue, &number, &format!("Customer {n}"));
    let begin = tokio::time::Instant::now();
    let patience = between(plan.patience);
    let member = loop {
        if let Some(m) = lock(&free)[spec].pop() {
            break Some(m);
        }
        if begin.elapsed() >= patience {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let Some((interface, name)) = member else {
        shared.step_queued(seq, true, |c, _| c.hang_up(begin.elapsed()));
        return;
    };
    shared.step_queued(seq, false, |c, ids| c.ring(&interface, &name, ids()));
    tokio::time::sleep(plan.ring).await;
    shared.step_queued(seq, false, |c, _| c.connect());
    tokio::time::sleep(between(plan.talk)).await;
    shared.step_queued(seq, true, |c, _| c.hang_up(begin.elapsed()));
    lock(&free)[spec].insert(0, (interface, name));
}

fn between((low, high): (Duration, Duration)) -> Duration {
    low + (high.saturating_sub(low)).mul_f64(fastrand::f64())
}

async fn generate_queued(shared: Arc<Shared>, plan: QueuePlan, started: Arc<AtomicU64>) {
    if plan.queues.is_empty() || plan.rate <= 0.0 {
        return;
    }
    let free = Arc::new(Mutex::new(
        plan.queues
            .iter()
            .map(|q| q.members.clone())
            .collect::<Vec<_>>(),
    ));
    let plan = Arc::new(plan);
    let mut n = 0u64;
    while plan.limit.is_none_or(|l| n < l) {
        // Arrivals at random (exponential gaps), `rate` per second on average.
        let gap = -(1.0 - fastrand::f64()).ln() / plan.rate;
        tokio::time::sleep(Duration::from_secs_f64(gap.min(60.0))).await;
        tokio::spawn(queued_call(shared.clone(), plan.clone(), free.clone(), n));
        n += 1;
        started.store(n, Ordering::Relaxed);
    }
}

enum Auth {
    None,
    Challenged(String),
    Done { events: bool },
}

fn response(m: &AmiMessage, status: &str) -> AmiPacket {
    let mut p = AmiPacket::response(status);
    if let Some(id) = m.action_id() {
        p.push("ActionID", id.to_owned());
    }
    p
}

fn fully_booted() -> AmiPacket {
    AmiPacket::event("FullyBooted")
        .field("Privilege", "system,all")
        .field("Uptime", "10")
        .field("LastReload", "10")
        .field("Status", "Fully Booted")
}

/// What to do after answering an action.
enum Next {
    Continue,
    Close,
}

async fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{BANNER}\r\n").as_bytes()).await?;
    let mut actions = FramedRead::new(read, AmiCodec::without_banner(1 << 20));
    let mut events = shared.events.subscribe();
    let mut drops = shared.drops.subscribe();
    let mut auth = Auth::None;
    loop {
        let streaming = matches!(auth, Auth::Done { events: true });
        tokio::select! {
            frame = actions.next() => {
                let m = match frame {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(io::Error::other(e.to_string())),
                    Some(Ok(AmiFrame::Message(m))) => m,
                    Some(Ok(_)) => continue,
                };
                lock(&shared.actions).push(m.clone());
                if shared.muted.load(Ordering::SeqCst) {
                    continue;
                }
                let mut out = BytesMut::new();
                let was_in = matches!(auth, Auth::Done { .. });
                let listing = matches!(
                    m.get("Action").map(str::to_ascii_lowercase).as_deref(),
                    Some("coreshowchannels" | "queuestatus" | "status")
                );
                let next = {
                    let _order = listing.then(|| lock(&shared.order));
                    if listing && streaming {
                        while let Ok(before) = events.try_recv() {
                            out.extend_from_slice(&before);
                        }
                    }
                    answer(&m, &mut auth, shared, &mut out)
                };
                if !was_in && matches!(auth, Auth::Done { events: true }) {
                    for recording in &shared.cfg.on_login {
                        out.extend_from_slice(recording);
                    }
                }
                write.write_all(&out).await?;
                if let Next::Close = next {
                    return Ok(());
                }
            }
            event = events.recv(), if streaming => match event {
                Ok(bytes) => {
                    let mut out = BytesMut::from(&bytes[..]);
                    while let Ok(more) = events.try_recv() {
                        out.extend_from_slice(&more);
                    }
                    write.write_all(&out).await?;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    log::warn!("pbxsim: client {n} events behind; dropping it as Asterisk would");
                    return Ok(());
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = drops.changed() => return Ok(()),
        }
    }
}

/// The answer to a call-control action: success if the channels it names exist.
fn control(m: &AmiMessage, shared: &Shared, action: &str) -> AmiPacket {
    let named = ["Channel", "Channel1", "Channel2", "ExtraChannel"];
    if named
        .iter()
        .filter_map(|k| m.get(k))
        .any(|c| !shared.has_channel(c))
    {
        return response(m, "Error").field("Message", "No such channel");
    }
    let message = match action {
        "blindtransfer" => "Transfer succeeded",
        "atxfer" => "Atxfer successfully queued",
        "canceltransfer" | "cancelatxfer" => "CancelAtxfer successfully queued",
        "redirect" => "Redirect successful",
        "bridge" => "Channels have been bridged",
        "park" => "Park successful",
        "mixmonitor" => "Started MixMonitor",
        "stopmixmonitor" => "Stopped monitoring channel",
        "queueadd" => "Added interface to queue",
        "queueremove" => "Removed interface from queue",
        _ => "Interface paused successfully",
    };
    response(m, "Success").field("Message", message)
}

/// Places the call an Originate asks for: from the phone of `Channel` (`tech/number`) to
/// `Exten` in `Context`.
fn originate(m: &AmiMessage, shared: &Shared, put: &mut dyn FnMut(AmiPacket)) {
    let target = m.get("Channel").and_then(|c| c.split_once('/'));
    let exten = m.get("Exten").or(m.get("Data")).unwrap_or("s");
    let context = m.get("Context").unwrap_or("default");
    let asynchronous = m
        .get("Async")
        .is_some_and(|a| a.eq_ignore_ascii_case("true"));
    let Some((tech, number)) = target.filter(|(t, n)| !t.is_empty() && !n.is_empty()) else {
        put(response(m, "Error").field("Message", "Originate failed"));
        return;
    };
    let (ring, talk) = (shared.cfg.originate_ring, shared.cfg.originate_talk);
    let call = shared.start_call(
        |seq, ids| Call::between(context, tech, number, exten, seq, ids),
        ring,
        talk,
    );
    if !asynchronous {
        put(response(m, "Success").field("Message", "Originate successfully queued"));
        return;
    }
    put(response(m, "Success").field("Message", "Originate successfully queued"));
    let mut done = AmiPacket::event("OriginateResponse").field("Privilege", "call,all");
    if let Some(id) = m.action_id() {
        done.push("ActionID", id.to_owned());
    }
    put(done
        .field("Response", "Success")
        .field("Channel", call.caller.name.clone())
        .field("Context", context.to_owned())
        .field("Exten", exten.to_owned())
        .field("Reason", "4")
        .field("Uniqueid", call.caller.uniqueid.clone()));
}

/// The `Status` list of the channel named by `Channel`, or of every channel.
fn status(m: &AmiMessage, shared: &Shared, put: &mut dyn FnMut(AmiPacket)) {
    let id = m.action_id().unwrap_or("");
    let channels: Vec<_> = lock(&shared.channels)
        .channels()
        .into_iter()
        .filter(|c| m.get("Channel").is_none_or(|name| c.name == name))
        .collect();
    if m.get("Channel").is_some() && channels.is_empty() {
        put(response(m, "Error").field("Message", "No such channel"));
        return;
    }
    put(response(m, "Success")
        .field("EventList", "start")
        .field("Message", "Channel status will follow"));
    for c in &channels {
        put(calls::status(c, id));
    }
    let count = channels.len().to_string();
    put(AmiPacket::event("StatusComplete")
        .field("ActionID", id.to_owned())
        .field("EventList", "Complete")
        .field("ListItems", count.clone())
        .field("Items", count));
}

fn answer(m: &AmiMessage, auth: &mut Auth, shared: &Shared, out: &mut BytesMut) -> Next {
    let action = m.get("Action").unwrap_or("").to_ascii_lowercase();
    let mut put = |p: AmiPacket| out.extend_from_slice(&shared.stamped(&p).to_bytes());
    if matches!(auth, Auth::Done { .. }) {
        if let Some(message) = lock(&shared.failures).get(&action) {
            put(response(m, "Error").field("Message", message.clone()));
            return Next::Continue;
        }
    }
    match action.as_str() {
        "challenge" => {
            let challenge = format!("{}", fastrand::u32(100_000_000..999_999_999));
            put(response(m, "Success").field("Challenge", challenge.clone()));
            *auth = Auth::Challenged(challenge);
            Next::Continue
        }
        "login" => {
            let username = m.get("Username").unwrap_or("").to_owned();
            let md5 = m
                .get("AuthType")
                .is_some_and(|t| t.eq_ignore_ascii_case("md5"));
            let cfg = &shared.cfg;
            let secret_ok = match (&*auth, md5) {
                (Auth::Challenged(challenge), true) => {
                    m.get("Key") == Some(md5_key(challenge, &cfg.secret).as_str())
                }
                (_, false) => m.get("Secret") == Some(cfg.secret.as_str()),
                _ => false,
            };
            let accepted = secret_ok && username == cfg.username;
            lock(&shared.logins).push(LoginAttempt {
                at: Instant::now(),
                username,
                md5,
                accepted,
            });
            if !accepted {
                put(response(m, "Error").field("Message", "Authentication failed"));
                return Next::Close;
            }
            put(response(m, "Success").field("Message", "Authentication accepted"));
            let events = !m
                .get("Events")
                .is_some_and(|e| e.eq_ignore_ascii_case("off"));
            if events {
                put(fully_booted());
            }
            *auth = Auth::Done { events };
            Next::Continue
        }
        "logoff" => {
            put(response(m, "Goodbye").field("Message", "Thanks for all the fish."));
            Next::Close
        }
        _ if !matches!(auth, Auth::Done { .. }) => {
            put(response(m, "Error").field("Message", "Permission denied"));
            Next::Continue
        }
        "ping" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            put(response(m, "Success")
                .field("Ping", "Pong")
                .field("Timestamp", format!("{:.6}", now.as_secs_f64())));
            Next::Continue
        }
        "events" => {
            let on = !m
                .get("EventMask")
                .is_some_and(|e| e.eq_ignore_ascii_case("off"));
            *auth = Auth::Done { events: on };
            put(response(m, "Success").field("Events", if on { "On" } else { "Off" }));
            Next::Continue
        }
        "coreshowchannels" => {
            let id = m.action_id().unwrap_or("");
            put(response(m, "Success")
                .field("EventList", "start")
                .field("Message", "Channels will follow"));
            let channels = lock(&shared.channels).channels();
            for c in &channels {
                put(calls::core_show_channel(c, id));
            }
            put(AmiPacket::event("CoreShowChannelsComplete")
                .field("ActionID", id.to_owned())
                .field("EventList", "Complete")
                .field("ListItems", channels.len().to_string()));
            Next::Continue
        }
        "status" => {
            status(m, shared, &mut put);
            Next::Continue
        }
        "queuestatus" => {
            // Synthetic calls never wait in a queue: an empty list.
            put(response(m, "Success")
                .field("EventList", "start")
                .field("Message", "Queue status will follow"));
            put(AmiPacket::event("QueueStatusComplete")
                .field("ActionID", m.action_id().unwrap_or("").to_owned())
                .field("EventList", "Complete")
                .field("ListItems", "0"));
            Next::Continue
        }
        "originate" => {
            originate(m, shared, &mut put);
            Next::Continue
        }
        "hangup" => {
            let found = m.get("Channel").is_some_and(|c| shared.hang_up(c));
            let answer = if found {
                response(m, "Success").field("Message", "Channel Hungup")
            } else {
                response(m, "Error").field("Message", "No such channel")
            };
            put(answer);
            Next::Continue
        }
        "blindtransfer" | "atxfer" | "cancelatxfer" | "redirect" | "bridge" | "park"
        | "mixmonitor" | "stopmixmonitor" | "queueadd" | "queueremove" | "queuepause" => {
            put(control(m, shared, &action));
            Next::Continue
        }
        _ => {
            let name = m.get("Action").unwrap_or("");
            put(response(m, "Error").field(
                "Message",
                format!("Invalid/unknown command: {name}. Use Action: ListCommands to show available commands."),
            ));
            Next::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn hang_up_all_ends_every_live_call_within_its_window() {
        let sim = PbxSim::start(SimConfig::default()).await.unwrap();
        for n in 0..5 {
            let from = format!("{}", 1001 + n);
            let (ring, talk) = (Duration::from_millis(10), Duration::from_secs(3600));
            sim.place_call("internal", "PJSIP", &from, "2000", ring, talk);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(sim.calls(), (5, 5));
        let begin = tokio::time::Instant::now();
        let ended = sim.hang_up_all(Duration::from_millis(100)).await.unwrap();
        assert_eq!(ended, 5);
        assert!(begin.elapsed() < Duration::from_millis(100));
        assert_eq!(sim.calls(), (0, 0));
        assert!(lock(&sim.shared.channels).channels().is_empty());
    }
}
