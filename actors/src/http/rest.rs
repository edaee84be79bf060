//! The REST API, under `/api/v1`: live calls and call control, dispositions, call records,
//! users, queues and PBXes, each within the contexts of the caller's token.

use std::collections::BTreeSet;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use serde_json::json;

use super::{authorize, shared, Answer, Route};
use crate::settings::TokenContexts;

pub static ROUTES: &[Route] = &[Route {
    method: "GET",
    path: "/api/v1/pbxes",
    handler: list_pbxes,
}];

/// The PBXes the token's contexts have lines or queues on (every PBX for a token of every
/// context), with the state of their link.
fn list_pbxes(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let token = authorize(&req)?;
        let shared = shared(&req);
        let dir = shared.sessions.directory.get();
        let used: BTreeSet<&str> = dir
            .users()
            .filter_map(|u| u.line.as_ref())
            .filter(|l| token.sees(&l.context))
            .map(|l| l.pbx.as_str())
            .chain(
                dir.queues()
                    .filter(|q| token.sees(&q.context))
                    .map(|q| q.pbx.as_str()),
            )
            .collect();
        let pbxes: Vec<_> = shared
            .sessions
            .pbxes
            .states()
            .into_iter()
            .filter(|(name, _)| {
                token.contexts == TokenContexts::All || used.contains(name.as_str())
            })
            .map(|(name, state)| json!({"name": name, "state": state}))
            .collect();
        Ok(HttpResponse::Ok().json(json!({ "pbxes": pbxes })))
    })
}
