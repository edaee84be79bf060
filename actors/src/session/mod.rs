//! A CTI client session: the login (or a resume), then the client's requests, with its
//! outbound queue written by its own task.
//!
//! Login is `login_id` -> `login_pass` -> `login_capas`, within the login timeout; before it
//! completes only `keepalive` and `resume` are served. A session's state outside the actor
//! (its partition membership, registry entry, resume token) is released by a guard when the
//! actor is dropped, whether it stopped or panicked.
//!
//! - [`login`]: the login and the resume;
//! - [`requests`]: what a logged-in client asks;
//! - [`registry`]: every live session, for the console.

mod login;
mod registry;
mod requests;

pub use registry::{LoginSlots, SessionInfo, SessionRegistry, SlotLimit, Unauthenticated};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use bytes::Bytes;
use ctid_proto::cti::{timenow, CtiCodec, CtiFrame, ErrorCode, Reply, Request};
use ctid_proto::directory::{Directory, User};
use futures_util::stream::LocalBoxStream;
use futures_util::{FutureExt, StreamExt};
use log::{debug, info, warn};
use serde_json::Value;
use tokio_util::codec::FramedRead;

use crate::auth::{LoginThrottle, PasswordChecker, ResumeTokens};
use crate::command::Commands;
use crate::directory::DirectoryHandle;
use crate::metrics::Metrics;
use crate::net::BoxedIo;
use crate::outbox::{write_to, Budget, Lines, MessageSink, Outbox, Writers};
use crate::partition::{Kick, Partitions, SessionId};
use crate::pbx::Pbxes;
use crate::settings::human_duration;
use crate::store::Queries;

/// Consecutive bad messages after which a session is closed.
const MAX_ERRORS: u32 = 10;

/// The client protocol version ctid speaks.
pub const PROTOCOL_VERSION: &str = "2.0";

/// Most requests a session may have unanswered (ipbxcommand, disposition, history):
/// they queue in actors every tenant shares.
const MAX_IN_FLIGHT: usize = 16;

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub login_timeout: Duration,
    /// How long a write may make no progress before the client counts as gone.
    pub stall: Duration,
    /// How long a woken writer lets events gather before it writes them.
    pub write_delay: Duration,
    pub budget: Budget,
    pub max_line: usize,
}

/// What every session shares.
pub struct SessionShared {
    pub config: SessionConfig,
    pub directory: DirectoryHandle,
    pub partitions: Partitions,
    pub checker: PasswordChecker,
    pub throttle: LoginThrottle,
    pub tokens: ResumeTokens,
    pub registry: SessionRegistry,
    /// Connections still logging in, in all and by address.
    pub unauthenticated: Arc<LoginSlots>,
    pub next_id: AtomicU64,
    /// Every PBX: commands go to the router and link of the PBX they concern.
    pub pbxes: Pbxes,
    /// Where `history` is answered; None if call records are off.
    pub store: Option<Queries>,
    /// Where `ipbxcommand` and `disposition` go.
    pub control: Commands,
    pub writers: Writers,
    pub metrics: Metrics,
}

/// Releases what a session holds outside itself, however the actor ends.
struct Cleanup {
    id: SessionId,
    shared: Arc<SessionShared>,
    outbox: Arc<Outbox>,
    /// The key of the partition the session is a member of.
    partition: Option<String>,
    token: Option<String>,
    /// The client logged out: its token cannot be resumed.
    logged_out: bool,
    unauthenticated: Option<Unauthenticated>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.outbox.close(None);
        if let Some(key) = &self.partition {
            self.shared.partitions.unsubscribe(key, self.id);
        }
        self.shared.registry.lock().remove(&self.id);
        if let Some(token) = &self.token {
            if self.logged_out {
                self.shared.tokens.revoke(token);
            } else {
                self.shared.tokens.detach(token);
            }
        }
    }
}

enum Phase {
    LoginId,
    LoginPass {
        login: String,
    },
    /// Waiting for a password check or a subscription.
    Busy,
    LoginCapas {
        user_id: u64,
    },
    Ready {
        user: Box<User>,
        partition: Option<String>,
    },
    Closing,
}

#[derive(Message)]
#[rtype(result = "()")]
struct WriterDone(Result<(), String>);

/// What a client sent, however it came.
pub enum Inbound {
    Line(Bytes),
    /// A line or message longer than the limit, skipped.
    TooLong {
        bytes: usize,
    },
    /// A binary WebSocket message: the protocol is text.
    Binary {
        bytes: usize,
    },
}

impl From<CtiFrame> for Inbound {
    fn from(frame: CtiFrame) -> Self {
        match frame {
            CtiFrame::Line(line) => Inbound::Line(line),
            CtiFrame::TooLong { bytes } => Inbound::TooLong { bytes },
        }
    }
}

/// How a session reaches its client.
pub enum Transport {
    /// A byte stream of `\n`-ended lines (CTI, CTIs).
    Lines(BoxedIo),
    /// Whole messages, one per JSON object (WebSocket).
    Messages {
        inbound: LocalBoxStream<'static, std::io::Result<Inbound>>,
        sink: Box<dyn MessageSink>,
    },
}

pub struct Session {
    id: SessionId,
    peer: SocketAddr,
    listener: &'static str,
    shared: Arc<SessionShared>,
    transport: Option<Transport>,
    outbox: Arc<Outbox>,
    phase: Phase,
    errors: u32,
    in_flight: Arc<AtomicUsize>,
    cleanup: Cleanup,
}

/// Counts one request of a session until its answer is sent (or the session is gone).
struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn disconnect(code: &ErrorCode) -> bytes::Bytes {
    Reply::error("disconnect", code).encode(timenow())
}

impl Session {
    /// A session on an accepted connection; `guard` counts it as not logged in.
    pub fn new(
        transport: Transport,
        peer: SocketAddr,
        listener: &'static str,
        shared: Arc<SessionShared>,
        guard: Unauthenticated,
    ) -> Self {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let outbox = Outbox::new(shared.config.budget);
        Session {
            id,
            peer,
            listener,
            transport: Some(transport),
            outbox: outbox.clone(),
            phase: Phase::LoginId,
            errors: 0,
            in_flight: Arc::default(),
            cleanup: Cleanup {
                id,
                shared: shared.clone(),
                outbox,
                partition: None,
                token: None,
                logged_out: false,
                unauthenticated: Some(guard),
            },
            shared,
        }
    }

    fn who(&self) -> String {
        match &self.phase {
            Phase::Ready { user, .. } => {
                format!(
                    "CTI session {} ({} from {})",
                    self.id, user.login, self.peer
                )
            }
            _ => format!("CTI session {} ({})", self.id, self.peer),
        }
    }

    fn send(&mut self, reply: Reply, ctx: &mut Context<Self>) {
        let notice = || disconnect(&ErrorCode::SlowConsumer);
        if self
            .outbox
            .push(reply.encode(timenow()), notice, true)
            .is_err()
        {
            self.slow_consumer(ctx);
        }
    }

    fn slow_consumer(&mut self, ctx: &mut Context<Self>) {
        if !matches!(self.phase, Phase::Closing) {
            warn!(
                "{} dropped: slow consumer (it read too little of what it was sent)",
                self.who()
            );
            self.phase = Phase::Closing;
        }
        ctx.stop();
    }

    /// Answers a request with an error.
    fn error(
        &mut self,
        class: &str,
        code: ErrorCode,
        commandid: Option<&Value>,
        ctx: &mut Context<Self>,
    ) {
        debug!("{}: {class}: {code}", self.who());
        self.send(Reply::error(class, &code).reply_to(commandid), ctx);
    }

    /// Answers a line that could not be read; too many in a row close the session.
    fn unreadable(&mut self, code: ErrorCode, commandid: Option<&Value>, ctx: &mut Context<Self>) {
        self.error("error", code, commandid, ctx);
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.close(Some(ErrorCode::TooManyErrors), "too many bad messages", ctx);
        }
    }

    /// Hands a request that waits on a shared actor to `handler` with a ticket counting it,
    /// or refuses it when the session has too many unanswered.
    fn ask(
        &mut self,
        req: Request,
        handler: fn(&mut Self, Request, Ticket, &mut Context<Self>),
        ctx: &mut Context<Self>,
    ) {
        if self.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            debug!("{}: {} refused: too many requests", self.who(), req.class);
            let class = req.class.clone();
            return self.error(
                &class,
                ErrorCode::TooManyRequests,
                req.commandid.as_ref(),
                ctx,
            );
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        handler(self, req, Ticket(self.in_flight.clone()), ctx);
    }

    /// Sends the final line (if any), lets the writer flush, and stops.
    fn close(&mut self, code: Option<ErrorCode>, why: &str, ctx: &mut Context<Self>) {
        if matches!(self.phase, Phase::Closing) {
            return;
        }
        info!("{} closed: {why}", self.who());
        self.phase = Phase::Closing;
        self.outbox.close(code.as_ref().map(disconnect));
        ctx.stop();
    }

    fn on_line(&mut self, line: &[u8], ctx: &mut Context<Self>) {
        let req = match Request::parse(line) {
            Ok(req) => req,
            Err((code, id)) => return self.unreadable(code, id.as_ref(), ctx),
        };
        self.errors = 0;
        debug!("{}: {}", self.who(), req.class);
        match (&self.phase, req.class.as_str()) {
            (Phase::Closing, _) => {}
            (_, "keepalive") => self.send(
                Reply::new("keepalive").reply_to(req.commandid.as_ref()),
                ctx,
            ),
            (Phase::LoginId, "login_id") => self.login_id(req, ctx),
            (Phase::LoginId, "resume") => self.resume(req, ctx),
            (Phase::LoginPass { .. }, "login_pass") => self.login_pass(req, ctx),
            (Phase::LoginCapas { .. }, "login_capas") => self.login_capas(req, ctx),
            (Phase::Ready { .. }, _) => self.command(req, ctx),
            (_, class) => {
                let class = class.to_owned();
                self.error(&class, ErrorCode::NotLoggedYet, req.commandid.as_ref(), ctx)
            }
        }
    }

    fn command(&mut self, req: Request, ctx: &mut Context<Self>) {
        let commandid = req.commandid.clone();
        match req.class.as_str() {
            "getlist" => self.getlist(req, ctx),
            "ipbxcommand" => self.ask(req, Self::ipbxcommand, ctx),
            "disposition" => self.ask(req, Self::disposition, ctx),
            "history" => self.ask(req, Self::history, ctx),
            "wallboard" => self.wallboard(req, ctx),
            "logout" => {
                self.cleanup.logged_out = true;
                self.send(Reply::new("logout").reply_to(commandid.as_ref()), ctx);
                self.close(None, "logged out", ctx);
            }
            "login_id" | "login_pass" | "login_capas" | "resume" => {
                let class = req.class.clone();
                self.error(&class, ErrorCode::Unallowed, commandid.as_ref(), ctx)
            }
            _ => {
                let class = req.class.clone();
                self.error(&class, ErrorCode::UnknownClass, commandid.as_ref(), ctx)
            }
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(transport) = self.transport.take() else {
            return ctx.stop();
        };
        let me = ctx.address();
        let outbox = self.outbox.clone();
        let (stall, delay) = (self.shared.config.stall, self.shared.config.write_delay);
        let running = self.shared.writers.enter();
        let metrics = Some(self.shared.metrics.clone());
        let (inbound, writer) = match transport {
            Transport::Lines(io) => {
                let (read, write) = tokio::io::split(io);
                let lines = FramedRead::new(read, CtiCodec::new(self.shared.config.max_line))
                    .map(|frame| frame.map(Inbound::from));
                let writer = write_to(outbox, Lines(write), stall, delay, metrics);
                (lines.boxed_local(), writer.boxed_local())
            }
            Transport::Messages { inbound, sink } => (
                inbound,
                write_to(outbox, sink, stall, delay, metrics).boxed_local(),
            ),
        };
        actix_rt::spawn(async move {
            let result = writer.await;
            drop(running);
            me.do_send(WriterDone(result));
        });
        ctx.add_stream(inbound);
        self.shared.registry.lock().insert(
            self.id,
            SessionInfo {
                peer: self.peer,
                listener: self.listener,
                login: None,
                partition: None,
                since: SystemTime::now(),
                outbox: self.outbox.clone(),
                kick: ctx.address().recipient(),
            },
        );
        let timeout = self.shared.config.login_timeout;
        ctx.run_later(timeout, move |act, ctx| {
            if !matches!(act.phase, Phase::Ready { .. } | Phase::Closing) {
                let why = format!("not logged in within {}", human_duration(timeout));
                act.close(Some(ErrorCode::LoginTimeout), &why, ctx);
            }
        });
        debug!("{} connected", self.who());
    }
}

impl StreamHandler<std::io::Result<Inbound>> for Session {
    fn handle(&mut self, frame: std::io::Result<Inbound>, ctx: &mut Context<Self>) {
        match frame {
            Ok(Inbound::Line(line)) => self.on_line(&line, ctx),
            Ok(Inbound::Binary { bytes }) => {
                debug!("{}: refused a {bytes} byte binary message", self.who());
                self.unreadable(ErrorCode::BinaryMessage, None, ctx);
            }
            Ok(Inbound::TooLong { bytes }) => {
                let limit = self.shared.config.max_line;
                debug!(
                    "{}: skipped a {bytes} byte line (limit {limit})",
                    self.who()
                );
                self.unreadable(ErrorCode::FrameTooLarge, None, ctx);
            }
            Err(e) => {
                let why = format!("read failed ({})", crate::net::io_reason(&e));
                self.close(None, &why, ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.close(None, "client closed the connection", ctx);
    }
}

impl StreamHandler<Arc<Directory>> for Session {
    fn handle(&mut self, dir: Arc<Directory>, ctx: &mut Context<Self>) {
        self.follow(&dir, ctx);
    }

    /// The directory stops only with ctid.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Session {
    /// Follows the user's own changes (a new line, a new name); closes the session when the
    /// user was deleted or now belongs to another context, with or without a line.
    fn follow(&mut self, dir: &Directory, ctx: &mut Context<Self>) {
        if !matches!(self.phase, Phase::Ready { .. }) {
            return;
        }
        match self.current_user(dir) {
            Some(now) => {
                if let Phase::Ready { user, .. } = &mut self.phase {
                    **user = now;
                }
            }
            None => self.close(
                Some(ErrorCode::UserChanged),
                "its user was deleted or moved",
                ctx,
            ),
        }
    }
}

impl Handler<Kick> for Session {
    type Result = ();

    fn handle(&mut self, Kick(code): Kick, ctx: &mut Context<Self>) {
        if code == ErrorCode::SlowConsumer {
            self.cleanup.partition = None;
            return self.slow_consumer(ctx);
        }
        let why = format!("closed by the server ({code})");
        self.close(Some(code), &why, ctx);
    }
}

impl Handler<WriterDone> for Session {
    type Result = ();

    fn handle(&mut self, WriterDone(result): WriterDone, ctx: &mut Context<Self>) {
        if let Err(why) = result {
            self.close(None, &why, ctx);
        }
        ctx.stop();
    }
}
