//! The call records in SQLite: a file in WAL mode, and query threads reading beside the
//! writer. With `store.sync = "full"` (the default) a record is on disk when its commit
//! returns; with `"normal"`, once the operating system has it.
//! The schema version is `PRAGMA user_version`.

use std::path::Path;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params_from_iter, Connection, Transaction, TransactionBehavior};

use super::{newer_schema, Datum, DbError, Fault, Sql, StoreError, MIGRATIONS};
use crate::settings::StoreSync;

fn failed(path: &Path, e: impl ToString) -> StoreError {
    StoreError {
        database: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Opens (creating it and its directory if needed) and migrates the database.
pub(super) fn open(path: &Path, sync: StoreSync) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| failed(path, crate::net::io_reason(&e)))?;
    }
    let mut conn = Connection::open(path).map_err(|e| failed(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| failed(path, e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| failed(path, e))?;
    let synchronous = match sync {
        StoreSync::Full => "FULL",
        StoreSync::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(|e| failed(path, e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| failed(path, e))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| failed(path, e))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(failed(path, newer_schema(version)));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(|e| failed(path, e))?;
        tx.execute_batch(step.sqlite).map_err(|e| failed(path, e))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(|e| failed(path, e))?;
        tx.commit().map_err(|e| failed(path, e))?;
    }
    Ok(conn)
}

/// Runs `f` in a transaction that takes the write lock at once.
pub(super) fn transaction<R>(
    conn: &mut Connection,
    f: impl FnOnce(&mut dyn Sql) -> Result<R, DbError>,
) -> Result<R, DbError> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let outcome = f(&mut tx)?;
    tx.commit()?;
    Ok(outcome)
}

impl rusqlite::ToSql for Datum {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Datum::Null => ValueRef::Null,
            Datum::Int(i) => ValueRef::Integer(*i),
            Datum::Real(r) => ValueRef::Real(*r),
            Datum::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

fn datum(v: ValueRef<'_>) -> Datum {
    match v {
        ValueRef::Null => Datum::Null,
        ValueRef::Integer(i) => Datum::Int(i),
        ValueRef::Real(r) => Datum::Real(r),
        ValueRef::Text(t) | ValueRef::Blob(t) => Datum::Text(String::from_utf8_lossy(t).into()),
    }
}

fn rows(conn: &Connection, sql: &str, args: &[Datum]) -> rusqlite::Result<Vec<Vec<Datum>>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(
            (0..columns)
                .map(|i| row.get_ref(i).map(datum))
                .collect::<rusqlite::Result<_>>()?,
        );
    }
    Ok(out)
}

fn execute(conn: &Connection, sql: &str, args: &[Datum]) -> rusqlite::Result<u64> {
    let changed = conn.prepare_cached(sql)?.execute(params_from_iter(args))?;
    Ok(changed as u64)
}

impl Sql for Connection {
    fn rows(&mut self, sql: &str, args: &[Datum]) -> Result<Vec<Vec<Datum>>, DbError> {
        Ok(rows(self, sql, args)?)
    }

    fn execute(&mut self, sql: &str, args: &[Datum]) -> Result<u64, DbError> {
        Ok(execute(self, sql, args)?)
    }
}

impl Sql for Transaction<'_> {
    fn rows(&mut self, sql: &str, args: &[Datum]) -> Result<Vec<Vec<Datum>>, DbError> {
        Ok(rows(self, sql, args)?)
    }

    fn execute(&mut self, sql: &str, args: &[Datum]) -> Result<u64, DbError> {
        Ok(execute(self, sql, args)?)
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let code = e.sqlite_error_code();
        let fault = if matches!(
            code,
            Some(C::ConstraintViolation | C::TooBig | C::TypeMismatch)
        ) || matches!(e, rusqlite::Error::ToSqlConversionFailure(_))
        {
            Fault::Data
        } else if matches!(code, Some(C::DatabaseBusy | C::DatabaseLocked)) {
            Fault::Busy
        } else {
            Fault::Other
        };
        DbError {
            reason: e.to_string(),
            fault,
        }
    }
}
