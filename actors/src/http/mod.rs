//! The HTTP listener: actix-web on a socket bound at start-up, in ctid's actix system and
//! under the listeners' supervisor like every other port. TLS when a certificate is set.
//!
//! Every route is a row of a table ([`Route`]: method, path, handler), so that the App is
//! built from the same list the OpenAPI test compares with docs/openapi.yaml. A module adds
//! its routes by adding its table to [`routes`]; handlers take what they need from
//! [`HttpShared`] (`req.app_data::<web::Data<HttpShared>>()`, see [`shared`]).
//!
//! Errors are JSON, `{"error": <code of docs/protocol.md>, "detail": ...}`. Callers of the
//! API (not the health probes) show a bearer token of `[[http.tokens]]` ([`authorize`]).

pub mod live;
pub mod rest;
pub mod wallboard;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use ctid_proto::cti::ErrorCode;
use futures_util::future::LocalBoxFuture;
use log::{info, warn};
use ring::digest::{digest, SHA256};
use serde_json::{json, Map, Value};

use crate::allow::AllowList;
use crate::metrics::Metrics;
use crate::session::SessionShared;
use crate::settings::HttpToken;
use crate::supervisor::{Report, Shutdown};

/// What every handler may use.
pub struct HttpShared {
    /// The directory, partitions (live calls), PBXes, call records, command path, and
    /// what CTI sessions share.
    pub sessions: Arc<SessionShared>,
    pub tokens: Vec<Arc<HttpToken>>,
    pub metrics: Metrics,
    pub report: Report,
    /// The largest request body read.
    pub max_body: usize,
    /// Peers outside it are refused.
    pub allow: AllowList,
    /// What the probes and `/ws` use.
    pub live: live::Live,
    /// Commands and record queries under way, by token name.
    pub in_flight: HashMap<String, Arc<AtomicUsize>>,
}

impl HttpShared {
    pub fn new(
        sessions: Arc<SessionShared>,
        tokens: &[HttpToken],
        metrics: Metrics,
        report: Report,
        max_body: usize,
        allow: AllowList,
        live: live::Live,
    ) -> HttpShared {
        HttpShared {
            sessions,
            in_flight: tokens
                .iter()
                .map(|t| (t.name.clone(), Arc::default()))
                .collect(),
            tokens: tokens.iter().cloned().map(Arc::new).collect(),
            metrics,
            report,
            max_body,
            allow,
            live,
        }
    }
}

/// What a handler answers.
pub type Answer = Result<HttpResponse, ApiError>;

/// A route's handler: the request and its (unread) body.
pub type RouteHandler = fn(HttpRequest, web::Payload) -> LocalBoxFuture<'static, Answer>;

/// One route: `method` on `path` (actix and OpenAPI syntax: `/api/v1/calls/{id}`).
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub handler: RouteHandler,
}

/// Every route the listener serves.
pub fn routes() -> impl Iterator<Item = &'static Route> {
    rest::ROUTES
        .iter()
        .chain(live::ROUTES)
        .chain(wallboard::ROUTES)
}

/// The shared data of the App that serves `req`.
pub fn shared(req: &HttpRequest) -> web::Data<HttpShared> {
    req.app_data::<web::Data<HttpShared>>()
        .expect("the App is built with its HttpShared")
        .clone()
}

/// An error answer: `{"error": code, "detail": detail}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut answer = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            answer.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        answer.json(json!({"error": self.code.to_string(), "detail": self.detail}))
    }
}

/// A refusal with a protocol error code: its HTTP status and a detail.
impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> ApiError {
        let (status, detail) = match &code {
            ErrorCode::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "a valid bearer token is required")
            }
            ErrorCode::NotFound => (StatusCode::NOT_FOUND, "no such resource"),
            ErrorCode::Unallowed => (StatusCode::FORBIDDEN, "the token's role may not do that"),
            ErrorCode::Missing(_) => (StatusCode::BAD_REQUEST, "required fields are absent"),
            ErrorCode::Invalid(_) => (StatusCode::BAD_REQUEST, "a field holds an unusable value"),
            ErrorCode::BadJson => (StatusCode::BAD_REQUEST, "the body is not a JSON object"),
            ErrorCode::UnknownFunction => (StatusCode::BAD_REQUEST, "no such command"),
            ErrorCode::FrameTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "the body is too large"),
            ErrorCode::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "too many requests"),
            ErrorCode::CommandFailed => (StatusCode::BAD_GATEWAY, "the PBX refused the command"),
            ErrorCode::StoreUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "call records are off")
            }
            ErrorCode::StoreBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the call records did not answer in time",
            ),
            ErrorCode::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the call model did not answer in time; nothing was done",
            ),
            ErrorCode::PbxUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no node holds the PBX's link now; nothing was done",
            ),
            ErrorCode::Shutdown => (StatusCode::SERVICE_UNAVAILABLE, "ctid is stopping"),
            _ => (StatusCode::BAD_REQUEST, "the request was refused"),
        };
        ApiError::new(status, code, detail)
    }
}

/// The SHA-256 of a token, in lowercase hex, as `token_sha256` holds it.
pub fn token_sha256(token: &str) -> String {
    digest(&SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal digests, compared in a time that does not depend on where they differ.
fn same_digest(a: &[u8], b: &[u8; 32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token `req` shows as `Authorization: Bearer <token>`; 401 if none or unknown.
pub fn authorize(req: &HttpRequest) -> Result<Arc<HttpToken>, ApiError> {
    let unauthorized = || ApiError::from(ErrorCode::Unauthorized);
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized());
    }
    let presented = digest(&SHA256, token.trim().as_bytes());
    // Every token is compared, the match or not.
    let mut found = None;
    for t in &shared(req).tokens {
        if same_digest(presented.as_ref(), &t.sha256) {
            found = Some(t.clone());
        }
    }
    found.ok_or_else(unauthorized)
}

/// The body as a JSON object, read up to the size limit: 413 past it, 400 if it is not
/// a JSON object.
pub async fn json_body(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = read_body(req, payload).await?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ErrorCode::BadJson.into()),
    }
}

/// [`json_body`], an empty body being an empty object.
pub async fn optional_json_body(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = read_body(req, payload).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ErrorCode::BadJson.into()),
    }
}

/// The body, up to the size limit: 413 past it.
async fn read_body(req: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, ApiError> {
    let limit = shared(req).max_body;
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadJson,
            "the body could not be read",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::FrameTooLarge,
            format!("the body is over {limit} bytes"),
        )),
    }
}

async fn not_found() -> HttpResponse {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route").error_response()
}

async fn method_not_allowed() -> HttpResponse {
    let refused = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::UnknownFunction,
        "the route has no such method",
    );
    refused.error_response()
}

/// The App: every route of [`routes`], grouped by path, with JSON answers for unknown
/// routes and methods.
fn app(
    data: web::Data<HttpShared>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let edge = data.live.edge;
    let served = move |r: &&Route| edge || live::PROBES.contains(&r.path);
    let mut paths: Vec<&'static str> = Vec::new();
    for r in routes().filter(served) {
        if !paths.contains(&r.path) {
            paths.push(r.path);
        }
    }
    let mut app = App::new()
        .app_data(data)
        .default_service(web::to(not_found));
    for path in paths {
        let mut resource = web::resource(path).default_service(web::to(method_not_allowed));
        for r in routes().filter(served).filter(|r| r.path == path) {
            let (handler, method) = (r.handler, Method::from_bytes(r.method.as_bytes()));
            let method = method.expect("route methods are valid");
            resource = resource.route(web::method(method).to(
                move |req: HttpRequest, body: web::Payload| {
                    let permitted = req
                        .peer_addr()
                        .is_some_and(|p| shared(&req).allow.permits(p.ip()));
                    match permitted {
                        true => handler(req, body),
                        false => Box::pin(async {
                            Err(ApiError::new(
                                StatusCode::FORBIDDEN,
                                ErrorCode::Unallowed,
                                "not in listen.http.allow",
                            ))
                        }),
                    }
                },
            ));
        }
        app = app.service(resource);
    }
    app
}

/// The HTTP listener: runs an actix-web server on its socket until told to stop.
pub struct HttpService {
    socket: Arc<TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: web::Data<HttpShared>,
    workers: usize,
    handle: Option<ServerHandle>,
}

impl HttpService {
    pub fn new(
        socket: Arc<TcpListener>,
        tls: Option<Arc<rustls::ServerConfig>>,
        shared: Arc<HttpShared>,
        workers: usize,
    ) -> HttpService {
        HttpService {
            socket,
            tls,
            shared: web::Data::from(shared),
            workers: workers.max(1),
            handle: None,
        }
    }
}

impl Actor for HttpService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let shared = self.shared.clone();
        let grace = shared.sessions.config.stall;
        let server = HttpServer::new(move || app(shared.clone()))
            .workers(self.workers)
            .disable_signals()
            .shutdown_timeout(grace.as_secs().max(1))
            .client_request_timeout(grace);
        let socket = match self.socket.try_clone() {
            Ok(s) => s,
            Err(e) => {
                warn!("http: cannot accept: {}", crate::net::io_reason(&e));
                return ctx.stop();
            }
        };
        let addr = socket.local_addr().ok();
        let bound = match &self.tls {
            Some(config) => server.listen_rustls_0_23(socket, (**config).clone()),
            None => server.listen(socket),
        };
        let server = match bound {
            Ok(s) => s.run(),
            Err(e) => {
                warn!("http: cannot serve: {}", crate::net::io_reason(&e));
                return ctx.stop();
            }
        };
        if let Some(addr) = addr {
            let tls = if self.tls.is_some() { " (TLS)" } else { "" };
            info!("http: listening on {addr}{tls}");
        }
        self.handle = Some(server.handle());
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(server).map(|ended, _, ctx| {
                if let Err(e) = ended {
                    warn!("http: the server stopped: {}", crate::net::io_reason(&e));
                }
                ctx.stop();
            }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(handle) = self.handle.take() {
            actix_rt::spawn(handle.stop(false));
        }
    }
}

impl Handler<Shutdown> for HttpService {
    type Result = ();

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        info!("http: closing, telling its WebSocket sessions");
        self.shared
            .sessions
            .registry
            .kick_all(Some("ws"), ErrorCode::Shutdown);
        // Requests under way may finish; the server's end stops the actor.
        if let Some(handle) = self.handle.take() {
            actix_rt::spawn(handle.stop(true));
        }
    }
}
