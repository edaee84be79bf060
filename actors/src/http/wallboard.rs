//! The supervisors' wallboard (`GET /wallboard`): one page, its script and its style sheet,
//! built into the binary. The page logs in over `/ws` with the CTI protocol and asks for
//! `wallboard`: what it shows comes from the session, so these files need no token.
//! Opened with `?token=`, it reads `GET /api/v1/wallboard` instead, with that bearer token,
//! for one of the token's contexts.

use std::collections::HashMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use ctid_proto::cti::{timenow, ErrorCode};
use ctid_proto::rights::Role;
use futures_util::future::LocalBoxFuture;
use serde_json::Value;

use super::{authorize, shared, Answer, ApiError, Route};
use crate::settings::TokenContexts;

const PAGE: &str = include_str!("../../web/wallboard.html");
const SCRIPT: &str = include_str!("../../web/wallboard.js");
const STYLE: &str = include_str!("../../web/wallboard.css");

pub static ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/wallboard",
        handler: page,
    },
    Route {
        method: "GET",
        path: "/wallboard/wallboard.js",
        handler: script,
    },
    Route {
        method: "GET",
        path: "/wallboard/wallboard.css",
        handler: style,
    },
    Route {
        method: "GET",
        path: "/api/v1/wallboard",
        handler: board,
    },
];

/// A file of the page; the browser may keep it, and asks again after an upgrade.
fn file(content_type: &'static str, body: &'static str) -> LocalBoxFuture<'static, Answer> {
    let answer = HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'",
        ))
        .body(body);
    Box::pin(async move { Ok(answer) })
}

fn page(_: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    file("text/html; charset=utf-8", PAGE)
}

fn script(_: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    file("text/javascript; charset=utf-8", SCRIPT)
}

fn style(_: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    file("text/css; charset=utf-8", STYLE)
}

/// The wallboard of `?context=` (or of the token's only context), as `queue_stats` has it:
/// to supervisor and admin tokens, for a context they reach; another is answered 404, as
/// one that does not exist.
fn board(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let token = authorize(&req)?;
        if token.role == Role::Agent {
            return Err(ErrorCode::Unallowed.into());
        }
        let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map_err(|_| ApiError::from(ErrorCode::Invalid("query".into())))?;
        let context = match (query.get("context"), &token.contexts) {
            (Some(c), _) => c.clone(),
            (None, TokenContexts::Only(only)) if only.len() == 1 => only[0].clone(),
            (None, _) => return Err(ErrorCode::Missing(vec!["context".into()]).into()),
        };
        let not_found = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such context",
            )
        };
        let shared = shared(&req);
        if !token.sees(&context) || !shared.sessions.directory.get().has_context(&context) {
            return Err(not_found());
        }
        let partitions = &shared.sessions.partitions;
        let mut board = partitions
            .board(partitions.key(&context))
            .ok_or_else(not_found)?;
        if let Value::Object(fields) = &mut board {
            fields.insert("timenow".into(), timenow().into());
        }
        Ok(HttpResponse::Ok().json(board))
    })
}
