//! The call records in PostgreSQL, which the nodes of a cluster share. The blocking client
//! runs on the store's threads, a connection each; there is no TLS to the database yet.
//! The schema version is the highest row of `ctid_schema`; nodes that start together
//! migrate in turn, under an advisory lock.

use std::collections::HashMap;
use std::error::Error;
use std::time::Duration;

use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use ::postgres::{Client, GenericClient, NoTls, Row, Statement, Transaction};
use bytes::BytesMut;
use log::debug;

use super::{newer_schema, Datum, DbError, Fault, Sql, StoreError, MIGRATIONS};
use crate::settings::{PostgresUrl, StoreSync};

/// Unless the URL says otherwise: how long connecting may take, and how long sent data
/// may stay unacknowledged before the connection is given up (a server gone silent).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// The advisory lock nodes take in turn to migrate a database.
const MIGRATION_LOCK: i64 = 0x6374_6964_0001;
/// The steps of [`MIGRATIONS`] a database has run, one row each.
pub(super) const VERSIONS: &str = "CREATE TABLE ctid_schema (
    version INTEGER PRIMARY KEY,
    applied TIMESTAMPTZ NOT NULL DEFAULT now()
)";
/// Prepared statements kept per connection, at most.
const STATEMENTS_KEPT: usize = 64;

/// A connection, with the statements it has prepared.
pub(crate) struct Pg {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// A one-line reason, with its cause, without the connection details.
fn reason(e: &::postgres::Error) -> String {
    let text = match (e.as_db_error(), e.source()) {
        (Some(db), _) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        (None, Some(cause)) => match cause.downcast_ref::<std::io::Error>() {
            Some(io) => format!("{e}: {}", crate::net::io_reason(io)),
            None => format!("{e}: {cause}"),
        },
        (None, None) => e.to_string(),
    };
    text.replace('\n', " ")
}

/// Connects and migrates.
pub(super) fn open(url: &PostgresUrl, sync: StoreSync) -> Result<Pg, StoreError> {
    let failed = |reason: String| StoreError {
        database: url.to_string(),
        reason,
    };
    let mut config = url.config().clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("ctid");
    }
    config.notice_callback(|notice| debug!("PostgreSQL: {}", notice.message()));
    let mut client = config.connect(NoTls).map_err(|e| failed(reason(&e)))?;
    migrate(&mut client).map_err(failed)?;
    // The server's, database's or role's default may be weaker than full asks, or
    // stronger (remote_write, remote_apply): only a weaker one is raised.
    let current = client
        .query_one("SHOW synchronous_commit", &[])
        .map_err(|e| failed(reason(&e)))?
        .get::<_, String>(0);
    let commit = match sync {
        StoreSync::Full if matches!(current.as_str(), "off" | "local") => {
            Some("SET synchronous_commit = on")
        }
        StoreSync::Full => None,
        StoreSync::Normal => Some("SET synchronous_commit = off"),
    };
    if let Some(commit) = commit {
        client
            .batch_execute(commit)
            .map_err(|e| failed(reason(&e)))?;
    }
    Ok(Pg {
        client,
        statements: HashMap::new(),
    })
}

/// Runs the steps the database has not run, each in a transaction of its own.
fn migrate(client: &mut Client) -> Result<(), String> {
    let known = MIGRATIONS.len();
    loop {
        let mut tx = client.transaction().map_err(|e| reason(&e))?;
        let version = version_locked(&mut tx).map_err(|e| reason(&e))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > known {
            return Err(newer_schema(version));
        }
        let Some(step) = MIGRATIONS.get(version) else {
            return tx.commit().map_err(|e| reason(&e));
        };
        tx.batch_execute(step.postgres)
            .and_then(|()| {
                tx.execute(
                    "INSERT INTO ctid_schema (version) VALUES ($1)",
                    &[&(version as i32 + 1)],
                )
            })
            .map_err(|e| {
                format!(
                    "migrating to schema version {}: {}",
                    version + 1,
                    reason(&e)
                )
            })?;
        tx.commit().map_err(|e| reason(&e))?;
    }
}

/// Takes the migration lock (until the transaction ends), then reads the version.
fn version_locked(tx: &mut Transaction<'_>) -> Result<i32, ::postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('ctid_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        tx.batch_execute(VERSIONS)?;
    }
    Ok(tx
        .query_one("SELECT coalesce(max(version), 0) FROM ctid_schema", &[])?
        .get(0))
}

/// The SQL written for SQLite (`?1`) in PostgreSQL's numbering (`$1`).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let parameter = c == '?' && chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if parameter { '$' } else { c });
    }
    out
}

fn prepared(
    client: &mut impl GenericClient,
    statements: &mut HashMap<String, Statement>,
    sql: &str,
) -> Result<Statement, ::postgres::Error> {
    if let Some(statement) = statements.get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(&numbered(sql))?;
    if statements.len() >= STATEMENTS_KEPT {
        statements.clear();
    }
    statements.insert(sql.to_owned(), statement.clone());
    Ok(statement)
}

fn params(args: &[Datum]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

fn rows(
    client: &mut impl GenericClient,
    statements: &mut HashMap<String, Statement>,
    sql: &str,
    args: &[Datum],
) -> Result<Vec<Vec<Datum>>, DbError> {
    let statement = prepared(client, statements, sql)?;
    let found = client.query(&statement, &params(args))?;
    found
        .iter()
        .map(|row| (0..row.len()).map(|i| datum(row, i)).collect())
        .collect::<Result<_, _>>()
        .map_err(DbError::from)
}

fn execute(
    client: &mut impl GenericClient,
    statements: &mut HashMap<String, Statement>,
    sql: &str,
    args: &[Datum],
) -> Result<u64, DbError> {
    let statement = prepared(client, statements, sql)?;
    Ok(client.execute(&statement, &params(args))?)
}

/// Column `i` of a row, by its type.
fn datum(row: &Row, i: usize) -> Result<Datum, ::postgres::Error> {
    let ty = row.columns()[i].type_();
    Ok(if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)?.into()
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)?.map(i64::from).into()
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i)?.map(i64::from).into()
    } else if *ty == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(i)?.into()
    } else if *ty == Type::FLOAT4 {
        row.try_get::<_, Option<f32>>(i)?.map(f64::from).into()
    } else if *ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i)?.map(i64::from).into()
    } else {
        row.try_get::<_, Option<String>>(i)?.into()
    })
}

impl Pg {
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub(super) fn transaction<R>(
        &mut self,
        f: impl FnOnce(&mut dyn Sql) -> Result<R, DbError>,
    ) -> Result<R, DbError> {
        let mut tx = PgTransaction {
            tx: self.client.transaction()?,
            statements: &mut self.statements,
        };
        let outcome = f(&mut tx)?;
        tx.tx.commit()?;
        Ok(outcome)
    }
}

impl Sql for Pg {
    fn rows(&mut self, sql: &str, args: &[Datum]) -> Result<Vec<Vec<Datum>>, DbError> {
        rows(&mut self.client, &mut self.statements, sql, args)
    }

    fn execute(&mut self, sql: &str, args: &[Datum]) -> Result<u64, DbError> {
        execute(&mut self.client, &mut self.statements, sql, args)
    }
}

struct PgTransaction<'a> {
    tx: Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
}

impl Sql for PgTransaction<'_> {
    fn rows(&mut self, sql: &str, args: &[Datum]) -> Result<Vec<Vec<Datum>>, DbError> {
        rows(&mut self.tx, self.statements, sql, args)
    }

    fn execute(&mut self, sql: &str, args: &[Datum]) -> Result<u64, DbError> {
        execute(&mut self.tx, self.statements, sql, args)
    }
}

/// A value that does not fit the column or parameter it is given to.
#[derive(Debug, thiserror::Error)]
#[error("a {kind} value does not fit type {ty}")]
struct Unfit {
    kind: &'static str,
    ty: Type,
}

impl ToSql for Datum {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let unfit = |kind| Unfit {
            kind,
            ty: ty.clone(),
        };
        match self {
            Datum::Null => Ok(IsNull::Yes),
            Datum::Int(i) if *ty == Type::INT8 => i.to_sql(ty, out),
            Datum::Int(i) if *ty == Type::INT4 => i32::try_from(*i)
                .map_err(|_| unfit("integer"))?
                .to_sql(ty, out),
            Datum::Int(i) if *ty == Type::FLOAT8 => (*i as f64).to_sql(ty, out),
            Datum::Real(r) if *ty == Type::FLOAT8 => r.to_sql(ty, out),
            // PostgreSQL's text cannot hold NUL, which SQLite's can: a caller name with one
            // loses it rather than its call's record.
            Datum::Text(s) if <&str as ToSql>::accepts(ty) => match s.contains('\0') {
                true => s.replace('\0', "").as_str().to_sql(ty, out),
                false => s.as_str().to_sql(ty, out),
            },
            Datum::Int(_) => Err(unfit("integer").into()),
            Datum::Real(_) => Err(unfit("real").into()),
            Datum::Text(_) => Err(unfit("text").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl From<::postgres::Error> for DbError {
    fn from(e: ::postgres::Error) -> Self {
        let fault = match e.code().map(|c| c.code()) {
            Some(code) if code.starts_with("08") || code.starts_with("57P") => Fault::Lost,
            Some(code) if ["22", "23", "P0"].iter().any(|c| code.starts_with(c)) => Fault::Data,
            Some(code) if code.starts_with("40") || code == "55P03" => Fault::Busy,
            Some(_) => Fault::Other,
            None if e.is_closed() => Fault::Lost,
            None => match e.source() {
                Some(s) if s.is::<std::io::Error>() => Fault::Lost,
                Some(s) if s.is::<Unfit>() => Fault::Data,
                _ => Fault::Other,
            },
        };
        DbError {
            reason: reason(&e),
            fault,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Database;
    use crate::store::tests::{ended_call, record, TestDb};
    use crate::store::{
        history, history_query, last_agent_query, open, HistoryFilter, LastAgent, Store,
    };

    #[test]
    fn parameters_are_renumbered_for_postgresql() {
        assert_eq!(
            numbered("SELECT 1 WHERE a = ?1 OR b = ?12 AND c = '?'"),
            "SELECT 1 WHERE a = $1 OR b = $12 AND c = '?'"
        );
    }

    fn url(db: &TestDb) -> &PostgresUrl {
        match &db.database {
            Database::Postgres(url) => url,
            Database::Sqlite(_) => unreachable!("a PostgreSQL database"),
        }
    }

    /// The plan PostgreSQL picks for `sql`.
    fn plan(client: &mut Client, sql: &str, args: &[Datum]) -> String {
        let rows = client
            .query(&format!("EXPLAIN {}", numbered(sql)), &params(args))
            .unwrap();
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn history_and_route_search_indexes_in_postgresql() {
        let db = TestDb::postgres();
        db.with(|_| ());
        // Enough calls, spread over contexts, numbers, queues and agents, for the planner
        // to weigh its indexes as it would on a real floor.
        db.raw(
            "",
            "INSERT INTO calls (call_id, direction, caller_number, callee_number, ani, dnis,
                 queue, agent_login, agent_name, created)
             SELECT 'g' || i, 'inbound', '1' || i, '2' || i % 100, '1' || i, '3' || i % 50,
                 'q' || i % 10, 'l' || i % 30, 'n' || i % 30, i
             FROM generate_series(1, 20000) i;
             INSERT INTO call_contexts (context, record_id, created)
             SELECT 'c' || record_id % 20, record_id, created FROM calls;
             ANALYZE calls; ANALYZE call_contexts;",
        );
        crate::store::tests::aside(|| {
            let mut client = url(&db).config().connect(NoTls).unwrap();
            let text = |v: &str| Some(v.to_owned());
            let context = HistoryFilter {
                contexts: Some(vec!["c1".to_owned()]),
                limit: 50,
                ..HistoryFilter::default()
            };
            let several = HistoryFilter {
                contexts: Some(vec!["c1".to_owned(), "c2".to_owned(), "c3".to_owned()]),
                ..context.clone()
            };
            let cases = [
                (context.clone(), "call_contexts_recent"),
                (
                    HistoryFilter {
                        record_id: Some(77),
                        ..several.clone()
                    },
                    "calls_pkey",
                ),
                (
                    HistoryFilter {
                        from: Some(100.0),
                        to: Some(200.0),
                        ..context.clone()
                    },
                    "call_contexts_recent",
                ),
                (
                    HistoryFilter {
                        number: text("1555"),
                        ..context.clone()
                    },
                    "calls_caller",
                ),
                (
                    HistoryFilter {
                        queue: text("q-rare"),
                        ..context.clone()
                    },
                    "calls_queue",
                ),
                (
                    HistoryFilter {
                        agent: text("l-rare"),
                        contexts: None,
                        ..context.clone()
                    },
                    "calls_agent_login",
                ),
                (
                    HistoryFilter {
                        from: Some(19_990.0),
                        contexts: None,
                        ..context.clone()
                    },
                    "calls_created",
                ),
            ];
            for (f, index) in cases {
                let (sql, args) = history_query(&f);
                let plan = plan(&mut client, &sql, &args);
                assert!(
                    !plan.contains("Seq Scan") && plan.contains(index),
                    "{f:?}:\n{plan}"
                );
            }
            // Several contexts: each walks its own index only as far as the page needs, and
            // only the page's calls are read.
            let (sql, args) = history_query(&several);
            let walks = plan(&mut client, &sql, &args);
            assert!(
                walks.matches("call_contexts_recent").count() == 3
                    && walks.contains("calls_pkey")
                    && !walks.contains("Seq Scan"),
                "{walks}"
            );
            let (route, args) = last_agent_query(&LastAgent {
                number: "1555".into(),
                context: Some("c1".into()),
            });
            let plan = plan(&mut client, &route, &args);
            assert!(
                !plan.contains("Seq Scan")
                    && plan.contains("calls_caller")
                    && plan.contains("calls_ani"),
                "{plan}"
            );
        });
    }

    #[test]
    fn nodes_migrating_at_once_run_each_step_once() {
        let db = TestDb::postgres();
        std::thread::scope(|s| {
            let nodes: Vec<_> = (0..4)
                .map(|_| s.spawn(|| open(&db.database, StoreSync::Full).map(drop)))
                .collect();
            for node in nodes {
                node.join().unwrap().unwrap();
            }
        });
        let steps = db.rows("SELECT version FROM ctid_schema ORDER BY version");
        let expected: Vec<Vec<Datum>> = (1..=MIGRATIONS.len() as i64)
            .map(|v| vec![Datum::Int(v)])
            .collect();
        assert_eq!(steps, expected);
    }

    #[test]
    fn a_connection_the_server_dropped_is_replaced_at_once() {
        let db = TestDb::postgres();
        crate::store::tests::aside(|| {
            let mut store = Store::new(db.database.clone(), StoreSync::Full);
            store
                .run(|conn| record(conn, &[ended_call("7.1", "a", "555", 1.0)]))
                .unwrap();
            let pid = store
                .run(|conn| conn.rows("SELECT pg_backend_pid()", &[]))
                .unwrap();
            let mut admin = url(&db).config().connect(NoTls).unwrap();
            let Datum::Int(pid) = pid[0][0] else {
                panic!("{pid:?}")
            };
            admin
                .execute("SELECT pg_terminate_backend($1)", &[&(pid as i32)])
                .unwrap();
            let f = HistoryFilter {
                limit: 10,
                ..HistoryFilter::default()
            };
            let rows = store.run(|conn| history(conn, &f)).unwrap();
            assert_eq!(rows.len(), 1, "the history of a new connection");
        });
    }
}
