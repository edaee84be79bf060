//! Login (`login_id` -> `login_pass` -> `login_capas`) and resume: who the client is, and
//! joining the partition of their context.

use actix::prelude::*;
use ctid_proto::commands::targets;
use ctid_proto::cti::{timenow, ErrorCode, Reply, Request};
use ctid_proto::directory::User;
use ctid_proto::rights::{scope, Role, Target};
use log::{info, warn};
use serde_json::{json, Value};

use super::{disconnect, Phase, Session, PROTOCOL_VERSION};
use crate::auth::{random_hex, Resumable};
use crate::partition::{Member, Subscribe, ALL};

/// What ctid allows a logged-in user to send, as listed in `login_capas`.
const REGCOMMANDS: [&str; 6] = [
    "getlist",
    "keepalive",
    "logout",
    "ipbxcommand",
    "disposition",
    "history",
];

/// What `login_capas` says the user may send: their role, the classes, and each command
/// with what it may act on. A user with no context (no line, under separation) may do
/// nothing but keep alive and log out, unless an admin (whose commands need no context).
fn capas(user: &User, in_context: bool) -> Value {
    let admin = user.role == Role::Admin;
    let mut regcommands = match in_context || admin {
        true => REGCOMMANDS.to_vec(),
        false => vec!["keepalive", "logout"],
    };
    if in_context && user.role != Role::Agent {
        regcommands.push("wallboard");
    }
    let has_line = user.line.is_some();
    let allowed: Vec<(&str, Target)> = targets()
        .filter(|(_, target)| match target {
            Target::OwnLine => in_context && has_line,
            _ => in_context || admin,
        })
        .collect();
    let rights: serde_json::Map<String, Value> = allowed
        .iter()
        .map(|(name, target)| ((*name).to_owned(), json!(scope(*target, user.role))))
        .collect();
    json!({
        "role": user.role.name(),
        "regcommands": regcommands,
        "ipbxcommands": allowed.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        "rights": rights,
    })
}

/// A resume in progress: the events it asks for, the request to answer, and the token it
/// came with (put back if the partition is not ready yet).
struct Resuming {
    last_seq: u64,
    commandid: Option<Value>,
    old: String,
    was: Resumable,
}

impl Session {
    pub(super) fn login_id(&mut self, req: Request, ctx: &mut Context<Self>) {
        if let Err(code) = req.require(&["userlogin"]) {
            return self.error("login_id", code, req.commandid.as_ref(), ctx);
        }
        let login = req.str("userlogin").unwrap_or_default().to_owned();
        // Unknown logins get a session id too: this step must not reveal which logins exist.
        // It is never compared to anything, but it comes from the CSPRNG all the same.
        let Ok(sessionid) = random_hex(5) else {
            return self.close(
                Some(ErrorCode::Shutdown),
                "no random numbers for a session id",
                ctx,
            );
        };
        self.phase = Phase::LoginPass { login };
        let reply = Reply::new("login_id")
            .with("sessionid", sessionid)
            .with("xivoversion", PROTOCOL_VERSION)
            .reply_to(req.commandid.as_ref());
        self.send(reply, ctx);
    }

    pub(super) fn login_pass(&mut self, req: Request, ctx: &mut Context<Self>) {
        if let Err(code) = req.require(&["password"]) {
            return self.error("login_pass", code, req.commandid.as_ref(), ctx);
        }
        let Phase::LoginPass { login } = std::mem::replace(&mut self.phase, Phase::Busy) else {
            return;
        };
        let password = req.str("password").unwrap_or_default().to_owned();
        let dir = self.shared.directory.get();
        let user = dir.user_by_login(&login).cloned();
        // An unknown login costs what the directory's own hashes cost.
        let phc = user
            .as_ref()
            .map_or_else(|| dir.dummy_hash().to_owned(), |u| u.password.clone());
        let ip = self.peer.ip();
        let delay = self.shared.throttle.delay(&login, ip);
        if !delay.is_zero() {
            self.shared.metrics.login("throttled");
        }
        let checker = self.shared.checker.clone();
        let check = async move {
            tokio::time::sleep(delay).await;
            match checker.verify(phc, password) {
                Ok(answer) => Ok(answer.await),
                Err(refused) => Err(refused),
            }
        };
        let commandid = req.commandid;
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(check).map(move |ok, act, ctx| {
                let ok = match ok {
                    Ok(ok) => ok,
                    Err(refused) => {
                        warn!(
                            "{}: login {login:?} not checked: password checks {refused}",
                            act.who()
                        );
                        act.shared.metrics.login("busy");
                        let reply = Reply::error("login_pass", &ErrorCode::LoginBusy)
                            .reply_to(commandid.as_ref());
                        act.send(reply, ctx);
                        return act.close(None, "password checks busy", ctx);
                    }
                };
                match user.filter(|_| ok) {
                    Some(user) => {
                        act.shared.throttle.succeeded(&login, ip);
                        act.shared.metrics.login("ok");
                        act.phase = Phase::LoginCapas { user_id: user.id };
                        let reply = Reply::new("login_pass")
                            .with("capalist", json!([1]))
                            .reply_to(commandid.as_ref());
                        act.send(reply, ctx);
                    }
                    None => {
                        act.shared.throttle.failed(Some(&login), ip);
                        act.shared.metrics.login("refused");
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
    pub(super) fn partition_of(&self, user: &User) -> Option<String> {
        if self.shared.partitions.separated() {
            user.context().map(str::to_owned)
        } else {
            Some(ALL.to_owned())
        }
    }

    fn identity(user: &User, key: Option<&str>) -> Reply {
        Reply::new("")
            .with("userid", user.id.to_string())
            .with("login", user.login.clone())
            .with("fullname", user.fullname())
            .with("context", user.context())
            .with("ipbxid", "xivo")
            .with("capas", capas(user, key.is_some()))
    }

    pub(super) fn login_capas(&mut self, req: Request, ctx: &mut Context<Self>) {
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
        let Some(k) = key
            .clone()
            .filter(|k| self.shared.partitions.core(k).is_some())
        else {
            if let Some(k) = &key {
                warn!(
                    "{}: no partition for context {k:?} yet; the user sees nothing",
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
        let sub = Subscribe {
            session: self.id,
            member,
            resume_after: resume.as_ref().map(|r| r.last_seq),
            ack,
        };
        // The partition queues the ack itself, under its lock, before any later event.
        match self.shared.partitions.subscribe(&k, sub) {
            Some(Ok(_seq)) => self.ready(user, Some(k), key, ctx),
            Some(Err(code)) => match resume {
                Some(resume) => {
                    if let Some(token) = self.cleanup.token.take() {
                        self.shared.tokens.revoke(&token);
                    }
                    if code == ErrorCode::Busy {
                        self.shared.tokens.restore(&resume.old, resume.was);
                    }
                    self.phase = Phase::LoginId;
                    self.error("resume", code, resume.commandid.as_ref(), ctx);
                }
                None => self.close(Some(code), "could not join its context", ctx),
            },
            None => self.close(
                Some(ErrorCode::Shutdown),
                "its context partition is gone",
                ctx,
            ),
        }
    }

    fn ready(
        &mut self,
        user: User,
        partition: Option<String>,
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

    pub(super) fn resume(&mut self, req: Request, ctx: &mut Context<Self>) {
        if let Err(code) = req.require(&["token", "last_seq"]) {
            return self.error("resume", code, req.commandid.as_ref(), ctx);
        }
        let token = req.str("token").unwrap_or_default().to_owned();
        if let Some(was) = self.shared.tokens.take(&token) {
            return self.resumed(req, token, Some(was), ctx);
        }
        // Cluster mode: another edge may have issued it.
        self.phase = Phase::Busy;
        let (tokens, within) = (self.shared.tokens.clone(), self.shared.config.stall);
        let taking = async move { tokens.take_shared(&token, within).await.map(|w| (token, w)) };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(taking).map(move |taken, act, ctx| {
                act.phase = Phase::LoginId;
                match taken {
                    Some((token, was)) => act.resumed(req, token, Some(was), ctx),
                    None => act.resumed(req, String::new(), None, ctx),
                }
            }),
        );
    }

    /// Resumes the session of token `old` (None: unknown, expired, or used).
    fn resumed(
        &mut self,
        req: Request,
        old: String,
        was: Option<Resumable>,
        ctx: &mut Context<Self>,
    ) {
        let ip = self.peer.ip();
        let last_seq = req.u64("last_seq").unwrap_or(0);
        let Some(was) = was else {
            self.shared.throttle.failed(None, ip);
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
            old,
            was: was.clone(),
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
}
