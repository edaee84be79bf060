//! Call records: one row per ended call, its dispositions, and history queries, in SQLite
//! (the default) or PostgreSQL (`store.backend`).
//!
//! Both databases block here, so they run on threads of their own: one writer
//! ([`crate::records`]), which commits in order, and a small pool of query threads. The
//! queries are written once, against [`Sql`], with SQLite's numbered parameters (`?1`);
//! [`sqlite`] and [`postgres`] each carry them out, and keep the schema at the version of
//! [`MIGRATIONS`], each step run once, in a transaction.

mod postgres;
mod queries;
mod schema;
mod sqlite;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ctid_proto::cti::ErrorCode;
pub use ctid_proto::rights::Disposer;
use log::info;
use serde_json::Value;

use crate::metrics::Metrics;
use crate::pool::{Pool, Refused};
use crate::records::Records;
use crate::settings::{human_duration, Database, StoreSettings, StoreSync};
use crate::supervisor::Report;
pub(crate) use queries::{dispose, history, insert_call, last_agent, prune};
#[cfg(test)]
use queries::{history_query, last_agent_query};
pub use queries::{Dispose, HistoryFilter, LastAgent, MAX_HISTORY, MAX_OFFSET};
use schema::{newer_schema, MIGRATIONS};

/// The database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
#[error("{database}: {reason}")]
pub struct StoreError {
    /// The file, or the URL without its password.
    pub database: String,
    pub reason: String,
}

/// A value going into, or coming out of, either database.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Datum {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl From<i64> for Datum {
    fn from(v: i64) -> Datum {
        Datum::Int(v)
    }
}

impl From<f64> for Datum {
    fn from(v: f64) -> Datum {
        Datum::Real(v)
    }
}

impl From<String> for Datum {
    fn from(v: String) -> Datum {
        Datum::Text(v)
    }
}

impl From<&str> for Datum {
    fn from(v: &str) -> Datum {
        Datum::Text(v.to_owned())
    }
}

impl<T: Into<Datum>> From<Option<T>> for Datum {
    fn from(v: Option<T>) -> Datum {
        v.map_or(Datum::Null, Into::into)
    }
}

impl Datum {
    fn text(&self) -> Option<String> {
        match self {
            Datum::Text(s) => Some(s.clone()),
            _ => None,
        }
    }

    fn real(&self) -> Option<f64> {
        match self {
            Datum::Real(r) => Some(*r),
            Datum::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Datum::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// Column `i` of a row, or Null past its end.
fn at(row: &[Datum], i: usize) -> &Datum {
    row.get(i).unwrap_or(&Datum::Null)
}

/// How a statement failed, which says what may help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The statement's data is at fault (a constraint, a value refused): retrying it as it
    /// is cannot help.
    Data,
    /// Another writer holds a lock: retry later, on the same connection.
    Busy,
    /// The connection is gone (the server restarted): a new one may work at once.
    Lost,
    /// Anything else: retry later, on a new connection.
    Other,
}

#[derive(Debug)]
pub(crate) struct DbError {
    pub reason: String,
    pub fault: Fault,
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> Self {
        DbError {
            reason: e.to_string(),
            fault: Fault::Other,
        }
    }
}

/// A connection or a transaction, of either database, as the queries use it.
pub(crate) trait Sql {
    /// Runs a statement; its rows.
    fn rows(&mut self, sql: &str, args: &[Datum]) -> Result<Vec<Vec<Datum>>, DbError>;
    /// Runs a statement; how many rows it changed.
    fn execute(&mut self, sql: &str, args: &[Datum]) -> Result<u64, DbError>;
}

/// A connection to the database, its schema up to date.
pub(crate) enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Pg>),
}

impl Conn {
    /// Runs `f` in a transaction, committed if `f` succeeds.
    pub(crate) fn transaction<R>(
        &mut self,
        f: impl FnOnce(&mut dyn Sql) -> Result<R, DbError>,
    ) -> Result<R, DbError> {
        match self {
            Conn::Sqlite(conn) => sqlite::transaction(conn, f),
            Conn::Postgres(pg) => pg.transaction(f),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Conn::Sqlite(_) => false,
            Conn::Postgres(pg) => pg.is_closed(),
        }
    }
}

impl Sql for Conn {
    fn rows(&mut self, sql: &str, args: &[Datum]) -> Result<Vec<Vec<Datum>>, DbError> {
        match self {
            Conn::Sqlite(conn) => conn.rows(sql, args),
            Conn::Postgres(pg) => pg.rows(sql, args),
        }
    }

    fn execute(&mut self, sql: &str, args: &[Datum]) -> Result<u64, DbError> {
        match self {
            Conn::Sqlite(conn) => conn.execute(sql, args),
            Conn::Postgres(pg) => pg.execute(sql, args),
        }
    }
}

/// Opens (creating a SQLite file and its directory if needed) and migrates the database;
/// its commits return as `sync` says.
pub(crate) fn open(database: &Database, sync: StoreSync) -> Result<Conn, StoreError> {
    match database {
        Database::Sqlite(path) => sqlite::open(path, sync).map(Conn::Sqlite),
        Database::Postgres(url) => postgres::open(url, sync).map(|pg| Conn::Postgres(Box::new(pg))),
    }
}

/// Checks that the database can be opened, and brings its schema up to date.
pub fn migrate(database: &Database) -> Result<(), StoreError> {
    open(database, StoreSync::Full).map(drop)
}

/// A thread's connection to the database, opened when first needed.
pub(crate) struct Store {
    database: Database,
    sync: StoreSync,
    conn: Option<Conn>,
}

impl Store {
    pub(crate) fn new(database: Database, sync: StoreSync) -> Store {
        Store {
            database,
            sync,
            conn: None,
        }
    }

    /// Drops the connection: the next job opens a new one.
    pub(crate) fn close(&mut self) {
        self.conn = None;
    }

    /// Runs `job` on the connection, opened first if needed. A connection a job failed on
    /// is closed, for the next job to open a new one; one found lost (the server
    /// restarted since its last use) is replaced at once, and the job run again, once.
    pub(crate) fn run<R>(
        &mut self,
        mut job: impl FnMut(&mut Conn) -> Result<R, DbError>,
    ) -> Result<R, DbError> {
        let mut again = true;
        loop {
            let (conn, reused) = match self.conn.take() {
                Some(conn) if !conn.is_closed() => (conn, true),
                _ => (open(&self.database, self.sync)?, false),
            };
            match job(self.conn.insert(conn)) {
                Err(e) if matches!(e.fault, Fault::Lost | Fault::Other) => {
                    self.conn = None;
                    if e.fault == Fault::Lost && reused && again {
                        again = false;
                        continue;
                    }
                    return Err(e);
                }
                outcome => return outcome,
            }
        }
    }
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
    fn start(database: Database, threads: usize, timeout: Duration, report: &Report) -> Queries {
        let pool = Pool::start(
            "ctid/store/queries",
            threads,
            QUERIES_QUEUED,
            report,
            move || Store::new(database.clone(), StoreSync::Full),
        );
        Queries {
            pool: Arc::new(pool),
            timeout,
        }
    }

    fn ask<R: Send + 'static>(
        &self,
        query: impl Fn(&mut dyn Sql) -> Result<R, DbError> + Send + 'static,
    ) -> impl Future<Output = Result<R, StoreFailure>> + 'static {
        let asked = self.pool.run(move |store: &mut Store| {
            store.run(|conn| query(conn)).map_err(|e| e.reason.clone())
        });
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
        self.ask(move |db| history(db, &f))
    }

    pub fn last_agent(
        &self,
        q: LastAgent,
    ) -> impl Future<Output = Result<Option<String>, StoreFailure>> + 'static {
        self.ask(move |db| last_agent(db, &q))
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
/// migrated already by [`migrate`]).
pub fn start(settings: &StoreSettings, report: &Report, metrics: &Metrics) -> Stores {
    info!("call records: {}", settings.database);
    Stores {
        writer: Records::start(settings, report, metrics),
        reader: Queries::start(
            settings.database.clone(),
            QUERY_THREADS,
            settings.query_timeout,
            report,
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests;
