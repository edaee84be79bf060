//! A CTI client session: the login (or a resume), then the client's requests, with its
//! outbound queue written by its own task.
//!
//! Login is `login_id` -> `login_pass` -> `login_capas`, within the login timeout; before it
//! completes only `keepalive` and `resume` are served. A session's state outside the actor
//! (its partition membership, registry entry, resume token) is released by a guard when the
//! actor is dropped, whether it stopped or panicked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use ctid_proto::calls::Disposition;
use ctid_proto::commands::{originate_reason, CommandSettings, Plan, Wait, COMMANDS};
use ctid_proto::cti::{timenow, CtiCodec, CtiFrame, ErrorCode, Reply, Request};
use ctid_proto::directory::{Directory, User};
use ctid_proto::lists::{get_list, GetList, Scope};
use log::{debug, info, warn};
use serde_json::{json, Value};
use tokio_util::codec::FramedRead;

use crate::ami::{AmiLink, AmiRequest, Completion};
use crate::auth::{LoginThrottle, PasswordChecker, Resumable, ResumeTokens, Verify, DUMMY_HASH};
use crate::directory::DirectoryHandle;
use crate::net::BoxedIo;
use crate::outbox::{write_outbox, Budget, Outbox, Writers};
use crate::partition::{
    Kick, Member, Partition, Partitions, SessionId, Subscribe, Unsubscribe, ALL,
};
use crate::router::{PlanCommand, Router, SetDisposition};
use crate::settings::human_duration;
use crate::store::{Disposer, History, HistoryFilter, Store};
use crate::supervisor::Slot;

/// Consecutive bad messages after which a session is closed.
const MAX_ERRORS: u32 = 10;

/// The client protocol version ctid speaks.
pub const PROTOCOL_VERSION: &str = "2.0";

/// What ctid allows a logged-in user to send, as listed in `login_capas`.
const REGCOMMANDS: [&str; 6] = [
    "getlist",
    "keepalive",
    "logout",
    "ipbxcommand",
    "disposition",
    "history",
];

/// Most requests a session may have unanswered (getlist, ipbxcommand, disposition, history):
/// they queue in actors every tenant shares.
const MAX_IN_FLIGHT: usize = 16;

/// Most history rows a client may ask for at once.
const MAX_HISTORY: u64 = 1000;

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

/// A live session as the console shows it.
#[derive(Clone)]
pub struct SessionInfo {
    pub peer: SocketAddr,
    pub listener: &'static str,
    pub login: Option<String>,
    pub partition: Option<String>,
    pub since: SystemTime,
    pub outbox: Arc<Outbox>,
    pub kick: Recipient<Kick>,
}

/// Every live session.
#[derive(Clone, Default)]
pub struct SessionRegistry(Arc<Mutex<HashMap<SessionId, SessionInfo>>>);

impl SessionRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, SessionInfo>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Vec<(SessionId, SessionInfo)> {
        let mut v: Vec<_> = self.lock().iter().map(|(id, i)| (*id, i.clone())).collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes one session; false if there is none by that id.
    pub fn kick(&self, id: SessionId, why: ErrorCode) -> bool {
        match self.lock().get(&id) {
            Some(info) => {
                info.kick.do_send(Kick(why));
                true
            }
            None => false,
        }
    }

    /// Closes every session of `listener` (all of them if None).
    pub fn kick_all(&self, listener: Option<&str>, why: ErrorCode) {
        for info in self.lock().values() {
            if listener.is_none_or(|l| l == info.listener) {
                info.kick.do_send(Kick(why.clone()));
            }
        }
    }

    fn update(&self, id: SessionId, f: impl FnOnce(&mut SessionInfo)) {
        if let Some(info) = self.lock().get_mut(&id) {
            f(info);
        }
    }
}

/// What every session shares.
pub struct SessionShared {
    pub config: SessionConfig,
    pub directory: DirectoryHandle,
    pub partitions: Partitions,
    pub checker: Addr<PasswordChecker>,
    pub throttle: LoginThrottle,
    pub tokens: ResumeTokens,
    pub registry: SessionRegistry,
    pub unauthenticated: Arc<AtomicUsize>,
    pub max_unauthenticated: usize,
    pub next_id: AtomicU64,
    pub router: Slot<Router>,
    pub link: Slot<AmiLink>,
    /// Where `history` is answered; None if call records are off.
    pub store: Option<Addr<Store>>,
    pub commands: CommandSettings,
    pub writers: Writers,
}

/// Counts a connection as not logged in for as long as it lives.
pub struct Unauthenticated(Arc<AtomicUsize>);

impl Unauthenticated {
    /// Counts one more, unless `max` are already counted.
    pub fn try_new(count: &Arc<AtomicUsize>, max: usize) -> Option<Unauthenticated> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Unauthenticated(count.clone()))
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Releases what a session holds outside itself, however the actor ends.
struct Cleanup {
    id: SessionId,
    shared: Arc<SessionShared>,
    outbox: Arc<Outbox>,
    partition: Option<Addr<Partition>>,
    token: Option<String>,
    /// The client logged out: its token cannot be resumed.
    logged_out: bool,
    unauthenticated: Option<Unauthenticated>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.outbox.close(None);
        if let Some(p) = &self.partition {
            p.do_send(Unsubscribe { session: self.id });
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

/// A resume in progress: the events it asks for, and the request to answer.
struct Resuming {
    last_seq: u64,
    commandid: Option<Value>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct WriterDone(Result<(), String>);

pub struct Session {
    id: SessionId,
    peer: SocketAddr,
    listener: &'static str,
    shared: Arc<SessionShared>,
    io: Option<BoxedIo>,
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

fn disposition_reply(call_id: String, outcome: Result<(), ErrorCode>) -> Reply {
    let reply = Reply::new("disposition").with("call_id", call_id);
    match outcome {
        Ok(()) => reply.with("response", "ok"),
        Err(code) => reply
            .with("response", "ko")
            .with("error_string", code.to_string()),
    }
}

fn disconnect(code: &ErrorCode) -> bytes::Bytes {
    Reply::error("disconnect", code).encode(timenow())
}

impl Session {
    /// A session on an accepted connection; `guard` counts it as not logged in.
    pub fn new(
        io: BoxedIo,
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
            io: Some(io),
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

    fn login_id(&mut self, req: Request, ctx: &mut Context<Self>) {
        if let Err(code) = req.require(&["userlogin"]) {
            return self.error("login_id", code, req.commandid.as_ref(), ctx);
        }
        let login = req.str("userlogin").unwrap_or_default().to_owned();
        // Unknown logins get a session id too: this step must not reveal which logins exist.
        let sessionid: String = (0..10).map(|_| fastrand::alphanumeric()).collect();
        self.phase = Phase::LoginPass { login };
        let reply = Reply::new("login_id")
            .with("sessionid", sessionid)
            .with("xivoversion", PROTOCOL_VERSION)
            .reply_to(req.commandid.as_ref());
        self.send(reply, ctx);
    }

    fn login_pass(&mut self, req: Request, ctx: &mut Context<Self>) {
        if let Err(code) = req.require(&["password"]) {
            return self.error("login_pass", code, req.commandid.as_ref(), ctx);
        }
        let Phase::LoginPass { login } = std::mem::replace(&mut self.phase, Phase::Busy) else {
            return;
        };
        let password = req.str("password").unwrap_or_default().to_owned();
        let user = self.shared.directory.get().user_by_login(&login).cloned();
        let phc = user
            .as_ref()
            .map_or_else(|| DUMMY_HASH.to_owned(), |u| u.password.clone());
        let ip = self.peer.ip();
        let delay = self.shared.throttle.delay(ip);
        let checker = self.shared.checker.clone();
        let check = async move {
            tokio::time::sleep(delay).await;
            checker
                .send(Verify { phc, password })
                .await
                .unwrap_or(false)
        };
        let commandid = req.commandid;
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(check).map(move |ok, act, ctx| {
                match user.filter(|_| ok) {
                    Some(user) => {
                        act.shared.throttle.succeeded(ip);
                        act.phase = Phase::LoginCapas { user_id: user.id };
                        let reply = Reply::new("login_pass")
                            .with("capalist", json!([1]))
                            .reply_to(commandid.as_ref());
                        act.send(reply, ctx);
                    }
                    None => {
                        act.shared.throttle.failed(ip);
                        warn!(
                            "{}: login {login:?} refused (wrong login or password)",
                            act.who()
                        );
                        let reply = Reply::error("login_pass", &ErrorCode::LoginPassword)
                            .reply_to(commandid.as_ref());
                        act.send(reply, ctx);
                        act.close(None, "login refused", ctx);
                    }
                }
            }),
        );
    }

    /// The partition a user's session belongs to: their context's, or `*` without context
    /// separation; none for a user with no line under separation.
    fn partition_of(&self, user: &User) -> Option<String> {
        if self.shared.partitions.separated() {
            user.context().map(str::to_owned)
        } else {
            Some(ALL.to_owned())
        }
    }

    fn identity(user: &User, key: Option<&str>) -> Reply {
        let sees = key.is_some();
        Reply::new("")
            .with("userid", user.id.to_string())
            .with("login", user.login.clone())
            .with("fullname", user.fullname())
            .with("context", user.context())
            .with("ipbxid", "xivo")
            .with(
                "capas",
                json!({
                    "regcommands": if sees { REGCOMMANDS.to_vec() } else { vec!["keepalive", "logout"] },
                    "ipbxcommands": if sees { COMMANDS.to_vec() } else { Vec::new() },
                }),
            )
    }

    fn login_capas(&mut self, req: Request, ctx: &mut Context<Self>) {
        let Phase::LoginCapas { user_id } = std::mem::replace(&mut self.phase, Phase::Busy) else {
            return;
        };
        let Some(user) = self.shared.directory.get().user(user_id).cloned() else {
            return self.close(
                Some(ErrorCode::UserChanged),
                "user deleted during login",
                ctx,
            );
        };
        let presence = req.str("state").unwrap_or("available").to_owned();
        let key = self.partition_of(&user);
        let Ok(token) = self.shared.tokens.issue(Resumable {
            user_id,
            partition: key.clone(),
        }) else {
            return self.close(
                Some(ErrorCode::Shutdown),
                "no random numbers for a resume token",
                ctx,
            );
        };
        self.cleanup.token = Some(token.clone());
        let identity = Self::identity(&user, key.as_deref());
        let commandid = req.commandid;
        let p = presence.clone();
        let ack = Box::new(move |seq: u64| {
            identity
                .with("class", "login_capas")
                .with("appliname", "Client")
                .with("presence", p)
                .with("resume_token", token)
                .with("seq", seq)
                .reply_to(commandid.as_ref())
                .encode(timenow())
        });
        self.join(user, key, presence, None, ack, ctx);
    }

    /// Joins the user's partition (queueing `ack`, then missed events for a resume) and
    /// becomes ready.
    fn join(
        &mut self,
        user: User,
        key: Option<String>,
        availstate: String,
        resume: Option<Resuming>,
        ack: crate::partition::Ack,
        ctx: &mut Context<Self>,
    ) {
        let partition = key
            .as_deref()
            .and_then(|k| self.shared.partitions.slot(k))
            .and_then(|s| s.get());
        let Some(partition) = partition else {
            if key.is_some() {
                warn!(
                    "{}: no partition for context {key:?} yet; the user sees nothing",
                    self.who()
                );
            }
            let _ = self
                .outbox
                .push(ack(0), || disconnect(&ErrorCode::SlowConsumer), true);
            return self.ready(user, None, key, ctx);
        };
        let member = Member {
            user_id: user.id,
            availstate,
            outbox: self.outbox.clone(),
            session: ctx.address().recipient(),
        };
        let subscribe = partition.send(Subscribe {
            session: self.id,
            member,
            resume_after: resume.as_ref().map(|r| r.last_seq),
            ack,
        });
        // The partition queues the ack to the client itself: no client line may be handled
        // before this session knows the subscription succeeded.
        ctx.wait(actix::fut::wrap_future::<_, Self>(subscribe).map(
            move |res, act, ctx| match res {
                Ok(Ok(_seq)) => act.ready(user, Some(partition), key, ctx),
                Ok(Err(code)) => {
                    if let Some(resume) = resume {
                        if let Some(token) = act.cleanup.token.take() {
                            act.shared.tokens.revoke(&token);
                        }
                        act.phase = Phase::LoginId;
                        act.error("resume", code, resume.commandid.as_ref(), ctx);
                    } else {
                        act.close(Some(code), "could not join its context", ctx);
                    }
                }
                Err(_) => act.close(
                    Some(ErrorCode::Shutdown),
                    "its context partition is gone",
                    ctx,
                ),
            },
        ));
    }

    fn ready(
        &mut self,
        user: User,
        partition: Option<Addr<Partition>>,
        key: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        ctx.add_stream(self.shared.directory.changes());
        let context = key.as_deref().unwrap_or("none");
        info!(
            "{} logged in as {} (context {context})",
            self.who(),
            user.login
        );
        self.cleanup.unauthenticated = None;
        self.cleanup.partition = partition;
        let (login, k) = (user.login.clone(), key.clone());
        self.shared.registry.update(self.id, |info| {
            info.login = Some(login);
            info.partition = k;
        });
        self.phase = Phase::Ready {
            user: Box::new(user),
            partition: key,
        };
        // A change made while the login was under way came before the stream above.
        let current = self.shared.directory.get();
        self.follow(&current, ctx);
    }

    fn resume(&mut self, req: Request, ctx: &mut Context<Self>) {
        if let Err(code) = req.require(&["token", "last_seq"]) {
            return self.error("resume", code, req.commandid.as_ref(), ctx);
        }
        let ip = self.peer.ip();
        let last_seq = req.u64("last_seq").unwrap_or(0);
        let Some(was) = req.str("token").and_then(|t| self.shared.tokens.take(t)) else {
            self.shared.throttle.failed(ip);
            return self.error(
                "resume",
                ErrorCode::ResyncRequired,
                req.commandid.as_ref(),
                ctx,
            );
        };
        let user = self.shared.directory.get().user(was.user_id).cloned();
        let Some(user) = user.filter(|u| self.partition_of(u) == was.partition) else {
            return self.error(
                "resume",
                ErrorCode::UserChanged,
                req.commandid.as_ref(),
                ctx,
            );
        };
        let Ok(token) = self.shared.tokens.issue(was.clone()) else {
            return self.close(
                Some(ErrorCode::Shutdown),
                "no random numbers for a resume token",
                ctx,
            );
        };
        self.cleanup.token = Some(token.clone());
        self.phase = Phase::Busy;
        let identity = Self::identity(&user, was.partition.as_deref());
        let commandid = req.commandid;
        let resume = Resuming {
            last_seq,
            commandid: commandid.clone(),
        };
        let ack = Box::new(move |seq: u64| {
            identity
                .with("class", "resume")
                .with("status", "ok")
                .with("resume_token", token)
                .with("seq", seq)
                .reply_to(commandid.as_ref())
                .encode(timenow())
        });
        self.join(
            user,
            was.partition,
            "available".into(),
            Some(resume),
            ack,
            ctx,
        );
    }

    fn command(&mut self, req: Request, ctx: &mut Context<Self>) {
        let commandid = req.commandid.clone();
        match req.class.as_str() {
            "getlist" => self.getlist(req, ctx),
            "ipbxcommand" => self.ask(req, Self::ipbxcommand, ctx),
            "disposition" => self.ask(req, Self::disposition, ctx),
            "history" => self.ask(req, Self::history, ctx),
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

impl Session {
    /// Answers from a snapshot of the partition, built here: a large list costs this
    /// session's thread, not the partition's events.
    fn getlist(&mut self, req: Request, ctx: &mut Context<Self>) {
        let commandid = req.commandid.clone();
        let key = match &self.phase {
            Phase::Ready {
                partition: Some(key),
                ..
            } if self.cleanup.partition.is_some() => key.clone(),
            _ => return self.error("getlist", ErrorCode::Unallowed, commandid.as_ref(), ctx),
        };
        if let Err(code) = req.require(&["function", "listname"]) {
            return self.error("getlist", code, commandid.as_ref(), ctx);
        }
        let tid = match req.fields.get("tid") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let asked = GetList {
            function: req.str("function").unwrap_or_default().to_owned(),
            listname: req.str("listname").unwrap_or_default().to_owned(),
            tid,
        };
        let scope = if key == ALL {
            Scope::All
        } else {
            Scope::Context(&key)
        };
        let live = self.shared.partitions.live(&key);
        match get_list(&asked, &self.shared.directory.get(), scope, &live) {
            Ok(reply) => self.send(reply.reply_to(commandid.as_ref()), ctx),
            Err(code) => self.error("getlist", code, commandid.as_ref(), ctx),
        }
    }

    /// The logged-in user as the directory has them now (their line may have changed), and
    /// the session's partition key; None if they were deleted or moved (the session is
    /// closing).
    fn me(&self) -> Option<(User, Option<&str>)> {
        let Phase::Ready { partition, .. } = &self.phase else {
            return None;
        };
        let now = self.current_user(&self.shared.directory.get())?;
        Some((now, partition.as_deref()))
    }

    /// The session's user as `dir` has them, if they still belong to the session's partition.
    fn current_user(&self, dir: &Directory) -> Option<User> {
        let Phase::Ready { user, partition } = &self.phase else {
            return None;
        };
        dir.user(user.id)
            .filter(|now| self.partition_of(now) == *partition)
            .cloned()
    }

    fn ipbxcommand(&mut self, req: Request, ticket: Ticket, ctx: &mut Context<Self>) {
        let commandid = req.commandid.clone();
        let command = req.str("command").unwrap_or_default().to_owned();
        let Some(router) = self.shared.router.get() else {
            return self.error("ipbxcommand", ErrorCode::Shutdown, commandid.as_ref(), ctx);
        };
        let Some((user, partition)) = self.me() else {
            return self.error("ipbxcommand", ErrorCode::Unallowed, commandid.as_ref(), ctx);
        };
        let planning = router.send(PlanCommand {
            request: req,
            user,
            partition: partition.map(str::to_owned),
        });
        ctx.spawn(actix::fut::wrap_future::<_, Self>(planning).map(
            move |res, act, ctx| match res {
                Ok(Ok(plan)) => {
                    let ack = Reply::new("ipbxcommand")
                        .with("command", command)
                        .with("ipbxreply", "sent")
                        .reply_to(commandid.as_ref());
                    act.send(ack, ctx);
                    act.execute(plan, commandid, ticket, ctx);
                }
                Ok(Err(code)) => {
                    if code == ErrorCode::Unallowed {
                        warn!("{}: {command} refused: unallowed", act.who());
                    }
                    let reply = Reply::error("ipbxcommand", &code)
                        .with("command", command)
                        .reply_to(commandid.as_ref());
                    act.send(reply, ctx);
                }
                Err(_) => act.error("ipbxcommand", ErrorCode::Shutdown, commandid.as_ref(), ctx),
            },
        ));
    }

    /// Runs a plan's actions in order on the AMI link; the first failure is the outcome.
    fn execute(
        &mut self,
        plan: Plan,
        commandid: Option<Value>,
        ticket: Ticket,
        ctx: &mut Context<Self>,
    ) {
        let link = self.shared.link.clone();
        let socket = self.shared.config.stall;
        let ring = Duration::from_millis(self.shared.commands.originate_timeout_ms);
        let run = async move {
            for step in plan.steps {
                let Some(link) = link.get() else {
                    return Err("AMI link is down (not running)".to_owned());
                };
                let (completion, timeout) = match step.wait {
                    Wait::Response => (Completion::Response, socket),
                    Wait::Event(name) => (Completion::Event(name), ring + socket),
                };
                let request = AmiRequest {
                    packet: step.packet,
                    completion,
                    timeout: Some(timeout),
                };
                let reply = match link.send(request).await {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("AMI link stopped".to_owned()),
                };
                match reply.outcome() {
                    Ok(()) => {}
                    Err(m) if step.tolerate == Some(m.as_str()) => {}
                    Err(_) if matches!(step.wait, Wait::Event(_)) && !reply.events.is_empty() => {
                        return Err(originate_reason(reply.events[0].get("Reason")));
                    }
                    Err(m) => return Err(m),
                }
            }
            Ok(())
        };
        let command = plan.command;
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(run).map(move |outcome, act, ctx| {
                drop(ticket);
                let reply = Reply::new("ipbxcommand").with("command", command.clone());
                let reply = match outcome {
                    Ok(()) => reply.with("response", "ok"),
                    Err(message) => {
                        info!("{}: {command} failed: {message}", act.who());
                        reply.with("response", "ko").with("message", message)
                    }
                };
                act.send(reply.reply_to(commandid.as_ref()), ctx);
            }),
        );
    }

    fn disposition(&mut self, req: Request, ticket: Ticket, ctx: &mut Context<Self>) {
        let commandid = req.commandid.clone();
        if let Err(code) = req.require(&["call_id", "code"]) {
            return self.error("disposition", code, commandid.as_ref(), ctx);
        }
        let Some(router) = self.shared.router.get() else {
            return self.error("disposition", ErrorCode::Shutdown, commandid.as_ref(), ctx);
        };
        let call_id = req.str("call_id").unwrap_or_default().to_owned();
        let Some((user, partition @ Some(_))) = self.me() else {
            let reply = disposition_reply(call_id, Err(ErrorCode::Unallowed));
            return self.send(reply.reply_to(commandid.as_ref()), ctx);
        };
        let set = router.send(SetDisposition {
            call_id: call_id.clone(),
            disposition: Disposition {
                code: req.str("code").unwrap_or_default().to_owned(),
                note: req.str("note").map(str::to_owned),
                by: user.login.clone(),
                at: timenow(),
            },
            by: Disposer {
                login: user.login.clone(),
                line: user.line.as_ref().map(|l| l.interface.clone()),
                context: partition.filter(|p| *p != ALL).map(str::to_owned),
                supervisor: user.supervisor,
            },
        });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(set).map(move |res, act, ctx| {
                drop(ticket);
                let outcome = res.unwrap_or(Err(ErrorCode::Shutdown));
                act.send(
                    disposition_reply(call_id, outcome).reply_to(commandid.as_ref()),
                    ctx,
                );
            }),
        );
    }

    fn history(&mut self, req: Request, ticket: Ticket, ctx: &mut Context<Self>) {
        let commandid = req.commandid.clone();
        let Some(partition) = self.me().and_then(|(_, p)| p.map(str::to_owned)) else {
            return self.error("history", ErrorCode::Unallowed, commandid.as_ref(), ctx);
        };
        let Some(store) = self.shared.store.clone() else {
            return self.error(
                "history",
                ErrorCode::StoreUnavailable,
                commandid.as_ref(),
                ctx,
            );
        };
        let number = |k: &str| req.fields.get(k).and_then(Value::as_f64);
        let filter = HistoryFilter {
            context: (partition != ALL).then_some(partition),
            number: req.str("number").map(str::to_owned),
            from: number("from"),
            to: number("to"),
            queue: req.str("queue").map(str::to_owned),
            agent: req.str("agent").map(str::to_owned),
            limit: req.u64("limit").unwrap_or(50).clamp(1, MAX_HISTORY) as usize,
        };
        let query = store.send(History(filter));
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(query).map(move |res, act, ctx| {
                drop(ticket);
                let calls = match res.unwrap_or_else(|_| Err("the store stopped".into())) {
                    Ok(calls) => calls,
                    Err(e) => {
                        warn!("{}: history failed: {e}", act.who());
                        let code = ErrorCode::StoreUnavailable;
                        return act.error("history", code, commandid.as_ref(), ctx);
                    }
                };
                let reply = Reply::new("history")
                    .with("calls", calls)
                    .reply_to(commandid.as_ref());
                act.send(reply, ctx);
            }),
        );
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(io) = self.io.take() else {
            return ctx.stop();
        };
        let (read, write) = tokio::io::split(io);
        let me = ctx.address();
        let outbox = self.outbox.clone();
        let (stall, delay) = (self.shared.config.stall, self.shared.config.write_delay);
        let running = self.shared.writers.enter();
        actix_rt::spawn(async move {
            let result = write_outbox(outbox, write, stall, delay).await;
            drop(running);
            me.do_send(WriterDone(result));
        });
        ctx.add_stream(FramedRead::new(
            read,
            CtiCodec::new(self.shared.config.max_line),
        ));
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

impl StreamHandler<Result<CtiFrame, std::io::Error>> for Session {
    fn handle(&mut self, frame: Result<CtiFrame, std::io::Error>, ctx: &mut Context<Self>) {
        match frame {
            Ok(CtiFrame::Line(line)) => self.on_line(&line, ctx),
            Ok(CtiFrame::TooLong { bytes }) => {
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
