//! A PostgreSQL schema of its own for one test, dropped afterwards, in the test database
//! that scripts/test makes sure of.

/// The database the tests use; `CTID_TEST_POSTGRES` names another.
const TEST_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn admin_url() -> String {
    std::env::var("CTID_TEST_POSTGRES").unwrap_or_else(|_| TEST_POSTGRES.to_owned())
}

/// Runs `f` on a thread of its own: PostgreSQL's blocking client cannot run on the thread
/// of an async test.
pub fn aside<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join()).unwrap_or_else(|p| std::panic::resume_unwind(p))
}

pub fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url} ({e}). These tests need it: run them with \
             scripts/test, which installs and starts it, or start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`; \
             another server: CTID_TEST_POSTGRES=postgres://USER@HOST:PORT/DATABASE"
        )
    })
}

pub struct Schema {
    pub name: String,
}

impl Schema {
    pub fn new() -> Schema {
        let name = format!("ctid_e2e_{}_{}", std::process::id(), fastrand::u32(..));
        aside(|| connect(&admin_url()).batch_execute(&format!("CREATE SCHEMA {name}"))).unwrap();
        Schema { name }
    }

    /// The URL ctid is given: the test database, with this schema first on its path.
    pub fn url(&self) -> String {
        format!("{}?options=-c%20search_path%3D{}", admin_url(), self.name)
    }

    /// [`Schema::url`] with a password in it (trust authentication never asks for it).
    pub fn url_with_password(&self, password: &str) -> String {
        let url = self.url();
        let (scheme, rest) = url.split_once("://").unwrap();
        let (user, host) = rest.split_once('@').unwrap();
        format!("{scheme}://{user}:{password}@{host}")
    }

    /// ctid's environment for this schema.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("CTID__STORE__BACKEND".into(), "postgres".into()),
            ("CTID__STORE__URL".into(), self.url()),
        ]
    }

    /// The rows of `sql`, each column read as text (`::TEXT` in the query where needed).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        aside(|| {
            connect(&self.url())
                .query(sql, &[])
                .unwrap()
                .iter()
                .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
                .collect()
        })
    }

    /// The single number `sql` answers.
    pub fn count(&self, sql: &str) -> i64 {
        aside(|| connect(&self.url()).query_one(sql, &[]).unwrap().get(0))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let drop_schema = format!("DROP SCHEMA {} CASCADE", self.name);
        let dropped = aside(|| {
            postgres::Client::connect(&admin_url(), postgres::NoTls)
                .and_then(|mut c| c.batch_execute(&drop_schema))
        });
        if let Err(e) = dropped {
            eprintln!("schema {} left behind: {e}", self.name);
        }
    }
}

/// The env pairs of `Ctid::start_with`.
pub fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
