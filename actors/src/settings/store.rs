//! Where the call records are kept, and how.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub enabled: bool,
    pub database: Database,
    /// Writes (records, dispositions) waiting for the database, at most.
    pub queue_max: usize,
    /// How long a `hungup` waits for its record to be committed, and a disposition for the
    /// database.
    pub write_timeout: Duration,
    /// How long `history` and the FastAGI `route` wait for the database.
    pub query_timeout: Duration,
    /// Records of calls started longer ago are deleted; 0 keeps them all.
    pub retention_days: u32,
    pub sync: StoreSync,
}

/// When a commit of call records returns (`store.sync`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreSync {
    /// Once on disk: SQLite `synchronous = FULL`, PostgreSQL `synchronous_commit = on`
    /// (or the stronger setting the database has).
    #[default]
    Full,
    /// Once handed to the operating system (SQLite `synchronous = NORMAL`) or to
    /// PostgreSQL's WAL writer (`synchronous_commit = off`): a crash of ctid loses no
    /// record, a crash of the machine (or of PostgreSQL) may lose the last moment's.
    Normal,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            enabled: true,
            database: Database::Sqlite(PathBuf::from("/var/lib/ctid/ctid.sqlite")),
            queue_max: 100_000,
            write_timeout: Duration::from_secs(2),
            query_timeout: Duration::from_secs(2),
            retention_days: 0,
            sync: StoreSync::Full,
        }
    }
}

/// Where the call records are kept (`store.backend`).
#[derive(Clone, Debug)]
pub enum Database {
    /// A SQLite file (`store.path`); its directory is created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`store.url`), which the nodes of a cluster share.
    Postgres(PostgresUrl),
}

impl Database {
    /// The settings key that names it.
    pub fn key(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "store.path",
            Database::Postgres(_) => "store.url",
        }
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => write!(f, "{url}"),
        }
    }
}

/// A `postgres://` URL. `Display` and `Debug` show it without its password (nor its
/// other parameters), so that the password never reaches a log line.
#[derive(Clone)]
pub struct PostgresUrl {
    config: std::sync::Arc<postgres::Config>,
    shown: String,
}

impl PostgresUrl {
    pub fn parse(url: &str) -> Result<PostgresUrl, String> {
        const EXAMPLE: &str = "expected a URL such as postgres://ctid@127.0.0.1:5432/ctid";
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(EXAMPLE.to_owned());
        }
        let config: postgres::Config = url.parse().map_err(|e| format!("{EXAMPLE} ({e})"))?;
        if !matches!(
            config.get_ssl_mode(),
            postgres::config::SslMode::Disable | postgres::config::SslMode::Prefer
        ) {
            return Err("TLS to the database is not supported: leave sslmode out".into());
        }
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let host = match host {
                    postgres::config::Host::Tcp(name) => name.clone(),
                    postgres::config::Host::Unix(path) => path.display().to_string(),
                };
                match config.get_ports().get(i).or(config.get_ports().first()) {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                }
            })
            .collect();
        let user = config
            .get_user()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let shown = format!(
            "postgres://{user}{}/{}",
            hosts.join(","),
            config.get_dbname().unwrap_or_default()
        );
        Ok(PostgresUrl {
            config: config.into(),
            shown,
        })
    }

    pub fn config(&self) -> &postgres::Config {
        &self.config
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({:?})", self.shown)
    }
}
