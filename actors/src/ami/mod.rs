//! The link to one Asterisk: connect (TCP or TLS), log in (plain or MD5 challenge), keep the
//! link alive with Pings, correlate actions by ActionID, and reconnect with capped
//! exponential backoff and jitter.
//!
//! Reading never waits on a consumer: events go downstream with `try_send`, one batch per
//! read. A consumer that falls a whole mailbox behind makes the link drop and reconnect,
//! which makes the router resync from Asterisk: bounded memory, and no silent gap.
//!
//! Lists asked for [`Completion::InStream`] (resyncs) go downstream in that same batch, at
//! the place in the stream where Asterisk took them and where they completed, so that the
//! consumer applies them in stream order.

mod login;
mod requests;
mod status;
mod taps;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use bytes::Bytes;
use ctid_proto::ami::actions::{Actions, Routed};
use ctid_proto::ami::{AmiCodec, AmiCodecError, AmiFrame, AmiMessage, AmiPacket, MessageKind};
use futures_util::{stream, StreamExt};
use log::{debug, error, info, log_enabled, trace, warn, Level};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_util::codec::FramedRead;

use crate::net::{io_reason, write_queue, BoxedIo};
use crate::settings::{human_duration, AmiSettings, PbxSettings};
use crate::supervisor::{Outlet, Shutdown};
use crate::tls::{client_config, TlsError};

pub use requests::{run_plan, AmiError, AmiReply, AmiRequest, Completion, ListTag};
pub use status::{LinkChanged, LinkState, LinkStats, LinkStatus};
pub use taps::AmiTaps;

/// Frames handled, and events forwarded, per batch at most.
const READ_BATCH: usize = 512;
/// Encoded actions waiting for the socket; past it requests are refused as busy.
const WRITE_QUEUE: usize = 1024;

/// What one read from Asterisk brought, in stream order, stamped with when it was read.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AmiEvents {
    pub pbx: Arc<str>,
    pub received: Instant,
    pub items: Vec<AmiItem>,
}

#[derive(Debug)]
pub enum AmiItem {
    Event(AmiMessage),
    /// Asterisk took an in-stream list here (its first answer came).
    ListTaken(ListTag),
    /// The list's items, where it completed; or why it failed.
    ListDone(ListTag, Result<Vec<AmiMessage>, AmiError>),
}

impl AmiItem {
    pub fn event(&self) -> Option<&AmiMessage> {
        match self {
            AmiItem::Event(m) => Some(m),
            _ => None,
        }
    }
}

/// What the link needs besides its settings; built once at start-up so that a bad CA file
/// stops start-up instead of every reconnect.
#[derive(Clone)]
pub struct LinkConfig {
    /// The PBX's name.
    pub pbx: Arc<str>,
    pub settings: AmiSettings,
    pub socket_timeout: Duration,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl LinkConfig {
    pub fn new(pbx: &PbxSettings, socket_timeout: Duration) -> Result<Self, TlsError> {
        let settings = pbx.ami.clone();
        let tls = match &settings.tls {
            None => None,
            Some(t) => {
                let name = ServerName::try_from(t.server_name.clone()).map_err(|e| TlsError {
                    path: format!("{}.tls_server_name", pbx.section),
                    reason: e.to_string(),
                })?;
                Some((TlsConnector::from(client_config(&t.ca)?), name))
            }
        };
        Ok(LinkConfig {
            pbx: pbx.name.as_str().into(),
            settings,
            socket_timeout,
            tls,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Banner,
    Challenge,
    Login,
    Up,
}

struct Conn {
    generation: u64,
    writer: mpsc::Sender<Bytes>,
    reader: SpawnHandle,
    phase: Phase,
}

enum Purpose {
    Client(oneshot::Sender<Result<AmiReply, AmiError>>),
    /// An in-stream list: its outcome goes downstream.
    Stream(ListTag),
    Challenge,
    Login,
    Ping,
}

/// What waits for an action: who wants its outcome, and its deadline.
struct Pending {
    purpose: Purpose,
    timer: SpawnHandle,
}

enum Inbound {
    Frames(u64, Vec<Result<AmiFrame, AmiCodecError>>),
    Closed(u64),
}

#[derive(Message)]
#[rtype(result = "()")]
struct WriterFailed(u64, String);

pub struct AmiLink {
    cfg: LinkConfig,
    pbx: Arc<str>,
    /// How logs name the link: `<pbx> (<host>:<port>)`.
    name: Arc<str>,
    events: Outlet<AmiEvents>,
    states: Outlet<LinkChanged>,
    stats: LinkStats,
    taps: AmiTaps,
    conn: Option<Conn>,
    generation: u64,
    actions: Actions<Pending>,
    failures: u32,
    ping: Option<SpawnHandle>,
    /// What the current read brought, to go downstream in one batch.
    batch: Vec<AmiItem>,
}

impl AmiLink {
    pub fn new(
        cfg: LinkConfig,
        events: Outlet<AmiEvents>,
        states: Outlet<LinkChanged>,
        stats: LinkStats,
        taps: AmiTaps,
    ) -> Self {
        AmiLink {
            name: format!("{} ({})", cfg.pbx, cfg.settings.endpoint()).into(),
            pbx: cfg.pbx.clone(),
            cfg,
            events,
            states,
            stats,
            taps,
            conn: None,
            generation: 0,
            actions: Actions::new("ctid"),
            failures: 0,
            ping: None,
            batch: Vec::new(),
        }
    }

    fn publish(&mut self, state: LinkState) {
        {
            let mut stats = self.stats.lock();
            if stats.state == state {
                return;
            }
            stats.state = state.clone();
            stats.since = SystemTime::now();
        }
        let _ = self.states.try_send(LinkChanged {
            pbx: self.pbx.clone(),
            state,
        });
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.publish(LinkState::Connecting);
        let host = self.cfg.settings.host.clone();
        let port = self.cfg.settings.port;
        let timeout = self.cfg.socket_timeout;
        let tls = self.cfg.tls.clone();
        let dial = async move {
            let tcp = match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port)))
                .await
            {
                Err(_) => {
                    return Err(format!(
                        "unreachable (no answer within {})",
                        human_duration(timeout)
                    ))
                }
                Ok(Err(e)) => return Err(format!("unreachable ({})", io_reason(&e))),
                Ok(Ok(tcp)) => tcp,
            };
            let _ = tcp.set_nodelay(true);
            match tls {
                None => Ok(Box::new(tcp) as BoxedIo),
                Some((connector, name)) => {
                    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
                        Err(_) => Err(format!(
                            "TLS handshake timed out after {}",
                            human_duration(timeout)
                        )),
                        Ok(Err(e)) => Err(format!("TLS handshake failed ({e})")),
                        Ok(Ok(tls)) => Ok(Box::new(tls) as BoxedIo),
                    }
                }
            }
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(dial).map(|res, act, ctx| match res {
                Ok(io) => act.attach(io, ctx),
                Err(reason) => act.retry(reason, Level::Warn, ctx),
            }),
        );
    }

    fn attach(&mut self, io: BoxedIo, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        let (read, write) = tokio::io::split(io);
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let me = ctx.address();
        let stall = self.cfg.socket_timeout;
        actix_rt::spawn(async move {
            if let Err(reason) = write_queue(write, queue, stall).await {
                me.do_send(WriterFailed(generation, reason));
            }
        });
        let frames = FramedRead::new(read, AmiCodec::new(self.cfg.settings.max_message_bytes))
            .ready_chunks(READ_BATCH)
            .map(move |batch| Inbound::Frames(generation, batch))
            .chain(stream::once(async move { Inbound::Closed(generation) }));
        let reader = ctx.add_stream(frames);
        self.conn = Some(Conn {
            generation,
            writer,
            reader,
            phase: Phase::Banner,
        });
        ctx.run_later(self.cfg.socket_timeout, move |act, ctx| {
            if act
                .conn
                .as_ref()
                .is_some_and(|c| c.generation == generation && c.phase != Phase::Up)
            {
                let reason = format!(
                    "login timed out (no answer within {})",
                    human_duration(act.cfg.socket_timeout)
                );
                act.lost(generation, reason, ctx);
            }
        });
    }

    /// Logs why the link is down, publishes it, and schedules the next attempt.
    fn retry(&mut self, reason: String, level: Level, ctx: &mut Context<Self>) {
        let delay = self.backoff();
        log::log!(
            level,
            "AMI {} {reason}, retrying in {}",
            self.name,
            human_duration(delay)
        );
        self.publish(LinkState::Down(reason));
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    fn backoff(&mut self) -> Duration {
        let s = &self.cfg.settings;
        let exp = s.reconnect_min.saturating_mul(1 << self.failures.min(20));
        self.failures = self.failures.saturating_add(1);
        exp.min(s.reconnect_max)
            .mul_f64(0.8 + 0.2 * fastrand::f64())
    }

    /// Drops connection `generation` (if it is still the current one) and fails what waits on it.
    fn lost(&mut self, generation: u64, reason: String, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.take_if(|c| c.generation == generation) else {
            return;
        };
        ctx.cancel_future(conn.reader);
        if let Some(ping) = self.ping.take() {
            ctx.cancel_future(ping);
        }
        let pending: Vec<Pending> = self.actions.drain().collect();
        for pending in pending {
            ctx.cancel_future(pending.timer);
            match pending.purpose {
                Purpose::Client(tx) => {
                    let _ = tx.send(Err(AmiError::Down(reason.clone())));
                }
                Purpose::Stream(tag) => self
                    .batch
                    .push(AmiItem::ListDone(tag, Err(AmiError::Down(reason.clone())))),
                _ => {}
            }
        }
        let _ = self.deliver();
        match conn.phase {
            Phase::Up => {
                self.failures = 0;
                self.retry(format!("lost ({reason})"), Level::Warn, ctx)
            }
            _ => self.retry(reason, Level::Warn, ctx),
        }
    }

    /// Writes `packet` under a fresh ActionID and remembers what waits for its answer.
    fn send(
        &mut self,
        mut packet: AmiPacket,
        purpose: Purpose,
        completion: Completion,
        timeout: Duration,
        ctx: &mut Context<Self>,
    ) -> Result<(), (AmiError, Purpose)> {
        if let Err(e) = packet.check() {
            return Err((AmiError::Invalid(e), purpose));
        }
        let Some(conn) = &self.conn else {
            return Err((AmiError::Down("not connected".into()), purpose));
        };
        let id = self.actions.next_id();
        packet.set_action_id(id.clone());
        if log_enabled!(Level::Trace) {
            trace!("AMI {} <- {:?}", self.name, packet);
        }
        match conn.writer.try_send(packet.to_bytes()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err((AmiError::Busy, purpose)),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err((AmiError::Down("connection closing".into()), purpose))
            }
        }
        let expiring = id.clone();
        let timer = ctx.run_later(timeout, move |act, ctx| act.expire(&expiring, timeout, ctx));
        self.actions
            .insert(id, completion.wire(), Pending { purpose, timer });
        Ok(())
    }

    /// Sends one of the link's own actions; on failure the connection is dropped.
    fn send_own(&mut self, packet: AmiPacket, purpose: Purpose, ctx: &mut Context<Self>) {
        let timeout = self.cfg.socket_timeout;
        if let Err((e, _)) = self.send(packet, purpose, Completion::Response, timeout, ctx) {
            let generation = self.generation;
            self.lost(generation, e.to_string(), ctx);
        }
    }

    fn expire(&mut self, id: &str, timeout: Duration, ctx: &mut Context<Self>) {
        let Some(pending) = self.actions.remove(id) else {
            return;
        };
        let generation = self.generation;
        match pending.purpose {
            Purpose::Client(tx) => {
                let _ = tx.send(Err(AmiError::Timeout(timeout)));
            }
            Purpose::Stream(tag) => {
                self.batch
                    .push(AmiItem::ListDone(tag, Err(AmiError::Timeout(timeout))));
                if let Err(reason) = self.deliver() {
                    self.lost(generation, reason, ctx);
                }
            }
            Purpose::Ping => {
                let reason = format!("no answer to Ping within {}", human_duration(timeout));
                self.lost(generation, reason, ctx);
            }
            Purpose::Challenge | Purpose::Login => {
                let reason = format!(
                    "login timed out (no answer within {})",
                    human_duration(timeout)
                );
                self.lost(generation, reason, ctx);
            }
        }
    }

    fn finish(&mut self, pending: Pending, reply: AmiReply, ctx: &mut Context<Self>) {
        ctx.cancel_future(pending.timer);
        match pending.purpose {
            Purpose::Client(tx) => {
                let _ = tx.send(Ok(reply));
            }
            Purpose::Stream(tag) => {
                let items = match reply.outcome() {
                    Ok(()) => Ok(reply.events),
                    Err(why) => Err(AmiError::Refused(why)),
                };
                self.batch.push(AmiItem::ListDone(tag, items));
            }
            Purpose::Ping => trace!("AMI {}: Pong", self.name),
            Purpose::Challenge => self.on_challenge(reply, ctx),
            Purpose::Login => self.on_login(reply, ctx),
        }
    }

    /// Gives a response or an event to the action it answers; the rest goes downstream.
    fn route(&mut self, routed: Routed<Pending>, ctx: &mut Context<Self>) {
        match routed {
            Routed::Unclaimed(m) if m.kind() == MessageKind::Event => {
                self.batch.push(AmiItem::Event(m))
            }
            Routed::Unclaimed(m) => {
                debug!("AMI {}: response to no action under way: {m:?}", self.name)
            }
            Routed::ListStarted(id) => {
                if let Some(Purpose::Stream(tag)) = self.actions.get(&id).map(|p| &p.purpose) {
                    self.batch.push(AmiItem::ListTaken(*tag));
                }
            }
            Routed::Kept => {}
            Routed::Done(pending, reply, also) => {
                self.finish(pending, reply, ctx);
                self.batch.extend(also.map(AmiItem::Event));
            }
        }
    }

    fn on_frames(
        &mut self,
        generation: u64,
        frames: Vec<Result<AmiFrame, AmiCodecError>>,
        ctx: &mut Context<Self>,
    ) {
        for frame in frames {
            if self.conn.as_ref().map(|c| c.generation) != Some(generation) {
                return;
            }
            match frame {
                Ok(AmiFrame::Banner(b)) => self.on_banner(b, ctx),
                Ok(AmiFrame::Discarded { bytes }) => {
                    self.stats.lock().discarded += 1;
                    warn!(
                        "AMI {}: skipped a {bytes} byte message (limit ami.max_message_bytes = {})",
                        self.name, self.cfg.settings.max_message_bytes
                    );
                }
                Ok(AmiFrame::Message(m)) => match m.kind() {
                    MessageKind::Response => {
                        let routed = self.actions.response(m);
                        self.route(routed, ctx);
                    }
                    MessageKind::Event => {
                        let routed = self.actions.event(m);
                        self.route(routed, ctx);
                    }
                    _ => debug!(
                        "AMI {}: ignored a message with neither Event nor Response: {m:?}",
                        self.name
                    ),
                },
                Err(e) => {
                    self.lost(generation, format!("read failed ({e})"), ctx);
                    return;
                }
            }
        }
        if let Err(reason) = self.deliver() {
            self.lost(generation, reason, ctx);
        }
    }

    /// Sends what the current read brought downstream; an error if the consumer is a
    /// whole mailbox behind.
    fn deliver(&mut self) -> Result<(), String> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(&mut self.batch);
        let events = || items.iter().filter_map(AmiItem::event);
        {
            let mut stats = self.stats.lock();
            stats.events += events().count() as u64;
            stats.last_event = Some(SystemTime::now());
        }
        self.taps.feed(&self.pbx, events());
        if log_enabled!(Level::Debug) {
            for e in events() {
                debug!(
                    "AMI {}: {} {}",
                    self.name,
                    e.event().unwrap_or("?"),
                    [
                        "Channel",
                        "DestChannel",
                        "LocalOneChannel",
                        "BridgeUniqueid",
                        "Uniqueid"
                    ]
                    .iter()
                    .find_map(|k| e.get(k))
                    .unwrap_or("")
                );
            }
        }
        if self.events.is_none() {
            return Ok(());
        }
        let count = items.len();
        let batch = AmiEvents {
            pbx: self.pbx.clone(),
            received: Instant::now(),
            items,
        };
        match self.events.try_send(batch) {
            Ok(()) => Ok(()),
            Err(SendError::Full(_)) => {
                self.stats.lock().overflows += 1;
                error!(
                    "AMI {}: the event router is a full mailbox behind; dropping the link to resync",
                    self.name
                );
                Err("event router overloaded".into())
            }
            Err(SendError::Closed(_)) => {
                debug!(
                    "AMI {}: no event router (restarting?), {count} items dropped",
                    self.name
                );
                Ok(())
            }
        }
    }
}

impl Actor for AmiLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.publish(LinkState::Down("stopped".into()));
    }
}

impl StreamHandler<Inbound> for AmiLink {
    fn handle(&mut self, item: Inbound, ctx: &mut Context<Self>) {
        match item {
            Inbound::Frames(generation, frames) => self.on_frames(generation, frames, ctx),
            Inbound::Closed(generation) => self.lost(generation, "closed by Asterisk".into(), ctx),
        }
    }

    /// Each connection's stream ends with `Inbound::Closed`; the link outlives it.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<WriterFailed> for AmiLink {
    type Result = ();

    fn handle(&mut self, WriterFailed(generation, reason): WriterFailed, ctx: &mut Context<Self>) {
        self.lost(generation, reason, ctx);
    }
}

impl Handler<AmiRequest> for AmiLink {
    type Result = ResponseFuture<Result<AmiReply, AmiError>>;

    fn handle(&mut self, req: AmiRequest, ctx: &mut Context<Self>) -> Self::Result {
        if self.conn.as_ref().map(|c| c.phase) != Some(Phase::Up) {
            let why = match &self.stats.lock().state {
                LinkState::Down(reason) => reason.clone(),
                _ => "connecting".into(),
            };
            return Box::pin(std::future::ready(Err(AmiError::Down(why))));
        }
        let timeout = req.timeout.unwrap_or(self.cfg.socket_timeout);
        if let Completion::InStream(tag) = req.completion {
            let sent = self
                .send(
                    req.packet,
                    Purpose::Stream(tag),
                    req.completion,
                    timeout,
                    ctx,
                )
                .map(|()| AmiReply::default())
                .map_err(|(e, _)| e);
            return Box::pin(std::future::ready(sent));
        }
        let (tx, rx) = oneshot::channel();
        if let Err((e, _)) = self.send(
            req.packet,
            Purpose::Client(tx),
            req.completion,
            timeout,
            ctx,
        ) {
            return Box::pin(std::future::ready(Err(e)));
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(AmiError::Down("link stopped".into())))
        })
    }
}

impl Handler<Shutdown> for AmiLink {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        if let Some(conn) = self.conn.take() {
            if conn.phase == Phase::Up {
                let mut logoff = AmiPacket::action("Logoff");
                logoff.set_action_id("ctid-logoff");
                let _ = conn.writer.try_send(logoff.to_bytes());
            }
            ctx.cancel_future(conn.reader);
        }
        info!("AMI {} link stopping ({})", self.name, msg.reason);
        ctx.stop();
    }
}
