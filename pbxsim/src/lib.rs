//! A simulated Asterisk for ctid's tests, benchmarks and demos: an AMI server that accepts
//! logins (plain and MD5, right and wrong secrets), answers the actions ctid sends, replays
//! recorded fixture streams, generates synthetic calls at a given rate, and drops its
//! connections on demand. It reuses ctid's own AMI codec.

pub mod calls;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
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
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use calls::{Call, CallPlan, ChannelTable, Stage};

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
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: "cti".into(),
            secret: "ctipass".into(),
            on_login: Vec::new(),
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

struct Shared {
    cfg: SimConfig,
    events: broadcast::Sender<Bytes>,
    drops: watch::Sender<u64>,
    logins: Mutex<Vec<LoginAttempt>>,
    actions: Mutex<Vec<AmiMessage>>,
    channels: Mutex<ChannelTable>,
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
            buf.extend_from_slice(&p.to_bytes());
        }
        let _ = self.events.send(buf.freeze());
    }
}

/// A running simulator; it stops when dropped.
pub struct PbxSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for PbxSim {
    fn drop(&mut self) {
        self.accept.abort();
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
        Ok(PbxSim {
            addr,
            shared,
            accept,
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

    /// Generates calls by `plan` until the plan's limit or until the handle is dropped.
    pub fn run_calls(&self, plan: CallPlan) -> CallsHandle {
        let shared = self.shared.clone();
        let started = Arc::new(AtomicU64::new(0));
        let trace = Trace::default();
        let (counter, tracer) = (started.clone(), plan.trace.then(|| trace.clone()));
        let task = tokio::spawn(async move { generate(shared, plan, counter, tracer).await });
        CallsHandle {
            task,
            started,
            trace,
        }
    }
}

/// When each call's first events were sent, by call id (its first channel's Uniqueid).
pub type Trace = Arc<Mutex<std::collections::HashMap<String, Instant>>>;

/// A running call generator; dropping it stops it.
pub struct CallsHandle {
    task: JoinHandle<()>,
    started: Arc<AtomicU64>,
    trace: Trace,
}

impl CallsHandle {
    /// Calls started so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// When each call started (filled only if the plan traces).
    pub fn trace(&self) -> Trace {
        self.trace.clone()
    }

    /// Waits until every call of a limited plan has ended.
    pub async fn finished(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for CallsHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn generate(
    shared: Arc<Shared>,
    plan: CallPlan,
    started: Arc<AtomicU64>,
    trace: Option<Trace>,
) {
    if plan.tenants.is_empty() || plan.rate <= 0.0 {
        return;
    }
    let begin = tokio::time::Instant::now();
    let mut due: BinaryHeap<Reverse<(tokio::time::Instant, u64, Stage)>> = BinaryHeap::new();
    let mut calls: std::collections::HashMap<u64, Call> = std::collections::HashMap::new();
    let mut seq = 0u64;
    let interval = Duration::from_secs_f64(1.0 / plan.rate);
    loop {
        let limit_reached = plan.limit.is_some_and(|l| seq >= l);
        if limit_reached && due.is_empty() {
            return;
        }
        let next_start = (!limit_reached).then(|| begin + interval.mul_f64(seq as f64));
        let next_stage = due.peek().map(|Reverse((t, _, _))| *t);
        let wake = match (next_start, next_stage) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return,
        };
        tokio::time::sleep_until(wake).await;
        let now = tokio::time::Instant::now();
        let mut packets = Vec::new();
        let mut new_calls = Vec::new();
        while plan.limit.is_none_or(|l| seq < l) && begin + interval.mul_f64(seq as f64) <= now {
            let tenant = &plan.tenants[(seq as usize) % plan.tenants.len()];
            let mut call = Call::new(tenant, seq, &mut || shared.uniqueid());
            packets.extend(call.start_events());
            new_calls.push(call.caller.uniqueid.clone());
            lock(&shared.channels).update(&call, false);
            due.push(Reverse((now + plan.ring, seq, Stage::Answer)));
            calls.insert(seq, call);
            seq += 1;
            started.store(seq, Ordering::Relaxed);
        }
        while let Some(Reverse((t, id, stage))) = due.peek().copied() {
            if t > now {
                break;
            }
            due.pop();
            let Some(call) = calls.get_mut(&id) else {
                continue;
            };
            packets.extend(call.events(stage));
            match stage {
                Stage::Answer => {
                    lock(&shared.channels).update(call, false);
                    due.push(Reverse((now + plan.talk, id, Stage::Hangup)));
                }
                Stage::Hangup => {
                    lock(&shared.channels).update(call, true);
                    calls.remove(&id);
                }
            }
        }
        if !packets.is_empty() {
            shared.broadcast(&packets);
        }
        if let Some(trace) = &trace {
            let sent = Instant::now();
            lock(trace).extend(new_calls.into_iter().map(|id| (id, sent)));
        }
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
                let next = answer(&m, &mut auth, shared, &mut out);
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

fn answer(m: &AmiMessage, auth: &mut Auth, shared: &Shared, out: &mut BytesMut) -> Next {
    let action = m.get("Action").unwrap_or("").to_ascii_lowercase();
    let mut put = |p: AmiPacket| out.extend_from_slice(&p.to_bytes());
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
