//! What sessions, the FastAGI server and the console ask of the router.

use std::time::Instant;

use actix::prelude::*;
use ctid_proto::agi::AgiRequest;
use ctid_proto::calls::Disposition;
use ctid_proto::commands::{plan, Plan, Sender};
use ctid_proto::cti::{timenow, ErrorCode, Request};
use ctid_proto::directory::User;
use log::{error, warn};

use super::Router;
use crate::partition::ALL;
use crate::store::{Dispose, Disposer, LastAgent};

/// Checks a client's `ipbxcommand` against the call model and plans its AMI actions.
#[derive(Message)]
#[rtype(result = "Result<Plan, ErrorCode>")]
pub struct PlanCommand {
    pub request: Request,
    pub user: User,
    /// The user's partition key; None for a user who sees nothing.
    pub partition: Option<String>,
}

impl Handler<PlanCommand> for Router {
    type Result = Result<Plan, ErrorCode>;

    fn handle(&mut self, msg: PlanCommand, _: &mut Context<Self>) -> Self::Result {
        let sender = Sender {
            user: &msg.user,
            partition: msg.partition.as_deref(),
            separated: self.partitions.separated(),
        };
        plan(
            &msg.request,
            &sender,
            &self.directory.get(),
            &self.model,
            &self.commands,
        )
    }
}

/// Sets a call's disposition: a live call's here (its clients see it), an ended one's in
/// the call records.
#[derive(Message)]
#[rtype(result = "Result<(), ErrorCode>")]
pub struct SetDisposition {
    pub call_id: String,
    pub disposition: Disposition,
    pub by: Disposer,
}

impl SetDisposition {
    /// `user`'s disposition of a call, from their partition.
    pub fn by(
        user: &User,
        partition: Option<&str>,
        call_id: String,
        code: String,
        note: Option<String>,
        at: f64,
    ) -> SetDisposition {
        SetDisposition {
            call_id,
            disposition: Disposition {
                code,
                note,
                by: user.login.clone(),
                at,
            },
            by: Disposer {
                login: user.login.clone(),
                line: user.line.as_ref().map(|l| l.interface.clone()),
                context: partition.filter(|p| *p != ALL).map(str::to_owned),
                role: user.role,
            },
        }
    }
}

impl Handler<SetDisposition> for Router {
    type Result = ResponseFuture<Result<(), ErrorCode>>;

    fn handle(&mut self, msg: SetDisposition, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(call) = self.model.call(&msg.call_id) {
            if !msg.by.may_dispose_call(call) {
                return Box::pin(std::future::ready(Err(ErrorCode::Unallowed)));
            }
            let events = self
                .model
                .set_disposition(&msg.call_id, msg.disposition)
                .unwrap_or_default();
            self.record_then_dispatch(events, Instant::now(), ctx);
            return Box::pin(std::future::ready(Ok(())));
        }
        let Some(store) = self.store.as_ref().map(|s| s.writer.clone()) else {
            return Box::pin(std::future::ready(Err(ErrorCode::StoreUnavailable)));
        };
        let disposed = store.dispose(Dispose {
            call_id: msg.call_id,
            disposition: msg.disposition,
            by: msg.by,
        });
        Box::pin(async move {
            match disposed.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(ErrorCode::Unallowed),
                Err(e) => {
                    error!("disposition not written: {e}");
                    Err(e.code())
                }
            }
        })
    }
}

/// Resyncs the call model with Asterisk now (the dialplan was reloaded).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync;

impl Handler<Resync> for Router {
    type Result = ();

    fn handle(&mut self, _: Resync, ctx: &mut Context<Self>) {
        self.resync(ctx);
    }
}

/// Runs a FastAGI script for the channel that called it; the answer is the channel
/// variables to set, or why the script failed.
#[derive(Message)]
#[rtype(result = "Result<Vec<(String, String)>, String>")]
pub struct RunAgi {
    pub request: AgiRequest,
    /// The channel's Linkedid, asked of Asterisk by the FastAGI server.
    pub linkedid: Option<String>,
}

/// Values Asterisk gives for no caller ID name.
fn no_name(name: Option<&str>, number: Option<&str>) -> bool {
    match name {
        None | Some("") | Some("unknown") | Some("<unknown>") => true,
        Some(n) => Some(n) == number,
    }
}

impl Router {
    /// The context of the call of an AGI channel: its call's, else its dialplan context's.
    fn agi_context(&self, req: &AgiRequest) -> Option<String> {
        let call = req
            .get("uniqueid")
            .and_then(|u| self.model.call_of_channel(u));
        match call.and_then(|c| c.contexts.first()) {
            Some(context) => Some(context.clone()),
            None => req.get("context").and_then(|d| {
                self.directory
                    .get()
                    .context_of_dialplan(&self.pbx, d)
                    .map(str::to_owned)
            }),
        }
    }
}

impl Handler<RunAgi> for Router {
    type Result = ResponseFuture<Result<Vec<(String, String)>, String>>;

    fn handle(
        &mut self,
        RunAgi { request, linkedid }: RunAgi,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let ready = |r| -> Self::Result { Box::pin(std::future::ready(r)) };
        let number = request
            .get("callerid")
            .filter(|n| !matches!(*n, "" | "unknown"))
            .map(str::to_owned);
        match request.script.as_str() {
            "callerid" => {
                if !no_name(request.get("calleridname"), number.as_deref()) {
                    return ready(Ok(Vec::new()));
                }
                let dir = self.directory.get();
                let user = match (number.as_deref(), self.agi_context(&request)) {
                    (Some(n), Some(context)) => dir.user_by_number(&context, n),
                    (Some(n), None) if !self.partitions.separated() => dir
                        .users()
                        .find(|u| u.line.as_ref().is_some_and(|l| l.number == n)),
                    _ => None,
                };
                let name = user.map(|u| u.fullname()).filter(|n| !n.is_empty());
                ready(Ok(name
                    .map(|n| ("CALLERID(name)".to_owned(), n))
                    .into_iter()
                    .collect()))
            }
            "ivr" | "attach" => {
                let data = match request.call_data() {
                    Ok(d) => d,
                    Err(e) => return ready(Err(e)),
                };
                let Some(uid) = request.get("uniqueid") else {
                    return ready(Err("the request has no agi_uniqueid".into()));
                };
                let events = self.model.attach(uid, linkedid.as_deref(), data, timenow());
                self.record_then_dispatch(events, Instant::now(), ctx);
                ready(Ok(Vec::new()))
            }
            "route" => {
                let (Some(store), Some(number)) =
                    (self.store.as_ref().map(|s| s.reader.clone()), number)
                else {
                    return ready(Ok(vec![("CTID_LAST_AGENT".into(), String::new())]));
                };
                let context = self
                    .agi_context(&request)
                    .filter(|_| self.partitions.separated());
                let directory = self.directory.clone();
                let asked = store.last_agent(LastAgent { number, context });
                Box::pin(async move {
                    // Without an answer in time the dialplan goes on as for a new caller.
                    let login = asked.await.unwrap_or_else(|e| {
                        warn!("fagi: route without call records: {e}");
                        None
                    });
                    let line = login.as_deref().and_then(|l| {
                        directory
                            .get()
                            .user_by_login(l)
                            .and_then(|u| u.line.clone())
                    });
                    Ok(vec![
                        ("CTID_LAST_AGENT".into(), login.unwrap_or_default()),
                        (
                            "CTID_LAST_AGENT_NUMBER".into(),
                            line.map(|l| l.number).unwrap_or_default(),
                        ),
                    ])
                })
            }
            other => ready(Err(format!("unknown script {other:?}"))),
        }
    }
}
