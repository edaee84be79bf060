//! The statements on call records, written once for both dialects.

use ctid_proto::calls::{Call, Disposition};
use ctid_proto::rights::Disposer;
use serde_json::{json, Value};

use super::{at, Datum, DbError, Fault, Sql};

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A call written twice (by two nodes around a takeover) stays one row.
const INSERT_CALL: &str = "INSERT INTO calls (call_id, direction, caller_number, caller_name,
        callee_number, callee_name, ani, dnis, queue, agent_login, agent_name, ivr_path, attached,
        lines, created, answered, ended, duration, hangup_cause_code, hangup_cause_text,
        disposition_code, disposition_note, disposition_by, disposition_at, media)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
        ?20, ?21, ?22, ?23, ?24, ?25)
    ON CONFLICT (call_id) DO UPDATE SET ended = excluded.ended, duration = excluded.duration,
        media = COALESCE(excluded.media, calls.media)
    RETURNING record_id";

const INSERT_CONTEXT: &str = "INSERT INTO call_contexts (context, record_id, created)
    VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";

/// Writes an ended call (within the caller's transaction); returns its record id.
pub(crate) fn insert_call(db: &mut dyn Sql, c: &Call) -> Result<i64, DbError> {
    let agent = c.agent.as_ref();
    let cause = c.hangup_cause.as_ref();
    let d = c.disposition.as_ref();
    let args: [Datum; 25] = [
        c.id.as_str().into(),
        to_json(&c.direction).trim_matches('"').into(),
        c.caller.number.clone().into(),
        c.caller.name.clone().into(),
        c.callee.number.clone().into(),
        c.callee.name.clone().into(),
        c.ani.clone().into(),
        c.dnis.clone().into(),
        c.queue.clone().into(),
        agent.and_then(|a| a.login.clone()).into(),
        agent.and_then(|a| a.name.clone()).into(),
        to_json(&c.ivr_path).into(),
        to_json(&c.attached).into(),
        to_json(&c.lines).into(),
        c.created.into(),
        c.answered.into(),
        c.ended.into(),
        c.ended.map(|e| e - c.created).into(),
        cause.and_then(|h| h.code).map(i64::from).into(),
        cause.and_then(|h| h.text.clone()).into(),
        d.map(|d| d.code.clone()).into(),
        d.and_then(|d| d.note.clone()).into(),
        d.map(|d| d.by.clone()).into(),
        d.map(|d| d.at).into(),
        c.media.as_ref().map(to_json).into(),
    ];
    let rows = db.rows(INSERT_CALL, &args)?;
    let id = rows
        .first()
        .and_then(|r| at(r, 0).int())
        .ok_or_else(|| DbError {
            reason: "the database gave no record id".into(),
            fault: Fault::Other,
        })?;
    for context in &c.contexts {
        db.execute(
            INSERT_CONTEXT,
            &[context.as_str().into(), id.into(), c.created.into()],
        )?;
    }
    Ok(id)
}

/// Deletes up to `limit` of the records of calls that started before `before` (their
/// contexts go with them); returns how many.
pub(crate) fn prune(db: &mut dyn Sql, before: f64, limit: usize) -> Result<u64, DbError> {
    db.execute(
        "DELETE FROM calls WHERE record_id IN
            (SELECT record_id FROM calls WHERE created < ?1 ORDER BY created LIMIT ?2)",
        &[before.into(), (limit as i64).into()],
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
pub(crate) fn dispose(db: &mut dyn Sql, msg: &Dispose) -> Result<bool, DbError> {
    let found = db.rows(
        "SELECT record_id, agent_login, lines FROM calls WHERE call_id = ?1",
        &[msg.call_id.as_str().into()],
    )?;
    let Some((id, agent, lines)) = found
        .first()
        .and_then(|r| Some((at(r, 0).int()?, at(r, 1).text(), at(r, 2).text())))
    else {
        return Ok(false);
    };
    let lines: Vec<String> = lines
        .and_then(|l| serde_json::from_str(&l).ok())
        .unwrap_or_default();
    let contexts: Vec<String> = db
        .rows(
            "SELECT context FROM call_contexts WHERE record_id = ?1",
            &[id.into()],
        )?
        .iter()
        .filter_map(|r| at(r, 0).text())
        .collect();
    if !msg.by.may_dispose(&contexts, agent.as_deref(), &lines) {
        return Ok(false);
    }
    let d = &msg.disposition;
    db.execute(
        "UPDATE calls SET disposition_code = ?1, disposition_note = ?2, disposition_by = ?3,
            disposition_at = ?4
         WHERE record_id = ?5",
        &[
            d.code.as_str().into(),
            d.note.clone().into(),
            d.by.as_str().into(),
            d.at.into(),
            id.into(),
        ],
    )?;
    Ok(true)
}

/// Most history rows a client may ask for at once.
pub const MAX_HISTORY: u64 = 1000;
/// Most history rows skipped for a page: each costs the database a row read.
pub const MAX_OFFSET: u64 = 100_000;

/// Filters of a history query.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    /// Only calls of these contexts; None: every context (no context separation).
    pub contexts: Option<Vec<String>>,
    /// Matches the caller, callee, ANI or DNIS number.
    pub number: Option<String>,
    pub from: Option<f64>,
    pub to: Option<f64>,
    pub queue: Option<String>,
    /// Matches the agent's login or name.
    pub agent: Option<String>,
    /// Only the record of this id.
    pub record_id: Option<i64>,
    pub limit: usize,
    /// Rows skipped first (the next page).
    pub offset: usize,
}

/// A history row (the columns of [`history_query`]) as clients get it.
fn row_json(r: &[Datum]) -> Value {
    let text = |i| at(r, i).text();
    let real = |i| at(r, i).real();
    let json_of = |i| {
        text(i)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    let disposition = match text(20) {
        Some(code) => json!({"code": code, "note": text(21), "by": text(22), "at": real(23)}),
        None => Value::Null,
    };
    json!({
        "record_id": at(r, 0).int(),
        "id": text(1),
        "direction": text(2),
        "caller": {"number": text(3), "name": text(4)},
        "callee": {"number": text(5), "name": text(6)},
        "ani": text(7),
        "dnis": text(8),
        "queue": text(9),
        "agent": {"login": text(10), "name": text(11)},
        "ivr_path": json_of(12),
        "attached": json_of(13),
        "created": real(14),
        "answered": real(15),
        "ended": real(16),
        "duration": real(17),
        "hangup_cause": {"code": at(r, 18).int(), "text": text(19)},
        "disposition": disposition,
        "media": json_of(24),
    })
}

/// The SQL of a history query, and its arguments. A number, queue, agent or record id
/// narrows the calls most: the query starts from their indexes and checks the contexts of
/// each call found. Otherwise it walks each context's calls newest first, as far as the
/// page needs, and merges them.
pub(super) fn history_query(f: &HistoryFilter) -> (String, Vec<Datum>) {
    let mut sql = String::from(
        "SELECT c.record_id, c.call_id, c.direction, c.caller_number, c.caller_name, c.callee_number,
            c.callee_name, c.ani, c.dnis, c.queue, c.agent_login, c.agent_name, c.ivr_path, c.attached,
            c.created, c.answered, c.ended, c.duration, c.hangup_cause_code, c.hangup_cause_text,
            c.disposition_code, c.disposition_note, c.disposition_by, c.disposition_at, c.media ",
    );
    let mut args: Vec<Datum> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: Datum| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    let narrow =
        f.number.is_some() || f.queue.is_some() || f.agent.is_some() || f.record_id.is_some();
    let by_context = matches!(f.contexts.as_deref(), Some([_])) && !narrow;
    match f.contexts.as_deref() {
        Some([ctx]) if by_context => arg(
            &mut sql,
            "FROM call_contexts x JOIN calls c ON c.record_id = x.record_id WHERE x.context = ?",
            ctx.as_str().into(),
        ),
        Some([]) => sql.push_str("FROM calls c WHERE 1 = 0"),
        Some([first, rest @ ..]) if narrow => {
            arg(
                &mut sql,
                "FROM calls c WHERE EXISTS
                (SELECT 1 FROM call_contexts x WHERE x.record_id = c.record_id AND x.context IN (?",
                first.as_str().into(),
            );
            for ctx in rest {
                arg(&mut sql, ", ?", ctx.as_str().into());
            }
            sql.push_str("))");
        }
        Some(contexts) => {
            // The page is taken from each context's newest limit + offset, before any call
            // is read.
            sql.push_str("FROM (");
            let depth = (f.limit + f.offset) as i64;
            for (i, ctx) in contexts.iter().enumerate() {
                if i > 0 {
                    sql.push_str(" UNION ");
                }
                arg(
                    &mut sql,
                    "SELECT record_id, created FROM (SELECT x.record_id, x.created
                    FROM call_contexts x WHERE x.context = ?",
                    ctx.as_str().into(),
                );
                if let Some(from) = f.from {
                    arg(&mut sql, " AND x.created >= ?", from.into());
                }
                if let Some(to) = f.to {
                    arg(&mut sql, " AND x.created <= ?", to.into());
                }
                arg(
                    &mut sql,
                    &format!(" ORDER BY x.created DESC, x.record_id DESC LIMIT ?) AS k{i}"),
                    depth.into(),
                );
            }
            arg(
                &mut sql,
                " ORDER BY created DESC, record_id DESC LIMIT ?",
                (f.limit as i64).into(),
            );
            arg(&mut sql, " OFFSET ?", (f.offset as i64).into());
            sql.push_str(") AS p JOIN calls c ON c.record_id = p.record_id WHERE 1 = 1");
        }
        None => sql.push_str("FROM calls c WHERE 1 = 1"),
    }
    let paged = matches!(f.contexts.as_deref(), Some([_, _, ..])) && !narrow;
    let t = match (by_context, paged) {
        (true, _) => "x",
        (_, true) => "p",
        _ => "c",
    };
    if let Some(n) = &f.number {
        arg(
            &mut sql,
            " AND (c.caller_number = ? OR c.callee_number = ? OR c.ani = ? OR c.dnis = ?)",
            n.as_str().into(),
        );
    }
    if let Some(from) = f.from {
        arg(&mut sql, &format!(" AND {t}.created >= ?"), from.into());
    }
    if let Some(to) = f.to {
        arg(&mut sql, &format!(" AND {t}.created <= ?"), to.into());
    }
    if let Some(q) = &f.queue {
        arg(&mut sql, " AND c.queue = ?", q.as_str().into());
    }
    if let Some(a) = &f.agent {
        arg(
            &mut sql,
            " AND (c.agent_login = ? OR c.agent_name = ?)",
            a.as_str().into(),
        );
    }
    if let Some(id) = f.record_id {
        arg(&mut sql, " AND c.record_id = ?", id.into());
    }
    arg(
        &mut sql,
        &format!(" ORDER BY {t}.created DESC, {t}.record_id DESC LIMIT ?"),
        (f.limit as i64).into(),
    );
    if f.offset > 0 && !paged {
        arg(&mut sql, " OFFSET ?", (f.offset as i64).into());
    }
    (sql, args)
}

/// The most recent recorded calls matching `f`, newest first.
pub(crate) fn history(db: &mut dyn Sql, f: &HistoryFilter) -> Result<Vec<Value>, DbError> {
    let (sql, args) = history_query(f);
    Ok(db.rows(&sql, &args)?.iter().map(|r| row_json(r)).collect())
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

pub(super) fn last_agent_query(q: &LastAgent) -> (String, Vec<Datum>) {
    match &q.context {
        Some(context) => (
            format!("{LAST_AGENT}{IN_CONTEXT}{NEWEST_ENDED}"),
            vec![q.number.as_str().into(), context.as_str().into()],
        ),
        None => (
            format!("{LAST_AGENT}{NEWEST_ENDED}"),
            vec![q.number.as_str().into()],
        ),
    }
}

pub(crate) fn last_agent(db: &mut dyn Sql, q: &LastAgent) -> Result<Option<String>, DbError> {
    let (sql, args) = last_agent_query(q);
    Ok(db.rows(&sql, &args)?.first().and_then(|r| at(r, 0).text()))
}
