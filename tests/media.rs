//! Media and event times through real sockets: a simulated call is answered and its
//! clients learn its codec from Asterisk's `Status`; events carry the PBX's time when it
//! stamps them, are `stale` when old, and `replayed` (not stale) on resume.

mod common;

use std::time::Duration;

use common::{ami_config_with, console, ctid_id, Cti, Ctid};
use ctid_pbxsim::{PbxSim, SimConfig};
use ctid_proto::cti::timenow;
use ctid_proto::rfc3339::format_millis;
use serde_json::{json, Value};

const TALK: Duration = Duration::from_secs(3600);

async fn start(sim: SimConfig, extra: &str) -> (PbxSim, Ctid, u16, u16) {
    let sim = PbxSim::start(sim).await.unwrap();
    let config = ami_config_with(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
        &["cti", "info"],
    ) + extra;
    let ctid = Ctid::start(&config, "info");
    let (cti, info) = (ctid.port("cti").await, ctid.port("info").await);
    ctid.wait_line("logged in as 'cti'").await;
    (sim, ctid, cti, info)
}

/// Places a call from `from` to `to` (tenant `default`); returns its ctid id.
fn call(sim: &PbxSim, from: &str, to: &str) -> String {
    let ring = Duration::from_millis(50);
    ctid_id(&sim.place_call("internal", "PJSIP", from, to, ring, TALK).0)
}

/// Reads call events until `done` holds for one of call `id`; returns every event of
/// that call read meanwhile, that one last.
async fn until(c: &mut Cti, id: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let e = c.events(1).await.remove(0);
        if e["call"]["id"] != json!(id) {
            continue;
        }
        let last = done(&e);
        seen.push(e);
        if last {
            return seen;
        }
    }
}

fn kinds(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["event"] == kind).count()
}

#[tokio::test]
async fn an_answered_call_gets_the_simulators_codec_and_keeps_it_in_its_record() {
    let codecs = ["g722", "ulaw"].map(String::from).to_vec();
    let (sim, _ctid, port, info) = start(
        SimConfig {
            codecs,
            ..SimConfig::default()
        },
        "",
    )
    .await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;

    // The phones' codec: nothing to translate.
    let plain = call(&sim, "1001", "1002");
    let told = until(&mut alice, &plain, |e| !e["call"]["media"].is_null()).await;
    let learnt = told.last().unwrap();
    assert!(
        matches!(learnt["event"].as_str(), Some("updated" | "bridged")),
        "{learnt}"
    );
    assert!(told[..told.len() - 1]
        .iter()
        .all(|e| e["call"]["media"].is_null()));
    assert_eq!(
        learnt["call"]["media"],
        json!({"codec": "g722", "sample_rate": 16000, "transcoding": false,
               "read_trans": null, "write_trans": null})
    );
    assert_eq!((kinds(&told, "offered"), kinds(&told, "answered")), (1, 1));

    // The second caller is on ulaw: Asterisk translates to the phone's g722.
    let translated = call(&sim, "1003", "1001");
    let told = until(&mut alice, &translated, |e| !e["call"]["media"].is_null()).await;
    assert_eq!(
        told.last().unwrap()["call"]["media"],
        json!({"codec": "ulaw", "sample_rate": 8000, "transcoding": true,
               "read_trans": "(ulaw@8000)->(slin@8000)->(g722@16000)",
               "write_trans": "(g722@16000)->(slin@16000)->(ulaw@8000)"})
    );
    let asked: Vec<String> = sim
        .actions()
        .iter()
        .filter(|a| a.get("Action") == Some("Status"))
        .filter_map(|a| a.get("Channel").map(str::to_owned))
        .collect();
    assert!(
        asked.len() >= 4,
        "a Status per channel of each call: {asked:?}"
    );

    sim.hang_up_all(Duration::ZERO).await.unwrap();
    let mut ended = Vec::new();
    while ended.len() < 2 {
        let e = alice.events(1).await.remove(0);
        assert!(
            !matches!(e["event"].as_str(), Some("offered" | "answered")),
            "{e}"
        );
        if e["event"] == "hungup" {
            ended.push(e);
        }
    }
    for e in &ended {
        assert!(!e["call"]["media"].is_null(), "{e}");
        assert!(e["call"]["record_id"].is_i64(), "{e}");
    }
    alice
        .send(json!({"class": "history", "commandid": 9}))
        .await;
    let history = alice.reply().await;
    let media: Vec<&Value> = history["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["media"]["codec"])
        .collect();
    assert_eq!(media, [&json!("ulaw"), &json!("g722")], "{history}");

    let stats = console(info, "stats").await;
    assert!(
        stats
            .iter()
            .any(|l| l == "media: g722 1, ulaw transcoded 1 (calls by codec)"),
        "{stats:?}"
    );
}

#[tokio::test]
async fn stamped_events_carry_the_pbxs_time_are_stale_when_old_and_replay_fresh() {
    let behind = Duration::from_secs(3600);
    let (sim, ctid, port, info) = start(
        SimConfig {
            timestamps: true,
            clock_behind: behind,
            ..SimConfig::default()
        },
        "",
    )
    .await;
    let mut alice = Cti::connect(port).await;
    let capas = alice.login("alice").await;
    let token = capas["resume_token"].as_str().unwrap().to_owned();
    let earliest = format_millis(timenow() - behind.as_secs_f64());
    let id = call(&sim, "1001", "1002");
    // Up to the update with its media: Asterisk stamps the Status list too.
    let told = until(&mut alice, &id, |e| !e["call"]["media"].is_null()).await;
    let latest = format_millis(timenow() - behind.as_secs_f64());
    for e in &told {
        let at = e["event_time"].as_str().unwrap();
        assert!(
            earliest.as_str() <= at && at <= latest.as_str(),
            "{at} is the PBX's time, between {earliest} and {latest}"
        );
        assert_eq!(e["stale"], true, "an hour old: {e}");
        assert!(e.get("replayed").is_none());
    }
    let stats = console(info, "stats").await;
    let stale = stats.iter().find(|l| l.starts_with("stale: ")).unwrap();
    assert_ne!(
        stale,
        "stale: 0 call events sent older than health.stale_after"
    );

    // A resume replays them as they were, but neither stale nor live.
    let first = told[0]["seq"].as_u64().unwrap();
    drop(alice);
    // Unread events may make the close a reset: any reason will do.
    ctid.wait_line("(alice from 127.0.0.1").await;
    let mut again = Cti::connect(port).await;
    again
        .send(json!({"class": "resume", "token": token, "last_seq": first - 1, "commandid": 1}))
        .await;
    assert_eq!(again.reply().await["status"], "ok");
    let replayed = again.events(told.len()).await;
    for (live, replay) in told.iter().zip(&replayed) {
        assert_eq!(replay["seq"], live["seq"]);
        assert_eq!(replay["event_time"], live["event_time"]);
        assert_eq!(
            (&replay["replayed"], &replay["stale"]),
            (&json!(true), &json!(false))
        );
    }
}

#[tokio::test]
async fn unstamped_events_are_timed_when_read_and_fresh() {
    let (sim, _ctid, port, _) = start(SimConfig::default(), "[health]\nstale_after = 3600\n").await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    let earliest = format_millis(timenow());
    let id = call(&sim, "1001", "1002");
    let told = until(&mut alice, &id, |e| e["event"] == "answered").await;
    let latest = format_millis(timenow());
    for e in &told {
        let at = e["event_time"].as_str().unwrap();
        assert!(
            earliest.as_str() <= at && at <= latest.as_str(),
            "{at} is when ctid read it, between {earliest} and {latest}"
        );
        assert_eq!(e["stale"], false, "{e}");
    }
}
