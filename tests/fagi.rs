//! FastAGI through real sockets: the test plays Asterisk's side of the AGI connection.

mod common;

use std::time::Duration;

use common::agi::{agi, request};
use common::{ami_config_with, fixture, test_hash, Cti, Ctid};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server(directory: Option<String>) -> (PbxSim, Ctid, u16, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
        &["cti", "fagi"],
    );
    let ctid = match directory {
        Some(d) => Ctid::start_full(&config, &d, "info", &[]),
        None => Ctid::start(&config, "info"),
    };
    let (cti, fagi) = (ctid.port("cti").await, ctid.port("fagi").await);
    ctid.wait_line("logged in as 'cti'").await;
    (sim, ctid, cti, fagi)
}

#[tokio::test]
async fn agi_data_reaches_the_screen_pop_of_its_context_only() {
    let (sim, _ctid, cti, fagi) = server(None).await;
    let (mut alice, mut dave) = (Cti::connect(cti).await, Cti::connect(cti).await);
    alice.login("alice").await;
    dave.login("dave").await;

    // The AGI requests come before any AMI event of their channel.
    let commands = agi(
        fagi,
        &request("attach?account=42&lang=fr%20CA", "2025550100", "Bob"),
        "",
    )
    .await;
    assert_eq!(commands[0], "GET FULL VARIABLE ${CHANNEL(linkedid)}");
    assert_eq!(
        commands.last().unwrap(),
        "SET VARIABLE CTID_AGI_STATUS \"ok\""
    );
    let commands = agi(fagi, &request("ivr?step=menu-1", "2025550100", "Bob"), "").await;
    assert_eq!(
        commands.last().unwrap(),
        "SET VARIABLE CTID_AGI_STATUS \"ok\""
    );

    sim.replay(&fixture("ami/agi_call.txt"));
    let events = alice.events(1).await;
    let offered = &events[0];
    assert_eq!(offered["event"], "offered");
    assert_eq!(offered["call"]["id"], "default:1795348247.38");
    assert_eq!(
        offered["call"]["attached"],
        json!({"account": "42", "lang": "fr CA"})
    );
    assert_eq!(offered["call"]["ivr_path"], json!(["menu-1"]));

    dave.send(json!({"class": "keepalive", "commandid": 1}))
        .await;
    assert_eq!(
        dave.reply().await["class"],
        "keepalive",
        "dave got no call event before"
    );
}

#[tokio::test]
async fn callerid_names_the_caller_from_the_directory() {
    let (_sim, _ctid, _cti, fagi) = server(None).await;
    let commands = agi(fagi, &request("callerid", "1002", ""), "").await;
    assert!(
        commands.contains(&"SET VARIABLE CALLERID(name) \"bob\"".to_owned()),
        "{commands:?}"
    );
    // A caller the PBX already names, or one nobody knows, is left alone.
    let commands = agi(fagi, &request("callerid", "1002", "Robert"), "").await;
    assert!(
        !commands.iter().any(|c| c.contains("CALLERID(name)")),
        "{commands:?}"
    );
    let commands = agi(fagi, &request("callerid", "5550000", "5550000"), "").await;
    assert_eq!(
        commands.last().unwrap(),
        "SET VARIABLE CTID_AGI_STATUS \"ok\""
    );
    assert!(
        !commands.iter().any(|c| c.contains("CALLERID(name)")),
        "{commands:?}"
    );
}

#[tokio::test]
async fn route_names_the_agent_who_last_handled_the_caller() {
    // Phones of the recordings are Local channels: alice's line is Local/1001@default.
    let directory = format!(
        "[[contexts]]\nname = \"default\"\ndialplan = [\"default\", \"internal\"]\n\
         [[queues]]\nname = \"support\"\ncontext = \"default\"\n\
         [[users]]\nid = 1\nlogin = \"alice\"\npassword = \"{}\"\n\
         line = {{ interface = \"Local/1001@default\", number = \"1001\", context = \"default\", dialplan = \"internal\" }}\n",
        test_hash("alice")
    );
    let (sim, _ctid, cti, fagi) = server(Some(directory)).await;
    let mut alice = Cti::connect(cti).await;
    alice.login("alice").await;
    let commands = agi(fagi, &request("route", "5551234", "Customer"), "").await;
    assert!(
        commands.contains(&"SET VARIABLE CTID_LAST_AGENT \"\"".to_owned()),
        "no history yet: {commands:?}"
    );

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
    assert!(
        commands.contains(&"SET VARIABLE CTID_LAST_AGENT_NUMBER \"1001\"".to_owned()),
        "{commands:?}"
    );
}

#[tokio::test]
async fn bad_requests_are_answered_or_closed_and_the_port_keeps_serving() {
    let (_sim, ctid, _cti, fagi) = server(None).await;
    let commands = agi(fagi, &request("teleport", "1", "x"), "").await;
    assert_eq!(
        commands[1..],
        [
            "SET VARIABLE CTID_AGI_STATUS \"error\"",
            "SET VARIABLE CTID_AGI_REASON \"unknown script \\\"teleport\\\"\""
        ]
    );
    let commands = agi(fagi, &request("attach", "1", "x"), "").await;
    assert!(
        commands.contains(&"SET VARIABLE CTID_AGI_STATUS \"error\"".to_owned()),
        "{commands:?}"
    );

    // The channel hangs up at once: ctid still sets its variables (for the h extension).
    // The step is the first argument (agi_arg_1 of the recorded request).
    let commands = agi(fagi, &request("ivr", "1", "x"), "HANGUP\n").await;
    assert_eq!(
        commands.last().unwrap(),
        "SET VARIABLE CTID_AGI_STATUS \"ok\""
    );

    // Not AGI at all: closed.
    let mut garbage = TcpStream::connect(("127.0.0.1", fagi)).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), garbage.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
    ctid.wait_line("malformed request line").await;

    // A peer that says nothing is dropped after the socket timeout (2 s here).
    let mut silent = TcpStream::connect(("127.0.0.1", fagi)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    ctid.wait_line("sent no request within 2s").await;

    let commands = agi(fagi, &request("callerid", "1002", ""), "").await;
    assert_eq!(
        commands.last().unwrap(),
        "SET VARIABLE CTID_AGI_STATUS \"ok\""
    );
}
