//! The HTTP listener's live side through real sockets: WebSocket desktops (`GET /ws`), the
//! Prometheus metrics (`GET /metrics`, parsed by a Prometheus text parser) and the probes
//! (`GET /health`, `GET /ready`), against the real ctid binary and the simulated PBX.

mod common;

use std::time::Duration;

use common::openapi::spec;
use common::{ami_config_with, http_tokens, Ctid, Http, PATIENCE};
use ctid_pbxsim::{PbxSim, SimConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

struct Server {
    sim: PbxSim,
    ctid: Ctid,
    http: Http,
    port: u16,
}

async fn server(extra: &str) -> Server {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["http"]);
    let ctid = Ctid::start(&(config + extra + &http_tokens()), "info");
    let port = ctid.port("http").await;
    ctid.wait_line("resynced with Asterisk").await;
    Server {
        sim,
        ctid,
        http: Http::new(port),
        port,
    }
}

/// A browser desktop: the CTI protocol, one JSON message per WebSocket text message.
struct Desktop(WebSocketStream<TcpStream>);

impl Desktop {
    async fn connect(port: u16) -> Desktop {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let url = format!("ws://127.0.0.1:{port}/ws");
        let (ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        Desktop(ws)
    }

    async fn send(&mut self, message: Message) {
        self.0.send(message).await.unwrap();
    }

    async fn send_json(&mut self, v: Value) {
        self.send(Message::text(v.to_string())).await;
    }

    /// Sends `text` as one message in `n` fragments.
    async fn send_fragments(&mut self, text: &str, n: usize) {
        let bytes = text.as_bytes();
        let size = bytes.len().div_ceil(n);
        for (i, piece) in bytes.chunks(size).enumerate() {
            let opcode = if i == 0 { Data::Text } else { Data::Continue };
            let last = (i + 1) * size >= bytes.len();
            let frame = Frame::message(piece.to_vec(), OpCode::Data(opcode), last);
            self.send(Message::Frame(frame)).await;
        }
    }

    /// The next JSON message, or None once the server closed.
    async fn recv(&mut self) -> Option<Value> {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.0.next())
                .await
                .expect("no message from ctid");
            match next {
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    }

    /// The next message that is not a call event.
    async fn reply(&mut self) -> Value {
        loop {
            let m = self.recv().await.expect("closed");
            if m["class"] != "call_event" {
                return m;
            }
        }
    }

    async fn ask(&mut self, v: Value) -> Value {
        self.send_json(v).await;
        self.recv().await.expect("closed")
    }

    async fn login(&mut self, user: &str) -> Value {
        let steps = [
            json!({"class": "login_id", "userlogin": user, "ident": "ws", "xivoversion": "2.0"}),
            json!({"class": "login_pass", "password": user}),
            json!({"class": "login_capas", "capaid": 1, "state": "available"}),
        ];
        let mut last = Value::Null;
        for step in steps {
            last = self.ask(step).await;
            assert!(last.get("error_string").is_none(), "{last}");
        }
        last
    }

    /// Call events until `n` calls hung up.
    async fn until_hungup(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::new();
        while events
            .iter()
            .filter(|e: &&Value| e["event"] == "hungup")
            .count()
            < n
        {
            let m = self.recv().await.expect("closed");
            if m["class"] == "call_event" {
                events.push(m);
            }
        }
        events
    }
}

#[tokio::test]
async fn a_websocket_desktop_logs_in_receives_a_call_and_is_held_to_the_cti_rules() {
    let s = server("").await;
    let mut alice = Desktop::connect(s.port).await;
    let capas = alice.login("alice").await;
    assert_eq!(capas["class"], "login_capas");
    assert_eq!(capas["login"], "alice");

    s.sim.place_call(
        "internal",
        "PJSIP",
        "1001",
        "1002",
        Duration::from_millis(50),
        Duration::from_millis(100),
    );
    let events = alice.until_hungup(1).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"offered"), "{kinds:?}");
    assert!(kinds.contains(&"answered"), "{kinds:?}");
    assert_eq!(events[0]["call"]["caller"]["number"], "1001");

    alice
        .send_json(json!({"class": "ipbxcommand", "command": "dial", "destination": "1002", "commandid": 9}))
        .await;
    let done = loop {
        let m = alice.recv().await.expect("closed");
        if m["class"] == "ipbxcommand" && m.get("response").is_some() {
            break m;
        }
    };
    assert_eq!(done["response"], "ok", "{done}");
    let metrics = scrape(&s.http, None).await;
    let dial = [("command", "dial"), ("result", "ok")];
    assert_eq!(sample(&metrics, "ctid_commands_total", &dial), 1.0);
    let setup = [("context", "default"), ("from", "originate")];
    assert_eq!(
        sample(&metrics, "ctid_call_setup_seconds_count", &setup),
        1.0
    );

    alice.send(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(alice.reply().await["error_string"], "binary_message");
    alice.send(Message::text("x".repeat(70_000))).await;
    assert_eq!(alice.reply().await["error_string"], "frame_too_large");
    alice
        .send_json(json!({"class": "keepalive", "commandid": 7}))
        .await;
    let answer = alice.reply().await;
    assert_eq!(
        (&answer["class"], &answer["replyid"]),
        (&json!("keepalive"), &json!(7))
    );
    alice.send(Message::text("not json")).await;
    assert_eq!(alice.reply().await["error_string"], "bad_json");

    // A message in fragments is one message, within the same bounds.
    let keepalive = json!({"class": "keepalive", "commandid": 8}).to_string();
    alice.send_fragments(&keepalive, 3).await;
    assert_eq!(alice.reply().await["replyid"], 8);
    alice.send_fragments(&"z".repeat(70_000), 7).await;
    assert_eq!(alice.reply().await["error_string"], "frame_too_large");

    // Too large to read whole: answered, then closed, in one frame or in many.
    alice.send(Message::text("y".repeat(300_000))).await;
    assert_eq!(alice.reply().await["error_string"], "frame_too_large");
    while let Some(m) = alice.recv().await {
        assert_eq!(m["class"], "call_event", "{m}");
    }
    let mut fragmented = Desktop::connect(s.port).await;
    fragmented.login("alice").await;
    fragmented.send_fragments(&"y".repeat(300_000), 30).await;
    assert_eq!(fragmented.reply().await["error_string"], "frame_too_large");
    while let Some(m) = fragmented.recv().await {
        assert_eq!(m["class"], "call_event", "{m}");
    }

    let mut intruder = Desktop::connect(s.port).await;
    intruder
        .send_json(json!({"class": "login_id", "userlogin": "bob", "ident": "ws"}))
        .await;
    intruder.recv().await.unwrap();
    let refused = intruder
        .ask(json!({"class": "login_pass", "password": "s3cret-pw"}))
        .await;
    assert_eq!(refused["error_string"], "login_password");
    assert_eq!(intruder.recv().await, None);
    assert_eq!(s.ctid.count("s3cret-pw"), 0, "passwords are never logged");
}

/// A stopping ctid tells its WebSocket desktops, as it does those of the CTI port, before
/// it closes them.
#[tokio::test]
async fn a_stopping_server_tells_its_websocket_desktops() {
    let mut s = server("").await;
    let mut alice = Desktop::connect(s.port).await;
    alice.login("alice").await;
    let mut fresh = Desktop::connect(s.port).await;
    let answer = fresh
        .ask(json!({"class": "keepalive", "commandid": 1}))
        .await;
    assert_eq!(answer["replyid"], 1);
    let told = async {
        let mut lasts = Vec::new();
        for mut desktop in [alice, fresh] {
            let mut last = Value::Null;
            while let Some(m) = desktop.recv().await {
                last = m;
            }
            lasts.push(last);
        }
        lasts
    };
    let (stopped, lasts) = tokio::join!(s.ctid.terminate(), told);
    assert!(stopped.success());
    for last in lasts {
        assert_eq!(
            (&last["class"], &last["error_string"]),
            (&json!("disconnect"), &json!("shutdown")),
            "{last}"
        );
    }
}

/// The value of one sample of `scrape`: `name` with (at least) `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value::*;
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    match found.map(|s| &s.value) {
        Some(Counter(v) | Gauge(v) | Untyped(v)) => *v,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

async fn scrape(http: &Http, token: Option<&str>) -> prometheus_parse::Scrape {
    let (status, text) = http.raw("GET", "/metrics", token, None).await;
    assert_eq!(status, 200, "{text}");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).unwrap()
}

#[tokio::test]
async fn metrics_count_what_a_load_of_calls_did() {
    const CALLS: usize = 6;
    let s = server("").await;
    let mut alice = Desktop::connect(s.port).await;
    alice.login("alice").await;
    let mut wrong = Desktop::connect(s.port).await;
    wrong
        .send_json(json!({"class": "login_id", "userlogin": "bob", "ident": "ws"}))
        .await;
    wrong.recv().await.unwrap();
    wrong
        .ask(json!({"class": "login_pass", "password": "nope"}))
        .await;

    for i in 0..CALLS {
        let (from, to) = if i % 2 == 0 {
            ("1001", "1002")
        } else {
            ("1003", "1001")
        };
        s.sim.place_call(
            "internal",
            "PJSIP",
            from,
            to,
            Duration::from_millis(20),
            Duration::from_millis(40),
        );
    }
    let events = alice.until_hungup(CALLS).await;
    let answered = events.iter().filter(|e| e["event"] == "answered").count();
    assert_eq!(answered, CALLS);

    let m = scrape(&s.http, None).await;
    assert_eq!(sample(&m, "ctid_logins_total", &[("result", "ok")]), 1.0);
    assert_eq!(
        sample(&m, "ctid_logins_total", &[("result", "refused")]),
        1.0
    );
    // Every call event was of context default, where alice is the only session.
    let made = sample(&m, "ctid_call_events_total", &[("pbx", "default")]);
    assert_eq!(made, events.len() as f64);
    let queued = sample(&m, "ctid_deliveries_total", &[("partition", "default")]);
    assert_eq!(queued, events.len() as f64);
    assert_eq!(
        sample(
            &m,
            "ctid_screen_pops_offered_total",
            &[("direction", "internal")]
        ),
        CALLS as f64
    );
    let setup = [("context", "default"), ("from", "offered")];
    assert_eq!(
        sample(&m, "ctid_call_setup_seconds_count", &setup),
        CALLS as f64
    );
    assert!(sample(&m, "ctid_event_lag_seconds_count", &[("stage", "queued")]) >= 1.0);
    assert!(sample(&m, "ctid_event_lag_seconds_count", &[("stage", "written")]) >= 1.0);
    let read = sample(&m, "ctid_ami_events_total", &[("pbx", "default")]);
    assert!(read >= events.len() as f64, "{read}");
    assert_eq!(sample(&m, "ctid_ami_link_up", &[("pbx", "default")]), 1.0);
    assert_eq!(
        sample(&m, "ctid_sessions", &[("partition", "default")]),
        1.0
    );
    assert_eq!(
        sample(&m, "ctid_sessions", &[("partition", "tenant-b")]),
        0.0
    );
    assert_eq!(
        sample(&m, "ctid_live_calls", &[("context", "default")]),
        0.0
    );
    assert_eq!(
        sample(&m, "ctid_calls_waiting", &[("queue", "support")]),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            "ctid_slow_consumer_drops_total",
            &[("partition", "default")]
        ),
        0.0
    );
    assert_eq!(sample(&m, "ctid_actors_given_up", &[]), 0.0);
    assert!(sample(&m, "ctid_ami_resyncs_total", &[("pbx", "default")]) >= 1.0);
    // A call is counted by codec once its media is known, which the client saw too.
    let with_media: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| !e["call"]["media"].is_null())
        .filter_map(|e| e["call"]["id"].as_str())
        .collect();
    let by_codec: f64 = m
        .samples
        .iter()
        .filter(|x| x.metric == "ctid_calls_by_media_total")
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{x:?}"),
        })
        .sum();
    assert_eq!(by_codec, with_media.len() as f64);
    let stale = events.iter().filter(|e| e["stale"] == true).count();
    assert_eq!(sample(&m, "ctid_stale_events_total", &[]), stale as f64);
    drop(s.sim);
}

#[tokio::test]
async fn health_is_open_and_ready_says_why_not_until_the_pbx_is_synced() {
    // Nothing listens on the AMI port yet.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ami = free.local_addr().unwrap().port();
    drop(free);
    let config = ami_config_with(ami, "secret = \"ctipass\"", &["http"])
        + "metrics_token = true\n"
        + &http_tokens();
    let ctid = Ctid::start(&config, "info");
    let http = Http::new(ctid.port("http").await);
    ctid.wait_line("unreachable").await;

    let (status, live) = http.call("GET", "/health", None, None).await;
    assert_eq!((status, &live["status"]), (200, &json!("ok")), "{live}");
    spec().check("GET", "/health", status, &live);
    let (status, ready) = http.call("GET", "/ready", None, None).await;
    assert_eq!(status, 503, "{ready}");
    spec().check("GET", "/ready", status, &ready);
    assert_eq!(ready["ready"], false);
    let reasons = ready["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("PBX default: AMI link")),
        "{ready}"
    );
    assert_eq!(ready["store"], "ok");

    let (status, _) = http.raw("GET", "/metrics", None, None).await;
    assert_eq!(status, 401);
    let m = scrape(&http, Some("agent-token")).await;
    assert_eq!(sample(&m, "ctid_ami_link_up", &[("pbx", "default")]), 0.0);

    let sim = PbxSim::start(SimConfig {
        listen: ([127, 0, 0, 1], ami).into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    ctid.wait_line("resynced with Asterisk").await;
    let mut answer = http.call("GET", "/ready", None, None).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while answer.0 != 200 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = http.call("GET", "/ready", None, None).await;
    }
    assert_eq!(answer.0, 200, "{}", answer.1);
    spec().check("GET", "/ready", answer.0, &answer.1);
    assert_eq!(answer.1["pbxes"], json!({"default": "up"}));
    drop(sim);
}

#[test]
fn the_readme_lists_every_metric_ctid_exports() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let source = std::fs::read_to_string(root.join("actors/src/metrics.rs")).unwrap();
    let code = source.split("#[cfg(test)]").next().unwrap();
    for line in code.lines() {
        if let Some(start) = line.find("\"ctid_") {
            let name = &line[start + 1..];
            let name = &name[..name.find('"').unwrap()];
            assert!(
                readme.contains(&format!("`{name}")),
                "README.md does not list {name}"
            );
        }
    }
}
