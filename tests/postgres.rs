//! Call records in PostgreSQL (`store.backend = "postgres"`), through real sockets: ctid
//! records ended calls, takes dispositions, answers history and FastAGI's route from the
//! database; check-config checks and migrates it; its password never reaches a log line.

mod common;

use std::process::Command;
use std::time::Duration;

use common::agi::{agi, request};
use common::postgres::{borrowed, Schema};
use common::{ami_config_with, ctid_id, fixture, test_hash, two_tenant_calls, Cti, Ctid};
use ctid_pbxsim::calls::CallPlan;
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::{json, Value};

async fn server(env: &[(&str, &str)], directory: Option<String>) -> (PbxSim, Ctid, u16, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
        &["cti", "fagi"],
    );
    let ctid = match directory {
        Some(d) => Ctid::start_full(&config, &d, "info", env),
        None => Ctid::start_with(&config, "info", env),
    };
    let (cti, fagi) = (ctid.port("cti").await, ctid.port("fagi").await);
    ctid.wait_line("logged in as 'cti'").await;
    (sim, ctid, cti, fagi)
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

fn ids(history: &Value) -> Vec<String> {
    history["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn records_dispositions_and_history_live_in_postgresql() {
    let schema = Schema::new();
    let url = schema.url_with_password("s3cret-pw");
    let env = [
        ("CTID__STORE__BACKEND", "postgres"),
        ("CTID__STORE__URL", url.as_str()),
    ];
    let (sim, ctid, port, _) = server(&env, None).await;
    let mut clients = Vec::new();
    for user in ["alice", "bob", "carol", "dave"] {
        let mut c = Cti::connect(port).await;
        c.login(user).await;
        clients.push(c);
    }
    let [alice, bob, carol, dave] = &mut clients[..] else {
        unreachable!()
    };
    let _calls = sim.run_calls(CallPlan {
        limit: Some(12),
        caller_up: false,
        ..two_tenant_calls(50.0)
    });
    let ended = hungups(alice, 6).await;
    hungups(dave, 6).await;
    ctid.wait_until("every call has its row", || {
        schema.count("SELECT count(*) FROM calls") == 12
    })
    .await;

    for e in &ended {
        let call = &e["call"];
        let id = call["record_id"]
            .as_i64()
            .expect("hungup carries its record id");
        let row = &schema.rows(&format!(
            "SELECT c.call_id, c.caller_number, x.context, c.media FROM calls c
             JOIN call_contexts x USING (record_id) WHERE record_id = {id}"
        ))[0];
        assert_eq!(row[0].as_deref(), call["id"].as_str());
        assert_eq!(row[1].as_deref(), call["caller"]["number"].as_str());
        assert_eq!(row[2].as_deref(), Some("default"));
        let media: Value = row[3]
            .as_deref()
            .map_or(Value::Null, |m| serde_json::from_str(m).unwrap());
        assert_eq!(
            media, call["media"],
            "the record keeps what the hungup showed"
        );
    }

    let mine = alice.request("history", json!({}), 1).await;
    let rows = mine["calls"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{mine}");
    assert!(rows
        .iter()
        .all(|r| r["caller"]["number"].as_str().unwrap().starts_with("100")));
    let created: Vec<f64> = rows
        .iter()
        .map(|r| r["created"].as_f64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let probe = dave.request("history", json!({"number": "1001"}), 2).await;
    assert_eq!(
        probe["calls"],
        json!([]),
        "dave must not find alice's calls"
    );
    let limited = alice.request("history", json!({"limit": 2}), 3).await;
    assert_eq!(ids(&limited), ids(&mine)[..2]);
    let split = rows[2]["created"].as_f64().unwrap();
    let older = alice.request("history", json!({"to": split}), 4).await;
    assert_eq!(ids(&older), ids(&mine)[2..]);
    let number = rows[0]["caller"]["number"].as_str().unwrap();
    let by_number = alice.request("history", json!({"number": number}), 5).await;
    assert!(!ids(&by_number).is_empty());
    assert!(by_number["calls"].as_array().unwrap().iter().all(|r| {
        r["caller"]["number"] == json!(number) || r["callee"]["number"] == json!(number)
    }));

    // A call from alice to bob: they and a supervisor of their context may set its
    // disposition, nobody else.
    let (placed, _, _) = sim.place_call(
        "internal",
        "PJSIP",
        "1001",
        "1002",
        Duration::from_millis(50),
        Duration::from_millis(100),
    );
    let call_id = ctid_id(&placed);
    loop {
        let e = hungups(alice, 1).await.remove(0);
        if e["call"]["id"] == json!(call_id) {
            assert!(e["call"]["record_id"].is_i64(), "{e}");
            break;
        }
    }
    for (who, c, expected) in [
        ("dave", &mut *dave, "ko"),
        ("alice", &mut *alice, "ok"),
        ("bob", &mut *bob, "ok"),
        ("carol", &mut *carol, "ok"),
    ] {
        let r = c
            .request(
                "disposition",
                json!({"call_id": call_id, "code": format!("by-{who}")}),
                10,
            )
            .await;
        assert_eq!(r["response"], expected, "{who}: {r}");
        if expected == "ko" {
            assert_eq!(r["error_string"], "unallowed", "{who}");
        }
    }
    let stored = schema.rows(&format!(
        "SELECT disposition_code, disposition_by FROM calls WHERE call_id = '{call_id}'"
    ));
    assert_eq!(
        stored,
        [[Some("by-carol".to_owned()), Some("carol".to_owned())]]
    );
    let h = carol.request("history", json!({"limit": 50}), 11).await;
    let row = h["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(call_id))
        .unwrap();
    assert_eq!(row["disposition"]["code"], "by-carol");

    assert!(ctid
        .lines()
        .iter()
        .any(|l| l.contains("call records: postgres://postgres@127.0.0.1:5432/test")));
    let leaks: Vec<String> = ctid
        .lines()
        .into_iter()
        .filter(|l| l.contains("s3cret-pw"))
        .collect();
    assert!(leaks.is_empty(), "the password was logged: {leaks:?}");
}

#[tokio::test]
async fn route_names_the_last_agent_from_postgresql() {
    let schema = Schema::new();
    let env = schema.env();
    // Phones of the recordings are Local channels: alice's line is Local/1001@default.
    let directory = format!(
        "[[contexts]]\nname = \"default\"\ndialplan = [\"default\", \"internal\"]\n\
         [[queues]]\nname = \"support\"\ncontext = \"default\"\n\
         [[users]]\nid = 1\nlogin = \"alice\"\npassword = \"{}\"\n\
         line = {{ interface = \"Local/1001@default\", number = \"1001\", context = \"default\", dialplan = \"internal\" }}\n",
        test_hash("alice")
    );
    let (sim, _ctid, cti, fagi) = server(&borrowed(&env), Some(directory)).await;
    let mut alice = Cti::connect(cti).await;
    alice.login("alice").await;
    sim.replay(&fixture("ami/queue_call.txt"));
    loop {
        let e = alice.events(1).await.remove(0);
        if e["event"] == "hungup" && e["call"]["record_id"].is_i64() {
            break;
        }
    }
    let commands = agi(fagi, &request("route", "5551234", "Customer"), "").await;
    assert!(
        commands.contains(&"SET VARIABLE CTID_LAST_AGENT \"alice\"".to_owned()),
        "{commands:?}"
    );
    assert_eq!(
        schema.count("SELECT count(*) FROM calls WHERE agent_login = 'alice'"),
        1
    );
}

fn check_config(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.toml"), "").unwrap();
    let path = dir.path().join("ctid.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ctid"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_config_migrates_a_reachable_database_and_names_an_unreachable_one() {
    let schema = Schema::new();
    let settings = |url: &str| {
        format!(
            "[ami]\nsecret = \"x\"\n[directory]\npath = \"directory.toml\"\n\
             [store]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
        )
    };
    let (code, report) = check_config(&settings(&schema.url()));
    assert_eq!(code, Some(0), "{report}");
    assert!(
        schema.count("SELECT max(version)::BIGINT FROM ctid_schema") >= 2,
        "migrated"
    );

    let closed = "postgres://postgres:s3cret-pw@127.0.0.1:1/test";
    let (code, report) = check_config(&settings(closed));
    assert_eq!(code, Some(78), "{report}");
    assert!(
        report.contains("store.url: postgres://postgres@127.0.0.1:1/test: "),
        "{report}"
    );
    assert!(!report.contains("s3cret-pw"), "{report}");
}
