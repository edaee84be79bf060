//! Call control and dispositions as every client path gives them (CTI `ipbxcommand` and
//! `disposition`, the HTTP API): planned by the router of the PBX concerned, or in cluster
//! mode by the PBX's active ingest over NATS, then run on its AMI link.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ctid_proto::commands::{pbx_of, CommandSettings, Sender};
use ctid_proto::cti::{ErrorCode, Request};
use ctid_proto::directory::User;
use ctid_proto::wire::{Acting, Answer, Ask};

use crate::ami::run_plan;
use crate::ask::{ask, Unanswered};
use crate::cluster::remote;
use crate::directory::DirectoryHandle;
use crate::metrics::Metrics;
use crate::pbx::Pbxes;
use crate::router::{PlanCommand, SetDisposition};

/// Who gives a command: a directory user, or an HTTP token acting as a user with no line.
#[derive(Clone, Debug)]
pub struct Issuer {
    pub user: User,
    /// The partition key the issuer acts from; None for one who sees nothing.
    pub partition: Option<String>,
    /// Set for an HTTP token: the active ingest of another node cannot look it up.
    pub acting: Option<Acting>,
}

impl Issuer {
    /// A token acting as `name` with `role`, from `partition`.
    pub fn token(name: &str, role: ctid_proto::rights::Role, partition: &str) -> Issuer {
        Issuer {
            user: User::acting(name, role),
            partition: Some(partition.to_owned()),
            acting: Some(Acting {
                name: name.to_owned(),
                role,
            }),
        }
    }
}

/// A planned command running: its outcome, or why it failed.
pub type Running = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// What a router did not answer means for a client.
pub fn unanswered(why: Unanswered) -> ErrorCode {
    match why {
        Unanswered::Late => ErrorCode::Busy,
        Unanswered::Gone => ErrorCode::Shutdown,
    }
}

/// Where commands go.
#[derive(Clone)]
pub struct Commands {
    pub pbxes: Pbxes,
    pub directory: DirectoryHandle,
    /// Context separation is on.
    pub separated: bool,
    /// How long a router, the active ingest or an AMI action may take to answer.
    pub socket: Duration,
    /// How long a phone rings for a dial or an originate.
    pub ring: Duration,
    /// Counts commands by outcome, and times dials and originates.
    pub metrics: Metrics,
}

impl Commands {
    pub fn new(
        pbxes: Pbxes,
        directory: DirectoryHandle,
        separated: bool,
        socket: Duration,
        settings: &CommandSettings,
        metrics: Metrics,
    ) -> Commands {
        Commands {
            pbxes,
            directory,
            separated,
            socket,
            ring: Duration::from_millis(settings.originate_timeout_ms),
            metrics,
        }
    }

    /// Plans an `ipbxcommand` (its `fields`) for `by`; once planned, resolves to the
    /// command running. Refused plans, and a router or ingest that did not answer, are
    /// errors; nothing was done then.
    pub fn command(
        &self,
        request: Request,
        by: Issuer,
    ) -> impl Future<Output = Result<Running, ErrorCode>> + 'static {
        let name = request.str("command").unwrap_or_default().to_owned();
        let context = by.user.context().map(str::to_owned);
        let metrics = self.metrics.clone();
        let planning = self.plan(request, by);
        async move {
            match planning.await {
                Ok(running) => Ok(metrics.counted(name, context, running)),
                Err(code) => {
                    metrics.command(&name, "refused");
                    Err(code)
                }
            }
        }
    }

    fn plan(
        &self,
        request: Request,
        by: Issuer,
    ) -> impl Future<Output = Result<Running, ErrorCode>> + 'static {
        let sender = Sender {
            user: &by.user,
            partition: by.partition.as_deref(),
            separated: self.separated,
        };
        let pbx = pbx_of(&request, &sender, &self.directory.get())
            .and_then(|name| self.pbxes.get(&name).cloned().ok_or(ErrorCode::Unallowed));
        let (socket, ring) = (self.socket, self.ring);
        async move {
            let pbx = pbx?;
            let Some(router) = pbx.router.get() else {
                let remote = pbx.remote.ok_or(ErrorCode::Shutdown)?;
                let asked = Ask::Command {
                    user_id: by.user.id,
                    acting: by.acting,
                    partition: by.partition,
                    fields: request.fields,
                };
                let mut answers = remote.ask(&pbx.name, &asked).await?;
                match answers.next(socket).await? {
                    Answer::Planned { error: None } => {}
                    Answer::Planned { error: Some(code) } => return Err(remote::code(&code)),
                    _ => return Err(ErrorCode::PbxUnavailable),
                }
                // Each action may take the socket timeout, and a ring more.
                let within = ring + socket * 4;
                let running: Running = Box::pin(async move {
                    match answers.next(within).await {
                        Ok(Answer::Done { error: None }) => Ok(()),
                        Ok(Answer::Done { error: Some(why) }) => Err(why),
                        _ => Err("the PBX's active ingest went away".to_owned()),
                    }
                });
                return Ok(running);
            };
            let asked = PlanCommand {
                request,
                user: by.user,
                partition: by.partition,
            };
            let plan = ask(&router, asked, socket).await.map_err(unanswered)??;
            let running: Running = Box::pin(run_plan(plan, pbx.link, socket, ring));
            Ok(running)
        }
    }

    /// Sets the disposition of call `call_id` (live, or recorded) for `by`.
    pub fn disposition(
        &self,
        by: Issuer,
        call_id: String,
        code: String,
        note: Option<String>,
        at: f64,
    ) -> impl Future<Output = Result<(), ErrorCode>> + 'static {
        // The router of the call's PBX knows it if it is live, and records it otherwise.
        let pbx = call_id
            .split_once(':')
            .and_then(|(p, _)| self.pbxes.get(p))
            .cloned();
        let socket = self.socket;
        async move {
            let pbx = pbx.ok_or(ErrorCode::Unallowed)?;
            match (pbx.router.get(), pbx.remote) {
                (Some(router), _) => {
                    let partition = by.partition.as_deref();
                    let asked = SetDisposition::by(&by.user, partition, call_id, code, note, at);
                    ask(&router, asked, socket).await.map_err(unanswered)?
                }
                (None, Some(remote)) => {
                    let asked = Ask::Disposition {
                        user_id: by.user.id,
                        acting: by.acting,
                        partition: by.partition,
                        call_id,
                        code,
                        note,
                        at,
                    };
                    match remote.ask(&pbx.name, &asked).await?.next(socket).await? {
                        Answer::Done { error: None } => Ok(()),
                        Answer::Done { error: Some(code) } => Err(remote::code(&code)),
                        _ => Err(ErrorCode::PbxUnavailable),
                    }
                }
                (None, None) => Err(ErrorCode::Shutdown),
            }
        }
    }
}
