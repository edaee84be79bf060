//! What the HTTP listener serves besides the REST API: the CTI protocol over WebSocket for
//! browser desktops (`GET /ws`), and the probes: `GET /health`, `GET /ready` and
//! `GET /metrics`.
//!
//! `/ws` is a CTI session like those of the TCP port: one JSON message per text message
//! each way, the same login (no bearer token: the login is the CTI one), resume, login
//! throttle, outbound budget and slow-consumer policy. A text message (whole or in
//! fragments) over `sessions.max_line_bytes` is answered `frame_too_large` and skipped; past
//! [`OVERSIZE`] times that, it cannot be skipped unread, and the session is closed after
//! that answer. Binary messages are answered `binary_message`.

use std::io;

use actix::Actor;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{Item, Message, MessageStream, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use ctid_proto::cti::ErrorCode;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::LocalBoxStream;
use futures_util::{FutureExt, StreamExt};

use super::{authorize, shared, Answer, ApiError, Route};
use crate::health::Health;
use crate::outbox::MessageSink;
use crate::session::{Inbound, Session, Transport, Unauthenticated};

pub static ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/ws",
        handler: websocket,
    },
    Route {
        method: "GET",
        path: "/health",
        handler: health,
    },
    Route {
        method: "GET",
        path: "/ready",
        handler: ready,
    },
    Route {
        method: "GET",
        path: "/metrics",
        handler: metrics,
    },
];

/// What the probes and `/ws` use.
pub struct Live {
    pub health: Health,
    /// Whether `/metrics` needs a bearer token (`listen.http.metrics_token`).
    pub metrics_token: bool,
    /// Whether this node serves clients (cluster mode: an edge); others serve the probes
    /// alone.
    pub edge: bool,
}

/// The routes every node serves, an edge or not.
pub const PROBES: [&str; 3] = ["/health", "/ready", "/metrics"];

/// How many times `sessions.max_line_bytes` a WebSocket message may be and still be read
/// (and skipped) whole.
pub const OVERSIZE: usize = 4;

fn health(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    let answer = HttpResponse::Ok().json(shared(&req).live.health.live());
    Box::pin(async move { Ok(answer) })
}

fn ready(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    let (ready, details) = shared(&req).live.health.ready();
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let answer = HttpResponse::build(status).json(details);
    Box::pin(async move { Ok(answer) })
}

fn metrics(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let shared = shared(&req);
        if shared.live.metrics_token {
            authorize(&req)?;
        }
        Ok(HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(shared.metrics.encode()))
    })
}

fn websocket(req: HttpRequest, body: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let shared = shared(&req);
        let peer = req
            .peer_addr()
            .ok_or_else(|| ApiError::from(ErrorCode::Unallowed))?;
        let sessions = shared.sessions.clone();
        let guard =
            Unauthenticated::try_new(&sessions.unauthenticated, peer.ip()).map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::TooManyConnections,
                    "too many connections still logging in",
                )
            })?;
        let (response, ws, stream) = actix_ws::handle(&req, body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::Invalid("upgrade".into()),
                format!("not a WebSocket handshake: {e}"),
            )
        })?;
        let max_line = sessions.config.max_line;
        let limit = max_line.saturating_mul(OVERSIZE);
        let stream = stream.max_frame_size(limit);
        let transport = Transport::Messages {
            inbound: inbound(stream, ws.clone(), max_line, limit),
            sink: Box::new(WsSink(Some(ws))),
        };
        Session::new(transport, peer, "ws", sessions, guard).start();
        Ok(response)
    })
}

/// A message arriving in fragments: whether it is text, and its bytes so far.
type Fragments = Option<(bool, BytesMut)>;

/// What the client sends, as a session reads it: pings are answered here, fragments are
/// put together (within `limit` bytes), a close or a protocol error ends the stream (the
/// latter as a read error, after `frame_too_large` when it was a message too large to
/// read).
fn inbound(
    stream: MessageStream,
    ws: actix_ws::Session,
    max_line: usize,
    limit: usize,
) -> LocalBoxStream<'static, io::Result<Inbound>> {
    let state = (stream, ws, None::<io::Error>, Fragments::None);
    futures_util::stream::unfold(
        state,
        move |(mut stream, mut ws, mut failed, mut partial)| async move {
            loop {
                if let Some(e) = failed.take() {
                    return Some((Err(e), (stream, ws, None, None)));
                }
                let whole = match stream.next().await? {
                    Ok(Message::Text(text)) => Ok((true, text.into_bytes())),
                    Ok(Message::Binary(data)) => Ok((false, data)),
                    Ok(Message::Continuation(item)) => {
                        match add_fragment(&mut partial, item, limit) {
                            Ok(Some(whole)) => Ok(whole),
                            Ok(None) => continue,
                            Err(Unreadable::TooLarge) => Err(Overflow),
                            Err(Unreadable::Unstarted) => {
                                let why = "a WebSocket continuation with no message begun";
                                let e = io::Error::new(io::ErrorKind::InvalidData, why);
                                return Some((Err(e), (stream, ws, None, None)));
                            }
                        }
                    }
                    Ok(Message::Ping(data)) => {
                        let _ = ws.pong(&data).await;
                        continue;
                    }
                    Ok(Message::Pong(_) | Message::Nop) => continue,
                    Ok(Message::Close(_)) => return None,
                    Err(ProtocolError::Overflow) => Err(Overflow),
                    Err(e) => {
                        let e = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
                        return Some((Err(e), (stream, ws, None, None)));
                    }
                };
                let item = match whole {
                    Ok((true, text)) if text.len() > max_line => {
                        Ok(Inbound::TooLong { bytes: text.len() })
                    }
                    Ok((true, text)) => Ok(Inbound::Line(text)),
                    Ok((false, data)) => Ok(Inbound::Binary { bytes: data.len() }),
                    Err(Overflow) => {
                        let why = format!("a WebSocket message over {limit} bytes");
                        failed = Some(io::Error::new(io::ErrorKind::InvalidData, why));
                        Ok(Inbound::TooLong { bytes: limit })
                    }
                };
                return Some((item, (stream, ws, failed, partial)));
            }
        },
    )
    .boxed_local()
}

/// A message over the bound of what is read whole.
struct Overflow;

/// Why fragments cannot be put together.
enum Unreadable {
    TooLarge,
    Unstarted,
}

/// Adds a fragment to the message it belongs to; the message once whole.
fn add_fragment(
    partial: &mut Fragments,
    item: Item,
    limit: usize,
) -> Result<Option<(bool, Bytes)>, Unreadable> {
    let (first, last, bytes) = match item {
        Item::FirstText(b) => (Some(true), false, b),
        Item::FirstBinary(b) => (Some(false), false, b),
        Item::Continue(b) => (None, false, b),
        Item::Last(b) => (None, true, b),
    };
    if let Some(text) = first {
        *partial = Some((text, BytesMut::new()));
    }
    let Some((text, data)) = partial.as_mut() else {
        return Err(Unreadable::Unstarted);
    };
    if data.len() + bytes.len() > limit {
        *partial = None;
        return Err(Unreadable::TooLarge);
    }
    data.extend_from_slice(&bytes);
    let text = *text;
    Ok(last
        .then(|| partial.take())
        .flatten()
        .map(|(_, data)| (text, data.freeze())))
}

/// A session's messages, one text message each; None once closed.
struct WsSink(Option<actix_ws::Session>);

impl MessageSink for WsSink {
    fn send(&mut self, message: Bytes) -> LocalBoxFuture<'_, io::Result<()>> {
        async move {
            let ws = self.0.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
            let text = ByteString::try_from(message)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            ws.text(text)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
        }
        .boxed_local()
    }

    fn close(&mut self) -> LocalBoxFuture<'_, ()> {
        async move {
            if let Some(ws) = self.0.take() {
                let _ = ws.close(None).await;
            }
        }
        .boxed_local()
    }
}
