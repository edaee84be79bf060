//! The FastAGI port: the dialplan runs `AGI(agi://127.0.0.1:5002/<script>?k=v,arg1,...)`
//! and waits for the answer, so each request is answered at once: ctid asks Asterisk for
//! the channel's Linkedid (to attach data even before the channel's AMI events arrive),
//! runs the script, sets the resulting channel variables and `CTID_AGI_STATUS` (`ok` or
//! `error`, with `CTID_AGI_REASON`), and hangs up the AGI connection.
//!
//! A request is for the PBX it names (`pbx=` in the URL), else for the PBX whose
//! `fagi_from` holds its source address, else for the only PBX; otherwise it is answered
//! `error` with why.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ctid_proto::agi::{AgiCodec, AgiCommand, AgiFrame, AgiReply, AgiRequest};
use ctid_proto::wire::{Answer, Ask};
use futures_util::{SinkExt, StreamExt};
use log::{debug, info, warn};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::ask::{ask, Unanswered};
use crate::listener::Accept;
use crate::pbx::{Pbx, Pbxes};
use crate::router::RunAgi;
use crate::settings::human_duration;

/// AGI requests served at once, at most; more are closed (the dialplan goes on).
const MAX_ACTIVE: usize = 1024;

#[derive(Clone)]
pub struct FagiAccept {
    pbxes: Pbxes,
    timeout: Duration,
    active: Arc<AtomicUsize>,
}

impl FagiAccept {
    pub fn new(pbxes: Pbxes, timeout: Duration) -> Self {
        FagiAccept {
            pbxes,
            timeout,
            active: Arc::default(),
        }
    }
}

impl Accept for FagiAccept {
    fn accept(&mut self, stream: TcpStream, peer: SocketAddr) {
        if self.active.fetch_add(1, Ordering::SeqCst) >= MAX_ACTIVE {
            self.active.fetch_sub(1, Ordering::SeqCst);
            return warn!("fagi: refused {peer}: {MAX_ACTIVE} requests already under way");
        }
        let (pbxes, timeout, active) = (self.pbxes.clone(), self.timeout, self.active.clone());
        actix_rt::spawn(async move {
            serve(stream, peer, pbxes, timeout).await;
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One AGI conversation: commands sent, replies read, with a deadline each.
struct Conversation {
    framed: Framed<TcpStream, AgiCodec>,
    timeout: Duration,
    hung_up: bool,
}

impl Conversation {
    /// Sends a command and returns its reply; None if the peer is gone or stalled. Commands
    /// still work after a HANGUP (setting a variable for the `h` extension, say).
    async fn ask(&mut self, command: AgiCommand) -> Option<AgiReply> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.framed.send(&command))
            .await
            .ok()?
            .ok()?;
        loop {
            match tokio::time::timeout(timeout, self.framed.next())
                .await
                .ok()??
            {
                Ok(AgiFrame::Reply(reply)) => return Some(reply),
                Ok(AgiFrame::Hangup) => self.hung_up = true,
                Ok(AgiFrame::Request(_)) | Err(_) => return None,
            }
        }
    }
}

/// Runs the request's script on its PBX's router.
async fn run(
    agi: &mut Conversation,
    request: AgiRequest,
    pbx: &Pbx,
    timeout: Duration,
) -> Result<Vec<(String, String)>, String> {
    let linkedid = agi
        .ask(AgiCommand("GET FULL VARIABLE ${CHANNEL(linkedid)}".into()))
        .await
        .and_then(|r| r.data)
        .filter(|l| !l.is_empty());
    let Some(router) = pbx.router.get() else {
        let remote = pbx.remote.as_ref().ok_or("ctid is restarting")?;
        let unavailable = || format!("no node holds PBX {}'s link now", pbx.name);
        let mut answers = remote
            .ask(&pbx.name, &Ask::Agi { request, linkedid })
            .await
            .map_err(|_| unavailable())?;
        return match answers.next(timeout).await {
            Ok(Answer::Agi { outcome }) => outcome,
            _ => Err(unavailable()),
        };
    };
    match ask(&router, RunAgi { request, linkedid }, timeout).await {
        Ok(outcome) => outcome,
        Err(Unanswered::Late) => Err(format!("no answer within {}", human_duration(timeout))),
        Err(Unanswered::Gone) => Err("ctid is restarting".into()),
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, pbxes: Pbxes, timeout: Duration) {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, AgiCodec::default());
    let request = match tokio::time::timeout(timeout, framed.next()).await {
        Ok(Some(Ok(AgiFrame::Request(r)))) => r,
        Ok(Some(Err(e))) => return warn!("fagi: {peer}: {e}; closing"),
        Ok(Some(Ok(_))) | Ok(None) => return debug!("fagi: {peer} left before its request"),
        Err(_) => {
            return warn!(
                "fagi: {peer} sent no request within {}; closing",
                human_duration(timeout)
            )
        }
    };
    let mut agi = Conversation {
        framed,
        timeout,
        hung_up: false,
    };
    let channel = request.get("channel").unwrap_or("?").to_owned();
    let script = request.script.clone();
    let outcome = match pbxes.for_agi(request.param("pbx"), peer.ip()) {
        Ok(pbx) => run(&mut agi, request, pbx, timeout).await,
        Err(reason) => Err(reason),
    };
    let commands: Vec<AgiCommand> = match outcome {
        Ok(variables) => {
            debug!("fagi: {script} for {channel}: ok");
            variables
                .iter()
                .map(|(k, v)| AgiCommand::set_variable(k, v))
                .chain([AgiCommand::set_variable("CTID_AGI_STATUS", "ok")])
                .collect()
        }
        Err(reason) => {
            info!("fagi: {script} for {channel} ({peer}): {reason}");
            vec![
                AgiCommand::set_variable("CTID_AGI_STATUS", "error"),
                AgiCommand::set_variable("CTID_AGI_REASON", &reason),
            ]
        }
    };
    for command in commands {
        if agi.ask(command).await.is_none() {
            return debug!("fagi: {peer} gone before all variables were set");
        }
    }
    if agi.hung_up {
        debug!("fagi: {channel} hung up during its AGI request");
    }
}
