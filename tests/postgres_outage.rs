//! Stops and starts the machine's PostgreSQL server, which other test suites share: the
//! only test that does, alone in its binary so that no other test of this suite runs
//! meanwhile, and kept short. A guard starts the server again whatever happens.
//!
//! While PostgreSQL is down, ended calls' records queue in ctid and their `hungup` events
//! go out within `store.write_timeout`; once it is back every record is written, once.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::postgres::{borrowed, Schema};
use common::{ami_config_with, call_that_ends, Cti, Ctid, PATIENCE};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::{json, Value};

/// The PostgreSQL cluster of this machine (`/etc/postgresql/<version>/main`).
fn cluster_version() -> String {
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("no /etc/postgresql: PostgreSQL is not installed here (scripts/test installs it)")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    match &versions[..] {
        [one] => one.clone(),
        other => panic!("one PostgreSQL cluster expected in /etc/postgresql, found {other:?}"),
    }
}

fn pg_ctlcluster(version: &str, action: &str) -> bool {
    Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, "main", action])
        .status()
        .is_ok_and(|s| s.success())
}

fn answers() -> bool {
    Command::new("pg_isready")
        .args(["-q", "-h", "127.0.0.1", "-p", "5432"])
        .status()
        .is_ok_and(|s| s.success())
}

/// PostgreSQL stopped; started again (and answering) when this ends, or is dropped.
struct Outage {
    version: String,
    over: bool,
}

impl Outage {
    fn begin() -> Outage {
        let version = cluster_version();
        let outage = Outage {
            version,
            over: false,
        };
        assert!(
            pg_ctlcluster(&outage.version, "stop"),
            "cannot stop PostgreSQL"
        );
        outage
    }

    fn end(&mut self) {
        if self.over {
            return;
        }
        self.over = true;
        let started = pg_ctlcluster(&self.version, "start");
        let since = Instant::now();
        while !answers() {
            assert!(
                since.elapsed() < PATIENCE,
                "PostgreSQL did not come back (started: {started}); start it with \
                 `pg_ctlcluster --skip-systemctl-redirect {} main start`",
                self.version
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.end();
    }
}

async fn hungup_of(c: &mut Cti, call: &str) -> Value {
    loop {
        let e = c.events(1).await.remove(0);
        if e["event"] == "hungup" && e["call"]["id"] == json!(call) {
            return e;
        }
    }
}

#[tokio::test]
async fn stopping_the_machine_s_postgresql_queues_records_until_it_is_back() {
    let schema = Schema::new();
    let mut env = schema.env();
    env.push(("CTID__STORE__WRITE_TIMEOUT".into(), "0.5".into()));
    env.push(("RUST_LOG".into(), "info,ctid_actors::ami=debug".into()));
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
        &["cti"],
    );
    let ctid = Ctid::start_with(&config, "info", &borrowed(&env));
    let port = ctid.port("cti").await;
    ctid.wait_line("logged in as 'cti'").await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    let before = call_that_ends(&sim, &ctid).await;
    let end = hungup_of(&mut alice, &before).await;
    assert!(end["call"]["record_id"].is_i64(), "{end}");

    let mut outage = Outage::begin();
    let mut during = Vec::new();
    for _ in 0..3 {
        let call = call_that_ends(&sim, &ctid).await;
        let read = Instant::now();
        let end = hungup_of(&mut alice, &call).await;
        assert!(end["call"]["record_id"].is_null(), "{end}");
        assert!(
            read.elapsed() < Duration::from_secs(15),
            "hungup {:?} after its hangup, with a 0.5 s bound",
            read.elapsed()
        );
        during.push(call);
    }
    let h = alice.request("history", json!({}), 1).await;
    assert_eq!(h["error_string"], "store_unavailable", "{h}");
    let r = alice
        .request(
            "disposition",
            json!({"call_id": during[0], "code": "callback"}),
            2,
        )
        .await;
    assert_eq!(
        r["response"], "ok",
        "a queued record takes its disposition: {r}"
    );
    outage.end();

    let all: Vec<&String> = [&before].into_iter().chain(&during).collect();
    ctid.wait_until("every record is written once", || {
        schema.count("SELECT count(*) FROM calls") == all.len() as i64
    })
    .await;
    for call in &all {
        let rows = schema.count(&format!(
            "SELECT count(*) FROM calls WHERE call_id = '{call}'"
        ));
        assert_eq!(rows, 1, "{call}");
    }
    ctid.wait_line("call records are written again").await;
    let h = alice.request("history", json!({}), 3).await;
    let row = h["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(during[0]))
        .unwrap_or_else(|| panic!("{h}"));
    assert_eq!(row["disposition"]["code"], "callback");
}
