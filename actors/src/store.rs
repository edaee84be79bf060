//! Call records in SQLite: one row per ended call, its dispositions, and history queries.
//!
//! SQLite blocks, so it runs on threads of its own: one writer ([`crate::records`]), which
//! commits in order, and a small pool of query threads, which WAL lets read beside it.
//! The database is in WAL mode with full synchronisation: a record is on disk when its
//! commit returns. The schema is versioned by `PRAGMA user_version`; each migration runs
//! once, in a transaction.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ctid_proto::calls::{Call, Disposition};
use ctid_proto::cti::ErrorCode;
pub use ctid_proto::rights::Disposer;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde_json::{json, Value};

use crate::metrics::Metrics;
use crate::pool::{Pool, Refused};
use crate::records::Records;
use crate::settings::{human_duration, StoreSettings};
use crate::supervisor::Report;

/// Schema migrations, in order; `user_version` says how many have run.
const MIGRATIONS: [&str; 2] = [
    "
    CREATE TABLE calls (
        record_id INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id TEXT NOT NULL UNIQUE,
        direction TEXT NOT NULL,
        caller_number TEXT, caller_name TEXT,
        callee_number TEXT, callee_name TEXT,
        ani TEXT, dnis TEXT, queue TEXT,
        agent_login TEXT, agent_name TEXT,
        ivr_path TEXT NOT NULL DEFAULT '[]',
        attached TEXT NOT NULL DEFAULT '{}',
        lines TEXT NOT NULL DEFAULT '[]',
        created REAL NOT NULL, answered REAL, ended REAL, duration REAL,
        hangup_cause_code INTEGER, hangup_cause_text TEXT,
        disposition_code TEXT, disposition_note TEXT, disposition_by TEXT, disposition_at REAL
    );
    CREATE TABLE call_contexts (
        context TEXT NOT NULL,
        record_id INTEGER NOT NULL REFERENCES calls(record_id) ON DELETE CASCADE,
        PRIMARY KEY (context, record_id)
    );
    CREATE INDEX calls_created ON calls(created);
    ",
    // Indexes for what history and route look up. A context's newest calls come from
    // call_contexts alone: it keeps each call's start time.
    "
    ALTER TABLE call_contexts ADD COLUMN created REAL;
    UPDATE call_contexts
        SET created = (SELECT c.created FROM calls c WHERE c.record_id = call_contexts.record_id);
    CREATE INDEX call_contexts_recent ON call_contexts(context, created, record_id);
    CREATE INDEX call_contexts_record ON call_contexts(record_id);
    CREATE INDEX calls_caller ON calls(caller_number);
    CREATE INDEX calls_callee ON calls(callee_number);
    CREATE INDEX calls_ani ON calls(ani);
    CREATE INDEX calls_dnis ON calls(dnis);
    CREATE INDEX calls_queue ON calls(queue);
    CREATE INDEX calls_agent_login ON calls(agent_login);
    CREATE INDEX calls_agent_name ON calls(agent_name);
    ",
];

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct StoreError {
    pub path: String,
    pub reason: String,
}

fn failed(path: &Path, e: impl ToString) -> StoreError {
    StoreError {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Opens (creating it and its directory if needed) and migrates the database.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| failed(path, crate::net::io_reason(&e)))?;
    }
    let mut conn = Connection::open(path).map_err(|e| failed(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| failed(path, e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| failed(path, e))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| failed(path, e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| failed(path, e))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| failed(path, e))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(failed(
            path,
            format!(
                "schema version {version} is newer than this ctid knows ({})",
                MIGRATIONS.len()
            ),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(|e| failed(path, e))?;
        tx.execute_batch(sql).map_err(|e| failed(path, e))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(|e| failed(path, e))?;
        tx.commit().map_err(|e| failed(path, e))?;
    }
    Ok(conn)
}

/// A thread's connection to the database, opened when first needed.
pub(crate) struct Store {
    path: PathBuf,
    conn: Option<Connection>,
}

impl Store {
    pub(crate) fn new(path: PathBuf) -> Store {
        Store { path, conn: None }
    }

    pub(crate) fn conn(&mut self) -> Result<&mut Connection, String> {
        if self.conn.is_none() {
            self.conn = Some(open(&self.path).map_err(|e| e.to_string())?);
        }
        self.conn.as_mut().ok_or_else(|| "no database".into())
    }

    /// Closes the connection; the next use opens it again.
    pub(crate) fn close(&mut self) {
        self.conn = None;
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Writes an ended call (within the caller's transaction); returns its record id.
pub(crate) fn insert_call(conn: &Connection, c: &Call) -> rusqlite::Result<i64> {
    let duration = c.ended.map(|e| e - c.created);
    let agent = c.agent.as_ref();
    let d = c.disposition.as_ref();
    let id: i64 = conn.query_row(
        "INSERT INTO calls (call_id, direction, caller_number, caller_name, callee_number, callee_name,
            ani, dnis, queue, agent_login, agent_name, ivr_path, attached, lines, created, answered, ended,
            duration, hangup_cause_code, hangup_cause_text, disposition_code, disposition_note,
            disposition_by, disposition_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
            ?21, ?22, ?23, ?24)
         ON CONFLICT(call_id) DO UPDATE SET ended = excluded.ended, duration = excluded.duration
         RETURNING record_id",
        params![
            c.id,
            to_json(&c.direction).trim_matches('"'),
            c.caller.number,
            c.caller.name,
            c.callee.number,
            c.callee.name,
            c.ani,
            c.dnis,
            c.queue,
            agent.and_then(|a| a.login.clone()),
            agent.and_then(|a| a.name.clone()),
            to_json(&c.ivr_path),
            to_json(&c.attached),
            to_json(&c.lines),
            c.created,
            c.answered,
            c.ended,
            duration,
            c.hangup_cause.as_ref().and_then(|h| h.code),
            c.hangup_cause.as_ref().and_then(|h| h.text.clone()),
            d.map(|d| d.code.clone()),
            d.and_then(|d| d.note.clone()),
            d.map(|d| d.by.clone()),
            d.map(|d| d.at),
        ],
        |r| r.get(0),
    )?;
    for context in &c.contexts {
        conn.execute(
            "INSERT OR IGNORE INTO call_contexts (context, record_id, created) VALUES (?1, ?2, ?3)",
            params![context, id, c.created],
        )?;
    }
    Ok(id)
}

/// Deletes up to `limit` of the records of calls that started before `before` (their
/// contexts go with them); returns how many.
pub(crate) fn prune(conn: &Connection, before: f64, limit: usize) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM calls WHERE record_id IN
            (SELECT record_id FROM calls WHERE created < ?1 ORDER BY created LIMIT ?2)",
        params![before, limit as i64],
    )
}

/// Sets the disposition of a recorded call, if the user may.
#[derive(Clone, Debug)]
pub struct Dispose {
    pub call_id: String,
    pub disposition: Disposition,
    pub by: Disposer,
}

/// Sets a recorded call's disposition if the user may; false if not (or no such call).
pub(crate) fn dispose(conn: &Connection, msg: &Dispose) -> rusqlite::Result<bool> {
    let row: Option<(i64, Option<String>, String)> = conn
        .query_row(
            "SELECT record_id, agent_login, lines FROM calls WHERE call_id = ?1",
            params![msg.call_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((id, agent, lines)) = row else {
        return Ok(false);
    };
    let lines: Vec<String> = serde_json::from_str(&lines).unwrap_or_default();
    let mut stmt = conn.prepare("SELECT context FROM call_contexts WHERE record_id = ?1")?;
    let contexts: Vec<String> = stmt
        .query_map(params![id], |r| r.get(0))
        .and_then(|rows| rows.collect())?;
    if !msg.by.may_dispose(&contexts, agent.as_deref(), &lines) {
        return Ok(false);
    }
    let d = &msg.disposition;
    conn.execute(
        "UPDATE calls SET disposition_code = ?1, disposition_note = ?2, disposition_by = ?3, disposition_at = ?4
         WHERE record_id = ?5",
        params![d.code, d.note, d.by, d.at, id],
    )?;
    Ok(true)
}

/// Filters of a history query.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    /// Only calls of this context; None: every context (no context separation).
    pub context: Option<String>,
    /// Matches the caller, callee, ANI or DNIS number.
    pub number: Option<String>,
    pub from: Option<f64>,
    pub to: Option<f64>,
    pub queue: Option<String>,
    /// Matches the agent's login or name.
    pub agent: Option<String>,
    pub limit: usize,
}

fn row_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let json_of = |i: usize| -> rusqlite::Result<Value> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    let disposition = match r.get::<_, Option<String>>(20)? {
        Some(code) => {
            json!({"code": code, "note": r.get::<_, Option<String>>(21)?, "by": r.get::<_, Option<String>>(22)?, "at": r.get::<_, Option<f64>>(23)?})
        }
        None => Value::Null,
    };
    Ok(json!({
        "record_id": r.get::<_, i64>(0)?,
        "id": r.get::<_, String>(1)?,
        "direction": r.get::<_, String>(2)?,
        "caller": {"number": r.get::<_, Option<String>>(3)?, "name": r.get::<_, Option<String>>(4)?},
        "callee": {"number": r.get::<_, Option<String>>(5)?, "name": r.get::<_, Option<String>>(6)?},
        "ani": r.get::<_, Option<String>>(7)?,
        "dnis": r.get::<_, Option<String>>(8)?,
        "queue": r.get::<_, Option<String>>(9)?,
        "agent": {"login": r.get::<_, Option<String>>(10)?, "name": r.get::<_, Option<String>>(11)?},
        "ivr_path": json_of(12)?,
        "attached": json_of(13)?,
        "created": r.get::<_, f64>(14)?,
        "answered": r.get::<_, Option<f64>>(15)?,
        "ended": r.get::<_, Option<f64>>(16)?,
        "duration": r.get::<_, Option<f64>>(17)?,
        "hangup_cause": {"code": r.get::<_, Option<i64>>(18)?, "text": r.get::<_, Option<String>>(19)?},
        "disposition": disposition,
    }))
}

/// The SQL of a history query, and its arguments. A number, queue or agent narrows the
/// calls most: the query starts from their indexes and checks the context of each call
/// found. Otherwise it walks the context's calls newest first, and stops at the limit.
fn history_query(f: &HistoryFilter) -> (String, Vec<SqlValue>) {
    let mut sql = String::from(
        "SELECT c.record_id, c.call_id, c.direction, c.caller_number, c.caller_name, c.callee_number,
            c.callee_name, c.ani, c.dnis, c.queue, c.agent_login, c.agent_name, c.ivr_path, c.attached,
            c.created, c.answered, c.ended, c.duration, c.hangup_cause_code, c.hangup_cause_text,
            c.disposition_code, c.disposition_note, c.disposition_by, c.disposition_at ",
    );
    let mut args: Vec<SqlValue> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: SqlValue| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    let narrow = f.number.is_some() || f.queue.is_some() || f.agent.is_some();
    let by_context = f.context.is_some() && !narrow;
    match &f.context {
        Some(ctx) if by_context => arg(
            &mut sql,
            "FROM call_contexts x JOIN calls c ON c.record_id = x.record_id WHERE x.context = ?",
            ctx.clone().into(),
        ),
        Some(ctx) => arg(
            &mut sql,
            "FROM calls c WHERE EXISTS
                (SELECT 1 FROM call_contexts x WHERE x.context = ? AND x.record_id = c.record_id)",
            ctx.clone().into(),
        ),
        None => sql.push_str("FROM calls c WHERE 1 = 1"),
    }
    let t = if by_context { "x" } else { "c" };
    if let Some(n) = &f.number {
        arg(
            &mut sql,
            " AND (c.caller_number = ? OR c.callee_number = ? OR c.ani = ? OR c.dnis = ?)",
            n.clone().into(),
        );
    }
    if let Some(from) = f.from {
        arg(&mut sql, &format!(" AND {t}.created >= ?"), from.into());
    }
    if let Some(to) = f.to {
        arg(&mut sql, &format!(" AND {t}.created <= ?"), to.into());
    }
    if let Some(q) = &f.queue {
        arg(&mut sql, " AND c.queue = ?", q.clone().into());
    }
    if let Some(a) = &f.agent {
        arg(
            &mut sql,
            " AND (c.agent_login = ? OR c.agent_name = ?)",
            a.clone().into(),
        );
    }
    sql.push_str(&format!(
        " ORDER BY {t}.created DESC, {t}.record_id DESC LIMIT {}",
        f.limit
    ));
    (sql, args)
}

/// The most recent recorded calls matching `f`, newest first.
pub(crate) fn history(conn: &Connection, f: &HistoryFilter) -> rusqlite::Result<Vec<Value>> {
    let (sql, args) = history_query(f);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), row_json)?;
    rows.collect()
}

/// The login of the agent who last handled a call from `number` (in `context`, if given).
#[derive(Clone, Debug)]
pub struct LastAgent {
    pub number: String,
    pub context: Option<String>,
}

const LAST_AGENT: &str = "SELECT c.agent_login FROM calls c
    WHERE (c.caller_number = ?1 OR c.ani = ?1) AND c.agent_login IS NOT NULL";
const IN_CONTEXT: &str =
    " AND EXISTS (SELECT 1 FROM call_contexts x WHERE x.context = ?2 AND x.record_id = c.record_id)";
const NEWEST_ENDED: &str = " ORDER BY c.ended DESC, c.record_id DESC LIMIT 1";

pub(crate) fn last_agent(conn: &Connection, q: &LastAgent) -> rusqlite::Result<Option<String>> {
    match &q.context {
        Some(context) => conn.query_row(
            &format!("{LAST_AGENT}{IN_CONTEXT}{NEWEST_ENDED}"),
            params![q.number, context],
            |r| r.get(0),
        ),
        None => conn.query_row(
            &format!("{LAST_AGENT}{NEWEST_ENDED}"),
            params![q.number],
            |r| r.get(0),
        ),
    }
    .optional()
}

/// Why the call records did not answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreFailure {
    /// Too many requests already wait for the store.
    #[error("the call records are busy")]
    Busy,
    #[error("the call records did not answer within {}", human_duration(*.0))]
    Late(Duration),
    #[error("{0}")]
    Failed(String),
}

impl StoreFailure {
    /// What a client is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreFailure::Busy | StoreFailure::Late(_) => ErrorCode::StoreBusy,
            StoreFailure::Failed(_) => ErrorCode::StoreUnavailable,
        }
    }
}

/// Queries waiting for a query thread, at most; more are refused as busy.
const QUERIES_QUEUED: usize = 256;

/// The query threads: history and route ask them, and wait at most their bound.
#[derive(Clone)]
pub struct Queries {
    pool: Arc<Pool<Store>>,
    timeout: Duration,
}

impl Queries {
    fn start(path: PathBuf, threads: usize, timeout: Duration, report: &Report) -> Queries {
        let pool = Pool::start(
            "ctid/store/queries",
            threads,
            QUERIES_QUEUED,
            report,
            move || Store::new(path.clone()),
        );
        Queries {
            pool: Arc::new(pool),
            timeout,
        }
    }

    fn ask<R: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> impl Future<Output = Result<R, StoreFailure>> + 'static {
        let asked = self
            .pool
            .run(move |store: &mut Store| query(store.conn()?).map_err(|e| e.to_string()));
        let timeout = self.timeout;
        async move {
            let answer = asked.map_err(|e| match e {
                Refused::Busy => StoreFailure::Busy,
                Refused::Stopped => StoreFailure::Failed(format!("the query threads: {e}")),
            })?;
            match tokio::time::timeout(timeout, answer).await {
                Err(_) => Err(StoreFailure::Late(timeout)),
                Ok(Err(_)) => Err(StoreFailure::Failed("the query failed".into())),
                Ok(Ok(result)) => result.map_err(StoreFailure::Failed),
            }
        }
    }

    /// The most recent recorded calls matching a filter, newest first.
    pub fn history(
        &self,
        f: HistoryFilter,
    ) -> impl Future<Output = Result<Vec<Value>, StoreFailure>> + 'static {
        self.ask(move |conn| history(conn, &f))
    }

    pub fn last_agent(
        &self,
        q: LastAgent,
    ) -> impl Future<Output = Result<Option<String>, StoreFailure>> + 'static {
        self.ask(move |conn| last_agent(conn, &q))
    }
}

/// The store's threads: records and dispositions never queue behind clients' queries.
#[derive(Clone)]
pub struct Stores {
    pub writer: Records,
    pub reader: Queries,
}

/// Query threads started.
const QUERY_THREADS: usize = 2;

/// Starts the writer and the query threads on the database of `settings` (checked and
/// migrated already by [`open`]).
pub fn start(settings: &StoreSettings, report: &Report, metrics: &Metrics) -> Stores {
    Stores {
        writer: Records::start(settings, report, metrics),
        reader: Queries::start(
            settings.path.clone(),
            QUERY_THREADS,
            settings.query_timeout,
            report,
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ctid_proto::ami::AmiMessage;
    use ctid_proto::calls::CallModel;
    use ctid_proto::directory::Directory;

    /// A call from `number` in `context` that lasted 5 s and was answered by agent `alice`;
    /// its id is `id` itself (the tests name calls, not PBXes).
    pub(crate) fn ended_call(id: &str, context: &str, number: &str, created: f64) -> Call {
        let dir = Directory::parse(&format!(
            "[[contexts]]\nname = \"{context}\"\ndialplan = [\"{context}\"]\n"
        ))
        .unwrap();
        let mut m = CallModel::new(ctid_proto::directory::DEFAULT_PBX);
        let chan = format!(
            "Channel: PJSIP/trunk-1\r\nUniqueid: {id}\r\nLinkedid: {id}\r\nContext: {context}\r\nExten: 555\r\nCallerIDNum: {number}\r\n"
        );
        m.apply(
            &AmiMessage::parse(&format!("Event: Newchannel\r\n{chan}")),
            created,
            &dir,
        );
        m.apply(
            &AmiMessage::parse(&format!("Event: AgentConnect\r\n{chan}Queue: q\r\nMemberName: Alice\r\nInterface: PJSIP/1001\r\n")),
            created + 1.0,
            &dir,
        );
        let out = m.apply(
            &AmiMessage::parse(&format!("Event: Hangup\r\n{chan}Cause: 16\r\n")),
            created + 5.0,
            &dir,
        );
        let mut call = out
            .into_iter()
            .find(|e| e.call.ended.is_some())
            .unwrap()
            .call;
        call.id = id.to_owned();
        call
    }

    fn record(conn: &mut Connection, calls: &[Call]) -> rusqlite::Result<Vec<i64>> {
        let tx = conn.transaction()?;
        let ids = calls
            .iter()
            .map(|c| insert_call(&tx, c))
            .collect::<rusqlite::Result<_>>()?;
        tx.commit()?;
        Ok(ids)
    }

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("sub/ctid.sqlite")).unwrap();
        (dir, conn)
    }

    fn filter(context: Option<&str>) -> HistoryFilter {
        HistoryFilter {
            context: context.map(str::to_owned),
            limit: 50,
            ..HistoryFilter::default()
        }
    }

    #[test]
    fn the_schema_is_created_once_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/ctid.sqlite");
        open(&path).unwrap();
        let conn = open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 2, "FULL: a commit is on disk when it returns");
    }

    #[test]
    fn records_of_the_first_schema_keep_their_context_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctid.sqlite");
        let mut old = Connection::open(&path).unwrap();
        old.execute_batch(MIGRATIONS[0]).unwrap();
        old.pragma_update(None, "user_version", 1).unwrap();
        let tx = old.transaction().unwrap();
        let call = ended_call("3.1", "a", "555", 42.0);
        let id: i64 = tx
            .query_row(
                "INSERT INTO calls (call_id, direction, created) VALUES ('3.1', 'inbound', 42.0) RETURNING record_id",
                [],
                |r| r.get(0),
            )
            .unwrap();
        tx.execute(
            "INSERT INTO call_contexts (context, record_id) VALUES ('a', ?1)",
            [id],
        )
        .unwrap();
        tx.commit().unwrap();
        drop(old);
        let mut conn = open(&path).unwrap();
        let rows = history(&conn, &filter(Some("a"))).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["created"], 42.0);
        assert_eq!(record(&mut conn, &[call]).unwrap(), [id], "the same call");
    }

    /// The plan SQLite picks for `sql`, one line per step.
    fn plan(conn: &Connection, sql: &str, args: Vec<rusqlite::types::Value>) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let steps: Vec<String> = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        steps.join("\n")
    }

    /// A plan that reads no whole table: every step searches an index, or walks one in
    /// the order wanted.
    fn indexed(plan: &str) -> bool {
        plan.lines().all(|step| {
            !step.starts_with("SCAN ")
                || step.contains("USING INDEX")
                || step.contains("USING COVERING INDEX")
        })
    }

    #[test]
    fn history_and_route_search_indexes() {
        let (_dir, conn) = db();
        let text = |v: &str| Some(v.to_owned());
        let cases = [
            (filter(Some("a")), "call_contexts_recent (context=?)"),
            (
                HistoryFilter {
                    from: Some(1.0),
                    to: Some(2.0),
                    ..filter(Some("a"))
                },
                "call_contexts_recent (context=? AND created>? AND created<?)",
            ),
            (
                HistoryFilter {
                    number: text("555"),
                    ..filter(Some("a"))
                },
                "calls_dnis (dnis=?)",
            ),
            (
                HistoryFilter {
                    queue: text("q"),
                    ..filter(Some("a"))
                },
                "calls_queue (queue=?)",
            ),
            (
                HistoryFilter {
                    agent: text("alice"),
                    ..filter(None)
                },
                "calls_agent_name (agent_name=?)",
            ),
            (
                HistoryFilter {
                    from: Some(1.0),
                    ..filter(None)
                },
                "calls_created (created>?)",
            ),
        ];
        for (f, index) in cases {
            let (sql, args) = history_query(&f);
            let plan = plan(&conn, &sql, args);
            assert!(indexed(&plan) && plan.contains(index), "{f:?}:\n{plan}");
        }
        let route = format!("{LAST_AGENT}{IN_CONTEXT}{NEWEST_ENDED}");
        let args = vec!["555".to_owned().into(), "a".to_owned().into()];
        let plan = plan(&conn, &route, args);
        assert!(
            indexed(&plan) && plan.contains("calls_caller") && plan.contains("calls_ani"),
            "{plan}"
        );
    }

    #[tokio::test]
    async fn queries_answer_within_their_bound_or_say_busy() {
        let (_dir, conn) = db();
        let path = PathBuf::from(conn.path().unwrap());
        let queries = Queries::start(path, 1, Duration::from_millis(100), &Report::default());
        let asked = || LastAgent {
            number: "555".into(),
            context: None,
        };
        assert_eq!(queries.last_agent(asked()).await.unwrap(), None);
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let busy = queries
            .pool
            .run(move |_| {
                let _ = stuck.recv();
            })
            .unwrap();
        assert!(matches!(
            queries.last_agent(asked()).await,
            Err(StoreFailure::Late(_))
        ));
        let mut queued = Vec::new();
        while let Ok(rx) = queries.pool.run(|_| ()) {
            queued.push(rx);
        }
        assert!(matches!(
            queries.history(filter(None)).await,
            Err(StoreFailure::Busy)
        ));
        release.send(()).unwrap();
        busy.await.unwrap();
        for rx in queued {
            rx.await.unwrap();
        }
        assert!(queries.history(filter(None)).await.unwrap().is_empty());
    }

    #[test]
    fn pruning_deletes_old_calls_with_their_contexts() {
        let (_dir, mut conn) = db();
        let calls: Vec<Call> = (0..5)
            .map(|i| ended_call(&format!("4.{i}"), "a", "555", f64::from(i) * 100.0))
            .collect();
        record(&mut conn, &calls).unwrap();
        assert_eq!(prune(&conn, 250.0, 2).unwrap(), 2, "one batch at a time");
        assert_eq!(prune(&conn, 250.0, 2).unwrap(), 1);
        assert_eq!(prune(&conn, 250.0, 2).unwrap(), 0);
        let left: Vec<String> = history(&conn, &filter(Some("a")))
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(left, ["4.4", "4.3"]);
        let contexts: i64 = conn
            .query_row("SELECT count(*) FROM call_contexts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(contexts, 2);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let (_dir, conn) = db();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let path = conn.path().unwrap().to_owned();
        drop(conn);
        let err = open(Path::new(&path)).unwrap_err();
        assert!(err.reason.contains("schema version 99 is newer"), "{err}");
    }

    #[test]
    fn records_keep_their_fields_and_history_filters_by_context() {
        let (_dir, mut conn) = db();
        let calls = [
            ended_call("1.1", "a", "555111", 100.0),
            ended_call("1.2", "b", "555222", 200.0),
            ended_call("1.3", "a", "555333", 300.0),
        ];
        let ids = record(&mut conn, &calls).unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(
            record(&mut conn, &calls[..1]).unwrap(),
            ids[..1],
            "recording twice keeps one row"
        );

        let a = history(&conn, &filter(Some("a"))).unwrap();
        let seen: Vec<&str> = a.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(seen, ["1.3", "1.1"], "newest first, context a only");
        let row = &a[1];
        assert_eq!(row["caller"]["number"], "555111");
        assert_eq!(row["dnis"], "555");
        assert_eq!(row["direction"], "inbound");
        assert_eq!(row["agent"]["name"], "Alice");
        assert_eq!(row["duration"], 5.0);
        assert_eq!(row["hangup_cause"]["code"], 16);
        assert_eq!(row["record_id"], ids[0]);

        assert_eq!(history(&conn, &filter(None)).unwrap().len(), 3);
        let by_number = HistoryFilter {
            number: Some("555222".into()),
            ..filter(Some("a"))
        };
        assert!(
            history(&conn, &by_number).unwrap().is_empty(),
            "never another context's row"
        );
        let by_time = HistoryFilter {
            from: Some(150.0),
            to: Some(350.0),
            ..filter(None)
        };
        assert_eq!(history(&conn, &by_time).unwrap().len(), 2);
        let in_context = HistoryFilter {
            from: Some(150.0),
            ..filter(Some("a"))
        };
        assert_eq!(history(&conn, &in_context).unwrap().len(), 1);
        let by_agent = HistoryFilter {
            agent: Some("Alice".into()),
            limit: 1,
            ..filter(None)
        };
        assert_eq!(history(&conn, &by_agent).unwrap().len(), 1);
    }

    #[test]
    fn dispositions_are_for_the_agent_or_a_supervisor_of_the_context() {
        let (_dir, mut conn) = db();
        record(&mut conn, &[ended_call("2.1", "a", "555", 1.0)]).unwrap();
        let who = |login: &str, context: &str, supervisor: bool| Disposer {
            login: login.into(),
            line: None,
            context: Some(context.into()),
            role: if supervisor {
                ctid_proto::rights::Role::Supervisor
            } else {
                ctid_proto::rights::Role::Agent
            },
        };
        let set = |conn: &mut Connection, by: Disposer, id: &str| {
            dispose(
                conn,
                &Dispose {
                    call_id: id.into(),
                    disposition: Disposition {
                        code: "sale".into(),
                        note: Some("ok".into()),
                        by: by.login.clone(),
                        at: 9.0,
                    },
                    by,
                },
            )
            .unwrap()
        };
        assert!(
            !set(&mut conn, who("bob", "a", false), "2.1"),
            "bob did not handle it"
        );
        assert!(
            !set(&mut conn, who("boss", "b", true), "2.1"),
            "a supervisor of another context"
        );
        assert!(
            !set(&mut conn, who("boss", "a", true), "9.9"),
            "no such call"
        );
        assert!(set(&mut conn, who("boss", "a", true), "2.1"));
        let asked = |context: Option<&str>| LastAgent {
            number: "555".into(),
            context: context.map(str::to_owned),
        };
        assert_eq!(
            last_agent(&conn, &asked(Some("a"))).unwrap(),
            None,
            "no agent login on that call"
        );
        let row = &history(&conn, &filter(Some("a"))).unwrap()[0];
        assert_eq!(row["disposition"]["code"], "sale");
        assert_eq!(row["disposition"]["by"], "boss");
    }
}
