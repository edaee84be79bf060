//! Call records: one row per ended call, written before clients hear it ended unless the
//! store stalls past its bound; dispositions; history; nothing reported ended with its
//! record id is lost to a kill -9; and a stalled store holds back no call event.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{ami_config_with, call_that_ends, console, ctid_id, two_tenant_calls, Cti, Ctid};
use ctid_pbxsim::calls::{CallPlan, Tenant};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::{json, Value};

/// Logs every AMI event ctid reads, so that a test knows when a call's hangup was read.
const AMI_DEBUG: (&str, &str) = ("RUST_LOG", "info,ctid_actors::ami=debug");

async fn server_with(env: &[(&str, &str)]) -> (PbxSim, Ctid, u16) {
    server_on(&["cti"], env).await
}

async fn server_on(listeners: &[&str], env: &[(&str, &str)]) -> (PbxSim, Ctid, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
        listeners,
    );
    let ctid = Ctid::start_with(&config, "info", env);
    let port = ctid.port("cti").await;
    ctid.wait_line("logged in as 'cti'").await;
    (sim, ctid, port)
}

fn plan(n: u64) -> CallPlan {
    CallPlan {
        limit: Some(n),
        caller_up: false,
        ..two_tenant_calls(50.0)
    }
}

/// The hungup events a client receives until it has `n` of them.
async fn hungups(c: &mut Cti, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = c.events(1).await.remove(0);
        if e["event"] == "hungup" {
            out.push(e);
        }
    }
    out
}

fn db(ctid: &Ctid) -> rusqlite::Connection {
    rusqlite::Connection::open(ctid.dir().join("data/ctid.sqlite")).unwrap()
}

/// Holds the database's write lock, as another writer would, until dropped.
fn lock_database(ctid: &Ctid) -> rusqlite::Connection {
    let conn = db(ctid);
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    conn
}

fn records_of(ctid: &Ctid, call: &str) -> i64 {
    db(ctid)
        .query_row(
            "SELECT count(*) FROM calls WHERE call_id = ?1",
            [call],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test]
async fn every_ended_call_has_one_record_with_its_fields() {
    let (sim, ctid, port) = server_with(&[]).await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    let _calls = sim.run_calls(plan(20));
    let ended = hungups(&mut alice, 10).await;
    let conn = db(&ctid);
    for _ in 0..100 {
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
            .unwrap();
        if rows == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 20, "one row per call of both tenants");
    for e in &ended {
        let call = &e["call"];
        let id = call["record_id"]
            .as_i64()
            .expect("hungup carries its record id");
        let row: (String, String, Option<String>, Option<String>, f64, f64, f64, String) = conn
            .query_row(
                "SELECT c.call_id, c.direction, c.caller_number, c.callee_number, c.created, c.ended, c.duration, x.context
                 FROM calls c JOIN call_contexts x USING (record_id) WHERE record_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
            )
            .unwrap();
        assert_eq!(row.0, call["id"].as_str().unwrap());
        assert_eq!(row.1, "internal");
        assert_eq!(row.2.as_deref(), call["caller"]["number"].as_str());
        assert_eq!(row.3.as_deref(), call["callee"]["number"].as_str());
        assert!((row.4 - call["created"].as_f64().unwrap()).abs() < 1e-3);
        assert!((row.5 - call["ended"].as_f64().unwrap()).abs() < 1e-3);
        assert!((row.6 - (row.5 - row.4)).abs() < 1e-6);
        assert_eq!(row.7, "default");
    }
}

#[tokio::test]
async fn dispositions_are_for_the_call_s_agents_and_supervisors() {
    let (sim, _ctid, port) = server_with(&[]).await;
    let mut clients = HashMap::new();
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        let mut c = Cti::connect(port).await;
        c.login(user).await;
        clients.insert(user, c);
    }
    let (call, _, _) = sim.place_call(
        "internal",
        "PJSIP",
        "1001",
        "1002",
        Duration::from_millis(50),
        Duration::from_millis(500),
    );
    let call = ctid_id(&call);
    let alice = clients.get_mut("alice").unwrap();
    loop {
        let e = alice.events(1).await.remove(0);
        if e["call"]["id"] == json!(call) && e["event"] == "bridged" {
            break;
        }
    }
    // During the call: its clients see it.
    let set = json!({"call_id": call, "code": "sale", "note": "2 licences"});
    let r = alice.request("disposition", set.clone(), 1).await;
    assert_eq!(r["response"], "ok", "{r}");
    let update = loop {
        let e = alice.events(1).await.remove(0);
        if e["call"]["disposition"].is_object() {
            break e;
        }
    };
    assert_eq!(update["call"]["disposition"]["code"], "sale");
    assert_eq!(update["call"]["disposition"]["by"], "alice");
    let end = hungups(alice, 1).await.remove(0);
    assert_eq!(end["call"]["disposition"]["note"], "2 licences");

    // After the call, in the records.
    for (user, expected) in [
        ("dave", "ko"),
        ("erin", "ko"),
        ("bob", "ok"),
        ("carol", "ok"),
    ] {
        let c = clients.get_mut(user).unwrap();
        let r = c
            .request(
                "disposition",
                json!({"call_id": call, "code": format!("by-{user}")}),
                2,
            )
            .await;
        assert_eq!(r["response"], expected, "{user}: {r}");
        if expected == "ko" {
            assert_eq!(r["error_string"], "unallowed", "{user}");
        }
    }
    let carol = clients.get_mut("carol").unwrap();
    let h = carol.request("history", json!({"number": "1002"}), 3).await;
    let row = &h["calls"][0];
    assert_eq!(row["id"], json!(call));
    assert_eq!(
        (
            row["disposition"]["code"].as_str(),
            row["disposition"]["by"].as_str()
        ),
        (Some("by-carol"), Some("carol"))
    );
}

#[tokio::test]
async fn history_filters_and_never_shows_another_context() {
    let (sim, _ctid, port) = server_with(&[]).await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    let mut dave = Cti::connect(port).await;
    dave.login("dave").await;
    let _calls = sim.run_calls(plan(12));
    hungups(&mut alice, 6).await;
    hungups(&mut dave, 6).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mine = alice.request("history", json!({}), 1).await;
    let rows = mine["calls"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows
        .iter()
        .all(|r| r["caller"]["number"].as_str().unwrap().starts_with("100")));
    let created: Vec<f64> = rows
        .iter()
        .map(|r| r["created"].as_f64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let theirs = dave.request("history", json!({"limit": 100}), 2).await;
    assert!(theirs["calls"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["caller"]["number"].as_str().unwrap().starts_with("200")));
    let probe = dave.request("history", json!({"number": "1001"}), 3).await;
    assert_eq!(
        probe["calls"],
        json!([]),
        "dave must not find alice's calls"
    );

    let limited = alice.request("history", json!({"limit": 2}), 4).await;
    assert_eq!(limited["calls"].as_array().unwrap().len(), 2);
    let split = rows[2]["created"].as_f64().unwrap();
    let older = alice.request("history", json!({"to": split}), 5).await;
    assert_eq!(older["calls"].as_array().unwrap().len(), 4);
    let number = rows[0]["caller"]["number"].as_str().unwrap();
    let by_number = alice.request("history", json!({"number": number}), 6).await;
    assert!(by_number["calls"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["caller"]["number"] == json!(number) || r["callee"]["number"] == json!(number)));
    let nobody = alice
        .request("history", json!({"queue": "support"}), 7)
        .await;
    assert_eq!(nobody["calls"], json!([]));

    let mut erin = Cti::connect(port).await;
    erin.login("erin").await;
    assert_eq!(
        erin.request("history", json!({}), 8).await["error_string"],
        "unallowed"
    );
}

#[tokio::test]
async fn a_kill_9_loses_no_call_reported_ended() {
    let (sim, mut ctid, port) =
        server_with(&[("CTID__STORE__WRITE_TIMEOUT", "30"), AMI_DEBUG]).await;
    let store = ctid.dir().join("data/ctid.sqlite");
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;

    // While another writer holds the database, within the bound, the hungup waits for its
    // record's commit.
    let held = lock_database(&ctid);
    let call = call_that_ends(&sim, &ctid).await;
    let early = tokio::time::timeout(Duration::from_millis(500), hungups(&mut alice, 1)).await;
    assert!(
        early.is_err(),
        "hungup sent before its record was on disk: {early:?}"
    );
    drop(held);
    let first = hungups(&mut alice, 1).await.remove(0);
    assert_eq!(first["call"]["id"], json!(call));
    assert!(first["call"]["record_id"].is_i64(), "{first}");

    let _calls = sim.run_calls(two_tenant_calls(200.0));
    let reported: Vec<(i64, String)> = [first]
        .into_iter()
        .chain(hungups(&mut alice, 60).await)
        .map(|e| {
            (
                e["call"]["record_id"].as_i64().unwrap(),
                e["call"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ctid.kill9().await;

    // A new ctid on the same database finds every one of them.
    let store = store.to_str().unwrap().to_owned();
    let (_sim2, _ctid2, port2) = server_with(&[("CTID__STORE__PATH", &store)]).await;
    let mut again = Cti::connect(port2).await;
    again.login("alice").await;
    let history = again.request("history", json!({"limit": 1000}), 1).await;
    let known: HashMap<i64, String> = history["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["record_id"].as_i64().unwrap(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (id, call) in &reported {
        assert_eq!(
            known.get(id),
            Some(call),
            "record {id} of call {call} was reported ended but is gone"
        );
    }
}

#[tokio::test]
async fn a_stalled_store_holds_a_hungup_back_only_up_to_its_bound() {
    let (sim, ctid, port) = server_with(&[("CTID__STORE__WRITE_TIMEOUT", "1"), AMI_DEBUG]).await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    let held = lock_database(&ctid);
    let call = call_that_ends(&sim, &ctid).await;
    let read = Instant::now();
    let end = hungups(&mut alice, 1).await.remove(0);
    let waited = read.elapsed();
    assert_eq!(end["call"]["id"], json!(call));
    assert!(end["call"]["record_id"].is_null(), "{end}");
    assert!(
        waited < Duration::from_secs(15),
        "hungup {waited:?} after its hangup, with a 1 s bound"
    );
    ctid.wait_line("not on disk within 1s (store.write_timeout)")
        .await;

    // The record is still queued: a disposition is taken now and written with it.
    let r = alice
        .request(
            "disposition",
            json!({"call_id": call, "code": "callback"}),
            1,
        )
        .await;
    assert_eq!(r["response"], "ok", "{r}");
    assert_eq!(records_of(&ctid, &call), 0, "the lock is still held");

    drop(held);
    ctid.wait_until("the record is written once the lock is gone", || {
        records_of(&ctid, &call) == 1
    })
    .await;
    ctid.wait_line("call records are written again").await;
    let h = alice.request("history", json!({}), 2).await;
    let row = &h["calls"][0];
    assert_eq!(row["id"], json!(call));
    assert_eq!(row["disposition"]["code"], "callback", "{row}");
}

#[tokio::test]
async fn records_past_the_queue_bound_are_dropped_counted_and_logged() {
    let (sim, ctid, port) = server_on(
        &["cti", "info"],
        &[
            ("CTID__STORE__QUEUE_MAX", "3"),
            ("CTID__STORE__WRITE_TIMEOUT", "0.2"),
        ],
    )
    .await;
    let info = ctid.port("info").await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    let held = lock_database(&ctid);
    let _calls = sim.run_calls(CallPlan {
        tenants: vec![Tenant::parse("internal:1001-1003").unwrap()],
        limit: Some(8),
        ..two_tenant_calls(20.0)
    });
    let ended = hungups(&mut alice, 8).await;
    assert!(
        ended.iter().all(|e| e["call"]["record_id"].is_null()),
        "{ended:?}"
    );
    let dropped = ctid
        .wait_lines("dropped: 3 writes already wait for the store", 5)
        .await;
    assert_eq!(dropped.len(), 5, "{dropped:?}");
    let stats = console(info, "stats").await;
    assert!(
        stats
            .iter()
            .any(|l| l.starts_with("drops: ") && l.ends_with(", 5 call records")),
        "{stats:?}"
    );

    drop(held);
    let rows = || -> i64 {
        db(&ctid)
            .query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
            .unwrap()
    };
    ctid.wait_until("the queued records are written", || rows() == 3)
        .await;
}

/// A resync that runs while an ended call's record is being written must not end the call
/// for its clients ahead of its `hungup` (which carries the record): one hungup, with it.
#[tokio::test]
async fn a_resync_during_a_records_write_ends_its_call_once() {
    let (sim, ctid, port) = server_with(&[
        ("CTID__STORE__WRITE_TIMEOUT", "30"),
        ("CTID__AMI__RESYNC_INTERVAL", "0.1"),
        AMI_DEBUG,
    ])
    .await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    let held = lock_database(&ctid);
    let call = call_that_ends(&sim, &ctid).await;
    let before = ctid.count("resynced with Asterisk");
    ctid.wait_until("two resyncs while the record waits", || {
        ctid.count("resynced with Asterisk") >= before + 2
    })
    .await;
    drop(held);
    let end = hungups(&mut alice, 1).await.remove(0);
    assert_eq!(end["call"]["id"], json!(call));
    assert!(end["call"]["record_id"].is_i64(), "{end}");
    // A second call ends after it: no second hungup of the first came in between.
    let next = call_that_ends(&sim, &ctid).await;
    let after = hungups(&mut alice, 1).await.remove(0);
    assert_eq!(
        after["call"]["id"],
        json!(next),
        "the first call ended twice"
    );
}
