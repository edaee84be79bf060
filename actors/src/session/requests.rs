//! What a logged-in client asks: lists, call control, dispositions and history.

use std::time::Duration;

use actix::prelude::*;
use ctid_proto::commands::{pbx_of, Plan, Sender};
use ctid_proto::cti::{timenow, ErrorCode, Reply, Request};
use ctid_proto::directory::{Directory, User};
use ctid_proto::lists::{get_list, GetList, Scope};
use ctid_proto::rights::Role;
use ctid_proto::wire::{Answer, Ask};
use log::{info, warn};
use serde_json::Value;

use super::{Phase, Session, Ticket};
use crate::ami::{run_plan, AmiLink};
use crate::ask::{ask, Unanswered};
use crate::cluster::remote::{self, Remote};
use crate::partition::ALL;
use crate::router::{PlanCommand, SetDisposition};
use crate::store::HistoryFilter;
use crate::supervisor::Slot;

/// Most history rows a client may ask for at once.
const MAX_HISTORY: u64 = 1000;

fn disposition_reply(call_id: String, outcome: Result<(), ErrorCode>) -> Reply {
    let reply = Reply::new("disposition").with("call_id", call_id);
    match outcome {
        Ok(()) => reply.with("response", "ok"),
        Err(code) => reply
            .with("response", "ko")
            .with("error_string", code.to_string()),
    }
}

/// What a client is told when the router did not answer.
fn unanswered(why: Unanswered) -> ErrorCode {
    match why {
        Unanswered::Late => ErrorCode::Busy,
        Unanswered::Gone => ErrorCode::Shutdown,
    }
}

impl Session {
    /// Answers from a snapshot of the partition, built here: a large list costs this
    /// session's thread, not the partition's events.
    pub(super) fn getlist(&mut self, req: Request, ctx: &mut Context<Self>) {
        let commandid = req.commandid.clone();
        let key = match &self.phase {
            // An admin lists every context.
            Phase::Ready { user, .. } if user.role == Role::Admin => ALL.to_owned(),
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
        let mut live = match self.shared.partitions.separated() && key == ALL {
            true => self.shared.partitions.live_all(),
            false => self.shared.partitions.live(&key),
        };
        live.pbxes = self.shared.pbxes.states();
        match get_list(&asked, &self.shared.directory.get(), scope, &live) {
            Ok(reply) => self.send(reply.reply_to(commandid.as_ref()), ctx),
            Err(code) => self.error("getlist", code, commandid.as_ref(), ctx),
        }
    }

    /// Sends the wallboard of the session's context (`queue_stats`) now and whenever it
    /// changes, to a supervisor or an admin; an agent is refused.
    pub(super) fn wallboard(&mut self, req: Request, ctx: &mut Context<Self>) {
        let commandid = req.commandid.clone();
        let key = match self.me() {
            Some((user, Some(key))) if user.role != Role::Agent => key.to_owned(),
            _ => return self.error("wallboard", ErrorCode::Unallowed, commandid.as_ref(), ctx),
        };
        if self.cleanup.partition.as_deref() != Some(key.as_str()) {
            return self.error("wallboard", ErrorCode::Unallowed, commandid.as_ref(), ctx);
        }
        let reply = Reply::new("wallboard")
            .with("status", "ok")
            .with("context", key.clone());
        self.send(reply.reply_to(commandid.as_ref()), ctx);
        self.shared.partitions.watch_board(&key, self.id);
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
    pub(super) fn current_user(&self, dir: &Directory) -> Option<User> {
        let Phase::Ready { user, partition } = &self.phase else {
            return None;
        };
        dir.user(user.id)
            .filter(|now| self.partition_of(now) == *partition)
            .cloned()
    }

    pub(super) fn ipbxcommand(&mut self, req: Request, ticket: Ticket, ctx: &mut Context<Self>) {
        let commandid = req.commandid.clone();
        let command = req.str("command").unwrap_or_default().to_owned();
        let Some((user, partition)) = self.me() else {
            return self.error("ipbxcommand", ErrorCode::Unallowed, commandid.as_ref(), ctx);
        };
        let sender = Sender {
            user: &user,
            partition,
            separated: self.shared.partitions.separated(),
        };
        // The PBX it goes to: its router plans it on its calls, and its link carries it.
        let pbx = pbx_of(&req, &sender, &self.shared.directory.get()).and_then(|name| {
            self.shared
                .pbxes
                .get(&name)
                .cloned()
                .ok_or(ErrorCode::Unallowed)
        });
        let pbx = match pbx {
            Ok(pbx) => pbx,
            Err(code) => {
                let reply = Reply::error("ipbxcommand", &code)
                    .with("command", command)
                    .reply_to(commandid.as_ref());
                return self.send(reply, ctx);
            }
        };
        let Some(router) = pbx.router.get() else {
            return match pbx.remote {
                Some(remote) => {
                    let ask = Ask::Command {
                        user_id: user.id,
                        partition: partition.map(str::to_owned),
                        fields: req.fields,
                    };
                    self.command_remote(
                        remote,
                        pbx.name.to_string(),
                        ask,
                        command,
                        commandid,
                        ticket,
                        ctx,
                    )
                }
                None => self.error("ipbxcommand", ErrorCode::Shutdown, commandid.as_ref(), ctx),
            };
        };
        let ask_plan = PlanCommand {
            request: req,
            user,
            partition: partition.map(str::to_owned),
        };
        let limit = self.shared.config.stall;
        let planning = async move { ask(&router, ask_plan, limit).await };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(planning).map(
            move |res, act, ctx| match res {
                Ok(Ok(plan)) => {
                    let ack = Reply::new("ipbxcommand")
                        .with("command", command)
                        .with("ipbxreply", "sent")
                        .reply_to(commandid.as_ref());
                    act.send(ack, ctx);
                    act.execute(plan, pbx.link, commandid, ticket, ctx);
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
                Err(why) => act.error("ipbxcommand", unanswered(why), commandid.as_ref(), ctx),
            },
        ));
    }

    /// Cluster mode: the PBX's active ingest is another node; it plans the command (it is
    /// answered `sent` then), then runs it.
    #[allow(clippy::too_many_arguments)]
    fn command_remote(
        &mut self,
        remote: Remote,
        pbx: String,
        ask: Ask,
        command: String,
        commandid: Option<Value>,
        ticket: Ticket,
        ctx: &mut Context<Self>,
    ) {
        let socket = self.shared.config.stall;
        let ring = Duration::from_millis(self.shared.commands.originate_timeout_ms);
        let planning = async move {
            let mut answers = remote.ask(&pbx, &ask).await?;
            match answers.next(socket).await? {
                Answer::Planned { error: None } => Ok(answers),
                Answer::Planned { error: Some(code) } => Err(remote::code(&code)),
                _ => Err(ErrorCode::PbxUnavailable),
            }
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(planning).map(
                move |planned, act, ctx| match planned {
                    Ok(mut answers) => {
                        let ack = Reply::new("ipbxcommand")
                            .with("command", command.clone())
                            .with("ipbxreply", "sent")
                            .reply_to(commandid.as_ref());
                        act.send(ack, ctx);
                        // Each action may take the socket timeout, and a ring more.
                        let within = ring + socket * 4;
                        let done = async move {
                            match answers.next(within).await {
                                Ok(Answer::Done { error: None }) => Ok(()),
                                Ok(Answer::Done { error: Some(why) }) => Err(why),
                                _ => Err("the PBX's active ingest went away".to_owned()),
                            }
                        };
                        act.outcome(command, done, commandid, ticket, ctx);
                    }
                    Err(code) => {
                        let reply = Reply::error("ipbxcommand", &code)
                            .with("command", command)
                            .reply_to(commandid.as_ref());
                        act.send(reply, ctx);
                    }
                },
            ),
        );
    }

    /// Runs a plan's actions in order on `link`; the first failure is the outcome.
    fn execute(
        &mut self,
        plan: Plan,
        link: Slot<AmiLink>,
        commandid: Option<Value>,
        ticket: Ticket,
        ctx: &mut Context<Self>,
    ) {
        let socket = self.shared.config.stall;
        let ring = Duration::from_millis(self.shared.commands.originate_timeout_ms);
        let command = plan.command.clone();
        let run = run_plan(plan, link, socket, ring);
        self.outcome(command, run, commandid, ticket, ctx);
    }

    /// Answers a command once `run` is over.
    fn outcome(
        &mut self,
        command: String,
        run: impl std::future::Future<Output = Result<(), String>> + 'static,
        commandid: Option<Value>,
        ticket: Ticket,
        ctx: &mut Context<Self>,
    ) {
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

    pub(super) fn disposition(&mut self, req: Request, ticket: Ticket, ctx: &mut Context<Self>) {
        let commandid = req.commandid.clone();
        if let Err(code) = req.require(&["call_id", "code"]) {
            return self.error("disposition", code, commandid.as_ref(), ctx);
        }
        let call_id = req.str("call_id").unwrap_or_default().to_owned();
        // The router of the call's PBX knows it if it is live, and records it otherwise.
        let pbx = call_id
            .split_once(':')
            .and_then(|(p, _)| self.shared.pbxes.get(p));
        let Some(pbx) = pbx else {
            let reply = disposition_reply(call_id, Err(ErrorCode::Unallowed));
            return self.send(reply.reply_to(commandid.as_ref()), ctx);
        };
        let (router, remote) = (pbx.router.get(), pbx.remote.clone());
        let pbx = pbx.name.to_string();
        let Some((user, partition)) = self
            .me()
            .filter(|(u, p)| p.is_some() || u.role == Role::Admin)
        else {
            let reply = disposition_reply(call_id, Err(ErrorCode::Unallowed));
            return self.send(reply.reply_to(commandid.as_ref()), ctx);
        };
        let limit = self.shared.config.stall;
        let (code, note, at) = (
            req.str("code").unwrap_or_default().to_owned(),
            req.str("note").map(str::to_owned),
            timenow(),
        );
        let set: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> = match (router, remote) {
            (Some(router), _) => {
                let asked = SetDisposition::by(&user, partition, call_id.clone(), code, note, at);
                Box::pin(async move {
                    ask(&router, asked, limit)
                        .await
                        .unwrap_or_else(|why| Err(unanswered(why)))
                })
            }
            (None, Some(remote)) => {
                let asked = Ask::Disposition {
                    user_id: user.id,
                    partition: partition.map(str::to_owned),
                    call_id: call_id.clone(),
                    code,
                    note,
                    at,
                };
                Box::pin(async move {
                    match remote.ask(&pbx, &asked).await?.next(limit).await? {
                        Answer::Done { error: None } => Ok(()),
                        Answer::Done { error: Some(code) } => Err(remote::code(&code)),
                        _ => Err(ErrorCode::PbxUnavailable),
                    }
                })
            }
            (None, None) => {
                return self.error("disposition", ErrorCode::Shutdown, commandid.as_ref(), ctx)
            }
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(set).map(move |outcome, act, ctx| {
                drop(ticket);
                act.send(
                    disposition_reply(call_id, outcome).reply_to(commandid.as_ref()),
                    ctx,
                );
            }),
        );
    }

    pub(super) fn history(&mut self, req: Request, ticket: Ticket, ctx: &mut Context<Self>) {
        let commandid = req.commandid.clone();
        // An admin's history is every context's.
        let partition = self.me().and_then(|(u, p)| match u.role {
            Role::Admin => Some(ALL.to_owned()),
            _ => p.map(str::to_owned),
        });
        let Some(partition) = partition else {
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
        let query = store.history(filter);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(query).map(move |res, act, ctx| {
                drop(ticket);
                let calls = match res {
                    Ok(calls) => calls,
                    Err(e) => {
                        warn!("{}: history failed: {e}", act.who());
                        return act.error("history", e.code(), commandid.as_ref(), ctx);
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
