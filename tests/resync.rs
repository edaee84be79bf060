//! Resyncs while calls are live: with resyncs running throughout, during ringing, answer,
//! bridge and hangup, each client still sees each call exactly as it happened, and no
//! milestone before the PBX made it.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{ami_config_with, Cti, Ctid};
use ctid_pbxsim::calls::{CallPlan, Tenant};
use ctid_pbxsim::{PbxSim, SimConfig};

const CALLS: usize = 20;

#[tokio::test]
async fn resyncs_during_live_calls_change_nothing_clients_see() {
    let sim = PbxSim::start(SimConfig {
        trace: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let config = ami_config_with(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0\nresync_interval = 0.04",
        &["cti"],
    );
    let ctid = Ctid::start(&config, "info");
    let cti = ctid.port("cti").await;
    ctid.wait_line("logged in as 'cti'").await;
    let mut alice = Cti::connect(cti).await;
    alice.login("alice").await;

    // The caller's channel is up while the callee rings: a resync that took an Up channel
    // for an answered call announced `answered` a ring early.
    let _calls = sim.run_calls(CallPlan {
        rate: 10.0,
        ring: Duration::from_millis(300),
        talk: Duration::from_millis(300),
        tenants: vec![Tenant::parse("internal:1001-1003").unwrap()],
        limit: Some(CALLS as u64),
        caller_up: true,
    });
    let mut seen: HashMap<String, Vec<(String, Instant)>> = HashMap::new();
    let mut ended = 0;
    while ended < CALLS {
        let e = alice.events(1).await.remove(0);
        let kind = e["event"].as_str().unwrap().to_owned();
        let id = e["call"]["id"].as_str().unwrap().to_owned();
        ended += usize::from(kind == "hungup");
        if kind != "updated" {
            seen.entry(id).or_default().push((kind, Instant::now()));
        }
    }
    let resyncs = ctid.count("resynced with Asterisk");
    assert!(resyncs >= 10, "only {resyncs} resyncs ran during the calls");
    let trace = sim.trace();
    let trace = trace.lock().unwrap();
    assert_eq!(seen.len(), CALLS, "{seen:?}");
    for (id, events) in &seen {
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            ["offered", "ringing", "answered", "bridged", "hungup"],
            "call {id}"
        );
        let sim_id = id.trim_start_matches("default:");
        let answered_by_pbx = trace[sim_id][1].expect("the PBX answered the call");
        let (_, told) = events[2];
        assert!(
            told >= answered_by_pbx,
            "call {id} was told answered {:?} before the callee answered",
            answered_by_pbx - told
        );
    }
}
