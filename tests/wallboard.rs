//! The wallboard over CTI: supervisors of each tenant get their own queues' figures and
//! agents, agents are refused, and another tenant's queue never shows.

mod common;

use std::time::Duration;

use common::{ami_config_with, test_hash, Cti, Ctid, PATIENCE};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::{json, Value};

/// Two tenants, each with a queue, two agents and a supervisor: `default` (alice, bob,
/// carol; queue `support`) and `tenant-b` (dave, zoe, frank; queue `sales`).
fn directory() -> String {
    let mut d = String::from(
        "[[contexts]]\nname = \"default\"\ndialplan = [\"default\", \"internal\"]\n\
         [[contexts]]\nname = \"tenant-b\"\ndialplan = [\"tenant-b\", \"tenant-b-internal\"]\n\
         [[queues]]\nname = \"support\"\ncontext = \"default\"\n\
         [[queues]]\nname = \"sales\"\ncontext = \"tenant-b\"\n",
    );
    for (id, login, role, number, context, dialplan) in [
        (1, "alice", "agent", "1001", "default", "internal"),
        (2, "bob", "agent", "1002", "default", "internal"),
        (3, "carol", "supervisor", "1003", "default", "internal"),
        (4, "dave", "agent", "2001", "tenant-b", "tenant-b-internal"),
        (5, "zoe", "agent", "2002", "tenant-b", "tenant-b-internal"),
        (
            6,
            "frank",
            "supervisor",
            "2003",
            "tenant-b",
            "tenant-b-internal",
        ),
    ] {
        d.push_str(&format!(
            "[[users]]\nid = {id}\nlogin = \"{login}\"\npassword = \"{}\"\nfirstname = \"{login}\"\n\
             role = \"{role}\"\nline = {{ interface = \"PJSIP/{number}\", number = \"{number}\", \
             context = \"{context}\", dialplan = \"{dialplan}\" }}\n",
            test_hash(login),
        ));
    }
    d
}

async fn server() -> (PbxSim, Ctid, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = format!(
        "{}\n[wallboard]\nservice_level_seconds = 20\n",
        ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["cti"])
    );
    let ctid = Ctid::start_full(&config, &directory(), "info", &[]);
    let port = ctid.port("cti").await;
    ctid.wait_line("logged in as 'cti'").await;
    (sim, ctid, port)
}

async fn watcher(port: u16, login: &str) -> Cti {
    let mut c = Cti::connect(port).await;
    c.login(login).await;
    c.send(json!({"class": "wallboard", "commandid": 1})).await;
    let ok = c.reply().await;
    assert_eq!(
        (ok["class"].as_str(), ok["status"].as_str()),
        (Some("wallboard"), Some("ok")),
        "{ok}"
    );
    c
}

/// The next `queue_stats` for which `cond` holds; every one read is checked by `each`.
async fn board_until(c: &mut Cti, each: &dyn Fn(&Value), cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let m = tokio::time::timeout_at(deadline, c.reply())
            .await
            .expect("the board never got there");
        if m["class"] == "queue_stats" {
            each(&m);
            if cond(&m) {
                return m;
            }
        }
    }
}

fn queue<'a>(board: &'a Value, name: &str) -> &'a Value {
    board["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["name"] == name))
        .unwrap_or(&Value::Null)
}

fn agent_state<'a>(board: &'a Value, login: &str) -> &'a str {
    board["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["login"] == login))
        .and_then(|a| a["state"].as_str())
        .unwrap_or("")
}

#[tokio::test]
async fn supervisors_see_their_own_queues_live_and_agents_are_refused() {
    let (sim, _ctid, port) = server().await;
    let mut carol = watcher(port, "carol").await;
    let mut frank = watcher(port, "frank").await;
    let only_default = |b: &Value| {
        assert_eq!(b["context"], "default");
        let text = b.to_string();
        for other in ["sales", "dave", "zoe", "frank", "PJSIP/20"] {
            assert!(!text.contains(other), "{other} reached carol: {text}");
        }
    };
    let first = board_until(&mut carol, &only_default, |_| true).await;
    assert_eq!(queue(&first, "support")["waiting"], 0);
    assert_eq!(first["service_level_seconds"], 20.0);
    assert_eq!(agent_state(&first, "alice"), "logged_out");
    assert_eq!(agent_state(&first, "carol"), "idle");

    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    alice
        .send(json!({"class": "wallboard", "commandid": 5}))
        .await;
    let refused = alice.reply().await;
    assert_eq!(refused["error_string"], "unallowed", "{refused}");

    // A call into tenant-b's queue: frank sees it waiting, carol never hears of it.
    let (b_call, _) = sim.queue_call("tenant-b-internal", "sales", "0699", "B customer");
    board_until(&mut frank, &|_| {}, |b| queue(b, "sales")["waiting"] == 1).await;

    let (call, _) = sim.queue_call("internal", "support", "0611", "Customer");
    let waiting = board_until(&mut carol, &only_default, |b| {
        queue(b, "support")["waiting"] == 1
    })
    .await;
    assert!(queue(&waiting, "support")["oldest_since"]
        .as_f64()
        .is_some());
    assert_eq!(agent_state(&waiting, "alice"), "idle");

    sim.ring_member(call, "PJSIP/1001", "alice");
    board_until(&mut carol, &only_default, |b| {
        agent_state(b, "alice") == "ringing"
    })
    .await;
    sim.connect_member(call);
    let taken = board_until(&mut carol, &only_default, |b| {
        agent_state(b, "alice") == "on_call"
    })
    .await;
    let support = queue(&taken, "support");
    assert_eq!(
        (support["waiting"].as_u64(), support["answered"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(support["within_service_level"], 1);
    let alice_row = taken["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["login"] == "alice")
        .unwrap();
    assert_eq!(alice_row["call"]["caller"], "Customer");
    assert_eq!(alice_row["call"]["queue"], "support");

    sim.end_queue_call(call, Duration::from_secs(1));
    let (gone, _) = sim.queue_call("internal", "support", "0622", "Gone");
    board_until(&mut carol, &only_default, |b| {
        queue(b, "support")["waiting"] == 1
    })
    .await;
    sim.end_queue_call(gone, Duration::from_secs(1));
    let after = board_until(&mut carol, &only_default, |b| {
        queue(b, "support")["abandoned"] == 1 && agent_state(b, "alice") == "idle"
    })
    .await;
    let support = queue(&after, "support");
    assert_eq!(support["service_level"], 0.5);
    let periods = support["periods"].as_array().unwrap();
    assert_eq!(periods.len(), 1);
    assert_eq!(
        (periods[0][1].as_u64(), periods[0][2].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(support["history"].as_array().unwrap().len(), 30);
    assert!(after["lag_p99_ms"].as_f64().is_some(), "{after}");
    sim.end_queue_call(b_call, Duration::from_secs(1));
}
