//! The HTTP API through real sockets: the real ctid binary, the simulated PBX, and an HTTP
//! client with the test tokens of `common::TOKENS`. Every answer is checked against
//! docs/openapi.yaml (`Http::call`).

mod common;

use std::time::Duration;

use common::openapi::{served, spec};
use common::{actions_named, ami_config_with, ctid_id, http_tokens, Cti, Ctid, Http, PATIENCE};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::{json, Value};

/// Every context (`["*"]`), admin.
const ADMIN: &str = "admin-token";
/// `default`, supervisor.
const SUP: &str = "sup-token";
/// `default`, agent.
const AGENT: &str = "agent-token";
/// `tenant-b`, supervisor.
const SUP_B: &str = "sup-b-token";
/// `default` and `tenant-b`, supervisor.
const BOTH: &str = "both-token";

struct Server {
    sim: PbxSim,
    ctid: Ctid,
    http: Http,
    /// Carol (supervisor of `default`) and dave (`tenant-b`): they see every call of their
    /// context.
    observers: [Cti; 2],
}

async fn server() -> Server {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
        &["cti", "http"],
    );
    let ctid = Ctid::start(&(config + &http_tokens()), "info");
    let http = Http::new(ctid.port("http").await);
    let cti = ctid.port("cti").await;
    ctid.wait_line("resynced with Asterisk").await;
    let (mut carol, mut dave) = (Cti::connect(cti).await, Cti::connect(cti).await);
    carol.login("carol").await;
    dave.login("dave").await;
    Server {
        sim,
        ctid,
        http,
        observers: [carol, dave],
    }
}

impl Server {
    /// Places a call from `from` to `to` that talks for a minute, or `talk`; waits until
    /// ctid has it `awaited` (`bridged`, `hungup`) and returns its event.
    async fn call(&mut self, from: &str, to: &str, talk: Duration, awaited: &str) -> Value {
        let tenant_b = from.starts_with('2');
        let context = match tenant_b {
            true => "tenant-b-internal",
            false => "internal",
        };
        let ring = Duration::from_millis(20);
        let (id, _, _) = self.sim.place_call(context, "PJSIP", from, to, ring, talk);
        let id = ctid_id(&id);
        let observer = &mut self.observers[usize::from(tenant_b)];
        loop {
            let e = observer.events(1).await.remove(0);
            if e["call"]["id"] == json!(id) && e["event"] == awaited {
                return e;
            }
        }
    }

    /// A bridged call's id.
    async fn bridged(&mut self, from: &str, to: &str) -> String {
        let e = self
            .call(from, to, Duration::from_secs(60), "bridged")
            .await;
        e["call"]["id"].as_str().unwrap().to_owned()
    }

    async fn api(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.http.call(method, path, Some(token), body).await
    }
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect()
}

#[test]
fn the_spec_and_the_router_list_the_same_routes() {
    assert_eq!(spec().routes(), served());
    // The check bites: an answer off its schema, or an undocumented status.
    for (status, body) in [
        (200, json!({"pbxes": [{"name": 1, "state": "up"}]})),
        (200, json!({})),
        (418, json!({"error": "x", "detail": "y"})),
    ] {
        let checked =
            std::panic::catch_unwind(|| spec().check("GET", "/api/v1/pbxes", status, &body));
        assert!(checked.is_err(), "{status} {body}");
    }
}

#[tokio::test]
async fn no_token_or_a_wrong_one_is_401_and_unknown_routes_404_in_json() {
    let s = server().await;
    for token in [None, Some("wrong"), Some(""), Some("sup-tokenx")] {
        let (status, body) = s.http.call("GET", "/api/v1/pbxes", token, None).await;
        assert_eq!(
            (status, &body["error"]),
            (401, &json!("unauthorized")),
            "{token:?}"
        );
    }
    let (status, body) = s.api("GET", "/api/v1/nothing", ADMIN, None).await;
    assert_eq!((status, &body["error"]), (404, &json!("not_found")));
    let (status, body) = s.api("PATCH", "/api/v1/pbxes", ADMIN, None).await;
    assert_eq!((status, &body["error"]), (405, &json!("unknown_function")));
    let (status, body) = s.api("GET", "/api/v1/pbxes", ADMIN, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"pbxes": [{"name": "default", "state": "up"}]}));
    for token in ["wrong", "sup-token", "admin-token"] {
        assert_eq!(s.ctid.count(token), 0, "tokens are never logged");
    }
}

#[tokio::test]
async fn live_calls_are_listed_within_the_tokens_contexts() {
    let mut s = server().await;
    let own = s.bridged("1001", "1004").await;
    let other = s.bridged("2001", "2005").await;

    let (status, all) = s.api("GET", "/api/v1/calls", ADMIN, None).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all["calls"]), [own.as_str(), other.as_str()]);
    for token in [SUP, AGENT] {
        let (_, mine) = s.api("GET", "/api/v1/calls", token, None).await;
        assert_eq!(ids(&mine["calls"]), [own.as_str()], "{token}");
        assert_eq!(mine["calls"][0]["contexts"], json!(["default"]));
    }
    let (_, theirs) = s
        .api("GET", "/api/v1/calls?context=tenant-b", ADMIN, None)
        .await;
    assert_eq!(ids(&theirs["calls"]), [other.as_str()]);
    let (status, _) = s
        .api("GET", "/api/v1/calls?context=tenant-b", SUP, None)
        .await;
    assert_eq!(status, 404, "another tenant's context is not found");

    let (status, call) = s
        .api("GET", &format!("/api/v1/calls/{own}"), SUP, None)
        .await;
    assert_eq!((status, call["id"].as_str()), (200, Some(own.as_str())));
    assert_eq!(call["state"], "bridged");
    let (status, body) = s
        .api("GET", &format!("/api/v1/calls/{own}"), SUP_B, None)
        .await;
    assert_eq!((status, &body["error"]), (404, &json!("not_found")));
    let (status, _) = s
        .api("GET", "/api/v1/calls/default:nothing", ADMIN, None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn call_control_takes_the_cti_path_and_its_rights() {
    let mut s = server().await;
    let id = s.bridged("1001", "1004").await;
    let on = |what: &str| format!("/api/v1/calls/{id}{what}");
    let commands = [
        ("/hold", None, "hold", "Redirect"),
        ("/resume", None, "resume", "Bridge"),
        ("/record", None, "record", "MixMonitor"),
        (
            "/record",
            Some(json!({"action": "stop"})),
            "record",
            "StopMixMonitor",
        ),
        (
            "/transfer",
            Some(json!({"destination": "1099"})),
            "transfer",
            "BlindTransfer",
        ),
        (
            "/transfer",
            Some(json!({"destination": "1099", "attended": true})),
            "atxfer",
            "Atxfer",
        ),
    ];
    for (path, body, command, action) in commands {
        let before = actions_named(&s.sim, action);
        let (status, refused) = s.api("POST", &on(path), AGENT, body.clone()).await;
        assert_eq!(
            (status, &refused["error"]),
            (403, &json!("unallowed")),
            "{path}"
        );
        let (status, _) = s.api("POST", &on(path), SUP_B, body.clone()).await;
        assert_eq!(status, 404, "{path}: another tenant's call");
        assert_eq!(
            actions_named(&s.sim, action),
            before,
            "{path}: nothing sent"
        );
        let (status, done) = s.api("POST", &on(path), SUP, body).await;
        assert_eq!(status, 200, "{path}: {done}");
        assert_eq!(done, json!({"command": command, "response": "ok"}));
        assert_eq!(actions_named(&s.sim, action), before + 1, "{path}");
    }
    let (status, body) = s.api("POST", &on("/transfer"), SUP, Some(json!({}))).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("missing:destination"))
    );
    let (status, body) = s
        .api(
            "POST",
            &on("/record"),
            SUP,
            Some(json!({"action": "pause"})),
        )
        .await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid:action")));

    s.sim.fail("Redirect", Some("Channel not found"));
    let (status, failed) = s.api("POST", &on("/hold"), ADMIN, None).await;
    assert_eq!((status, &failed["error"]), (502, &json!("command_failed")));
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .contains("Channel not found"),
        "{failed}"
    );

    let sale = Some(json!({"code": "sale", "note": "2 seats"}));
    let (status, _) = s.api("PUT", &on("/disposition"), AGENT, sale.clone()).await;
    assert_eq!(status, 403);
    let (status, _) = s.api("PUT", &on("/disposition"), SUP_B, sale.clone()).await;
    assert_eq!(status, 404);
    let (status, body) = s
        .api("PUT", &on("/disposition"), SUP, Some(json!({})))
        .await;
    assert_eq!((status, &body["error"]), (400, &json!("missing:code")));
    let (status, set) = s.api("PUT", &on("/disposition"), SUP, sale).await;
    assert_eq!(
        (status, set),
        (200, json!({"call_id": id, "response": "ok"}))
    );
    // The live call is read from its context's partition, which the disposition reaches
    // as an `updated` event just after the answer.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let call = loop {
        let (_, call) = s.api("GET", &on(""), SUP, None).await;
        if !call["disposition"].is_null() || tokio::time::Instant::now() > deadline {
            break call;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(call["disposition"]["code"], "sale");
    assert_eq!(call["disposition"]["by"], "http:sup");

    let (status, _) = s.api("DELETE", &on(""), AGENT, None).await;
    assert_eq!(status, 403);
    let (status, _) = s.api("DELETE", &on(""), SUP_B, None).await;
    assert_eq!(status, 404);
    let (status, done) = s.api("DELETE", &on(""), SUP, None).await;
    assert_eq!(
        (status, done),
        (200, json!({"command": "hangup", "response": "ok"}))
    );
    assert_eq!(actions_named(&s.sim, "Hangup"), 2, "both channels");
}

#[tokio::test]
async fn originate_rings_a_line_of_the_tokens_contexts_and_bodies_are_checked() {
    let s = server().await;
    let originate =
        |from: &str, destination: &str| Some(json!({"from": from, "destination": destination}));
    let (status, done) = s
        .api("POST", "/api/v1/calls", SUP, originate("alice", "1099"))
        .await;
    assert_eq!(
        (status, done),
        (200, json!({"command": "originate", "response": "ok"}))
    );
    let (status, _) = s
        .api("POST", "/api/v1/calls", SUP, originate("1002", "1099"))
        .await;
    assert_eq!(status, 200, "by the line's number");
    let sent: Vec<String> = s
        .sim
        .actions()
        .iter()
        .filter(|a| a.get("Action") == Some("Originate"))
        .filter_map(|a| a.get("Channel").map(str::to_owned))
        .collect();
    assert_eq!(sent, ["PJSIP/1001", "PJSIP/1002"]);
    for from in ["dave", "2001", "PJSIP/2001", "nobody"] {
        let (status, body) = s
            .api("POST", "/api/v1/calls", SUP, originate(from, "1099"))
            .await;
        assert_eq!(
            (status, &body["error"]),
            (404, &json!("not_found")),
            "{from}"
        );
    }
    let (status, _) = s
        .api("POST", "/api/v1/calls", AGENT, originate("alice", "1099"))
        .await;
    assert_eq!(status, 403);
    let (status, body) = s
        .api("POST", "/api/v1/calls", SUP, originate("alice", "10 99"))
        .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid:destination"))
    );
    let (status, body) = s
        .api("POST", "/api/v1/calls", SUP, Some(json!({"from": "alice"})))
        .await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("missing:destination"))
    );
    assert_eq!(
        actions_named(&s.sim, "Originate"),
        2,
        "refusals send nothing"
    );

    let malformed = s
        .http
        .raw(
            "POST",
            "/api/v1/calls",
            Some(SUP),
            Some(b"{\"from\": ".to_vec()),
        )
        .await;
    assert_eq!(malformed.0, 400);
    let error: Value = serde_json::from_str(&malformed.1).unwrap();
    assert_eq!(error["error"], "bad_json");
    spec().check("POST", "/api/v1/calls", 400, &error);
    let huge = format!("{{\"from\": \"{}\"}}", "x".repeat(70_000)).into_bytes();
    let oversized = s
        .http
        .raw("POST", "/api/v1/calls", Some(SUP), Some(huge))
        .await;
    assert_eq!(oversized.0, 413);
    let error: Value = serde_json::from_str(&oversized.1).unwrap();
    assert_eq!(error["error"], "frame_too_large");
    spec().check("POST", "/api/v1/calls", 413, &error);
}

#[tokio::test]
async fn records_are_paged_and_stay_within_the_tokens_contexts() {
    let mut s = server().await;
    let short = Duration::from_millis(50);
    let mut ended = Vec::new();
    for (from, to) in [("1001", "1002"), ("1003", "1001"), ("2001", "2002")] {
        let e = s.call(from, to, short, "hungup").await;
        ended.push((
            e["call"]["id"].clone(),
            e["call"]["record_id"].as_i64().unwrap(),
        ));
    }
    let ((first, first_record), (second, _), (theirs, their_record)) =
        (ended[0].clone(), ended[1].clone(), ended[2].clone());

    let (status, page) = s.api("GET", "/api/v1/records", SUP, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_offset"], Value::Null);
    assert_eq!(page["records"][0]["id"], second, "newest first");
    let (_, page) = s.api("GET", "/api/v1/records?limit=1", SUP, None).await;
    assert_eq!(page["records"][0]["id"], second);
    assert_eq!(page["next_offset"], 1);
    let (_, page) = s
        .api("GET", "/api/v1/records?limit=1&offset=1", SUP, None)
        .await;
    assert_eq!(page["records"][0]["id"], first);
    let (_, page) = s
        .api("GET", "/api/v1/records?limit=1&offset=2", SUP, None)
        .await;
    assert_eq!(page["records"], json!([]));
    assert_eq!(page["next_offset"], Value::Null);
    let (_, by_number) = s.api("GET", "/api/v1/records?number=1002", SUP, None).await;
    assert_eq!(by_number["records"].as_array().unwrap().len(), 1);
    let (status, body) = s.api("GET", "/api/v1/records?from=soon", SUP, None).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid:from")));
    let (status, _) = s
        .api("GET", "/api/v1/records?context=tenant-b", SUP, None)
        .await;
    assert_eq!(status, 404);
    for token in [ADMIN, BOTH] {
        let (_, all) = s.api("GET", "/api/v1/records", token, None).await;
        assert_eq!(all["records"].as_array().unwrap().len(), 3, "{token}");
    }
    let (_, one) = s
        .api("GET", "/api/v1/records?context=tenant-b", BOTH, None)
        .await;
    assert_eq!(one["records"][0]["id"], theirs);
    assert_eq!(one["records"].as_array().unwrap().len(), 1);

    let theirs_path = format!("/api/v1/records/{their_record}");
    let (status, _) = s.api("GET", &theirs_path, SUP, None).await;
    assert_eq!(status, 404, "another tenant's record");
    for token in [SUP_B, BOTH, ADMIN] {
        let (status, record) = s.api("GET", &theirs_path, token, None).await;
        assert_eq!((status, &record["id"]), (200, &theirs), "{token}");
    }
    let (status, _) = s.api("GET", "/api/v1/records/nothing", SUP, None).await;
    assert_eq!(status, 404);

    let path = format!("/api/v1/calls/{}/disposition", first.as_str().unwrap());
    let callback = Some(json!({"code": "callback"}));
    let (status, _) = s.api("PUT", &path, SUP_B, callback.clone()).await;
    assert_eq!(status, 404, "another tenant's recorded call");
    let (status, _) = s.api("PUT", &path, SUP, callback).await;
    assert_eq!(status, 200);
    let (_, record) = s
        .api("GET", &format!("/api/v1/records/{first_record}"), SUP, None)
        .await;
    assert_eq!(record["disposition"]["code"], "callback");
    assert_eq!(record["disposition"]["by"], "http:sup");
}

#[tokio::test]
async fn users_queues_and_pbxes_of_the_tokens_contexts() {
    let s = server().await;
    let logins = |body: &Value| -> Vec<String> {
        body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["login"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, users) = s.api("GET", "/api/v1/users", SUP, None).await;
    assert_eq!(status, 200);
    assert_eq!(logins(&users), ["alice", "bob", "carol"]);
    let carol = &users["users"][2];
    assert_eq!(carol["role"], "supervisor");
    assert_eq!(carol["line"]["interface"], "PJSIP/1003");
    assert_ne!(carol["presence"], "disconnected", "carol is logged in");
    assert_eq!(users["users"][0]["presence"], "disconnected");
    let (_, users) = s.api("GET", "/api/v1/users", SUP_B, None).await;
    assert_eq!(logins(&users), ["dave"]);
    let (_, users) = s.api("GET", "/api/v1/users", ADMIN, None).await;
    assert_eq!(logins(&users), ["alice", "bob", "carol", "dave", "erin"]);
    let (_, users) = s
        .api("GET", "/api/v1/users?context=tenant-b", ADMIN, None)
        .await;
    assert_eq!(logins(&users), ["dave"]);

    let (status, queues) = s.api("GET", "/api/v1/queues", SUP, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        queues["queues"],
        json!([{"name": "support", "number": null, "context": "default", "pbx": "default", "waiting": 0}])
    );
    let (_, queues) = s.api("GET", "/api/v1/queues", SUP_B, None).await;
    assert_eq!(queues["queues"], json!([]));
    let (_, pbxes) = s.api("GET", "/api/v1/pbxes", SUP_B, None).await;
    assert_eq!(pbxes["pbxes"][0]["name"], "default");
}

/// A self-signed certificate for `localhost`, written as cert.pem and key.pem in `dir`;
/// a copy of it, for clients to trust, as `trust`.
fn certificate(dir: &std::path::Path, trust: &str) -> std::path::PathBuf {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
    std::fs::write(dir.join(trust), certified.cert.pem()).unwrap();
    dir.join(trust)
}

#[tokio::test]
async fn the_api_is_served_over_tls_and_its_certificate_renewed_on_sighup() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    let old = certificate(certs.path(), "old.pem");
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let config = ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["http"]);
    let env = [
        ("CTID__LISTEN__HTTP__CERT", cert.to_str().unwrap()),
        ("CTID__LISTEN__HTTP__KEY", key.to_str().unwrap()),
    ];
    let ctid = Ctid::start_with(&(config + &http_tokens()), "info", &env);
    let port = ctid.port("http").await;
    assert!(ctid.wait_line("http: listening on").await.contains("(TLS)"));
    let http = Http::tls(port, &old);
    let (status, body) = http.call("GET", "/api/v1/pbxes", Some(ADMIN), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http.call("GET", "/api/v1/pbxes", None, None).await;
    assert_eq!(status, 401);

    let new = certificate(certs.path(), "new.pem");
    ctid.signal("HUP");
    ctid.wait_line("http: certificate reloaded").await;
    let (status, _) = Http::tls(port, &new)
        .call("GET", "/api/v1/pbxes", Some(ADMIN), None)
        .await;
    assert_eq!(status, 200);
    // A new client: the one above keeps its connection open.
    let refused = Http::tls(port, &old)
        .attempt("GET", "/api/v1/pbxes", Some(ADMIN), None)
        .await;
    assert!(refused.is_err(), "the old certificate is gone: {refused:?}");
    drop(sim);
}

/// A token's commands wait for a hung Asterisk: past 64 under way, the next is refused at
/// once (429), and another token's is still served.
#[tokio::test]
async fn a_token_has_at_most_64_commands_under_way() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
        &["http"],
    );
    // The commands wait for their answer long enough for the test to see them all sent.
    let env = [("CTID__TIMEOUTS__SOCKET", "60")];
    let ctid = Ctid::start_with(&(config + &http_tokens()), "info", &env);
    let http = Http::new(ctid.port("http").await);
    ctid.wait_line("resynced with Asterisk").await;
    sim.set_muted(true);
    let originate = json!({"from": "alice", "destination": "1099"});
    let _waiting: Vec<_> = (0..64)
        .map(|_| {
            let (http, body) = (http.clone(), originate.clone());
            tokio::spawn(async move {
                http.call("POST", "/api/v1/calls", Some(SUP), Some(body))
                    .await
            })
        })
        .collect();
    ctid.wait_until("64 originates sent", || {
        actions_named(&sim, "Originate") == 64
    })
    .await;
    let (status, body) = http
        .call("POST", "/api/v1/calls", Some(SUP), Some(originate.clone()))
        .await;
    assert_eq!((status, &body["error"]), (429, &json!("too_many_requests")));
    assert_eq!(
        actions_named(&sim, "Originate"),
        64,
        "the refused one sent nothing"
    );
    let (status, _) = http.call("GET", "/api/v1/calls", Some(SUP), None).await;
    assert_eq!(status, 200, "reads are not counted");
    sim.set_muted(false);
    let (status, _) = http
        .call("POST", "/api/v1/calls", Some(ADMIN), Some(originate))
        .await;
    assert_eq!(status, 200, "another token's command is served");
    drop(ctid);
}
