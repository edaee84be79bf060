//! What a node asks of the active ingest of a PBX, by NATS request and reply: commands,
//! dispositions, FastAGI scripts and resyncs. Only the active ingest listens on a PBX's
//! subject (its [`Responder`] runs beside its link), so that a question with nobody to
//! answer it gets NATS's "no responders" at once: `pbx_unavailable`.

use std::str::FromStr;
use std::time::Duration;

use actix::prelude::*;
use async_nats::{Message, StatusCode, Subscriber};
use bytes::Bytes;
use ctid_proto::cti::{ErrorCode, Request};
use ctid_proto::directory::{Directory, User};
use ctid_proto::wire::{token, Acting, Answer, Ask};
use futures_util::StreamExt;
use log::{debug, warn};

use super::Cluster;
use crate::ami::{run_plan, AmiLink};
use crate::ask::{ask, Unanswered};
use crate::directory::DirectoryHandle;
use crate::router::{PlanCommand, Resync, Router, RunAgi, SetDisposition};
use crate::supervisor::{Shutdown, Slot};

/// Who asked: an HTTP token acting with its role, or a user of the directory.
fn sender(dir: &Directory, user_id: u64, acting: Option<Acting>) -> Option<User> {
    match acting {
        Some(a) => Some(User::acting(&a.name, a.role)),
        None => dir.user(user_id).cloned(),
    }
}

fn subject(cluster: &Cluster, pbx: &str) -> String {
    cluster.subject(&format!("ask.{}", token(pbx)))
}

/// A node's way to the active ingest of each PBX.
#[derive(Clone)]
pub struct Remote {
    cluster: Cluster,
}

/// The answers to one question, as they come.
pub struct Answers(Subscriber);

impl Answers {
    /// The next answer, within `within`; none (NATS lost, nobody listening, the active
    /// ingest gone) is `pbx_unavailable`.
    pub async fn next(&mut self, within: Duration) -> Result<Answer, ErrorCode> {
        match tokio::time::timeout(within, self.0.next()).await {
            Ok(Some(m)) if m.status == Some(StatusCode::NO_RESPONDERS) => {
                Err(ErrorCode::PbxUnavailable)
            }
            Ok(Some(m)) => serde_json::from_slice(&m.payload).map_err(|e| {
                warn!("cluster: an unreadable answer: {e}");
                ErrorCode::PbxUnavailable
            }),
            Ok(None) | Err(_) => Err(ErrorCode::PbxUnavailable),
        }
    }
}

impl Remote {
    pub fn new(cluster: Cluster) -> Remote {
        Remote { cluster }
    }

    fn connected(&self) -> bool {
        self.cluster.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Asks the active ingest of `pbx`; its answers come on the returned [`Answers`].
    pub async fn ask(&self, pbx: &str, question: &Ask) -> Result<Answers, ErrorCode> {
        if !self.connected() {
            return Err(ErrorCode::PbxUnavailable);
        }
        let body = serde_json::to_vec(question).map_err(|_| ErrorCode::PbxUnavailable)?;
        let client = &self.cluster.client;
        let inbox = client.new_inbox();
        let answers = client
            .subscribe(inbox.clone())
            .await
            .map_err(|_| ErrorCode::PbxUnavailable)?;
        client
            .publish_with_reply(subject(&self.cluster, pbx), inbox, body.into())
            .await
            .map_err(|_| ErrorCode::PbxUnavailable)?;
        Ok(Answers(answers))
    }

    /// Tells the active ingest of `pbx` something that needs no answer.
    pub async fn tell(&self, pbx: &str, what: &Ask) {
        let Ok(body) = serde_json::to_vec(what) else {
            return;
        };
        let sent = self
            .cluster
            .client
            .publish(subject(&self.cluster, pbx), body.into())
            .await;
        if let Err(e) = sent {
            warn!("cluster: could not tell PBX {pbx}'s active ingest: {e}");
        }
    }
}

/// Answers the questions about one PBX while this node is its active ingest.
pub struct Responder {
    cluster: Cluster,
    pbx: String,
    router: Slot<Router>,
    link: Slot<AmiLink>,
    directory: DirectoryHandle,
    /// `timeouts.socket`
    socket: Duration,
    /// How long a phone rings for a command.
    ring: Duration,
}

impl Responder {
    pub fn new(
        cluster: Cluster,
        pbx: &str,
        router: Slot<Router>,
        link: Slot<AmiLink>,
        directory: DirectoryHandle,
        socket: Duration,
        ring: Duration,
    ) -> Responder {
        Responder {
            cluster,
            pbx: pbx.to_owned(),
            router,
            link,
            directory,
            socket,
            ring,
        }
    }
}

impl Answering {
    /// Works out the answers to `question`, sending each to `reply` as it is known.
    async fn answer(self, question: Ask, reply: Option<async_nats::Subject>) {
        let Answering {
            client,
            router,
            link,
            directory,
            socket,
            ring,
        } = self;
        let send = |answer: Answer| {
            let (client, reply) = (client.clone(), reply.clone());
            async move {
                let (Some(reply), Ok(body)) = (reply, serde_json::to_vec(&answer)) else {
                    return;
                };
                if let Err(e) = client.publish(reply, Bytes::from(body)).await {
                    debug!("cluster: an answer was not sent: {e}");
                }
            }
        };
        let error = |code: ErrorCode| Some(code.to_string());
        let unanswered = |why| match why {
            Unanswered::Late => ErrorCode::Busy,
            Unanswered::Gone => ErrorCode::PbxUnavailable,
        };
        let Some(router) = router.get() else {
            let answer = match question {
                Ask::Command { .. } => Answer::Planned {
                    error: error(ErrorCode::PbxUnavailable),
                },
                Ask::Agi { .. } => Answer::Agi {
                    outcome: Err("ctid is restarting".into()),
                },
                _ => Answer::Done {
                    error: error(ErrorCode::PbxUnavailable),
                },
            };
            return send(answer).await;
        };
        let dir = directory.get();
        match question {
            Ask::Command {
                user_id,
                acting,
                partition,
                fields,
            } => {
                let Some(user) = sender(&dir, user_id, acting) else {
                    let error = error(ErrorCode::Unallowed);
                    return send(Answer::Planned { error }).await;
                };
                let request = Request {
                    class: "ipbxcommand".into(),
                    commandid: None,
                    fields,
                };
                let asked = PlanCommand {
                    request,
                    user,
                    partition,
                };
                let plan = match ask(&router, asked, socket).await {
                    Ok(Ok(plan)) => plan,
                    Ok(Err(code)) => return send(Answer::Planned { error: error(code) }).await,
                    Err(why) => {
                        let error = error(unanswered(why));
                        return send(Answer::Planned { error }).await;
                    }
                };
                send(Answer::Planned { error: None }).await;
                let outcome = run_plan(plan, link, socket, ring).await;
                send(Answer::Done {
                    error: outcome.err(),
                })
                .await;
            }
            Ask::Disposition {
                user_id,
                acting,
                partition,
                call_id,
                code,
                note,
                at,
            } => {
                let Some(user) = sender(&dir, user_id, acting) else {
                    let error = error(ErrorCode::Unallowed);
                    return send(Answer::Done { error }).await;
                };
                let asked =
                    SetDisposition::by(&user, partition.as_deref(), call_id, code, note, at);
                let outcome = ask(&router, asked, socket)
                    .await
                    .unwrap_or_else(|why| Err(unanswered(why)));
                send(Answer::Done {
                    error: outcome.err().map(|c| c.to_string()),
                })
                .await;
            }
            Ask::Agi { request, linkedid } => {
                let outcome = match ask(&router, RunAgi { request, linkedid }, socket).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err("the active ingest did not answer in time".into()),
                };
                send(Answer::Agi { outcome }).await;
            }
            Ask::Resync => router.do_send(Resync),
        }
    }
}

/// What answering a question needs, off the responder.
struct Answering {
    client: async_nats::Client,
    router: Slot<Router>,
    link: Slot<AmiLink>,
    directory: DirectoryHandle,
    socket: Duration,
    ring: Duration,
}

impl Actor for Responder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (client, subject) = (
            self.cluster.client.clone(),
            subject(&self.cluster, &self.pbx),
        );
        ctx.wait(
            actix::fut::wrap_future::<_, Self>(async move { client.subscribe(subject).await }).map(
                |subscribed, act, ctx| match subscribed {
                    Ok(questions) => {
                        ctx.add_stream(questions);
                    }
                    Err(e) => {
                        warn!("cluster: PBX {}: cannot take questions: {e}", act.pbx);
                        ctx.stop();
                    }
                },
            ),
        );
    }
}

impl StreamHandler<Message> for Responder {
    fn handle(&mut self, message: Message, ctx: &mut Context<Self>) {
        let question = match serde_json::from_slice::<Ask>(&message.payload) {
            Ok(q) => q,
            Err(e) => return warn!("cluster: PBX {}: unreadable question: {e}", self.pbx),
        };
        let answering = Answering {
            client: self.cluster.client.clone(),
            router: self.router.clone(),
            link: self.link.clone(),
            directory: self.directory.clone(),
            socket: self.socket,
            ring: self.ring,
        };
        ctx.spawn(actix::fut::wrap_future(
            answering.answer(question, message.reply),
        ));
    }

    /// The subscription ended (NATS lost for good): the supervisor starts it again.
    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Shutdown> for Responder {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// An error code as a node passed it.
pub fn code(text: &str) -> ErrorCode {
    ErrorCode::from_str(text).unwrap_or(ErrorCode::PbxUnavailable)
}
