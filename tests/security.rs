//! Security through real sockets: logins held open from one address, password guessing
//! against one login, and what each role may do to which call (with what the simulated
//! Asterisk received).

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::{ami_config_with, ctid_id, test_hash, two_tenants, Cti, Ctid, PATIENCE};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

async fn server(env: &[(&str, &str)], directory: &str) -> (PbxSim, Ctid, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
        &["cti"],
    );
    let ctid = Ctid::start_full(&config, directory, "info", env);
    let port = ctid.port("cti").await;
    ctid.wait_line("logged in as 'cti'").await;
    (sim, ctid, port)
}

/// Lets this process open `n` more sockets, as far as the hard limit allows.
fn allow_open_files(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < n) {
        limit.current = Some(limit.maximum.map_or(n, |max| max.min(n)));
        setrlimit(Resource::Nofile, limit).unwrap();
    }
}

#[tokio::test]
async fn one_address_holding_2000_logins_open_does_not_lock_out_another() {
    allow_open_files(4096);
    let (_sim, ctid, port) = server(&[("CTID__TIMEOUTS__LOGIN", "60")], &two_tenants()).await;
    // 2,000 connections from 127.0.0.1 that never log in.
    let mut held = Vec::new();
    for _ in 0..2000 {
        held.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    // Each connection past the address's 32 is answered too_many_connections and closed:
    // once all of those answered, ctid has handled every connection.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for mut stream in held {
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got).await;
            let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
        }));
    }
    for _ in 0..2000 - 32 {
        let got = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("a refused connection got no answer")
            .unwrap();
        assert!(got.contains("too_many_connections"), "{got:?}");
    }
    // Another address logs in at once, while the 32 are still held.
    let mut other = Cti::connect_from(port, "127.0.0.2").await;
    assert_eq!(other.login("alice").await["login"], "alice");
    assert!(rx.try_recv().is_err(), "the 32 are still logging in");
    ctid.wait_line("sessions.max_unauthenticated_per_address")
        .await;
    for reader in readers {
        reader.abort();
    }
}

#[tokio::test]
async fn a_placeholder_secret_is_never_sent_and_ctid_keeps_running() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(sim.addr().port(), "secret = \"change-me\"", &["cti"]);
    let ctid = Ctid::start(&config, "info");
    let port = ctid.port("cti").await;
    let error = ctid.wait_line("ami.secret is a placeholder").await;
    assert!(
        error.contains("ERROR") && error.contains("CTID__AMI__SECRET"),
        "{error}"
    );
    // ctid serves meanwhile; its link reaches the PBX, and sends it nothing.
    let mut alice = Cti::connect(port).await;
    assert_eq!(alice.login("alice").await["login"], "alice");
    ctid.wait_lines(
        "reached, not logging in: its secret is a placeholder, retrying in",
        2,
    )
    .await;
    assert!(sim.logins().is_empty());
    assert!(sim.actions().is_empty(), "{:?}", sim.actions());
}

/// The answer to a login with `password` as `login`: the `login_pass` reply, or the
/// `disconnect` that closed the connection first.
async fn try_login(port: u16, from: &str, login: &str, password: &str) -> Value {
    let mut c = Cti::connect_from(port, from).await;
    c.send(json!({"class": "login_id", "userlogin": login}))
        .await;
    assert!(c.reply().await.get("sessionid").is_some());
    c.send(json!({"class": "login_pass", "password": password}))
        .await;
    c.reply().await
}

#[tokio::test]
async fn a_login_under_attack_is_slowed_but_its_owner_gets_in_from_where_they_did_before() {
    let (_sim, _ctid, port) = server(&[("CTID__TIMEOUTS__LOGIN", "3")], &two_tenants()).await;
    assert!(try_login(port, "127.0.0.5", "bob", "bob").await["capalist"].is_array());
    // Five guesses at bob's password, each from another address (no address is slowed).
    for i in 1..=5 {
        let answer = try_login(port, &format!("127.0.1.{i}"), "bob", "guess").await;
        assert_eq!(answer["error_string"], "login_password", "guess {i}");
    }
    // Alice, from one of those addresses, logs in as herself: bob's count stays.
    assert!(try_login(port, "127.0.1.1", "alice", "alice").await["capalist"].is_array());
    // bob's next check would come past the login timeout: from a new address even the
    // right password is not checked.
    let answer = try_login(port, "127.0.2.1", "bob", "bob").await;
    assert_eq!(
        (answer["class"].as_str(), answer["error_string"].as_str()),
        (Some("disconnect"), Some("login_timeout"))
    );
    // From where bob logged in before, he gets in.
    assert!(try_login(port, "127.0.0.5", "bob", "bob").await["capalist"].is_array());
}

/// Sends a request; returns its first answer and its outcome (the same message twice when
/// it is refused, or when its class answers once).
async fn request(c: &mut Cti, mut request: Value, id: u64) -> (Value, Value) {
    request["commandid"] = json!(id);
    let once = request["class"] != "ipbxcommand";
    c.send(request).await;
    let mut got = VecDeque::new();
    loop {
        let m = c.reply().await;
        if m["replyid"] != json!(id) {
            continue;
        }
        if m.get("error_string").is_some() || once {
            return (m.clone(), m);
        }
        got.push_back(m);
        if got.len() == 2 {
            return (got.pop_front().unwrap(), got.pop_front().unwrap());
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Whose {
    Own,
    Colleague,
    OtherContext,
}

/// Whether a role reaches a call or line.
fn reaches(role: &str, whose: Whose) -> bool {
    match role {
        "agent" => whose == Whose::Own,
        "supervisor" => whose != Whose::OtherContext,
        _ => true,
    }
}

struct Matrix {
    sim: PbxSim,
    next_id: u64,
    /// An observer of each tenant, who sees every call of it.
    observers: [Cti; 2],
}

impl Matrix {
    /// Places a call from `from` to `to` (ringing for a minute if `ringing`), and waits
    /// until ctid has it; returns its id.
    async fn call(&mut self, from: &str, to: &str, ringing: bool) -> String {
        let tenant_b = from.starts_with('2');
        let context = if tenant_b {
            "tenant-b-internal"
        } else {
            "internal"
        };
        let ring = if ringing {
            Duration::from_secs(60)
        } else {
            Duration::from_millis(20)
        };
        let (id, _, _) =
            self.sim
                .place_call(context, "PJSIP", from, to, ring, Duration::from_secs(60));
        let (id, awaited) = (ctid_id(&id), if ringing { "ringing" } else { "bridged" });
        let observer = &mut self.observers[usize::from(tenant_b)];
        loop {
            let e = observer.events(1).await.remove(0);
            if e["call"]["id"] == json!(id) && e["event"] == awaited {
                return id;
            }
        }
    }

    /// Sends `req` as `c`; checks that it is refused `unallowed` with nothing sent to
    /// Asterisk, or carried out as `action`.
    async fn check(&mut self, c: &mut Cti, role: &str, req: Value, allowed: bool, action: &str) {
        let what = format!("{role}: {req}");
        let before = self.sim.actions().len();
        self.next_id += 1;
        let (first, outcome) = request(c, req, self.next_id).await;
        if !allowed {
            let refusal = first.get("error_string").or(first.get("response"));
            assert!(
                first["error_string"] == "unallowed",
                "{what} must be refused, got {first} ({refusal:?})"
            );
            // Barrier: a later command's outcome proves the refused one sent nothing.
            let barrier = match role {
                "admin" => {
                    json!({"class": "ipbxcommand", "command": "queuepause", "queue": "support", "member": "1002"})
                }
                _ => json!({"class": "ipbxcommand", "command": "agentpause"}),
            };
            self.next_id += 1;
            let (_, done) = request(c, barrier, self.next_id).await;
            assert_eq!(done["response"], "ok", "{what}: the barrier: {done}");
            let sent = self.actions_since(before);
            assert_eq!(sent, ["QueuePause"], "{what} reached Asterisk");
            return;
        }
        if req_class(&first) == "disposition" {
            assert_eq!(first["response"], "ok", "{what}: {first}");
            return;
        }
        assert_eq!(first["ipbxreply"], "sent", "{what}: {first}");
        assert!(outcome.get("response").is_some(), "{what}: {outcome}");
        let sent = self.actions_since(before);
        assert!(
            sent.iter().any(|a| a == action),
            "{what}: expected {action} in {sent:?}"
        );
    }

    fn actions_since(&self, from: usize) -> Vec<String> {
        self.sim
            .actions()
            .into_iter()
            .skip(from)
            .filter_map(|a| a.get("Action").map(str::to_owned))
            // ctid's own: keepalives, and the media of calls answered or bridged.
            .filter(|a| a != "Ping" && a != "Status")
            .collect()
    }
}

fn req_class(m: &Value) -> &str {
    m["class"].as_str().unwrap_or("")
}

fn ipbx(command: &str, extra: Value) -> Value {
    let mut req = json!({"class": "ipbxcommand", "command": command});
    if let (Some(req), Some(extra)) = (req.as_object_mut(), extra.as_object()) {
        req.extend(extra.clone());
    }
    req
}

#[tokio::test]
async fn each_command_for_each_role_on_its_own_a_colleagues_and_another_contexts_call() {
    // alice: agent, carol: supervisor (as `supervisor = true`), zoe: admin with no line.
    let directory = format!(
        "{}[[users]]\nid = 9\nlogin = \"zoe\"\npassword = \"{}\"\nrole = \"admin\"\n",
        two_tenants(),
        test_hash("zoe")
    );
    let (sim, _ctid, port) = server(&[], &directory).await;
    let (mut carol_watch, mut dave_watch) = (Cti::connect(port).await, Cti::connect(port).await);
    carol_watch.login("carol").await;
    dave_watch.login("dave").await;
    let mut m = Matrix {
        sim,
        next_id: 0,
        observers: [carol_watch, dave_watch],
    };
    // Bridged calls: alice's (1001), bob's (1002), carol's (1003), dave's (2001).
    let lines = [("alice", "1001"), ("carol", "1003")];
    let own_call = [
        m.call("1001", "1004", false).await,
        m.call("1003", "1006", false).await,
    ];
    let colleague_call = m.call("1002", "1005", false).await;
    let other_call = m.call("2001", "2005", false).await;

    let roles = [
        ("alice", "agent"),
        ("carol", "supervisor"),
        ("zoe", "admin"),
    ];
    for (r, (login, role)) in roles.into_iter().enumerate() {
        let mut c = Cti::connect(port).await;
        let capas = c.login(login).await;
        assert_eq!(capas["capas"]["role"], role);
        let rights = &capas["capas"]["rights"];
        let (calls_scope, dial) = match role {
            "agent" => ("own calls", json!("own line")),
            "supervisor" => ("calls of the context", json!("own line")),
            _ => ("any call", Value::Null),
        };
        assert_eq!(rights["hangup"], calls_scope, "{capas}");
        assert_eq!(rights["dial"], dial, "{capas}");
        if role == "admin" {
            // An admin lists every context's calls.
            c.send(json!({"class": "getlist", "function": "listid", "listname": "calls"}))
                .await;
            let listed = c.reply().await["list"].clone();
            for call in [&colleague_call, &other_call] {
                assert!(
                    listed.as_array().unwrap().contains(&json!(call)),
                    "{listed}"
                );
            }
        }
        let own_line = lines.get(r).map(|(_, number)| *number);
        let mut calls = vec![
            (Whose::Colleague, colleague_call.clone()),
            (Whose::OtherContext, other_call.clone()),
        ];
        if let Some(own) = own_call.get(r) {
            calls.insert(0, (Whose::Own, own.clone()));
        }
        // Commands that leave the call as it is.
        for (whose, call) in &calls {
            let allowed = reaches(role, *whose);
            let on = |command: &str, extra: Value| {
                let mut req = ipbx(command, extra);
                req["call_id"] = json!(call);
                req
            };
            for (req, action) in [
                (on("hold", json!({})), "Redirect"),
                (on("resume", json!({})), "Bridge"),
                (on("park", json!({})), "Park"),
                (on("record", json!({"subcommand": "start"})), "MixMonitor"),
                (
                    on("record", json!({"subcommand": "stop"})),
                    "StopMixMonitor",
                ),
                (
                    on("transfer", json!({"destination": "1099"})),
                    "BlindTransfer",
                ),
                (on("atxfer", json!({"destination": "1099"})), "Atxfer"),
                (on("atxfer_cancel", json!({})), "CancelAtxfer"),
            ] {
                m.check(&mut c, role, req, allowed, action).await;
            }
            let disposition = json!({"class": "disposition", "call_id": call, "code": "sale"});
            m.check(&mut c, role, disposition, allowed, "").await;
        }
        // Commands that end a call, and pickups: each on a call of its own.
        let numbers = [
            (Whose::Own, own_line),
            (Whose::Colleague, Some("1002")),
            (Whose::OtherContext, Some("2001")),
        ];
        for (whose, number) in numbers {
            let Some(number) = number else { continue };
            let allowed = reaches(role, whose);
            let peer = if number.starts_with('2') {
                "2098"
            } else {
                "1098"
            };
            for (command, action) in [("hangup", "Hangup"), ("atxfer_complete", "Hangup")] {
                let call = m.call(number, peer, false).await;
                let req = ipbx(command, json!({"call_id": call}));
                m.check(&mut c, role, req, allowed, action).await;
            }
            let ringing = m.call(peer, number, true).await;
            for command in ["pickup", "intercept"] {
                let req = ipbx(command, json!({"call_id": ringing}));
                // A pickup rings the user's own phone: an admin with no line has none.
                let allowed = allowed && own_line.is_some();
                m.check(&mut c, role, req, allowed, "Originate").await;
            }
            // Lines: originate from it, and its queue membership.
            let member = json!({"queue": "support", "member": number});
            for (req, action) in [
                (
                    ipbx(
                        "originate",
                        json!({"source": number, "destination": "1099"}),
                    ),
                    "Originate",
                ),
                (ipbx("queueadd", member.clone()), "QueueAdd"),
                (ipbx("queuepause", member.clone()), "QueuePause"),
                (ipbx("queueunpause", member.clone()), "QueuePause"),
                (ipbx("queueremove", member.clone()), "QueueRemove"),
            ] {
                m.check(&mut c, role, req, allowed, action).await;
            }
        }
        // The user's own line: the same for every role that has one.
        for (req, action) in [
            (ipbx("dial", json!({"destination": "1099"})), "Originate"),
            (ipbx("agentlogin", json!({})), "QueueAdd"),
            (ipbx("agentpause", json!({})), "QueuePause"),
            (ipbx("agentunpause", json!({})), "QueuePause"),
            (ipbx("agentlogout", json!({})), "QueueRemove"),
        ] {
            m.check(&mut c, role, req, own_line.is_some(), action).await;
        }
    }
}
