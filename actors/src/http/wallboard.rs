//! The supervisors' wallboard (`GET /wallboard`): one page, its script and its style sheet,
//! built into the binary. The page logs in over `/ws` with the CTI protocol and asks for
//! `wallboard`: what it shows comes from the session, so these files need no token.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;

use super::{Answer, Route};

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
