//! Cluster mode against the machine's real NATS JetStream: nodes share the work and take
//! over from each other, and clients see no gap in `seq`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::{clean, namespace, require_nats, table, PrivateNats, NATS};
use common::postgres::Schema;
use common::{ami_table, config_with, resume_without_gap, Cti, Ctid, Http, PATIENCE};
use ctid_pbxsim::calls::{CallPlan, Tenant};
use ctid_pbxsim::{PbxSim, SimConfig};
use ctid_proto::cti::timenow;
use ctid_proto::rfc3339::format_millis;
use serde_json::{json, Value};

/// A node's settings: the simulator's AMI, the CTI listener, and its `[cluster]` table.
fn node(sim: &PbxSim, ns: &str, name: &str, roles: &[&str]) -> String {
    node_on(sim, NATS, ns, name, roles)
}

/// [`node`] on the NATS server at `nats`.
fn node_on(sim: &PbxSim, nats: &str, ns: &str, name: &str, roles: &[&str]) -> String {
    node_with(sim, nats, ns, name, roles, &["cti"])
}

/// [`node_on`] with the listeners of `on`.
fn node_with(
    sim: &PbxSim,
    nats: &str,
    ns: &str,
    name: &str,
    roles: &[&str],
    on: &[&str],
) -> String {
    let ami = ami_table(
        "ami",
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
    );
    config_with(&ami, on) + &table(ns, name, roles, nats)
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

/// Starts node `name`, its records in `schema`.
fn start(config: &str, schema: &Schema) -> Ctid {
    let env = schema.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Ctid::start_with(config, "info", &env)
}

async fn lease(node: &Ctid, name: &str) {
    node.wait_line(&format!("lease for PBX default acquired by {name}"))
        .await;
}

/// What a cluster test starts from: NATS up, a namespace and a database schema of its
/// own, and a simulated PBX.
async fn cluster_test(config: SimConfig) -> (String, Schema, PbxSim) {
    require_nats();
    let sim = PbxSim::start(config).await.unwrap();
    (namespace(), Schema::new(), sim)
}

/// The active ingest is killed mid-call: the standby takes the lease, logs in, resyncs and
/// goes on; the client (on the standby's edge) sees every call to its end, each milestone
/// once, with no gap in `seq`.
#[tokio::test]
async fn a_standby_takes_over_from_a_killed_ingest_mid_call() {
    let (ns, schema, sim) = cluster_test(SimConfig::default()).await;
    let mut a = start(&node(&sim, &ns, "a", &["ingest", "edge"]), &schema);
    lease(&a, "a").await;
    let b = start(&node(&sim, &ns, "b", &["ingest", "edge"]), &schema);
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
    // Every call the client saw has its record, once, with its end; the records of calls
    // that ended in the gap were written by the node that took over.
    let recorded = schema.rows("SELECT call_id, ended::TEXT FROM calls ORDER BY call_id");
    let ids: BTreeSet<&str> = recorded.iter().map(|r| r[0].as_deref().unwrap()).collect();
    let seen_ids: BTreeSet<&str> = seen.calls.keys().map(String::as_str).collect();
    assert_eq!(ids, seen_ids);
    assert_eq!(recorded.len(), seen_ids.len(), "one record per call");
    assert!(recorded.iter().all(|r| r[1].is_some()), "{recorded:?}");
    clean(&ns).await;
}

/// What the ingest knew of an event reaches an edge's clients over NATS: the PBX's time
/// (stale when old) and the call's media; and its wallboards the lag from the ingest's read,
/// not from the PBX's time.
#[tokio::test]
async fn an_edge_shows_the_pbxs_event_times_and_the_calls_media() {
    let behind = 3600.0;
    let (ns, schema, sim) = cluster_test(SimConfig {
        timestamps: true,
        clock_behind: Duration::from_secs_f64(behind),
        codecs: vec!["opus".into()],
        ..SimConfig::default()
    })
    .await;
    let a = start(&node(&sim, &ns, "a", &["ingest"]), &schema);
    lease(&a, "a").await;
    let edge = node_with(&sim, NATS, &ns, "b", &["edge"], &["cti", "http"]);
    let b = start(&(edge + &common::http_tokens()), &schema);
    let cti = b.port("cti").await;
    let http = Http::new(b.port("http").await);
    b.wait_line("caught up with its stream").await;
    let mut alice = Cti::connect(cti).await;
    alice.login("alice").await;

    let earliest = format_millis(timenow() - behind);
    let ring = Duration::from_millis(50);
    let (id, _, _) = sim.place_call("internal", "PJSIP", "1001", "1002", ring, PATIENCE * 10);
    let id = format!("default:{id}");
    loop {
        let e = alice.events(1).await.remove(0);
        if e["call"]["id"] != json!(id) {
            continue;
        }
        let latest = format_millis(timenow() - behind);
        let at = e["event_time"].as_str().unwrap();
        assert!(
            earliest.as_str() <= at && at <= latest.as_str(),
            "{at}: the PBX's time, between {earliest} and {latest}"
        );
        assert_eq!(e["stale"], true, "{e}");
        let media = &e["call"]["media"];
        if !media.is_null() {
            assert_eq!(
                (&media["codec"], &media["sample_rate"]),
                (&json!("opus"), &json!(48000))
            );
            break;
        }
    }
    let (status, board) = http
        .call("GET", "/api/v1/wallboard", Some("sup-token"), None)
        .await;
    assert_eq!(status, 200, "{board}");
    let lag = board["lag_p99_ms"].as_f64().expect("a lag on the edge");
    assert!(
        lag < behind * 1000.0 / 2.0,
        "{lag} ms: from the PBX's clock"
    );
    let (_, metrics) = http.raw("GET", "/metrics", None, None).await;
    for stage in ["queued", "written"] {
        let sample = format!("ctid_event_lag_seconds_count{{stage=\"{stage}\"}} ");
        let count: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(sample.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(count > 0.0, "no {stage} lag on the edge:\n{metrics}");
    }
    clean(&ns).await;
}

/// Places a call from 1001 to 1002 that talks for long: its id, and its `answered` event
/// once `client` has it.
async fn answered_call(sim: &PbxSim, client: &mut Cti) -> (String, Value) {
    let ring = Duration::from_millis(50);
    let (id, _, _) = sim.place_call("internal", "PJSIP", "1001", "1002", ring, PATIENCE * 10);
    let id = format!("default:{id}");
    loop {
        let e = client.events(1).await.remove(0);
        if e["call"]["id"] == json!(id) && e["event"] == "answered" {
            return (id, e);
        }
    }
}

/// A call answered while the PBX did not give its channels' Status to the active ingest
/// gets its media from the node that takes over.
#[tokio::test]
async fn a_standby_learns_the_media_the_killed_ingest_could_not() {
    let (ns, schema, sim) = cluster_test(SimConfig {
        codecs: vec!["g722".into()],
        ..SimConfig::default()
    })
    .await;
    sim.fail("Status", Some("Permission denied"));
    let mut a = start(&node(&sim, &ns, "a", &["ingest"]), &schema);
    lease(&a, "a").await;
    let b = start(&node(&sim, &ns, "b", &["ingest", "edge"]), &schema);
    let cti = b.port("cti").await;
    b.wait_line("caught up with its stream").await;
    let mut alice = Cti::connect(cti).await;
    alice.login("alice").await;

    let (id, answered) = answered_call(&sim, &mut alice).await;
    assert!(answered["call"]["media"].is_null(), "{answered}");
    a.wait_until("the ingest asked for the Status", || {
        common::actions_named(&sim, "Status") > 0
    })
    .await;
    sim.fail("Status", None);
    a.kill9().await;
    lease(&b, "b").await;
    loop {
        let e = alice.events(1).await.remove(0);
        if e["call"]["id"] == json!(id) && !e["call"]["media"].is_null() {
            assert_eq!(e["call"]["media"]["codec"], "g722", "{e}");
            break;
        }
    }
    clean(&ns).await;
}

/// The `hungup` of call `id` if the client gets it within `wait`.
async fn hungup_within(client: &mut Cti, id: &str, wait: Duration) -> Option<Value> {
    let hungup = async {
        loop {
            let e = client.events(1).await.remove(0);
            if e["call"]["id"] == id && e["event"] == "hungup" {
                break e;
            }
        }
    };
    tokio::time::timeout(wait, hungup).await.ok()
}

/// The node taking over cannot list the PBX's channels at first: the calls the edges hold
/// stay up, as a failed resync proves nothing; the resync it asks for again, which works,
/// keeps them.
#[tokio::test]
async fn a_failed_resync_after_a_takeover_ends_no_call() {
    let (ns, schema, sim) = cluster_test(SimConfig::default()).await;
    let mut a = start(&node(&sim, &ns, "a", &["ingest"]), &schema);
    lease(&a, "a").await;
    let b = start(&node(&sim, &ns, "b", &["ingest", "edge"]), &schema);
    let cti = b.port("cti").await;
    b.wait_line("caught up with its stream").await;
    let mut alice = Cti::connect(cti).await;
    alice.login("alice").await;
    let (id, _) = answered_call(&sim, &mut alice).await;

    sim.fail("CoreShowChannels", Some("Permission denied"));
    a.kill9().await;
    lease(&b, "b").await;
    b.wait_line("resync with Asterisk failed: CoreShowChannels")
        .await;
    let quiet = Duration::from_secs(1);
    let hungup = hungup_within(&mut alice, &id, quiet).await;
    assert!(hungup.is_none(), "ended by a failed resync: {hungup:?}");

    // Asked for again by itself.
    sim.fail("CoreShowChannels", None);
    b.wait_line("resynced with Asterisk").await;
    let hungup = hungup_within(&mut alice, &id, quiet).await;
    assert!(hungup.is_none(), "ended by the resync: {hungup:?}");
    clean(&ns).await;
}

/// An edge is killed: its client resumes on another edge with its token and last `seq`,
/// and gets every event it missed, then the live ones, with no gap and no duplicate.
#[tokio::test]
async fn a_client_of_a_killed_edge_resumes_on_another() {
    let (ns, schema, sim) = cluster_test(SimConfig::default()).await;
    let a = start(&node(&sim, &ns, "a", &["ingest", "edge"]), &schema);
    lease(&a, "a").await;
    let mut b = start(&node(&sim, &ns, "b", &["edge"]), &schema);
    let (port_a, port_b) = (a.port("cti").await, b.port("cti").await);
    b.wait_line("caught up with its stream").await;
    let _calls = sim.run_calls(CallPlan {
        rate: 20.0,
        ring: Duration::from_millis(50),
        talk: Duration::from_millis(200),
        tenants: vec![Tenant::parse("internal:1001-1003").unwrap()],
        limit: None,
        caller_up: false,
    });
    let mut first = Cti::connect(port_b).await;
    let capas = first.login("alice").await;
    let token = capas["resume_token"].as_str().unwrap().to_owned();
    let before = first.events(20).await;
    let last_seq = before.last().unwrap()["seq"].as_u64().unwrap();
    b.kill9().await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let _again = resume_without_gap(port_a, &token, last_seq, "alice").await;

    // The token was used: it resumes nothing a second time, on any edge.
    let mut twice = Cti::connect(port_a).await;
    twice
        .send(json!({"class": "resume", "token": token, "last_seq": last_seq}))
        .await;
    assert_eq!(twice.reply().await["error_string"], "resync_required");
    clean(&ns).await;
}

fn originates(sim: &PbxSim) -> usize {
    common::actions_named(sim, "Originate")
}

/// A command on an edge that does not hold the PBX runs on the active ingest, from a CTI
/// session or the HTTP API; with no active ingest, it is answered `pbx_unavailable`, at
/// once.
#[tokio::test]
async fn commands_from_an_edge_run_on_the_active_ingest() {
    let (ns, schema, sim) = cluster_test(SimConfig::default()).await;
    let mut a = start(&node(&sim, &ns, "a", &["ingest"]), &schema);
    lease(&a, "a").await;
    a.wait_line("logged in as 'cti'").await;
    let edge = node_with(&sim, NATS, &ns, "b", &["edge"], &["cti", "http"]);
    let b = start(&(edge + &common::http_tokens()), &schema);
    let port = b.port("cti").await;
    let http = common::Http::new(b.port("http").await);
    b.wait_line("caught up with its stream").await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    let originate = Some(json!({"from": "bob", "destination": "1003"}));

    let (ack, done) = alice
        .command(json!({"command": "dial", "destination": "1003"}), 1)
        .await;
    assert_eq!(ack["ipbxreply"], "sent", "{ack}");
    assert_eq!(done["response"], "ok", "{done}");
    assert_eq!(originates(&sim), 1, "the active ingest's link sent it");
    let (status, done) = http
        .call(
            "POST",
            "/api/v1/calls",
            Some("sup-token"),
            originate.clone(),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(originates(&sim), 2, "the HTTP API's too");

    a.kill9().await;
    let asked = std::time::Instant::now();
    let (refused, _) = alice
        .command(json!({"command": "dial", "destination": "1003"}), 2)
        .await;
    assert_eq!(refused["error_string"], "pbx_unavailable", "{refused}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "answered within timeouts.socket"
    );
    let (status, refused) = http
        .call("POST", "/api/v1/calls", Some("sup-token"), originate)
        .await;
    assert_eq!(
        (status, &refused["error"]),
        (503, &json!("pbx_unavailable"))
    );
    assert_eq!(originates(&sim), 2);
    clean(&ns).await;
}

/// NATS is lost for a while: each edge goes on serving what it holds, commands that need
/// another node answer `pbx_unavailable`, and when NATS is back everything catches up:
/// every call ends for the clients, and every call has its record.
#[tokio::test]
async fn losing_nats_for_a_while_loses_nothing() {
    let mut nats = PrivateNats::start();
    let ns = namespace();
    let schema = Schema::new();
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let a = start(&node_on(&sim, &nats.addr(), &ns, "a", &["ingest"]), &schema);
    lease(&a, "a").await;
    let b = start(&node_on(&sim, &nats.addr(), &ns, "b", &["edge"]), &schema);
    let port = b.port("cti").await;
    b.wait_line("caught up with its stream").await;
    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    let calls = sim.run_calls(CallPlan {
        rate: 5.0,
        ring: Duration::from_millis(200),
        talk: Duration::from_millis(1000),
        tenants: vec![Tenant::parse("internal:1001-1003").unwrap()],
        limit: Some(30),
        caller_up: false,
    });
    let mut seen = Seen::default();
    while seen.calls.len() < 4 {
        seen.take(&alice.events(1).await[0]);
    }

    nats.kill();
    b.wait_line("NATS disconnected").await;
    let (refused, _) = alice
        .command(json!({"command": "dial", "destination": "1003"}), 1)
        .await;
    assert_eq!(refused["error_string"], "pbx_unavailable", "{refused}");
    alice
        .send(
            json!({"class": "getlist", "function": "listid", "listname": "calls", "commandid": 2}),
        )
        .await;
    let list = loop {
        let m = alice.reply().await;
        if m["replyid"] == json!(2) {
            break m;
        }
        seen.take(&m);
    };
    assert!(
        list.get("error_string").is_none(),
        "the edge serves what it holds: {list}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.restart();
    a.wait_lines("lease for PBX default acquired by a", 2).await;

    // Once every call is over, the client holds none, and each has its record once.
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    let mut all_placed = None;
    loop {
        if calls.started() == 30 && all_placed.is_none() {
            all_placed = Some(tokio::time::Instant::now());
        }
        let over = all_placed.is_some_and(|t| t.elapsed() > Duration::from_secs(3));
        if over && seen.open().is_empty() {
            break;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left.min(Duration::from_millis(500)), alice.events(1)).await {
            Ok(e) => seen.take(&e[0]),
            Err(_) if left.is_zero() => panic!(
                "calls still open: {:?}\nseen: {:?}\nnode a:\n{}\nnode b:\n{}",
                seen.open(),
                seen.calls,
                a.lines().join("\n"),
                b.lines().join("\n")
            ),
            Err(_) => {}
        }
    }
    let open = schema.count("SELECT count(*) FROM calls WHERE ended IS NULL");
    assert_eq!(open, 0);
    let recorded = schema.rows("SELECT call_id FROM calls");
    let ids: BTreeSet<String> = recorded
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    for id in seen.calls.keys() {
        assert!(ids.contains(id), "call {id} has no record");
    }
}

/// Call events until `client`'s answer to a keepalive: what it was sent meanwhile.
async fn events_so_far(client: &mut Cti) -> Vec<Value> {
    client
        .send(json!({"class": "keepalive", "commandid": 77}))
        .await;
    let mut events = Vec::new();
    loop {
        let m = client.recv().await.expect("connection closed");
        if m["class"] == "call_event" {
            events.push(m);
        } else if m["replyid"] == 77 {
            return events;
        }
    }
}

/// A tenant pinned to an edge of its own (`cluster.contexts`): that edge reads only its
/// tenant's stream and carries its calls; a user of another tenant logs in there and sees
/// nothing of their own calls, nor of the pinned tenant's.
#[tokio::test]
async fn an_edge_pinned_to_a_tenant_carries_only_its_calls() {
    let (ns, schema, sim) = cluster_test(SimConfig::default()).await;
    let a = start(&node(&sim, &ns, "a", &["ingest", "edge"]), &schema);
    lease(&a, "a").await;
    let pinned = node(&sim, &ns, "b", &["edge"]) + "contexts = [\"tenant-b\"]\n";
    let b = start(&pinned, &schema);
    b.wait_line("partition tenant-b: caught up with its stream")
        .await;
    let (port_a, port_b) = (a.port("cti").await, b.port("cti").await);
    let mut dave = Cti::connect(port_b).await;
    dave.login("dave").await;
    let mut alice_on_b = Cti::connect(port_b).await;
    alice_on_b.login("alice").await;
    let mut alice = Cti::connect(port_a).await;
    alice.login("alice").await;

    let calls = sim.run_calls(CallPlan {
        rate: 10.0,
        ring: Duration::from_millis(50),
        talk: Duration::from_millis(100),
        tenants: vec![
            Tenant::parse("internal:1001-1003").unwrap(),
            Tenant::parse("tenant-b-internal:2001-2002").unwrap(),
        ],
        limit: Some(20),
        caller_up: false,
    });
    let mut dave_seen = Seen::default();
    let mut alice_seen = Seen::default();
    while calls.started() < 20 || !dave_seen.open().is_empty() || !alice_seen.open().is_empty() {
        tokio::select! {
            e = dave.events(1) => dave_seen.take(&e[0]),
            e = alice.events(1) => alice_seen.take(&e[0]),
        }
    }
    assert!(!dave_seen.calls.is_empty() && !alice_seen.calls.is_empty());
    dave_seen.assert_contiguous();
    assert!(
        dave_seen
            .calls
            .keys()
            .all(|id| !alice_seen.calls.contains_key(id)),
        "a call of both tenants"
    );
    assert_eq!(events_so_far(&mut alice_on_b).await, Vec::<Value>::new());
    assert_eq!(b.count("partition default"), 0, "{:?}", b.lines());
    clean(&ns).await;
}

/// A Web Interface notice received by one node reaches the others over NATS: each
/// re-reads the directory at once, without waiting for its own periodic check.
#[tokio::test]
async fn a_web_interface_notice_reaches_every_node() {
    let (ns, schema, sim) = cluster_test(SimConfig::default()).await;
    let rarely = |c: String| c.replace("check_interval = 0.2", "check_interval = 3600");
    let full = common::two_tenants();
    let without_erin = full.split("[[users]]\nid = 5").next().unwrap().to_owned();
    let env = schema.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let roles = ["ingest", "edge"];
    let config_a = rarely(node_with(&sim, NATS, &ns, "a", &roles, &["cti", "webi"]));
    let a = Ctid::start_full(&config_a, &without_erin, "info", &env);
    lease(&a, "a").await;
    let config_b = rarely(node(&sim, &ns, "b", &["edge"]));
    let b = Ctid::start_full(&config_b, &without_erin, "info", &env);
    b.wait_line("caught up with its stream").await;
    let port_b = b.port("cti").await;
    let mut refused = Cti::connect(port_b).await;
    let no_erin = tokio::time::timeout(PATIENCE, refused.conn.login("erin", "erin")).await;
    assert!(matches!(no_erin, Ok(Err(_))), "{no_erin:?}");

    // Both nodes read the same directory: here, two copies written alike.
    for node in [&a, &b] {
        std::fs::write(node.dir().join("directory.toml"), &full).unwrap();
    }
    let webi = a.port("webi").await;
    let (read, mut write) = tokio::net::TcpStream::connect(("127.0.0.1", webi))
        .await
        .unwrap()
        .into_split();
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    write.write_all(b"xivo[user,add,5]\n").await.unwrap();
    let mut answer = tokio::io::BufReader::new(read).lines();
    let ok = tokio::time::timeout(PATIENCE, answer.next_line()).await;
    assert_eq!(ok.unwrap().unwrap().as_deref(), Some("CTID-WEBI:OK"));
    b.wait_line("directory changed (told by node a)").await;
    b.wait_line("5 users").await;
    let mut erin = Cti::connect(port_b).await;
    erin.login("erin").await;
    clean(&ns).await;
}

/// An edge whose partitions cannot read their streams yet (NATS down as it starts) is not
/// ready and says which; once NATS is there they catch up, and it is.
#[tokio::test]
async fn an_edge_is_ready_once_its_partitions_caught_up() {
    let mut nats = PrivateNats::start();
    nats.kill();
    let ns = namespace();
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = node_with(&sim, &nats.addr(), &ns, "e", &["edge"], &["cti", "http"]);
    let edge = Ctid::start(&config, "info");
    let http = Http::new(edge.port("http").await);
    let (status, ready) = http.call("GET", "/ready", None, None).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["catching_up"], json!(["default", "tenant-b"]));
    assert!(
        ready["reasons"][0]
            .as_str()
            .unwrap()
            .contains("partition default: catching up"),
        "{ready}"
    );
    nats.restart();
    edge.wait_lines("caught up with its stream", 2).await;
    let (status, ready) = http.call("GET", "/ready", None, None).await;
    assert_eq!(
        (status, &ready["catching_up"]),
        (200, &json!([])),
        "{ready}"
    );
}
