//! The lists a session may ask for (`getlist`) and the changes pushed when the directory
//! changes, as one partition's sessions see them. Pure: built from the directory, the
//! partition's calls and who is connected, by whoever asks, off the event path.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::calls::{Call, CallState};
use crate::cti::{ErrorCode, Reply, Shown};
use crate::directory::{Directory, Queue, User};

/// What a partition's sessions may see: one context, or every context (no separation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    Context(&'a str),
    All,
}

impl<'a> Scope<'a> {
    pub fn sees(&self, context: Option<&str>) -> bool {
        match self {
            Scope::All => true,
            Scope::Context(own) => context == Some(*own),
        }
    }

    /// A call as this scope shows it: with only its own context under separation.
    pub fn show<'c>(&self, call: &'c Call) -> Shown<'c>
    where
        'a: 'c,
    {
        match self {
            Scope::All => Shown::new(call),
            Scope::Context(own) => Shown::only(call, own),
        }
    }
}

/// What a partition holds that lists show: its live calls, the presence of each
/// connected user (by user id), and the state of each PBX link.
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub calls: Vec<Arc<Call>>,
    pub presence: HashMap<u64, String>,
    pub pbxes: BTreeMap<String, String>,
}

/// The calls waiting in `queue` among `calls`.
pub fn waiting_in(queue: &Queue, calls: &[Arc<Call>]) -> usize {
    calls
        .iter()
        .filter(|c| {
            c.state == CallState::Queued
                && c.pbx == queue.pbx
                && c.queue.as_deref() == Some(&queue.name)
        })
        .count()
}

/// A list item: its id, config and status.
type Item = (String, Value, Value);

/// The lists whose changes are pushed to sessions.
const CONFIG_LISTS: [&str; 3] = ["users", "phones", "queues"];

fn user_config(user: &User) -> Value {
    json!({
        "id": user.id.to_string(),
        "login": user.login,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "fullname": user.fullname(),
        "context": user.context(),
        "linelist": user.line.iter().map(|l| l.interface.clone()).collect::<Vec<_>>(),
    })
}

/// The items of list `listname` in `scope`, sorted by id. Without `live`, statuses are
/// left out (config only).
fn items(
    dir: &Directory,
    scope: Scope<'_>,
    live: Option<&Live>,
    listname: &str,
) -> Result<Vec<Item>, ErrorCode> {
    let status = |f: &dyn Fn(&Live) -> Value| live.map_or(Value::Null, f);
    let mut items: Vec<Item> = Vec::new();
    match listname {
        "users" => {
            for u in dir.users().filter(|u| scope.sees(u.context())) {
                let st = status(&|l| {
                    let state = l.presence.get(&u.id);
                    json!({
                        "connection": if state.is_some() { "connected" } else { "disconnected" },
                        "availstate": state.map_or("disconnected", String::as_str),
                    })
                });
                items.push((u.id.to_string(), user_config(u), st));
            }
        }
        "phones" => {
            type Busy<'l> = HashMap<(&'l str, &'l str), Vec<&'l str>>;
            let busy: Busy<'_> = live.map_or_else(HashMap::new, |l| {
                let mut by_line: Busy<'_> = HashMap::new();
                for c in &l.calls {
                    for line in &c.lines {
                        by_line.entry((&c.pbx, line)).or_default().push(&c.id);
                    }
                }
                by_line
            });
            for u in dir.users() {
                let Some(line) = u.line.as_ref().filter(|l| scope.sees(Some(&l.context))) else {
                    continue;
                };
                let config = json!({
                    "id": line.interface,
                    "interface": line.interface,
                    "number": line.number,
                    "context": line.context,
                    "pbx": line.pbx,
                    "userid": u.id.to_string(),
                });
                let st = status(&|_| {
                    let calls = busy
                        .get(&(line.pbx.as_str(), line.interface.as_str()))
                        .cloned()
                        .unwrap_or_default();
                    json!({"state": if calls.is_empty() { "idle" } else { "busy" }, "calls": calls})
                });
                items.push((line.interface.clone(), config, st));
            }
        }
        "queues" => {
            for q in dir.queues().filter(|q| scope.sees(Some(&q.context))) {
                let st = status(&|l| json!({"waiting": waiting_in(q, &l.calls)}));
                let config = json!({"id": q.name, "name": q.name, "number": q.number,
                    "context": q.context, "pbx": q.pbx});
                items.push((q.name.clone(), config, st));
            }
        }
        "pbxes" => {
            let mut used: BTreeSet<&str> = dir
                .users()
                .filter_map(|u| u.line.as_ref())
                .filter(|l| scope.sees(Some(&l.context)))
                .map(|l| l.pbx.as_str())
                .chain(
                    dir.queues()
                        .filter(|q| scope.sees(Some(&q.context)))
                        .map(|q| q.pbx.as_str()),
                )
                .collect();
            if scope == Scope::All {
                used.extend(live.iter().flat_map(|l| l.pbxes.keys().map(String::as_str)));
            }
            for pbx in used {
                let st = status(&|l| json!({"state": l.pbxes.get(pbx)}));
                items.push((pbx.to_owned(), json!({"id": pbx, "name": pbx}), st));
            }
        }
        "calls" => {
            for c in live.map(|l| l.calls.as_slice()).unwrap_or_default() {
                let config = serde_json::to_value(scope.show(c)).unwrap_or(Value::Null);
                items.push((c.id.clone(), config, json!({"state": c.state})));
            }
        }
        _ => return Err(ErrorCode::UnknownFunction),
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(items)
}

/// A `getlist` request.
#[derive(Clone, Debug)]
pub struct GetList {
    pub function: String,
    pub listname: String,
    pub tid: Option<String>,
}

/// The answer to a `getlist` request.
pub fn get_list(
    req: &GetList,
    dir: &Directory,
    scope: Scope<'_>,
    live: &Live,
) -> Result<Reply, ErrorCode> {
    let items = items(dir, scope, Some(live), &req.listname)?;
    let reply = Reply::new("getlist")
        .with("function", req.function.clone())
        .with("listname", req.listname.clone())
        .with("tipbxid", "xivo");
    let pick = |by_status: bool| -> Result<Value, ErrorCode> {
        let value = |(_, config, status): &Item| {
            if by_status {
                status.clone()
            } else {
                config.clone()
            }
        };
        match &req.tid {
            Some(tid) => items
                .iter()
                .find(|(id, _, _)| id == tid)
                .map(value)
                .ok_or(ErrorCode::Unallowed),
            None => Ok(Value::Object(
                items
                    .iter()
                    .map(|i| (i.0.clone(), value(i)))
                    .collect::<Map<_, _>>(),
            )),
        }
    };
    match req.function.as_str() {
        "listid" => Ok(reply.with(
            "list",
            items
                .iter()
                .map(|i| Value::from(i.0.clone()))
                .collect::<Vec<_>>(),
        )),
        "updateconfig" => Ok(reply
            .with("tid", req.tid.clone())
            .with("config", pick(false)?)),
        "updatestatus" => Ok(reply
            .with("tid", req.tid.clone())
            .with("status", pick(true)?)),
        _ => Err(ErrorCode::UnknownFunction),
    }
}

/// `addconfig`, `delconfig` and `updateconfig` replies for what changed between two
/// directories, as `scope` sees them.
pub fn config_changes(old: &Directory, new: &Directory, scope: Scope<'_>) -> Vec<Reply> {
    let mut out = Vec::new();
    for listname in CONFIG_LISTS {
        let (Ok(before), Ok(after)) = (
            items(old, scope, None, listname),
            items(new, scope, None, listname),
        ) else {
            continue;
        };
        let before: HashMap<&str, &Value> =
            before.iter().map(|(id, c, _)| (id.as_str(), c)).collect();
        let after_ids: HashSet<&str> = after.iter().map(|(id, _, _)| id.as_str()).collect();
        let reply = |function: &str| {
            Reply::new("getlist")
                .with("function", function)
                .with("listname", listname)
                .with("tipbxid", "xivo")
        };
        let added: Vec<Value> = after
            .iter()
            .filter(|(id, _, _)| !before.contains_key(id.as_str()))
            .map(|(id, _, _)| id.clone().into())
            .collect();
        let mut removed: Vec<&str> = before
            .keys()
            .filter(|id| !after_ids.contains(*id))
            .copied()
            .collect();
        removed.sort_unstable();
        if !added.is_empty() {
            out.push(reply("addconfig").with("list", added));
        }
        if !removed.is_empty() {
            out.push(reply("delconfig").with("list", removed));
        }
        for (id, config, _) in &after {
            if before.get(id.as_str()).is_some_and(|c| *c != config) {
                out.push(
                    reply("updateconfig")
                        .with("tid", id.clone())
                        .with("config", config.clone()),
                );
            }
        }
    }
    out
}
