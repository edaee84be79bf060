//! CTI clients against ctid and the simulated Asterisk, through real sockets: login, context
//! isolation, slow consumers, resume, bad input.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{ami_config_with, resume_without_gap, two_tenant_calls, Cti, Ctid};
use ctid_pbxsim::calls::CallPlan;
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::{json, Value};

async fn server(extra: &str) -> (PbxSim, Ctid, u16) {
    server_env(extra, &[]).await
}

async fn server_env(extra: &str, env: &[(&str, &str)]) -> (PbxSim, Ctid, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = format!(
        "{}\n{extra}",
        ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["cti"])
    );
    let ctid = Ctid::start_with(&config, "info", env);
    let port = ctid.port("cti").await;
    ctid.wait_line("logged in as 'cti'").await;
    (sim, ctid, port)
}

/// The call events a session receives until `calls` calls have hung up.
async fn until_hungup(c: &mut Cti, calls: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|e: &&Value| e["event"] == "hungup")
        .count()
        < calls
    {
        seen.extend(c.events(1).await);
    }
    seen
}

fn numbers(event: &Value) -> Vec<String> {
    ["caller", "callee"]
        .iter()
        .filter_map(|p| event["call"][p]["number"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_login_goes_through_three_steps_and_gets_a_resume_token() {
    let (_sim, _ctid, port) = server("").await;
    let mut c = Cti::connect(port).await;
    c.send(json!({"class": "login_id", "userlogin": "alice", "commandid": 1}))
        .await;
    let id = c.reply().await;
    assert_eq!(
        (id["class"].as_str(), id["replyid"].as_i64()),
        (Some("login_id"), Some(1))
    );
    assert_eq!(id["sessionid"].as_str().unwrap().len(), 10);
    assert!(id["timenow"].as_f64().unwrap() > 1.7e9);
    c.send(json!({"class": "login_pass", "password": "alice", "commandid": 2}))
        .await;
    assert_eq!(c.reply().await["capalist"], json!([1]));
    c.send(json!({"class": "login_capas", "capaid": 1, "state": "available", "commandid": 3}))
        .await;
    let capas = c.reply().await;
    assert_eq!(capas["class"], "login_capas");
    assert_eq!(capas["replyid"], 3);
    assert_eq!(capas["login"], "alice");
    assert_eq!(capas["context"], "default");
    assert_eq!(capas["resume_token"].as_str().unwrap().len(), 32);
    assert!(capas["seq"].is_u64());
    c.send(json!({"class": "keepalive", "commandid": 4})).await;
    assert_eq!(c.reply().await["replyid"], 4);
    c.send(json!({"class": "logout"})).await;
    let rest = c.until_closed().await;
    assert_eq!(rest.last().unwrap()["class"], "logout");
}

#[tokio::test]
async fn a_wrong_password_is_refused_closed_and_slows_the_next_try_of_that_login() {
    let (_sim, ctid, port) = server("").await;
    let mut c = Cti::connect(port).await;
    c.send(json!({"class": "login_id", "userlogin": "alice"}))
        .await;
    c.reply().await;
    c.send(json!({"class": "login_pass", "password": "nope", "commandid": 9}))
        .await;
    let refused = c.until_closed().await;
    assert_eq!(refused[0]["error_string"], "login_password");
    assert_eq!(refused[0]["replyid"], 9);
    ctid.wait_line("login \"alice\" refused (wrong login or password)")
        .await;

    // An unknown login is refused the same way.
    let mut c = Cti::connect(port).await;
    c.send(json!({"class": "login_id", "userlogin": "mallory"}))
        .await;
    assert_eq!(
        c.reply().await["class"],
        "login_id",
        "unknown logins get a sessionid too"
    );
    c.send(json!({"class": "login_pass", "password": "x"}))
        .await;
    assert_eq!(c.until_closed().await[0]["error_string"], "login_password");

    // Alice's login failed once: its next check is delayed.
    let mut c = Cti::connect(port).await;
    c.send(json!({"class": "login_id", "userlogin": "alice"}))
        .await;
    c.reply().await;
    let asked = Instant::now();
    c.send(json!({"class": "login_pass", "password": "x"}))
        .await;
    assert_eq!(c.until_closed().await[0]["error_string"], "login_password");
    assert!(
        asked.elapsed() >= Duration::from_millis(200),
        "a second failure of alice's login is answered at once"
    );
}

#[tokio::test]
async fn a_client_that_does_not_log_in_in_time_is_disconnected() {
    let (_sim, _ctid, port) = server_env("", &[("CTID__TIMEOUTS__LOGIN", "0.5")]).await;
    let mut c = Cti::connect(port).await;
    c.send(json!({"class": "login_id", "userlogin": "alice"}))
        .await;
    let rest = c.until_closed().await;
    assert_eq!(rest.last().unwrap()["error_string"], "login_timeout");
}

#[tokio::test]
async fn each_context_sees_exactly_its_own_calls_lists_and_users() {
    let (sim, _ctid, port) = server("").await;
    let (mut alice, mut dave, mut erin) = (
        Cti::connect(port).await,
        Cti::connect(port).await,
        Cti::connect(port).await,
    );
    alice.login("alice").await;
    dave.login("dave").await;
    let erin_capas = erin.login("erin").await;
    assert_eq!(erin_capas["context"], Value::Null);
    assert_eq!(
        erin_capas["capas"]["regcommands"],
        json!(["keepalive", "logout"])
    );
    // 24 calls, alternately in each tenant: each session sees its 12 whole, and no others.
    let _calls = sim.run_calls(CallPlan {
        limit: Some(24),
        caller_up: false,
        ..two_tenant_calls(40.0)
    });
    let seen_by_alice = until_hungup(&mut alice, 12).await;
    let seen_by_dave = until_hungup(&mut dave, 12).await;
    for e in &seen_by_alice {
        assert_eq!(e["call"]["contexts"], json!(["default"]), "{e}");
        assert!(numbers(e).iter().all(|n| n.starts_with("100")), "{e}");
    }
    for e in &seen_by_dave {
        assert_eq!(e["call"]["contexts"], json!(["tenant-b"]), "{e}");
        assert!(numbers(e).iter().all(|n| n.starts_with("200")), "{e}");
    }
    // Sequence numbers are per context, without gaps.
    for seen in [&seen_by_alice, &seen_by_dave] {
        let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    }
    for seen in [&seen_by_alice, &seen_by_dave] {
        let ids: HashSet<&Value> = seen.iter().map(|e| &e["call"]["id"]).collect();
        assert_eq!(ids.len(), 12);
        for id in ids {
            // An `updated` may stand alone when a read splits the simulator's writes.
            let kinds: Vec<&str> = seen
                .iter()
                .filter(|e| &e["call"]["id"] == id && e["event"] != "updated")
                .map(|e| e["event"].as_str().unwrap())
                .collect();
            assert_eq!(
                kinds,
                ["offered", "ringing", "answered", "bridged", "hungup"]
            );
        }
    }
    // A call's fields, from one whole call as alice saw it.
    let hungup = seen_by_alice
        .iter()
        .find(|e| e["event"] == "hungup")
        .unwrap();
    let call = &hungup["call"];
    assert_eq!(call["direction"], "internal");
    assert_eq!(call["state"], "ended");
    assert!(call["answered"].as_f64().unwrap() <= call["ended"].as_f64().unwrap());
    assert_eq!(call["hangup_cause"]["code"], 16);

    alice
        .send(
            json!({"class": "getlist", "function": "listid", "listname": "users", "commandid": 5}),
        )
        .await;
    assert_eq!(alice.reply().await["list"], json!(["1", "2", "3"]));
    dave.send(
        json!({"class": "getlist", "function": "updateconfig", "listname": "users", "tid": "1"}),
    )
    .await;
    assert_eq!(
        dave.reply().await["error_string"],
        "unallowed",
        "dave must not read alice"
    );
    dave.send(json!({"class": "getlist", "function": "listid", "listname": "queues"}))
        .await;
    assert_eq!(dave.reply().await["list"], json!([]));
    alice
        .send(json!({"class": "getlist", "function": "updatestatus", "listname": "users"}))
        .await;
    let status = alice.reply().await;
    assert_eq!(status["status"]["1"]["connection"], "connected");
    assert_eq!(status["status"]["2"]["connection"], "disconnected");

    // Erin (no line) sees nothing and may do nothing but keep alive and log out.
    erin.send(
        json!({"class": "getlist", "function": "listid", "listname": "calls", "commandid": 1}),
    )
    .await;
    let refused = erin.reply().await;
    assert_eq!(
        (
            refused["error_string"].as_str(),
            refused["replyid"].as_i64()
        ),
        (Some("unallowed"), Some(1))
    );
    erin.send(json!({"class": "keepalive"})).await;
    assert_eq!(
        erin.reply().await["class"],
        "keepalive",
        "no call event came before"
    );
}

#[tokio::test]
async fn without_context_separation_everyone_sees_every_context() {
    let (sim, _ctid, port) = server("[parting]\ncontext_separation = false\n").await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    let _calls = sim.run_calls(two_tenant_calls(40.0));
    let seen: HashSet<String> = alice
        .events(80)
        .await
        .iter()
        .flat_map(|e| {
            e["call"]["contexts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        seen,
        HashSet::from(["default".to_owned(), "tenant-b".to_owned()])
    );
}

#[tokio::test]
async fn a_slow_consumer_is_dropped_and_a_fast_one_keeps_receiving() {
    // Budgets large enough for a reader on a loaded machine, small beside what the slow
    // client lets pile up.
    let extra = "[sessions]\noutbound_max_bytes = 1048576\noutbound_max_messages = 1000\n";
    let (sim, ctid, port) = server(extra).await;
    // The slow client has a tiny receive buffer and never reads after its login.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    use tokio::io::AsyncWriteExt;
    for line in [
        r#"{"class":"login_id","userlogin":"bob"}"#,
        r#"{"class":"login_pass","password":"bob"}"#,
        r#"{"class":"login_capas","capaid":1}"#,
    ] {
        slow.write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut fast = Cti::connect(port).await;
    fast.login("alice").await;
    ctid.wait_line("logged in as bob").await;

    let _calls = sim.run_calls(two_tenant_calls(400.0));
    ctid.wait_line("(bob from 127.0.0.1").await;
    let dropped = ctid.wait_line("dropped: slow consumer").await;
    assert!(dropped.contains("bob"), "{dropped}");
    // The fast client goes on receiving, with no gap.
    let events = fast.events(300).await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(
        ctid.count("dropped: slow consumer"),
        1,
        "only the slow client"
    );
}

#[tokio::test]
async fn a_resumed_session_gets_what_it_missed_with_no_gap_and_no_duplicate() {
    let (sim, ctid, port) = server("").await;
    let _calls = sim.run_calls(two_tenant_calls(40.0));
    let mut first = Cti::connect(port).await;
    let capas = first.login("alice").await;
    let token = capas["resume_token"].as_str().unwrap().to_owned();
    let before = first.events(20).await;
    let last_seq = before.last().unwrap()["seq"].as_u64().unwrap();
    drop(first);
    ctid.wait_line("closed: client closed the connection").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (_again, ack) = resume_without_gap(port, &token, last_seq, "alice").await;

    // The old token was used up; the new one works the next time.
    let mut third = Cti::connect(port).await;
    third
        .send(json!({"class": "resume", "token": token, "last_seq": 0}))
        .await;
    assert_eq!(third.reply().await["error_string"], "resync_required");
    assert_ne!(ack["resume_token"], json!(token));
}

#[tokio::test]
async fn a_resume_after_the_events_are_gone_needs_a_resync() {
    let (sim, ctid, port) = server("[sessions]\nreplay_events = 5\n").await;
    let _calls = sim.run_calls(two_tenant_calls(40.0));
    let mut first = Cti::connect(port).await;
    let capas = first.login("alice").await;
    let last_seq = first.events(1).await[0]["seq"].as_u64().unwrap();
    drop(first);
    ctid.wait_line("closed: client closed the connection").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut again = Cti::connect(port).await;
    again
        .send(json!({"class": "resume", "token": capas["resume_token"], "last_seq": last_seq, "commandid": 4}))
        .await;
    let refused = again.reply().await;
    assert_eq!(refused["error_string"], "resync_required");
    assert_eq!(refused["replyid"], 4);
    // The connection stays usable for a normal login.
    again.login("alice").await;
}

#[tokio::test]
async fn bad_input_is_answered_and_everyone_else_is_still_served() {
    let (sim, _ctid, port) = server("").await;
    let mut bystander = Cti::connect(port).await;
    bystander.login("bob").await;

    let mut c = Cti::connect(port).await;
    c.send(json!({"class": "getlist", "function": "listid", "listname": "users", "commandid": 1}))
        .await;
    assert_eq!(c.reply().await["error_string"], "notloggedyet");
    c.login("alice").await;
    c.send_raw("{not json\n").await;
    assert_eq!(c.reply().await["error_string"], "bad_json");
    c.send_raw("{\"class\":\"nope\",\"commandid\":7}\n").await;
    let unknown = c.reply().await;
    assert_eq!(
        (
            unknown["error_string"].as_str(),
            unknown["replyid"].as_i64()
        ),
        (Some("unknown_class"), Some(7))
    );
    c.send_raw(&format!("{{\"class\":\"{}\"}}\n", "x".repeat(1 << 20)))
        .await;
    assert_eq!(c.reply().await["error_string"], "frame_too_large");
    c.send_raw("\u{1}\u{2}\u{7f}garbage\u{0}\n").await;
    assert_eq!(c.reply().await["error_string"], "bad_json");
    c.send_raw("{\"commandid\":3}\n").await;
    assert_eq!(c.reply().await["error_string"], "missing:class");
    c.send(json!({"class": "getlist", "function": "listid"}))
        .await;
    assert_eq!(c.reply().await["error_string"], "missing:listname");
    c.send(json!({"class": "keepalive", "commandid": 8})).await;
    assert_eq!(c.reply().await["replyid"], 8, "still served");

    // A client that closes mid-line.
    let mut cut = Cti::connect(port).await;
    cut.send_raw("{\"class\":\"login_id\",\"userl").await;
    drop(cut);

    // Ten bad lines in a row close the session.
    let mut noisy = Cti::connect(port).await;
    for _ in 0..10 {
        noisy.send_raw("]\n").await;
    }
    let rest = noisy.until_closed().await;
    assert_eq!(rest.last().unwrap()["error_string"], "too_many_errors");

    // Readable requests that are refused are not bad lines: the session goes on.
    let mut refused = Cti::connect(port).await;
    refused.login("alice").await;
    for id in 0..12 {
        refused
            .send(json!({"class": "getlist", "function": "listid", "listname": "nope", "commandid": id}))
            .await;
    }
    for _ in 0..12 {
        assert_eq!(refused.reply().await["error_string"], "unknown_function");
    }
    refused
        .send(json!({"class": "keepalive", "commandid": 99}))
        .await;
    assert_eq!(refused.reply().await["replyid"], 99);

    let _calls = sim.run_calls(two_tenant_calls(40.0));
    assert_eq!(bystander.events(5).await.len(), 5);
    c.send(json!({"class": "keepalive", "commandid": 9})).await;
    assert_eq!(c.reply().await["replyid"], 9);
}

#[tokio::test]
async fn connections_past_the_unauthenticated_limit_are_refused() {
    let (_sim, ctid, port) = server("[sessions]\nmax_unauthenticated = 2\n").await;
    let (mut a, mut b) = (Cti::connect(port).await, Cti::connect(port).await);
    // Both are served (so counted) once they answer.
    for (c, id) in [(&mut a, 1), (&mut b, 2)] {
        c.send(json!({"class": "keepalive", "commandid": id})).await;
        assert_eq!(c.reply().await["replyid"], id);
    }
    let mut c = Cti::connect(port).await;
    let refused = c.until_closed().await;
    assert_eq!(refused[0]["error_string"], "too_many_connections");
    drop(a);
    ctid.wait_line("closed: client closed the connection").await;
    let mut d = Cti::connect(port).await;
    d.login("alice").await;
}

#[tokio::test]
async fn a_stopping_server_tells_every_session_before_it_exits() {
    let (_sim, mut ctid, port) = server("").await;
    let mut clients = Vec::new();
    for user in ["alice", "bob", "dave"] {
        let mut c = Cti::connect(port).await;
        c.login(user).await;
        clients.push(c);
    }
    let mut unauthenticated = Cti::connect(port).await;
    unauthenticated
        .send(json!({"class": "keepalive", "commandid": 1}))
        .await;
    assert_eq!(unauthenticated.reply().await["replyid"], 1);
    clients.push(unauthenticated);

    assert!(ctid.terminate().await.success());
    for mut c in clients {
        let rest = c.until_closed().await;
        assert_eq!(
            rest.last().map(|m| m["error_string"].clone()),
            Some(json!("shutdown")),
            "{rest:?}"
        );
    }
}
