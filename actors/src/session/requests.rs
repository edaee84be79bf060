//! What a logged-in client asks: lists, call control, dispositions and history.

use actix::prelude::*;
use ctid_proto::cti::{timenow, ErrorCode, Reply, Request};
use ctid_proto::directory::{Directory, User};
use ctid_proto::lists::{get_list, GetList, Scope};
use ctid_proto::rights::Role;
use log::{info, warn};
use serde_json::Value;

use super::{Phase, Session, Ticket};
use crate::command::{Issuer, Running};
use crate::partition::ALL;
use crate::store::{HistoryFilter, MAX_HISTORY, MAX_OFFSET};

fn disposition_reply(call_id: String, outcome: Result<(), ErrorCode>) -> Reply {
    let reply = Reply::new("disposition").with("call_id", call_id);
    match outcome {
        Ok(()) => reply.with("response", "ok"),
        Err(code) => reply
            .with("response", "ko")
            .with("error_string", code.to_string()),
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
        let by = Issuer {
            user,
            partition: partition.map(str::to_owned),
            acting: None,
        };
        let planning = self.shared.control.command(req, by);
        ctx.spawn(actix::fut::wrap_future::<_, Self>(planning).map(
            move |res, act, ctx| match res {
                Ok(running) => {
                    let ack = Reply::new("ipbxcommand")
                        .with("command", command.clone())
                        .with("ipbxreply", "sent")
                        .reply_to(commandid.as_ref());
                    act.send(ack, ctx);
                    act.outcome(command, running, commandid, ticket, ctx);
                }
                Err(ErrorCode::Shutdown) => {
                    act.error("ipbxcommand", ErrorCode::Shutdown, commandid.as_ref(), ctx)
                }
                Err(code) => {
                    if code == ErrorCode::Unallowed {
                        warn!("{}: {command} refused: unallowed", act.who());
                    }
                    let reply = Reply::error("ipbxcommand", &code)
                        .with("command", command)
                        .reply_to(commandid.as_ref());
                    act.send(reply, ctx);
                }
            },
        ));
    }

    /// Answers a command once it has run.
    fn outcome(
        &mut self,
        command: String,
        running: Running,
        commandid: Option<Value>,
        ticket: Ticket,
        ctx: &mut Context<Self>,
    ) {
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(running).map(move |outcome, act, ctx| {
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
        let Some((user, partition)) = self
            .me()
            .filter(|(u, p)| p.is_some() || u.role == Role::Admin)
        else {
            let reply = disposition_reply(call_id, Err(ErrorCode::Unallowed));
            return self.send(reply.reply_to(commandid.as_ref()), ctx);
        };
        let by = Issuer {
            user,
            partition: partition.map(str::to_owned),
            acting: None,
        };
        let (code, note) = (
            req.str("code").unwrap_or_default().to_owned(),
            req.str("note").map(str::to_owned),
        );
        let set = self
            .shared
            .control
            .disposition(by, call_id.clone(), code, note, timenow());
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(set).map(move |outcome, act, ctx| {
                drop(ticket);
                match outcome {
                    Err(ErrorCode::Shutdown) => {
                        act.error("disposition", ErrorCode::Shutdown, commandid.as_ref(), ctx)
                    }
                    outcome => act.send(
                        disposition_reply(call_id, outcome).reply_to(commandid.as_ref()),
                        ctx,
                    ),
                }
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
            contexts: (partition != ALL).then(|| vec![partition]),
            number: req.str("number").map(str::to_owned),
            from: number("from"),
            to: number("to"),
            queue: req.str("queue").map(str::to_owned),
            agent: req.str("agent").map(str::to_owned),
            record_id: None,
            limit: req.u64("limit").unwrap_or(50).clamp(1, MAX_HISTORY) as usize,
            offset: req.u64("offset").unwrap_or(0).min(MAX_OFFSET) as usize,
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
