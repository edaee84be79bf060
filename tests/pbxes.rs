//! Two PBXes behind one ctid, through real sockets: each PBX's calls reach exactly the
//! sessions of the contexts they touch, commands reach only the PBX they concern, FastAGI
//! requests find their PBX, and one PBX lost and back leaves the other's sessions alone.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::agi::{agi, agi_from, request};
use common::{actions_named, ami_table, config_with, fixture, test_hash, Cti, Ctid};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::{json, Value};

/// Context `alpha` spans both PBXes: alice and bob on `a` (the recordings' Local/1001 and
/// Local/1002), carol on `b` (PJSIP/3001). Context `gamma` has the same interfaces as
/// alice and bob, on `b`: dave and frank.
fn directory() -> String {
    let mut d = String::from(
        "[[contexts]]\nname = \"alpha\"\ndialplan = [\"a:default\", \"a:internal\"]\n\
         [[contexts]]\nname = \"gamma\"\ndialplan = [\"b:default\", \"b:internal\"]\n",
    );
    for (id, login, interface, number, context, pbx) in [
        (1, "alice", "Local/1001@default", "1001", "alpha", "a"),
        (2, "bob", "Local/1002@default", "1002", "alpha", "a"),
        (3, "carol", "PJSIP/3001", "3001", "alpha", "b"),
        (4, "dave", "Local/1001@default", "1001", "gamma", "b"),
        (5, "frank", "Local/1002@default", "1002", "gamma", "b"),
    ] {
        d.push_str(&format!(
            "[[users]]\nid = {id}\nlogin = \"{login}\"\npassword = \"{}\"\nfirstname = \"{login}\"\n\
             line = {{ interface = \"{interface}\", number = \"{number}\", context = \"{context}\", dialplan = \"internal\", pbx = \"{pbx}\" }}\n",
            test_hash(login)
        ));
    }
    d
}

struct Two {
    a: PbxSim,
    b: PbxSim,
    ctid: Ctid,
    cti: u16,
}

async fn two(listeners: &[&str], extra_b: &str) -> Two {
    let a = PbxSim::start(SimConfig::default()).await.unwrap();
    let b = PbxSim::start(SimConfig::default()).await.unwrap();
    let tables = ami_table(
        "pbx.a",
        a.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
    ) + &ami_table(
        "pbx.b",
        b.addr().port(),
        &format!("secret = \"ctipass\"\nping_interval = 0\n{extra_b}"),
    );
    let ctid = Ctid::start_full(&config_with(&tables, listeners), &directory(), "info", &[]);
    let cti = ctid.port("cti").await;
    ctid.wait_line("AMI a (127.0.0.1").await;
    ctid.wait_lines("resynced with Asterisk", 2).await;
    Two { a, b, ctid, cti }
}

async fn login(port: u16, user: &str) -> Cti {
    let mut c = Cti::connect(port).await;
    c.login(user).await;
    c
}

/// Every call event until the calls of `ended` have all hung up; each event's call must
/// be one of them.
async fn calls_until_ended(c: &mut Cti, ended: &[&str]) -> Vec<Value> {
    let (mut out, mut open): (Vec<Value>, BTreeSet<&str>) =
        (Vec::new(), ended.iter().copied().collect());
    while !open.is_empty() {
        let e = c.events(1).await.remove(0);
        let id = e["call"]["id"].as_str().unwrap().to_owned();
        assert!(
            ended.contains(&id.as_str()),
            "call {id} is none of {ended:?}: {e}"
        );
        if e["event"] == "hungup" {
            open.remove(id.as_str());
        }
        out.push(e);
    }
    out
}

#[tokio::test]
async fn each_pbx_calls_reach_exactly_the_contexts_they_touch() {
    let t = two(&["cti"], "").await;
    let (mut alice, mut carol, mut dave) = (
        login(t.cti, "alice").await,
        login(t.cti, "carol").await,
        login(t.cti, "dave").await,
    );
    // The same recording on both PBXes: the same Linkedid, two calls.
    t.a.replay(&fixture("ami/bridged_call.txt"));
    t.b.replay(&fixture("ami/bridged_call.txt"));
    let (on_b, _, _) = t.b.place_call(
        "internal",
        "PJSIP",
        "3001",
        "3002",
        Duration::from_millis(50),
        Duration::from_millis(100),
    );
    let on_b = format!("b:{on_b}");
    let alpha = ["a:1795348189.2", on_b.as_str()];
    for c in [&mut alice, &mut carol] {
        let events = calls_until_ended(c, &alpha).await;
        let pbxes: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| e["call"]["pbx"].as_str())
            .collect();
        assert_eq!(pbxes, BTreeSet::from(["a", "b"]), "alpha spans both PBXes");
    }
    let events = calls_until_ended(&mut dave, &["b:1795348189.2"]).await;
    assert_eq!(events[0]["call"]["contexts"], json!(["gamma"]));

    // Lists carry the PBX of each item, and the PBXes of the context with their state.
    dave.send(json!({"class": "getlist", "function": "updateconfig", "listname": "phones", "commandid": 1}))
        .await;
    let phones = dave.reply().await;
    assert_eq!(
        phones["config"]["Local/1001@default"]["pbx"], "b",
        "{phones}"
    );
    alice
        .send(json!({"class": "getlist", "function": "updatestatus", "listname": "pbxes", "commandid": 2}))
        .await;
    let pbxes = alice.reply().await;
    assert_eq!(pbxes["status"]["a"]["state"], "up", "{pbxes}");
    assert_eq!(pbxes["status"]["b"]["state"], "up", "{pbxes}");
    dave.send(
        json!({"class": "getlist", "function": "listid", "listname": "pbxes", "commandid": 3}),
    )
    .await;
    assert_eq!(
        dave.reply().await["list"],
        json!(["b"]),
        "gamma uses b only"
    );
}

/// Runs an `ipbxcommand` and waits for its outcome.
async fn command(c: &mut Cti, mut body: Value, id: u64) -> Value {
    body["class"] = json!("ipbxcommand");
    body["commandid"] = json!(id);
    c.send(body).await;
    loop {
        let m = c.reply().await;
        if m["replyid"] == json!(id)
            && (m.get("response").is_some() || m.get("error_string").is_some())
        {
            return m;
        }
    }
}

#[tokio::test]
async fn commands_reach_only_the_pbx_they_concern() {
    let t = two(&["cti"], "").await;
    let (mut alice, mut carol) = (login(t.cti, "alice").await, login(t.cti, "carol").await);

    let r = command(
        &mut alice,
        json!({"command": "dial", "destination": "1002"}),
        1,
    )
    .await;
    assert_eq!(r["response"], "ok", "{r}");
    let r = command(
        &mut carol,
        json!({"command": "dial", "destination": "3002"}),
        2,
    )
    .await;
    assert_eq!(r["response"], "ok", "{r}");
    let originates = |sim: &PbxSim| -> Vec<String> {
        sim.actions()
            .iter()
            .filter(|a| a.get("Action") == Some("Originate"))
            .map(|a| a.get("Channel").unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(originates(&t.a), ["Local/1001@default"]);
    assert_eq!(originates(&t.b), ["PJSIP/3001"]);

    // A hangup goes to the PBX of the call.
    let (id, _, _) = t.b.place_call(
        "internal",
        "PJSIP",
        "3001",
        "3002",
        Duration::from_millis(50),
        Duration::from_secs(60),
    );
    let id = format!("b:{id}");
    loop {
        let e = carol.events(1).await.remove(0);
        if e["call"]["id"] == json!(id) && e["event"] == "bridged" {
            break;
        }
    }
    let r = command(&mut carol, json!({"command": "hangup", "call_id": id}), 3).await;
    assert_eq!(r["response"], "ok", "{r}");
    assert_eq!(actions_named(&t.a, "Hangup"), 0);
    assert!(actions_named(&t.b, "Hangup") >= 1);
    // A call id that names no PBX of ctid is nobody's.
    let r = command(
        &mut carol,
        json!({"command": "hangup", "call_id": "z:1.1"}),
        4,
    )
    .await;
    assert_eq!(r["error_string"], "unallowed", "{r}");
}

#[tokio::test]
async fn fastagi_requests_find_their_pbx() {
    let t = two(&["cti", "fagi"], "fagi_from = [\"127.0.0.2\"]").await;
    let fagi = t.ctid.port("fagi").await;
    let (mut alice, mut dave) = (login(t.cti, "alice").await, login(t.cti, "dave").await);
    let ok = "SET VARIABLE CTID_AGI_STATUS \"ok\"";

    // From 127.0.0.1, which no PBX lists, a request must name its PBX.
    let refused = agi(fagi, &request("attach?account=7", "1", "x"), "").await;
    assert_eq!(
        refused[0], "SET VARIABLE CTID_AGI_STATUS \"error\"",
        "{refused:?}"
    );
    assert!(
        refused[1].contains("no PBX for a request from 127.0.0.1"),
        "{refused:?}"
    );
    let named = agi(fagi, &request("attach?account=42&pbx=a", "1", "x"), "").await;
    assert_eq!(named.last().unwrap(), ok);
    // From b's address.
    let listed = agi_from(
        [127, 0, 0, 2],
        fagi,
        &request("attach?account=99", "1", "x"),
        "",
    )
    .await;
    assert_eq!(listed.last().unwrap(), ok);

    // The same call on both PBXes: each got its own data.
    t.a.replay(&fixture("ami/agi_call.txt"));
    t.b.replay(&fixture("ami/agi_call.txt"));
    let on_a = calls_until_ended(&mut alice, &["a:1795348247.38"]).await;
    assert!(
        on_a.iter()
            .all(|e| e["call"]["attached"]["account"] == "42"),
        "{:?}",
        on_a[0]
    );
    let on_b = calls_until_ended(&mut dave, &["b:1795348247.38"]).await;
    assert!(
        on_b.iter()
            .all(|e| e["call"]["attached"]["account"] == "99"),
        "{:?}",
        on_b[0]
    );
}

#[tokio::test]
async fn one_pbx_lost_and_back_leaves_the_other_alone_and_resyncs_its_calls() {
    let t = two(&["cti"], "").await;
    let (mut alice, mut dave) = (login(t.cti, "alice").await, login(t.cti, "dave").await);
    let (on_a, _, _) = t.a.place_call(
        "internal",
        "Local",
        "1001@default",
        "1002",
        Duration::from_millis(50),
        Duration::from_millis(1500),
    );
    let on_a = format!("a:{on_a}");
    loop {
        let e = alice.events(1).await.remove(0);
        if e["call"]["id"] == json!(on_a) && e["event"] == "bridged" {
            break;
        }
    }
    // PBX a goes silent: its link drops, and the call ends while nobody hears it.
    t.a.set_muted(true);
    t.a.drop_connections();
    let down = alice.reply().await;
    assert_eq!(
        (
            down["class"].as_str(),
            down["pbx"].as_str(),
            down["state"].as_str()
        ),
        (Some("pbx_status"), Some("a"), Some("down")),
        "{down}"
    );

    // PBX b goes on for its own contexts meanwhile.
    let (on_b, _, _) = t.b.place_call(
        "internal",
        "Local",
        "1001@default",
        "1002",
        Duration::from_millis(50),
        Duration::from_millis(100),
    );
    let on_b = format!("b:{on_b}");
    calls_until_ended(&mut dave, &[on_b.as_str()]).await;

    // PBX a is back: its call, which ended meanwhile, ends for alice, then a is up.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    t.a.set_muted(false);
    let ended = calls_until_ended(&mut alice, &[on_a.as_str()]).await;
    assert_eq!(ended.last().unwrap()["event"], "hungup");
    let up = alice.reply().await;
    assert_eq!(
        (
            up["class"].as_str(),
            up["pbx"].as_str(),
            up["state"].as_str()
        ),
        (Some("pbx_status"), Some("a"), Some("up")),
        "{up}"
    );
    // gamma does not use a: dave heard nothing of it; his next call comes first.
    let (next, _, _) = t.b.place_call(
        "internal",
        "Local",
        "1001@default",
        "1002",
        Duration::from_millis(50),
        Duration::from_millis(100),
    );
    let next = format!("b:{next}");
    dave.send(json!({"class": "keepalive", "commandid": 9}))
        .await;
    assert_eq!(
        dave.reply().await["class"],
        "keepalive",
        "no pbx_status for dave"
    );
    calls_until_ended(&mut dave, &[next.as_str()]).await;
}
