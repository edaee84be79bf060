//! Listening ports. A [`TcpService`] actor accepts on a socket bound at start-up (so that a
//! busy port stops start-up, and a restarted listener keeps the same socket) and hands each
//! connection to its [`Accept`]or. [`CtiAccept`] starts a CTI session per client, spread over
//! the worker arbiters; CTIs is TLS from the first byte, its handshake bounded by the login
//! timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use ctid_proto::cti::{timenow, ErrorCode, Reply};
use log::{debug, info, warn};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::allow::AllowList;
use crate::net::io_reason;
use crate::session::{Session, SessionShared, SlotLimit, Transport, Unauthenticated};
use crate::supervisor::Shutdown;

/// A pause after a failed accept (out of file descriptors, ...), so as not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Refused connections are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a listener does with each connection.
pub trait Accept: Unpin + 'static {
    fn accept(&mut self, stream: TcpStream, peer: SocketAddr);

    /// The listener is stopping.
    fn stopping(&mut self) {}

    /// Shown after the address in the "listening on" line.
    fn note(&self) -> &'static str {
        ""
    }
}

pub struct TcpService<A: Accept> {
    name: &'static str,
    socket: Arc<std::net::TcpListener>,
    acceptor: A,
    paused: bool,
    /// Peers outside it are closed at once; None: everyone may connect.
    allow: Option<AllowList>,
}

impl<A: Accept> TcpService<A> {
    pub fn new(name: &'static str, socket: Arc<std::net::TcpListener>, acceptor: A) -> Self {
        TcpService {
            name,
            socket,
            acceptor,
            paused: false,
            allow: None,
        }
    }

    /// Only peers of `allow` are handed to the acceptor.
    pub fn with_allow(mut self, allow: AllowList) -> Self {
        self.allow = Some(allow);
        self
    }
}

impl<A: Accept> Actor for TcpService<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let listener = self.socket.try_clone().and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(s)
        });
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                warn!("{}: cannot accept: {}", self.name, io_reason(&e));
                return ctx.stop();
            }
        };
        if let Ok(addr) = listener.local_addr() {
            info!("{}: listening on {addr}{}", self.name, self.acceptor.note());
        }
        let accepts = futures_util::stream::unfold(listener, |l| async move {
            let accepted = l.accept().await;
            Some((accepted, l))
        });
        ctx.add_stream(accepts);
    }
}

impl<A: Accept> StreamHandler<std::io::Result<(TcpStream, SocketAddr)>> for TcpService<A> {
    fn handle(
        &mut self,
        accepted: std::io::Result<(TcpStream, SocketAddr)>,
        ctx: &mut Context<Self>,
    ) {
        match accepted {
            Ok((stream, peer)) => {
                self.paused = false;
                if self.allow.as_ref().is_none_or(|a| a.permits(peer.ip())) {
                    self.acceptor.accept(stream, peer);
                }
            }
            Err(e) => {
                if !self.paused {
                    warn!("{}: accept failed ({}); pausing", self.name, io_reason(&e));
                }
                self.paused = true;
                ctx.wait(actix::fut::wrap_future(tokio::time::sleep(ACCEPT_BACKOFF)));
            }
        }
    }
}

impl<A: Accept> Handler<Shutdown> for TcpService<A> {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        info!("{}: closing", self.name);
        self.acceptor.stopping();
        ctx.stop();
    }
}

/// Starts a CTI session per client, on the worker arbiters in turn.
pub struct CtiAccept {
    name: &'static str,
    tls: Option<TlsAcceptor>,
    shared: Arc<SessionShared>,
    workers: Vec<ArbiterHandle>,
    next: usize,
    /// Refusals not logged yet, and until when the log stays quiet.
    refused: u64,
    quiet_until: Option<Instant>,
}

impl CtiAccept {
    pub fn new(
        name: &'static str,
        tls: Option<TlsAcceptor>,
        shared: Arc<SessionShared>,
        workers: Vec<ArbiterHandle>,
    ) -> Self {
        CtiAccept {
            name,
            tls,
            shared,
            workers,
            next: 0,
            refused: 0,
            quiet_until: None,
        }
    }

    /// Answers `too_many_connections` and closes; logs the first refusal of a run, then a
    /// count at most every ten seconds (a flood must not flood the log too).
    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr, limit: SlotLimit) {
        self.refused += 1;
        let now = Instant::now();
        if self.quiet_until.is_none_or(|t| now >= t) {
            let key = match limit {
                SlotLimit::All => "sessions.max_unauthenticated",
                SlotLimit::Address => "sessions.max_unauthenticated_per_address",
            };
            warn!(
                "{}: refused {} connection(s), the last from {peer}: too many still logging in ({key})",
                self.name, self.refused
            );
            self.refused = 0;
            self.quiet_until = Some(now + REFUSAL_LOG_EVERY);
        }
        let line = Reply::error("error", &ErrorCode::TooManyConnections).encode(timenow());
        actix_rt::spawn(async move {
            let mut stream = stream;
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&line)).await;
        });
    }
}

impl Accept for CtiAccept {
    fn accept(&mut self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let guard = match Unauthenticated::try_new(&self.shared.unauthenticated, peer.ip()) {
            Ok(guard) => guard,
            Err(limit) => return self.refuse(stream, peer, limit),
        };
        // A tokio socket belongs to the reactor that accepted it: it crosses to its worker
        // arbiter as a std socket.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => return warn!("{}: {peer}: {}", self.name, io_reason(&e)),
        };
        let (name, tls, shared) = (self.name, self.tls.clone(), self.shared.clone());
        let timeout = shared.config.login_timeout;
        let start = move || {
            let stream = match TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => return warn!("{name}: {peer}: {}", io_reason(&e)),
            };
            match tls {
                None => {
                    Session::new(
                        Transport::Lines(Box::new(stream)),
                        peer,
                        name,
                        shared,
                        guard,
                    )
                    .start();
                }
                Some(acceptor) => {
                    actix_rt::spawn(async move {
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                Session::new(
                                    Transport::Lines(Box::new(tls)),
                                    peer,
                                    name,
                                    shared,
                                    guard,
                                )
                                .start();
                            }
                            Ok(Err(e)) => debug!("{name}: TLS handshake with {peer} failed: {e}"),
                            Err(_) => debug!("{name}: TLS handshake with {peer} timed out"),
                        }
                    });
                }
            }
        };
        match self.workers.get(self.next % self.workers.len().max(1)) {
            Some(worker) => {
                self.next = self.next.wrapping_add(1);
                worker.spawn_fn(start);
            }
            None => start(),
        }
    }

    fn stopping(&mut self) {
        info!("{}: telling its sessions", self.name);
        self.shared
            .registry
            .kick_all(Some(self.name), ErrorCode::Shutdown);
    }

    fn note(&self) -> &'static str {
        if self.tls.is_some() {
            " (TLS)"
        } else {
            ""
        }
    }
}
