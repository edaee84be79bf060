//! The Announce port (UDP): a `reload` datagram says the dialplan was reloaded; ctid then
//! resyncs its calls with every Asterisk (`reload <pbx>`: with that one) and re-reads the
//! directory (the dialplan contexts of each CTI context are there). Reloads run at most once a second: those that come sooner
//! are folded into one at the end of that second. Other datagrams are logged, at most
//! every ten seconds, and ignored.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ctid_proto::wire::Ask;
use log::{info, warn};

use crate::allow::AllowList;
use crate::directory::{DirectoryWatcher, ReloadNow};
use crate::net::io_reason;
use crate::pbx::Pbxes;
use crate::router::Resync;
use crate::supervisor::{Shutdown, Slot};

/// Longest datagram read; anything longer is cut (and is no `reload`).
const MAX_DATAGRAM: usize = 512;
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Shortest time between two reloads.
const RELOAD_GAP: Duration = Duration::from_secs(1);

pub struct Announce {
    socket: Arc<std::net::UdpSocket>,
    pbxes: Pbxes,
    directory: Slot<DirectoryWatcher>,
    quiet_until: Option<Instant>,
    ignored: u64,
    last_reload: Option<Instant>,
    /// Reloads received since the last one ran, waiting for the end of the gap.
    folded: u64,
    /// The PBXes they asked for; None: every PBX.
    asked: Option<BTreeSet<String>>,
    /// Datagrams from elsewhere are dropped unread; None: from anywhere.
    allow: Option<AllowList>,
}

impl Announce {
    pub fn new(
        socket: Arc<std::net::UdpSocket>,
        pbxes: Pbxes,
        directory: Slot<DirectoryWatcher>,
    ) -> Self {
        Announce {
            socket,
            pbxes,
            directory,
            quiet_until: None,
            ignored: 0,
            last_reload: None,
            folded: 0,
            asked: Some(BTreeSet::new()),
            allow: None,
        }
    }

    /// Only datagrams from `allow` are read.
    pub fn with_allow(mut self, allow: AllowList) -> Self {
        self.allow = Some(allow);
        self
    }
}

impl Announce {
    /// A reload of one PBX (or of all) now, or at the end of the gap since the last one.
    fn reload_asked(&mut self, pbx: Option<&str>, peer: SocketAddr, ctx: &mut Context<Self>) {
        match (pbx, &mut self.asked) {
            (None, asked) => *asked = None,
            (Some(pbx), Some(asked)) => {
                asked.insert(pbx.to_owned());
            }
            (Some(_), None) => {}
        }
        let now = Instant::now();
        match self.last_reload.map(|last| last + RELOAD_GAP) {
            Some(next) if now < next => {
                self.folded += 1;
                if self.folded == 1 {
                    ctx.run_later(next - now, move |act, _| act.reload(peer));
                }
            }
            _ => self.reload(peer),
        }
    }

    fn reload(&mut self, peer: SocketAddr) {
        let folded = match std::mem::take(&mut self.folded) {
            0 => String::new(),
            n => format!(" ({n} reload(s) folded into this one)"),
        };
        let asked = self.asked.replace(BTreeSet::new());
        let which = match &asked {
            None => "every PBX".to_owned(),
            Some(names) => names.iter().cloned().collect::<Vec<_>>().join(", "),
        };
        info!(
            "announce: reload from {peer}{folded}: resyncing {which} and re-reading the directory"
        );
        self.last_reload = Some(Instant::now());
        let pbxes = self
            .pbxes
            .iter()
            .filter(|p| asked.as_ref().is_none_or(|a| a.contains(&*p.name)));
        for pbx in pbxes {
            match (pbx.router.get(), &pbx.remote) {
                (Some(router), _) => router.do_send(Resync),
                // Cluster mode: the node that holds the PBX's link resyncs it.
                (None, Some(remote)) => {
                    let (remote, name) = (remote.clone(), pbx.name.clone());
                    actix_rt::spawn(async move { remote.tell(&name, &Ask::Resync).await });
                }
                (None, None) => {}
            }
        }
        if let Some(directory) = self.directory.get() {
            directory.do_send(ReloadNow);
        }
    }
}

impl Actor for Announce {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let socket = self.socket.try_clone().and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(s)
        });
        let socket = match socket {
            Ok(s) => s,
            Err(e) => {
                warn!("announce: cannot receive: {}", io_reason(&e));
                return ctx.stop();
            }
        };
        if let Ok(addr) = socket.local_addr() {
            info!("announce: listening on {addr} (UDP)");
        }
        let datagrams = futures_util::stream::unfold(socket, |s| async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let received = s.recv_from(&mut buf).await.map(|(n, peer)| {
                buf.truncate(n);
                (buf, peer)
            });
            Some((received, s))
        });
        ctx.add_stream(datagrams);
    }
}

impl StreamHandler<std::io::Result<(Vec<u8>, SocketAddr)>> for Announce {
    fn handle(
        &mut self,
        datagram: std::io::Result<(Vec<u8>, SocketAddr)>,
        ctx: &mut Context<Self>,
    ) {
        let Ok((data, peer)) = datagram else {
            return;
        };
        if !self.allow.as_ref().is_none_or(|a| a.permits(peer.ip())) {
            return;
        }
        let text = String::from_utf8_lossy(&data);
        let mut words = text.split_whitespace();
        let (verb, pbx, rest) = (words.next(), words.next(), words.next());
        if verb.is_some_and(|v| v.eq_ignore_ascii_case("reload")) && rest.is_none() {
            match pbx {
                Some(name) if self.pbxes.get(name).is_none() => {}
                _ => return self.reload_asked(pbx, peer, ctx),
            }
        }
        self.ignored += 1;
        let now = Instant::now();
        if self.quiet_until.is_none_or(|t| now >= t) {
            let preview: String = text.trim().chars().take(40).collect();
            warn!(
                "announce: ignored {} datagram(s), the last from {peer} ({} bytes: {preview:?}); only \"reload\" and \"reload <pbx>\" are known",
                self.ignored,
                data.len()
            );
            self.ignored = 0;
            self.quiet_until = Some(now + LOG_EVERY);
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<Shutdown> for Announce {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
