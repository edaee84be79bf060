//! The REST API, under `/api/v1`: live calls and call control, dispositions, call records,
//! users, queues and PBXes, each within the contexts of the caller's token.
//!
//! A call, record, line or user of a context outside the token is answered 404, exactly
//! like one that does not exist. Commands are `ipbxcommand`s given by the token acting as
//! a user with no line and the token's role (at most `supervisor` for a token of some
//! contexts only): they go through the same planning and execution as CTI's, and an agent
//! token, which has no line to act from, gives none (403).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use ctid_proto::calls::Call;
use ctid_proto::cti::{timenow, ErrorCode, Request, Shown};
use ctid_proto::directory::Line;
use ctid_proto::lists::waiting_in;
use ctid_proto::rights::Role;
use futures_util::future::LocalBoxFuture;
use serde_json::{json, Map, Value};

use super::{
    authorize, json_body, optional_json_body, shared, Answer, ApiError, HttpShared, Route,
};
use crate::command::Issuer;
use crate::partition::ALL;
use crate::settings::{HttpToken, TokenContexts};
use crate::store::{HistoryFilter, MAX_HISTORY, MAX_OFFSET};

pub static ROUTES: &[Route] = &[
    route("GET", "/api/v1/calls", list_calls),
    route("POST", "/api/v1/calls", originate),
    route("GET", "/api/v1/calls/{id}", get_call),
    route("DELETE", "/api/v1/calls/{id}", hangup),
    route("POST", "/api/v1/calls/{id}/transfer", transfer),
    route("POST", "/api/v1/calls/{id}/hold", hold),
    route("POST", "/api/v1/calls/{id}/resume", resume),
    route("POST", "/api/v1/calls/{id}/record", record),
    route("PUT", "/api/v1/calls/{id}/disposition", disposition),
    route("GET", "/api/v1/records", list_records),
    route("GET", "/api/v1/records/{id}", get_record),
    route("GET", "/api/v1/users", list_users),
    route("GET", "/api/v1/queues", list_queues),
    route("GET", "/api/v1/pbxes", list_pbxes),
];

const fn route(method: &'static str, path: &'static str, handler: super::RouteHandler) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

/// Commands and record queries of one token under way, at most; more are refused (429):
/// they queue in actors and threads every tenant shares.
const MAX_IN_FLIGHT: usize = 64;

/// Counts one command or query of a token until it is answered.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn take(shared: &HttpShared, token: &HttpToken) -> Result<InFlight, ApiError> {
        let count = shared
            .in_flight
            .get(&token.name)
            .cloned()
            .ok_or(ErrorCode::Unauthorized)?;
        if count.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
            count.fetch_sub(1, Ordering::Relaxed);
            return Err(ErrorCode::TooManyRequests.into());
        }
        Ok(InFlight(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no such {what}"),
    )
}

/// The query string's parameters.
fn query(req: &HttpRequest) -> Result<HashMap<String, String>, ApiError> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| ErrorCode::Invalid("query".into()).into())
}

/// The `{id}` of the path.
fn path_id(req: &HttpRequest) -> String {
    req.match_info().get("id").unwrap_or_default().to_owned()
}

/// The context filter `?context=`, which must be one of the token's.
fn context_filter(
    token: &HttpToken,
    q: &HashMap<String, String>,
) -> Result<Option<String>, ApiError> {
    match q.get("context") {
        Some(c) if token.sees(c) => Ok(Some(c.clone())),
        Some(_) => Err(not_found("context")),
        None => Ok(None),
    }
}

/// The live calls the token reaches.
fn visible_calls(shared: &HttpShared, token: &HttpToken) -> Vec<Arc<Call>> {
    let partitions = &shared.sessions.partitions;
    let live = match (&token.contexts, partitions.separated()) {
        (TokenContexts::Only(names), true) => {
            let mut seen = BTreeSet::new();
            names
                .iter()
                .flat_map(|c| partitions.live(c).calls)
                .filter(|c| seen.insert(c.id.clone()))
                .collect()
        }
        (TokenContexts::All, true) => partitions.live_all().calls,
        (_, false) => partitions.live(ALL).calls,
    };
    let mut calls: Vec<Arc<Call>> = live
        .into_iter()
        .filter(|c| c.contexts.iter().any(|x| token.sees(x)))
        .collect();
    calls.sort_by(|a, b| a.id.cmp(&b.id));
    calls
}

/// A call as the token may see it: a call that spans contexts the token does not reach
/// shows one of its own only.
fn shown(call: &Call, token: &HttpToken) -> Value {
    let shown = match call.contexts.iter().all(|c| token.sees(c)) {
        true => Shown::new(call),
        false => {
            let own = call.contexts.iter().find(|c| token.sees(c));
            Shown::only(call, own.map_or("", String::as_str))
        }
    };
    serde_json::to_value(shown).unwrap_or(Value::Null)
}

/// The live call `id` and the first of its contexts the token reaches; 404 if none.
fn visible_call(
    shared: &HttpShared,
    token: &HttpToken,
    id: &str,
) -> Result<(Arc<Call>, String), ApiError> {
    let call = visible_calls(shared, token)
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| not_found("call"))?;
    let context = call
        .contexts
        .iter()
        .find(|c| token.sees(c))
        .cloned()
        .ok_or_else(|| not_found("call"))?;
    Ok((call, context))
}

/// The role a token acts with: a token of some contexts only reaches no further than a
/// supervisor of them. An agent token has no line to act from: 403.
fn acting_role(token: &HttpToken) -> Result<Role, ApiError> {
    match (token.role, &token.contexts) {
        (Role::Agent, _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Unallowed,
            "an agent token gives no commands",
        )),
        (Role::Admin, TokenContexts::Only(_)) => Ok(Role::Supervisor),
        (role, _) => Ok(role),
    }
}

/// Who the token is, acting from `context`.
fn issuer(token: &HttpToken, context: &str) -> Result<Issuer, ApiError> {
    Ok(Issuer::token(
        &format!("http:{}", token.name),
        acting_role(token)?,
        context,
    ))
}

/// A required text field of a body.
fn text<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, ApiError> {
    match body.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(ErrorCode::Invalid(key.into()).into()),
        None => Err(ErrorCode::Missing(vec![key.into()]).into()),
    }
}

/// Plans and runs `ipbxcommand` `fields` for `by`: 200 with its outcome once done, 502 if
/// the PBX refused or failed it, or the refusal.
async fn command(
    shared: &HttpShared,
    token: &HttpToken,
    fields: Map<String, Value>,
    by: Issuer,
) -> Answer {
    let _counted = InFlight::take(shared, token)?;
    let name = fields
        .get("command")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let request = Request {
        class: "ipbxcommand".into(),
        commandid: None,
        fields,
    };
    let running =
        shared
            .sessions
            .control
            .command(request, by)
            .await
            .map_err(|code| match code {
                ErrorCode::Unallowed => ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Unallowed,
                    "the token may not act on that (its role, or no leg of a line of its contexts)",
                ),
                other => other.into(),
            })?;
    match running.await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({"command": name, "response": "ok"}))),
        Err(why) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::CommandFailed,
            why,
        )),
    }
}

/// A command on live call `{id}`, with `extra` fields.
async fn call_command(req: &HttpRequest, name: &str, extra: Map<String, Value>) -> Answer {
    let token = authorize(req)?;
    let shared = shared(req);
    let (call, context) = visible_call(&shared, &token, &path_id(req))?;
    let by = issuer(&token, &context)?;
    let mut fields = extra;
    fields.insert("command".into(), name.into());
    fields.insert("call_id".into(), call.id.clone().into());
    command(&shared, &token, fields, by).await
}

fn list_calls(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let token = authorize(&req)?;
        let only = context_filter(&token, &query(&req)?)?;
        let calls: Vec<Value> = visible_calls(&shared(&req), &token)
            .iter()
            .filter(|c| only.as_ref().is_none_or(|o| c.contexts.contains(o)))
            .map(|c| shown(c, &token))
            .collect();
        Ok(HttpResponse::Ok().json(json!({ "calls": calls })))
    })
}

fn get_call(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let token = authorize(&req)?;
        let (call, _) = visible_call(&shared(&req), &token, &path_id(&req))?;
        Ok(HttpResponse::Ok().json(shown(&call, &token)))
    })
}

/// The line `from` names (a user's login, a line's interface or number) among the
/// token's contexts.
fn source_line(shared: &HttpShared, token: &HttpToken, from: &str) -> Result<Line, ApiError> {
    let dir = shared.sessions.directory.get();
    let visible = |l: &&Line| token.sees(&l.context);
    let by_login = dir.user_by_login(from).and_then(|u| u.line.as_ref());
    by_login
        .filter(visible)
        .or_else(|| {
            dir.users()
                .filter_map(|u| u.line.as_ref())
                .filter(visible)
                .find(|l| l.interface == from || l.number == from)
        })
        .cloned()
        .ok_or_else(|| not_found("line or user"))
}

fn originate(req: HttpRequest, payload: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let token = authorize(&req)?;
        let body = json_body(&req, payload).await?;
        let shared = shared(&req);
        let line = source_line(&shared, &token, text(&body, "from")?)?;
        let destination = text(&body, "destination")?;
        let by = issuer(&token, &line.context)?;
        let mut fields = Map::new();
        fields.insert("command".into(), "originate".into());
        fields.insert("source".into(), line.interface.into());
        fields.insert("destination".into(), destination.into());
        command(&shared, &token, fields, by).await
    })
}

fn hangup(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move { call_command(&req, "hangup", Map::new()).await })
}

fn hold(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move { call_command(&req, "hold", Map::new()).await })
}

fn resume(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move { call_command(&req, "resume", Map::new()).await })
}

fn transfer(req: HttpRequest, payload: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        authorize(&req)?;
        let body = json_body(&req, payload).await?;
        let attended = match body.get("attended") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ErrorCode::Invalid("attended".into()).into()),
        };
        let mut fields = Map::new();
        fields.insert("destination".into(), text(&body, "destination")?.into());
        let name = if attended { "atxfer" } else { "transfer" };
        call_command(&req, name, fields).await
    })
}

/// Starts recording the call, or stops it with `{"action": "stop"}`.
fn record(req: HttpRequest, payload: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        authorize(&req)?;
        let action = match optional_json_body(&req, payload).await?.get("action") {
            None => "start".to_owned(),
            Some(Value::String(a)) if a == "start" || a == "stop" => a.clone(),
            Some(_) => return Err(ErrorCode::Invalid("action".into()).into()),
        };
        let mut fields = Map::new();
        fields.insert("subcommand".into(), action.into());
        call_command(&req, "record", fields).await
    })
}

/// Sets the disposition of a live call, or of a recorded one (by its call id).
fn disposition(req: HttpRequest, payload: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let token = authorize(&req)?;
        let body = json_body(&req, payload).await?;
        let code = text(&body, "code")?.to_owned();
        let note = match body.get("note") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) => Some(n.clone()),
            Some(_) => return Err(ErrorCode::Invalid("note".into()).into()),
        };
        let shared = shared(&req);
        let id = path_id(&req);
        acting_role(&token)?;
        // A live call is disposed of from its context; a recorded one from each of the
        // token's until one has it.
        let contexts = match (visible_call(&shared, &token, &id), &token.contexts) {
            (Ok((_, context)), _) => vec![context],
            (Err(_), TokenContexts::All) => vec![ALL.to_owned()],
            (Err(_), TokenContexts::Only(names)) => names.clone(),
        };
        let _counted = InFlight::take(&shared, &token)?;
        let at = timenow();
        for context in contexts {
            let by = issuer(&token, &context)?;
            let set =
                shared
                    .sessions
                    .control
                    .disposition(by, id.clone(), code.clone(), note.clone(), at);
            match set.await {
                Ok(()) => {
                    return Ok(HttpResponse::Ok().json(json!({"call_id": id, "response": "ok"})))
                }
                Err(ErrorCode::Unallowed) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(not_found("call"))
    })
}

/// A history filter from the query string, within `contexts` (None: every context).
fn history_filter(
    q: &HashMap<String, String>,
    contexts: Option<Vec<String>>,
) -> Result<HistoryFilter, ApiError> {
    let number = |k: &str| -> Result<Option<f64>, ApiError> {
        q.get(k)
            .map(|v| v.parse().map_err(|_| ErrorCode::Invalid(k.into()).into()))
            .transpose()
    };
    let whole = |k: &str, default: u64| -> Result<u64, ApiError> {
        q.get(k).map_or(Ok(default), |v| {
            v.parse().map_err(|_| ErrorCode::Invalid(k.into()).into())
        })
    };
    Ok(HistoryFilter {
        contexts,
        number: q.get("number").cloned(),
        from: number("from")?,
        to: number("to")?,
        queue: q.get("queue").cloned(),
        agent: q.get("agent").cloned(),
        record_id: None,
        limit: whole("limit", 50)?.clamp(1, MAX_HISTORY) as usize,
        offset: whole("offset", 0)?.min(MAX_OFFSET) as usize,
    })
}

/// Runs a history query; the rows.
async fn history(
    shared: &HttpShared,
    token: &HttpToken,
    filter: HistoryFilter,
) -> Result<Vec<Value>, ApiError> {
    let store = shared
        .sessions
        .store
        .clone()
        .ok_or(ErrorCode::StoreUnavailable)?;
    let _counted = InFlight::take(shared, token)?;
    store.history(filter).await.map_err(|e| {
        log::warn!("http: a records query failed: {e}");
        e.code().into()
    })
}

/// Recorded calls, newest first, a page at a time (`limit`, `offset`): those of the
/// token's contexts, or of the one `?context=` names.
fn list_records(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let token = authorize(&req)?;
        let q = query(&req)?;
        let contexts = match context_filter(&token, &q)? {
            Some(c) => Some(vec![c]),
            None => token_contexts(&token),
        };
        let filter = history_filter(&q, contexts)?;
        let (limit, offset) = (filter.limit, filter.offset);
        let records = history(&shared(&req), &token, filter).await?;
        let next = (records.len() == limit).then_some(offset + limit);
        Ok(HttpResponse::Ok().json(json!({"records": records, "next_offset": next})))
    })
}

fn get_record(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let token = authorize(&req)?;
        let id: i64 = path_id(&req).parse().map_err(|_| not_found("record"))?;
        let filter = HistoryFilter {
            contexts: token_contexts(&token),
            record_id: Some(id),
            limit: 1,
            ..HistoryFilter::default()
        };
        match history(&shared(&req), &token, filter).await?.pop() {
            Some(row) => Ok(HttpResponse::Ok().json(row)),
            None => Err(not_found("record")),
        }
    })
}

/// The contexts a token's record queries cover: None for every context.
fn token_contexts(token: &HttpToken) -> Option<Vec<String>> {
    match &token.contexts {
        TokenContexts::All => None,
        TokenContexts::Only(names) => Some(names.clone()),
    }
}

/// The directory's users of the token's contexts (a user with no line: for a token of
/// every context only), with their presence.
fn list_users(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let token = authorize(&req)?;
        let only = context_filter(&token, &query(&req)?)?;
        let shared = shared(&req);
        let dir = shared.sessions.directory.get();
        let presence = shared.sessions.partitions.live_all().presence;
        let users: Vec<Value> = dir
            .users()
            .filter(|u| match u.context() {
                Some(c) => token.sees(c) && only.as_ref().is_none_or(|o| o == c),
                None => token.contexts == TokenContexts::All && only.is_none(),
            })
            .map(|u| {
                json!({
                    "id": u.id,
                    "login": u.login,
                    "firstname": u.firstname,
                    "lastname": u.lastname,
                    "fullname": u.fullname(),
                    "context": u.context(),
                    "role": u.role.name(),
                    "line": u.line.as_ref().map(|l| json!({
                        "interface": l.interface,
                        "number": l.number,
                        "pbx": l.pbx,
                    })),
                    "presence": presence.get(&u.id).map_or("disconnected", String::as_str),
                })
            })
            .collect();
        Ok(HttpResponse::Ok().json(json!({ "users": users })))
    })
}

/// The queues of the token's contexts, with the calls waiting in each now.
fn list_queues(req: HttpRequest, _: web::Payload) -> LocalBoxFuture<'static, Answer> {
    Box::pin(async move {
        let token = authorize(&req)?;
        let only = context_filter(&token, &query(&req)?)?;
        let shared = shared(&req);
        let calls = visible_calls(&shared, &token);
        let dir = shared.sessions.directory.get();
        let queues: Vec<Value> = dir
            .queues()
            .filter(|q| token.sees(&q.context) && only.as_ref().is_none_or(|o| *o == q.context))
            .map(|q| {
                json!({
                    "name": q.name,
                    "number": q.number,
                    "context": q.context,
                    "pbx": q.pbx,
                    "waiting": waiting_in(q, &calls),
                })
            })
            .collect();
        Ok(HttpResponse::Ok().json(json!({ "queues": queues })))
    })
}

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
