use super::*;
use crate::settings::PostgresUrl;
use ctid_proto::ami::AmiMessage;
use ctid_proto::calls::CallModel;
use ctid_proto::calls::{Call, Disposition};
use ctid_proto::directory::Directory;
use serde_json::json;
use std::sync::mpsc;

/// The PostgreSQL database the tests use, each in a schema of its own.
const TEST_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

fn admin_url() -> String {
    std::env::var("CTID_TEST_POSTGRES").unwrap_or_else(|_| TEST_POSTGRES.to_owned())
}

/// Runs `f` on a thread of its own: PostgreSQL's blocking client cannot run on the
/// thread of an async test.
pub(crate) fn aside<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join()).unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn connect(url: &PostgresUrl) -> ::postgres::Client {
    url.config().connect(::postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url} ({e}). These tests need it: run them with \
                 scripts/test, which installs and starts it, or start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`; \
                 another server: CTID_TEST_POSTGRES=postgres://USER@HOST:PORT/DATABASE"
        )
    })
}

fn admin(sql: &str) -> Result<(), ::postgres::Error> {
    let url = PostgresUrl::parse(&admin_url()).expect("CTID_TEST_POSTGRES");
    aside(|| connect(&url).batch_execute(sql))
}

/// A database for one test, removed afterwards: a SQLite file in a directory of its
/// own, or a schema of its own in PostgreSQL's test database.
pub(crate) struct TestDb {
    pub(crate) database: Database,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl TestDb {
    pub(crate) fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        TestDb {
            database: Database::Sqlite(dir.path().join("sub/ctid.sqlite")),
            _dir: Some(dir),
            schema: None,
        }
    }

    pub(crate) fn postgres() -> TestDb {
        let schema = format!("ctid_test_{}_{}", std::process::id(), fastrand::u32(..));
        admin(&format!("CREATE SCHEMA {schema}")).unwrap();
        let url = format!("{}?options=-c%20search_path%3D{schema}", admin_url());
        TestDb {
            database: Database::Postgres(PostgresUrl::parse(&url).unwrap()),
            _dir: None,
            schema: Some(schema),
        }
    }

    /// Runs `f` on a connection of its own (the schema migrated first).
    pub(crate) fn with<R: Send>(&self, f: impl FnOnce(&mut Conn) -> R + Send) -> R {
        aside(|| f(&mut open(&self.database, StoreSync::Full).unwrap()))
    }

    /// Rows of `sql` (written for both databases).
    pub(crate) fn rows(&self, sql: &str) -> Vec<Vec<Datum>> {
        self.with(|conn| conn.rows(sql, &[]).unwrap())
    }

    /// Runs statements in the database's own dialect, leaving the schema as it is.
    pub(crate) fn raw(&self, sqlite: &str, postgres: &str) {
        aside(|| match &self.database {
            Database::Sqlite(path) => {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch(sqlite).unwrap();
            }
            Database::Postgres(url) => connect(url).batch_execute(postgres).unwrap(),
        })
    }

    /// The schema version the database says it is at.
    fn version(&self) -> i64 {
        aside(|| match &self.database {
            Database::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap(),
            Database::Postgres(url) => connect(url)
                .query_one("SELECT max(version)::BIGINT FROM ctid_schema", &[])
                .unwrap()
                .get(0),
        })
    }

    /// Holds a lock that stops writers, not readers, until dropped.
    pub(crate) fn lock(&self) -> Held {
        let (locked, taken) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let database = self.database.clone();
        let thread = std::thread::spawn(move || match database {
            Database::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
                locked.send(()).unwrap();
                let _ = released.recv();
            }
            Database::Postgres(url) => {
                let mut client = connect(&url);
                let mut tx = client.transaction().unwrap();
                tx.batch_execute("LOCK TABLE calls IN EXCLUSIVE MODE")
                    .unwrap();
                locked.send(()).unwrap();
                let _ = released.recv();
            }
        });
        taken.recv().expect("the lock was not taken");
        Held {
            release,
            thread: Some(thread),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = &self.schema {
            if let Err(e) = admin(&format!("DROP SCHEMA {schema} CASCADE")) {
                eprintln!("schema {schema} left behind: {e}");
            }
        }
    }
}

pub(crate) struct Held {
    release: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.release.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A test run once on each database, as `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both_databases {
        (fn $name:ident($db:ident) $body:block) => {
            mod $name {
                use super::*;
                fn run($db: &TestDb) $body
                #[test]
                fn sqlite() {
                    run(&TestDb::sqlite())
                }
                #[test]
                fn postgres() {
                    run(&TestDb::postgres())
                }
            }
        };
        (async fn $name:ident($db:ident) $body:block) => {
            mod $name {
                use super::*;
                async fn run($db: &TestDb) $body
                #[tokio::test]
                async fn sqlite() {
                    run(&TestDb::sqlite()).await
                }
                #[tokio::test]
                async fn postgres() {
                    run(&TestDb::postgres()).await
                }
            }
        };
    }
pub(crate) use on_both_databases;

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

pub(crate) fn record(conn: &mut Conn, calls: &[Call]) -> Result<Vec<i64>, DbError> {
    conn.transaction(|tx| calls.iter().map(|c| insert_call(tx, c)).collect())
}

fn filter(context: Option<&str>) -> HistoryFilter {
    HistoryFilter {
        contexts: context.map(|c| vec![c.to_owned()]),
        limit: 50,
        ..HistoryFilter::default()
    }
}

fn ids(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["id"].as_str().unwrap()).collect()
}

#[test]
fn a_sqlite_file_is_in_wal_mode_with_full_synchronisation() {
    let db = TestDb::sqlite();
    db.with(|conn| {
        let Conn::Sqlite(conn) = conn else {
            unreachable!("a SQLite database")
        };
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 2, "FULL: a commit is on disk when it returns");
    });
}

on_both_databases! {
    fn store_sync_says_when_a_commit_returns(db) {
        let setting = |sync| {
            aside(|| match open(&db.database, sync).unwrap() {
                Conn::Sqlite(conn) => conn
                    .pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))
                    .unwrap()
                    .to_string(),
                Conn::Postgres(mut pg) => {
                    let rows = pg.rows("SHOW synchronous_commit", &[]).unwrap();
                    at(&rows[0], 0).text().unwrap()
                }
            })
        };
        let expected = match db.database {
            Database::Sqlite(_) => ["2", "1"],
            Database::Postgres(_) => ["on", "off"],
        };
        assert_eq!([setting(StoreSync::Full), setting(StoreSync::Normal)], expected);
    }
}

on_both_databases! {
    fn the_schema_is_created_once(db) {
        db.with(|_| ());
        db.with(|_| ());
        assert_eq!(db.version() as usize, MIGRATIONS.len());
    }
}

on_both_databases! {
    fn records_of_the_first_schema_keep_their_context_history(db) {
        db.raw(
            &format!(
                "{} PRAGMA user_version = 1;
                     INSERT INTO calls (call_id, direction, created) VALUES ('3.1', 'inbound', 42.0);
                     INSERT INTO call_contexts (context, record_id) SELECT 'a', record_id FROM calls;",
                MIGRATIONS[0].sqlite
            ),
            &format!(
                "{} {}; INSERT INTO ctid_schema (version) VALUES (1);
                     INSERT INTO calls (call_id, direction, created) VALUES ('3.1', 'inbound', 42.0);
                     INSERT INTO call_contexts (context, record_id) SELECT 'a', record_id FROM calls;",
                MIGRATIONS[0].postgres,
                postgres::VERSIONS
            ),
        );
        db.with(|conn| {
            let rows = history(conn, &filter(Some("a"))).unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0]["created"], 42.0);
            let call = ended_call("3.1", "a", "555", 42.0);
            assert_eq!(
                json!(record(conn, &[call]).unwrap()),
                json!([rows[0]["record_id"]]),
                "the same call"
            );
        });
        assert_eq!(db.version() as usize, MIGRATIONS.len());
    }
}

/// The plan SQLite picks for `sql`, one line per step.
fn plan(conn: &rusqlite::Connection, sql: &str, args: Vec<Datum>) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let steps: Vec<String> = stmt
        .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    steps.join("\n")
}

/// A plan that reads no whole table: every step searches an index, walks one in the
/// order wanted, or reads the bounded rows a subquery took from one (a context's
/// newest, `k<n>`, or a page of them, `p`).
fn indexed(plan: &str) -> bool {
    plan.lines().all(|step| {
        let subquery = step == "SCAN p"
            || step
                .strip_prefix("SCAN k")
                .is_some_and(|n| n.parse::<u32>().is_ok());
        !step.starts_with("SCAN ")
            || subquery
            || step.contains("USING INDEX")
            || step.contains("USING COVERING INDEX")
    })
}

/// History filters, each with the index SQLite should search first.
fn indexed_filters() -> Vec<(HistoryFilter, &'static str)> {
    let text = |v: &str| Some(v.to_owned());
    vec![
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
        (
            HistoryFilter {
                contexts: Some(vec!["a".into(), "b".into()]),
                ..filter(None)
            },
            "call_contexts_recent (context=?)",
        ),
        (
            HistoryFilter {
                contexts: Some(vec!["a".into(), "b".into()]),
                record_id: Some(7),
                ..filter(None)
            },
            "USING INTEGER PRIMARY KEY (rowid=?)",
        ),
    ]
}

#[test]
fn history_and_route_search_indexes_in_sqlite() {
    TestDb::sqlite().with(|conn| {
        let Conn::Sqlite(conn) = conn else {
            unreachable!("a SQLite database")
        };
        for (f, index) in indexed_filters() {
            let (sql, args) = history_query(&f);
            let plan = plan(conn, &sql, args);
            assert!(indexed(&plan) && plan.contains(index), "{f:?}:\n{plan}");
        }
        let (route, args) = last_agent_query(&LastAgent {
            number: "555".into(),
            context: Some("a".into()),
        });
        let plan = plan(conn, &route, args);
        assert!(
            indexed(&plan) && plan.contains("calls_caller") && plan.contains("calls_ani"),
            "{plan}"
        );
    });
}

on_both_databases! {
    async fn queries_answer_within_their_bound_or_say_busy(db) {
        let queries = Queries::start(
            db.database.clone(),
            1,
            Duration::from_secs(2),
            &Report::default(),
        );
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
}

on_both_databases! {
    fn pruning_deletes_old_calls_with_their_contexts(db) {
        db.with(|conn| {
            let calls: Vec<Call> = (0..5)
                .map(|i| ended_call(&format!("4.{i}"), "a", "555", f64::from(i) * 100.0))
                .collect();
            record(conn, &calls).unwrap();
            assert_eq!(prune(conn, 250.0, 2).unwrap(), 2, "one batch at a time");
            assert_eq!(prune(conn, 250.0, 2).unwrap(), 1);
            assert_eq!(prune(conn, 250.0, 2).unwrap(), 0);
            let left = history(conn, &filter(Some("a"))).unwrap();
            assert_eq!(ids(&left), ["4.4", "4.3"]);
        });
        let contexts = db.rows("SELECT count(*) FROM call_contexts");
        assert_eq!(contexts, [[Datum::Int(2)]]);
    }
}

on_both_databases! {
    fn a_newer_schema_is_refused(db) {
        db.with(|_| ());
        db.raw(
            "PRAGMA user_version = 99",
            "INSERT INTO ctid_schema (version) VALUES (99)",
        );
        let err = aside(|| open(&db.database, StoreSync::Full).err()).expect("refused");
        assert!(err.reason.contains("schema version 99 is newer"), "{err}");
    }
}

on_both_databases! {
    fn records_keep_their_fields_and_history_filters_by_context(db) {
        db.with(|conn| {
            let mut calls = [
                ended_call("1.1", "a", "555111", 100.0),
                ended_call("1.2", "b", "555222", 200.0),
                ended_call("1.3", "a", "555333", 300.0),
            ];
            calls[0].queue = Some("q".into());
            calls[1].queue = Some("q".into());
            calls[0].media = Some(ctid_proto::calls::Media {
                codec: Some("g722".into()),
                sample_rate: Some(16000),
                transcoding: true,
                read_trans: Some("(ulaw@8000)->(slin@8000)->(g722@16000)".into()),
                write_trans: None,
            });
            let ids_written = record(conn, &calls).unwrap();
            assert_eq!(ids_written.len(), 3);
            assert!(ids_written.windows(2).all(|w| w[0] < w[1]), "{ids_written:?}");
            assert_eq!(
                record(conn, &calls[..1]).unwrap(),
                ids_written[..1],
                "recording twice keeps one row"
            );

            let a = history(conn, &filter(Some("a"))).unwrap();
            assert_eq!(ids(&a), ["1.3", "1.1"], "newest first, context a only");
            let row = &a[1];
            assert_eq!(row["caller"]["number"], "555111");
            assert_eq!(row["dnis"], "555");
            assert_eq!(row["direction"], "inbound");
            assert_eq!(row["agent"]["name"], "Alice");
            assert_eq!(row["duration"], 5.0);
            assert_eq!(row["hangup_cause"]["code"], 16);
            assert_eq!(row["record_id"], ids_written[0]);
            assert_eq!(row["ivr_path"], json!([]));
            assert_eq!(row["disposition"], Value::Null);
            assert_eq!(
                row["media"],
                json!({"codec": "g722", "sample_rate": 16000, "transcoding": true,
                    "read_trans": "(ulaw@8000)->(slin@8000)->(g722@16000)", "write_trans": null})
            );
            assert_eq!(a[0]["media"], Value::Null, "unknown media stays null");

            assert_eq!(history(conn, &filter(None)).unwrap().len(), 3);
            let by_number = HistoryFilter {
                number: Some("555222".into()),
                ..filter(Some("a"))
            };
            assert!(
                history(conn, &by_number).unwrap().is_empty(),
                "never another context's row"
            );
            let by_time = HistoryFilter {
                from: Some(150.0),
                to: Some(350.0),
                ..filter(None)
            };
            assert_eq!(ids(&history(conn, &by_time).unwrap()), ["1.3", "1.2"]);
            let in_context = HistoryFilter {
                from: Some(150.0),
                ..filter(Some("a"))
            };
            assert_eq!(ids(&history(conn, &in_context).unwrap()), ["1.3"]);
            let by_queue = HistoryFilter {
                queue: Some("q".into()),
                to: Some(250.0),
                ..filter(None)
            };
            assert_eq!(ids(&history(conn, &by_queue).unwrap()), ["1.2", "1.1"]);
            let by_agent = HistoryFilter {
                agent: Some("Alice".into()),
                limit: 1,
                ..filter(None)
            };
            assert_eq!(ids(&history(conn, &by_agent).unwrap()), ["1.3"]);
        });
        let rows = db.rows("SELECT count(*) FROM calls");
        assert_eq!(rows, [[Datum::Int(3)]]);
    }
}

on_both_databases! {
    fn a_query_over_several_contexts_lists_each_call_once(db) {
        db.with(|conn| {
            let mut shared = ended_call("2.1", "a", "555111", 100.0);
            shared.contexts.push("b".into());
            let mut calls = [
                shared,
                ended_call("2.2", "b", "555222", 200.0),
                ended_call("2.3", "c", "555333", 300.0),
            ];
            for call in &mut calls {
                call.queue = Some("q".into());
            }
            record(conn, &calls).unwrap();
            let of = |names: &[&str]| HistoryFilter {
                contexts: Some(names.iter().map(|n| (*n).to_owned()).collect()),
                ..filter(None)
            };
            let both = history(conn, &of(&["a", "b"])).unwrap();
            assert_eq!(ids(&both), ["2.2", "2.1"]);
            let narrowed = HistoryFilter {
                queue: Some("q".into()),
                ..of(&["b", "c"])
            };
            assert_eq!(ids(&history(conn, &narrowed).unwrap()), ["2.3", "2.2", "2.1"]);
            let paged = HistoryFilter {
                limit: 1,
                offset: 1,
                ..of(&["a", "b", "c"])
            };
            assert_eq!(ids(&history(conn, &paged).unwrap()), ["2.2"]);
            assert!(history(conn, &of(&[])).unwrap().is_empty(), "no context, no call");
        });
    }
}

on_both_databases! {
    fn a_nul_in_a_caller_name_does_not_lose_the_record(db) {
        db.with(|conn| {
            let mut call = ended_call("5.1", "a", "555", 1.0);
            call.caller.name = Some("Ann\0ie".into());
            record(conn, &[call]).unwrap();
            let rows = history(conn, &filter(Some("a"))).unwrap();
            let name = rows[0]["caller"]["name"].as_str().unwrap().replace('\0', "");
            assert_eq!(name, "Annie");
        });
    }
}

on_both_databases! {
    fn dispositions_are_for_the_agent_or_a_supervisor_of_the_context(db) {
        db.with(|conn| {
            record(conn, &[ended_call("2.1", "a", "555", 1.0)]).unwrap();
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
            let mut set = |by: Disposer, id: &str| {
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
            assert!(!set(who("bob", "a", false), "2.1"), "bob did not handle it");
            assert!(
                !set(who("boss", "b", true), "2.1"),
                "a supervisor of another context"
            );
            assert!(!set(who("boss", "a", true), "9.9"), "no such call");
            assert!(set(who("boss", "a", true), "2.1"));
            let asked = |context: Option<&str>| LastAgent {
                number: "555".into(),
                context: context.map(str::to_owned),
            };
            assert_eq!(
                last_agent(conn, &asked(Some("a"))).unwrap(),
                None,
                "no agent login on that call"
            );
            let row = &history(conn, &filter(Some("a"))).unwrap()[0];
            assert_eq!(row["disposition"]["code"], "sale");
            assert_eq!(row["disposition"]["by"], "boss");
            assert_eq!(row["disposition"]["at"], 9.0);
        });
    }
}

on_both_databases! {
    fn route_finds_the_last_agent_of_a_caller(db) {
        db.with(|conn| {
            let mut older = ended_call("6.1", "a", "555", 1.0);
            let mut newer = ended_call("6.2", "b", "555", 2.0);
            for (call, login) in [(&mut older, "alice"), (&mut newer, "bob")] {
                call.agent.as_mut().unwrap().login = Some(login.into());
            }
            record(conn, &[older, newer]).unwrap();
            let asked = |context: Option<&str>| LastAgent {
                number: "555".into(),
                context: context.map(str::to_owned),
            };
            assert_eq!(last_agent(conn, &asked(None)).unwrap().as_deref(), Some("bob"));
            assert_eq!(
                last_agent(conn, &asked(Some("a"))).unwrap().as_deref(),
                Some("alice")
            );
            assert_eq!(last_agent(conn, &asked(Some("c"))).unwrap(), None);
        });
    }
}
