//! Call control through real sockets: each command becomes the right AMI action on the
//! simulated Asterisk and gets an acknowledgement then its outcome; refused commands send
//! nothing to Asterisk; failures, silence and a dead link are a clear ko.

mod common;

use std::time::Duration;

use common::{ami_config_with, ctid_id, Cti, Ctid};
use ctid_pbxsim::{PbxSim, SimConfig};
use ctid_proto::ami::AmiMessage;
use serde_json::{json, Value};

async fn server() -> (PbxSim, Ctid, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
        &["cti"],
    );
    let ctid = Ctid::start(&config, "info");
    let port = ctid.port("cti").await;
    ctid.wait_line("logged in as 'cti'").await;
    (sim, ctid, port)
}

/// The actions the simulator got since `from`.
fn actions_since(sim: &PbxSim, from: usize) -> Vec<AmiMessage> {
    sim.actions()
        .into_iter()
        .skip(from)
        .filter(|a| a.get("Action") != Some("Ping"))
        .collect()
}

/// A command, the AMI action it must become, and fields that action must carry.
type Case<'a> = (Value, &'a str, Vec<(&'a str, String)>);

fn fields(a: &AmiMessage, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .map(|k| a.get(k).unwrap_or("-").to_owned())
        .collect()
}

/// A bridged call from 1001 (alice) to 1002 (bob), long enough for the tests.
async fn live_call(sim: &PbxSim, alice: &mut Cti) -> (String, String, String) {
    let (id, caller, callee) = sim.place_call(
        "internal",
        "PJSIP",
        "1001",
        "1002",
        Duration::from_millis(50),
        Duration::from_secs(60),
    );
    let id = ctid_id(&id);
    loop {
        let e = alice.events(1).await.remove(0);
        if e["call"]["id"] == json!(id) && e["event"] == "bridged" {
            return (id, caller, callee);
        }
    }
}

#[tokio::test]
async fn each_command_becomes_the_right_ami_action_then_ok() {
    let (sim, _ctid, port) = server().await;
    let mut alice = Cti::connect(port).await;
    let capas = alice.login("alice").await;
    assert!(capas["capas"]["ipbxcommands"]
        .as_array()
        .unwrap()
        .contains(&json!("dial")));
    let (call, mine, theirs) = live_call(&sim, &mut alice).await;
    // Commands on another user's line are a supervisor's: carol's.
    let mut carol = Cti::connect(port).await;
    carol.login("carol").await;

    let cases: Vec<Case> = vec![
        (
            json!({"command": "dial", "destination": "1003"}),
            "Originate",
            vec![
                ("Channel", "PJSIP/1001".into()),
                ("Context", "internal".into()),
                ("Exten", "1003".into()),
                ("Async", "true".into()),
            ],
        ),
        (
            json!({"command": "originate", "source": "1002", "destination": "*97"}),
            "Originate",
            vec![("Channel", "PJSIP/1002".into()), ("Exten", "*97".into())],
        ),
        (
            json!({"command": "transfer", "call_id": call, "destination": "1003"}),
            "BlindTransfer",
            vec![
                ("Channel", mine.clone()),
                ("Context", "internal".into()),
                ("Exten", "1003".into()),
            ],
        ),
        (
            json!({"command": "atxfer", "call_id": call, "destination": "1003"}),
            "Atxfer",
            vec![("Channel", mine.clone()), ("Exten", "1003".into())],
        ),
        (
            json!({"command": "atxfer_cancel", "call_id": call}),
            "CancelAtxfer",
            vec![("Channel", mine.clone())],
        ),
        (
            json!({"command": "hold", "call_id": call}),
            "Redirect",
            vec![
                ("Channel", theirs.clone()),
                ("Exten", "hold".into()),
                ("ExtraChannel", mine.clone()),
                ("ExtraExten", "wait".into()),
            ],
        ),
        (
            json!({"command": "resume", "call_id": call}),
            "Bridge",
            vec![("Channel1", mine.clone()), ("Channel2", theirs.clone())],
        ),
        (
            json!({"command": "park", "call_id": call}),
            "Park",
            vec![
                ("Channel", theirs.clone()),
                ("TimeoutChannel", mine.clone()),
            ],
        ),
        (
            json!({"command": "record", "subcommand": "start", "call_id": call}),
            "MixMonitor",
            vec![
                ("Channel", mine.clone()),
                ("File", format!("ctid-{}-alice.wav", call.replace(':', "-"))),
            ],
        ),
        (
            json!({"command": "record", "subcommand": "stop", "call_id": call}),
            "StopMixMonitor",
            vec![("Channel", mine.clone())],
        ),
        (
            json!({"command": "agentlogin"}),
            "QueueAdd",
            vec![
                ("Queue", "support".into()),
                ("Interface", "PJSIP/1001".into()),
                ("MemberName", "alice".into()),
            ],
        ),
        (
            json!({"command": "agentpause", "reason": "lunch"}),
            "QueuePause",
            vec![
                ("Interface", "PJSIP/1001".into()),
                ("Paused", "true".into()),
                ("Reason", "lunch".into()),
            ],
        ),
        (
            json!({"command": "agentunpause"}),
            "QueuePause",
            vec![("Paused", "false".into())],
        ),
        (
            json!({"command": "agentlogout"}),
            "QueueRemove",
            vec![
                ("Queue", "support".into()),
                ("Interface", "PJSIP/1001".into()),
            ],
        ),
        (
            json!({"command": "queueadd", "queue": "support", "member": "1002"}),
            "QueueAdd",
            vec![
                ("Queue", "support".into()),
                ("Interface", "PJSIP/1002".into()),
            ],
        ),
        (
            json!({"command": "queuepause", "queue": "support", "member": "PJSIP/1002", "paused": true, "reason": "break"}),
            "QueuePause",
            vec![("Queue", "support".into()), ("Reason", "break".into())],
        ),
        (
            json!({"command": "queueremove", "queue": "support", "member": "1002"}),
            "QueueRemove",
            vec![("Interface", "PJSIP/1002".into())],
        ),
    ];
    for (i, (request, action, expected)) in cases.into_iter().enumerate() {
        let before = sim.actions().len();
        let name = request["command"].as_str().unwrap().to_owned();
        let on_others_line = request.get("source").or(request.get("member")).is_some();
        let who = if on_others_line {
            &mut carol
        } else {
            &mut alice
        };
        let (ack, outcome) = who.command(request, 100 + i as u64).await;
        assert_eq!(
            (ack["command"].as_str(), ack["ipbxreply"].as_str()),
            (Some(name.as_str()), Some("sent")),
            "{name}: {ack}"
        );
        assert_eq!(outcome["response"], "ok", "{name}: {outcome}");
        let sent = actions_since(&sim, before);
        assert_eq!(sent.len(), 1, "{name}: {sent:?}");
        assert_eq!(sent[0].get("Action"), Some(action), "{name}");
        let keys: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
        let values: Vec<String> = expected.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(fields(&sent[0], &keys), values, "{name}");
    }

    // Hangup ends every channel of the call.
    let before = sim.actions().len();
    let (_, outcome) = alice
        .command(json!({"command": "hangup", "call_id": call}), 200)
        .await;
    assert_eq!(outcome["response"], "ok", "{outcome}");
    let hangups: Vec<String> = actions_since(&sim, before)
        .iter()
        .map(|a| fields(a, &["Action", "Channel"]).join(" "))
        .collect();
    assert_eq!(
        hangups,
        [format!("Hangup {mine}"), format!("Hangup {theirs}")]
    );
    loop {
        let e = alice.events(1).await.remove(0);
        if e["call"]["id"] == json!(call) && e["event"] == "hungup" {
            break;
        }
    }
}

#[tokio::test]
async fn a_ringing_call_can_be_picked_up() {
    let (sim, _ctid, port) = server().await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    // Picking up a colleague's call is a supervisor's right: carol's.
    let mut carol = Cti::connect(port).await;
    carol.login("carol").await;
    let (call, _, callee) = sim.place_call(
        "internal",
        "PJSIP",
        "1001",
        "1002",
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    let call = ctid_id(&call);
    loop {
        let e = alice.events(1).await.remove(0);
        if e["call"]["id"] == json!(call) && e["event"] == "ringing" {
            break;
        }
    }
    let before = sim.actions().len();
    let (_, outcome) = carol
        .command(json!({"command": "pickup", "call_id": call}), 1)
        .await;
    assert_eq!(outcome["response"], "ok", "{outcome}");
    let sent = actions_since(&sim, before);
    assert_eq!(
        fields(&sent[0], &["Action", "Channel", "Application", "Data"]),
        ["Originate", "PJSIP/1003", "PickupChan", callee.as_str()]
    );
}

#[tokio::test]
async fn refused_commands_reach_nothing_of_asterisk() {
    let (sim, ctid, port) = server().await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    let (call, caller, callee) = live_call(&sim, &mut alice).await;
    let mut dave = Cti::connect(port).await;
    dave.login("dave").await;
    let mut erin = Cti::connect(port).await;
    erin.login("erin").await;
    let before = sim.actions().len();

    for (who, request) in [
        ("dave", json!({"command": "hangup", "call_id": call})),
        (
            "dave",
            json!({"command": "transfer", "call_id": call, "destination": "2002"}),
        ),
        (
            "dave",
            json!({"command": "originate", "source": "1001", "destination": "2002"}),
        ),
        (
            "dave",
            json!({"command": "queueadd", "queue": "support", "member": "2001"}),
        ),
        ("erin", json!({"command": "dial", "destination": "1001"})),
        (
            "alice",
            json!({"command": "hangup", "call_id": "no-such-call"}),
        ),
    ] {
        let client = match who {
            "dave" => &mut dave,
            "erin" => &mut erin,
            _ => &mut alice,
        };
        let (refusal, _) = client.command(request.clone(), 1).await;
        assert_eq!(
            refusal["error_string"], "unallowed",
            "{who}: {request}: {refusal}"
        );
    }
    let (refusal, _) = alice
        .command(
            json!({"command": "dial", "destination": "1002\r\nAction: Logoff"}),
            2,
        )
        .await;
    assert_eq!(refusal["error_string"], "invalid:destination");
    let (refusal, _) = alice.command(json!({"command": "teleport"}), 3).await;
    assert_eq!(refusal["error_string"], "unknown_function");
    // A command alice may give goes through the same link after them: once it has been
    // carried out, the only action Asterisk got is its own.
    let (_, outcome) = alice
        .command(json!({"command": "hangup", "call_id": call}), 4)
        .await;
    assert_eq!(outcome["response"], "ok", "{outcome}");
    let mut sent: Vec<Vec<String>> = actions_since(&sim, before)
        .iter()
        .map(|a| fields(a, &["Action", "Channel"]))
        .collect();
    sent.sort();
    assert_eq!(sent, [["Hangup", &caller], ["Hangup", &callee]]);
    ctid.wait_line("hangup refused: unallowed").await;
}

#[tokio::test]
async fn a_session_may_leave_sixteen_requests_unanswered_and_no_more() {
    let (sim, _ctid, port) = server().await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;

    sim.set_muted(true);
    let burst: String = (1..=17)
        .map(|id| {
            format!(
                "{}\n",
                json!({"class": "ipbxcommand", "command": "agentpause", "commandid": id})
            )
        })
        .collect();
    alice.send_raw(&burst).await;
    let (mut refused, mut outcomes) = (Vec::new(), 0);
    while outcomes < 16 {
        let m = alice.reply().await;
        if m["error_string"] == "too_many_requests" {
            refused.push(m["replyid"].clone());
        } else if m.get("response").is_some() {
            outcomes += 1;
        }
    }
    assert_eq!(refused, [json!(17)]);

    sim.set_muted(false);
    let (_, outcome) = alice.command(json!({"command": "agentpause"}), 18).await;
    assert_eq!(outcome["response"], "ok");
}

#[tokio::test]
async fn failures_silence_and_a_dead_link_are_a_clear_ko() {
    let (sim, ctid, port) = server().await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;

    sim.fail("Originate", Some("Originate failed"));
    let (ack, outcome) = alice
        .command(json!({"command": "dial", "destination": "1002"}), 1)
        .await;
    assert_eq!(ack["ipbxreply"], "sent");
    assert_eq!(
        (outcome["response"].as_str(), outcome["message"].as_str()),
        (Some("ko"), Some("Originate failed"))
    );
    sim.fail("Originate", None);

    sim.set_muted(true);
    let (_, outcome) = alice.command(json!({"command": "agentpause"}), 2).await;
    assert_eq!(outcome["response"], "ko");
    assert_eq!(outcome["message"], "no answer from Asterisk within 2s");
    sim.set_muted(false);

    drop(sim);
    ctid.wait_line("lost (closed by Asterisk)").await;
    let (ack, outcome) = alice.command(json!({"command": "agentpause"}), 3).await;
    assert_eq!(ack["ipbxreply"], "sent");
    assert_eq!(outcome["response"], "ko");
    assert!(
        outcome["message"]
            .as_str()
            .unwrap()
            .starts_with("AMI link is down"),
        "{outcome}"
    );
}
