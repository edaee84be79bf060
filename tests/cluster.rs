//! Cluster mode against the machine's real NATS JetStream: nodes share the work and take
//! over from each other, and clients see no gap in `seq`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::{clean, namespace, require_nats, table};
use common::{ami_table, config_with, Cti, Ctid, PATIENCE};
use ctid_pbxsim::calls::{CallPlan, Tenant};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::Value;

/// A node's settings: the simulator's AMI, the CTI listener, and its `[cluster]` table.
fn node(sim: &PbxSim, ns: &str, name: &str, roles: &[&str]) -> String {
    let ami = ami_table(
        "ami",
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
    );
    config_with(&ami, &["cti"]) + &table(ns, name, roles, "")
}

/// What a client saw of each call, and the `seq` of every event, in order.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    calls: BTreeMap<String, Vec<String>>,
}

impl Seen {
    fn take(&mut self, e: &Value) {
        if e["class"] != "call_event" {
            return;
        }
        self.seqs.push(e["seq"].as_u64().unwrap());
        let id = e["call"]["id"].as_str().unwrap().to_owned();
        let kind = e["event"].as_str().unwrap().to_owned();
        if kind != "updated" {
            self.calls.entry(id).or_default().push(kind);
        }
    }

    fn open(&self) -> BTreeSet<&String> {
        self.calls
            .iter()
            .filter(|(_, kinds)| kinds.last().map(String::as_str) != Some("hungup"))
            .map(|(id, _)| id)
            .collect()
    }

    fn assert_contiguous(&self) {
        for pair in self.seqs.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "a gap in seq: {:?}", self.seqs);
        }
    }
}

async fn lease(node: &Ctid, name: &str) {
    node.wait_line(&format!("lease for PBX default acquired by {name}"))
        .await;
}

/// The active ingest is killed mid-call: the standby takes the lease, logs in, resyncs and
/// goes on; the client (on the standby's edge) sees every call to its end, each milestone
/// once, with no gap in `seq`.
#[tokio::test]
async fn a_standby_takes_over_from_a_killed_ingest_mid_call() {
    require_nats();
    let ns = namespace();
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let mut a = Ctid::start(&node(&sim, &ns, "a", &["ingest", "edge"]), "info");
    lease(&a, "a").await;
    let b = Ctid::start(&node(&sim, &ns, "b", &["ingest", "edge"]), "info");
    let cti = b.port("cti").await;
    b.wait_line("caught up with its stream").await;
    let mut alice = Cti::connect(cti).await;
    alice.login("alice").await;

    // Calls of 1.8 s, four a second: some span the kill and end before the standby
    // holds the PBX, some start before and end after, some start during the takeover.
    let calls = sim.run_calls(CallPlan {
        rate: 4.0,
        ring: Duration::from_millis(300),
        talk: Duration::from_millis(1500),
        tenants: vec![Tenant::parse("internal:1001-1003").unwrap()],
        limit: Some(16),
        caller_up: false,
    });
    let mut seen = Seen::default();
    while seen.calls.len() < 6 {
        seen.take(&alice.events(1).await[0]);
    }
    assert!(!seen.open().is_empty(), "calls are live at the kill");
    a.kill9().await;
    lease(&b, "b").await;
    b.wait_line("resynced with Asterisk").await;
    // Every call the client saw ends for it, each milestone once.
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    let mut all_placed = None;
    loop {
        if calls.started() == 16 && all_placed.is_none() {
            all_placed = Some(tokio::time::Instant::now());
        }
        let over = all_placed.is_some_and(|t| t.elapsed() > Duration::from_secs(3));
        if over && seen.open().is_empty() {
            break;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left.min(Duration::from_millis(500)), alice.events(1)).await {
            Ok(e) => seen.take(&e[0]),
            Err(_) if left.is_zero() => panic!("calls still open: {:?}", seen.open()),
            Err(_) => {}
        }
    }
    b.wait_line("ended while no node held the PBX: hung up")
        .await;
    seen.assert_contiguous();
    for (id, kinds) in &seen.calls {
        let unique: BTreeSet<&String> = kinds.iter().collect();
        assert_eq!(unique.len(), kinds.len(), "call {id}: {kinds:?}");
        assert_eq!(
            kinds.first().map(String::as_str),
            Some("offered"),
            "call {id}"
        );
    }
    clean(&ns).await;
}
