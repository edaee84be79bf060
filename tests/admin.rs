//! The administration ports through real sockets: Web Interface notices, Announce (UDP),
//! the Info console, and a directory served by a web service.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{actions_named, ami_config_with, ctid_id, test_hash, two_tenants, Cti, Ctid, Text};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn server(listeners: &[&str], env: &[(&str, &str)]) -> (PbxSim, Ctid) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0",
        listeners,
    );
    let ctid = Ctid::start_with(&config, "info", env);
    ctid.wait_line("logged in as 'cti'").await;
    (sim, ctid)
}

/// The test directory without the users of `drop`, plus `extra`.
fn directory_without(drop: &[&str], extra: &str) -> String {
    let full = two_tenants();
    let mut parts = full.split("[[users]]");
    let mut text = parts.next().unwrap().to_owned();
    for user in parts {
        if !drop
            .iter()
            .any(|d| user.contains(&format!("login = \"{d}\"")))
        {
            text.push_str("[[users]]");
            text.push_str(user);
        }
    }
    text + extra
}

async fn config_push(c: &mut Cti, function: &str, listname: &str) -> Value {
    loop {
        let m = c.reply().await;
        if m["class"] == "getlist" && m["function"] == function && m["listname"] == listname {
            return m;
        }
    }
}

#[tokio::test]
async fn web_interface_notices_push_changes_and_close_deleted_users() {
    let (_sim, ctid) = server(&["cti", "webi"], &[]).await;
    let (cti, webi) = (ctid.port("cti").await, ctid.port("webi").await);
    let path = ctid.dir().join("directory.toml");
    let (mut alice, mut bob) = (Cti::connect(cti).await, Cti::connect(cti).await);
    alice.login("alice").await;
    bob.login("bob").await;
    let mut web = Text::connect(webi).await;

    let frank = format!(
        "[[users]]\nid = 7\nlogin = \"frank\"\npassword = \"{}\"\nfirstname = \"Frank\"\n\
         line = {{ interface = \"PJSIP/1007\", number = \"1007\", context = \"default\", dialplan = \"internal\" }}\n",
        test_hash("frank")
    );
    std::fs::write(&path, directory_without(&[], &frank)).unwrap();
    assert_eq!(web.ask("xivo[user,add,7]").await.1, "CTID-WEBI:OK");
    assert_eq!(
        config_push(&mut alice, "addconfig", "users").await["list"],
        json!(["7"])
    );
    assert_eq!(
        config_push(&mut alice, "addconfig", "phones").await["list"],
        json!(["PJSIP/1007"])
    );

    // An edit is an updateconfig of the item; queues and lines are objects too.
    let renamed = frank.replace("Frank", "Francis");
    let sales = "[[queues]]\nname = \"sales\"\ncontext = \"default\"\n";
    std::fs::write(&path, directory_without(&[], &format!("{renamed}{sales}"))).unwrap();
    assert_eq!(web.ask("xivo[user,edit,7]").await.1, "CTID-WEBI:OK");
    let update = config_push(&mut alice, "updateconfig", "users").await;
    assert_eq!(
        (&update["tid"], &update["config"]["firstname"]),
        (&json!("7"), &json!("Francis"))
    );
    assert_eq!(
        config_push(&mut alice, "addconfig", "queues").await["list"],
        json!(["sales"])
    );
    assert_eq!(web.ask("xivo[queue,add,sales]").await.1, "CTID-WEBI:OK");
    assert_eq!(web.ask("xivo[line,edit,1007]").await.1, "CTID-WEBI:OK");
    assert_eq!(
        web.ask("xivo[context,delete,default]").await.1,
        "CTID-WEBI:KO context default is still in the directory"
    );
    let frank = renamed;

    std::fs::write(&path, directory_without(&["bob"], &frank)).unwrap();
    assert_eq!(web.ask("xivo[user,delete,2]").await.1, "CTID-WEBI:OK");
    let last = bob.until_closed().await.pop().unwrap();
    assert_eq!(
        (last["class"].as_str(), last["error_string"].as_str()),
        (Some("disconnect"), Some("user_changed"))
    );
    assert_eq!(
        config_push(&mut alice, "delconfig", "users").await["list"],
        json!(["2"])
    );

    assert_eq!(
        web.ask("xivo[user,edit,99]").await.1,
        "CTID-WEBI:KO user 99 is not in the directory"
    );
    assert_eq!(
        web.ask("xivo[user,delete,7]").await.1,
        "CTID-WEBI:KO user 7 is still in the directory"
    );
    assert!(web
        .ask("xivo[phone,add,1]")
        .await
        .1
        .starts_with("CTID-WEBI:KO expected xivo["));
    std::fs::write(&path, "[[users]]\nid = \"seven\"\n").unwrap();
    let broken = web.ask("xivo[all,reload]").await.1;
    assert!(
        broken.starts_with("CTID-WEBI:KO ") && broken.contains("directory.toml"),
        "{broken}"
    );
    // The previous directory still serves.
    alice
        .send(
            json!({"class": "getlist", "function": "listid", "listname": "users", "commandid": 77}),
        )
        .await;
    let users = loop {
        let m = alice.reply().await;
        if m["replyid"] == 77 {
            break m;
        }
    };
    assert_eq!(users["list"], json!(["1", "3", "7"]));

    web.write.write_all(&vec![b'x'; 5000]).await.unwrap();
    web.write.write_all(b"\n").await.unwrap();
    assert_eq!(
        web.line().await.unwrap(),
        "CTID-WEBI:KO line longer than 1024 bytes"
    );
    assert_eq!(web.line().await, None);
}

#[tokio::test]
async fn an_announced_reload_resyncs_and_other_datagrams_are_ignored() {
    let (sim, ctid) = server(&["announce"], &[]).await;
    let port = ctid.port("announce").await;
    let resyncs = || actions_named(&sim, "CoreShowChannels");
    ctid.wait_until("the first resync", || resyncs() == 1).await;
    let loads = ctid.count("directory.toml loaded: ");
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(b"reload\n", ("127.0.0.1", port)).await.unwrap();
    ctid.wait_until("a resync after reload", || resyncs() == 2)
        .await;
    ctid.wait_line("announce: reload from 127.0.0.1").await;
    ctid.wait_until("the directory read again", || {
        ctid.count("directory.toml loaded: ") > loads
    })
    .await;
    udp.send_to(b"\xff\xfegarbage", ("127.0.0.1", port))
        .await
        .unwrap();
    udp.send_to(&[b'x'; 4000], ("127.0.0.1", port))
        .await
        .unwrap();
    ctid.wait_line("announce: ignored 1 datagram(s)").await;
    assert_eq!(resyncs(), 2);
}

/// A burst of reloads (a script reloading the dialplan in a loop) resyncs once at once and
/// once more at the end of the second, not once per datagram.
#[tokio::test]
async fn reloads_in_a_burst_are_folded_into_one_per_second() {
    let (sim, ctid) = server(&["announce"], &[]).await;
    let port = ctid.port("announce").await;
    let resyncs = || actions_named(&sim, "CoreShowChannels");
    ctid.wait_until("the first resync", || resyncs() == 1).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..20 {
        udp.send_to(b"reload\n", ("127.0.0.1", port)).await.unwrap();
    }
    ctid.wait_line("(19 reload(s) folded into this one)").await;
    ctid.wait_until("two resyncs from the burst", || resyncs() == 3)
        .await;
    // The folded reload ran after every datagram of the burst was read: no more come.
    assert_eq!(ctid.count("announce: reload from"), 2);
}

#[tokio::test]
async fn the_info_console_shows_and_acts() {
    let (sim, ctid) = server(&["cti", "info"], &[]).await;
    let (cti, info) = (ctid.port("cti").await, ctid.port("info").await);
    let mut alice = Cti::connect(cti).await;
    alice.login("alice").await;
    let mut console = Text::connect(info).await;

    let (help, status) = console.ask("help").await;
    assert_eq!(status, "CTID-INFO:OK");
    assert!(help.iter().any(|l| l.starts_with("dumpami on")));
    let (infos, _) = console.ask("show_infos").await;
    assert_eq!(infos[0], format!("version {}", env!("CARGO_PKG_VERSION")));
    assert!(infos[2].ends_with("ctid.toml"), "{infos:?}");
    let (ami, _) = console.ask("show_ami").await;
    assert!(ami[0].contains(" up since "), "{ami:?}");
    let (actors, _) = console.ask("show_actors").await;
    assert!(
        actors
            .iter()
            .any(|l| l.starts_with("ctid/pbx-default/router running, 0 restarts")),
        "{actors:?}"
    );
    assert!(
        actors
            .iter()
            .any(|l| l.starts_with("ctid/listeners/cti running")),
        "{actors:?}"
    );
    for threads in ["ctid/passwords", "ctid/store/queries", "ctid/store/writer"] {
        assert!(
            actors
                .iter()
                .any(|l| l.starts_with(&format!("{threads} running, 0 restarts"))),
            "{actors:?}"
        );
    }
    let (sessions, _) = console.ask("show_sessions").await;
    let mine = sessions
        .iter()
        .find(|l| l.contains(" alice context default "))
        .expect("alice's session");
    let id = mine.split(' ').next().unwrap().to_owned();
    let (users, _) = console.ask("show_users").await;
    assert!(
        users
            .iter()
            .any(|l| l.starts_with("1 alice (alice) context default line PJSIP/1001 sessions 1")),
        "{users:?}"
    );
    let (contexts, _) = console.ask("show_contexts").await;
    assert!(
        contexts
            .iter()
            .any(|l| l
                .starts_with("default dialplan default,internal partition default: 1 sessions")),
        "{contexts:?}"
    );

    let (call, _, _) = sim.place_call(
        "internal",
        "PJSIP",
        "1001",
        "1002",
        Duration::from_millis(50),
        Duration::from_secs(30),
    );
    let call = ctid_id(&call);
    alice.events(2).await;
    let (calls, _) = console.ask("show_calls").await;
    assert!(
        calls
            .iter()
            .any(|l| l.starts_with(&call) && l.contains("1001 -> 1002")),
        "{calls:?}"
    );
    assert!(console.ask("show_calls tenant-b").await.0.is_empty());
    let (stats, _) = console.ask("stats").await;
    assert!(
        stats[0].starts_with("event lag (AMI read to client queues): p50 "),
        "{stats:?}"
    );
    assert!(stats[2].contains("of 1 offered calls"), "{stats:?}");
    assert!(stats[3].starts_with("drops: 0 slow consumers"), "{stats:?}");
    assert!(stats[3].ends_with(", 0 call records"), "{stats:?}");
    assert_eq!(
        console.ask("stats now").await.1,
        "CTID-INFO:KO no PBX \"now\""
    );
    assert_eq!(console.ask("stats reset").await.1, "CTID-INFO:OK");
    let (stats, _) = console.ask("stats").await;
    assert!(stats[0].ends_with("(0 batches)"), "{stats:?}");
    assert!(stats[2].contains("of 0 offered calls"), "{stats:?}");

    assert_eq!(
        console.ask("dumpami on Newchannel").await.0,
        ["dumping AMI events Newchannel of every PBX"]
    );
    sim.place_call(
        "internal",
        "PJSIP",
        "1002",
        "1003",
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    let mut dumped = Vec::new();
    while dumped.len() < 4 {
        dumped.push(console.line().await.unwrap());
    }
    assert_eq!(dumped[0], "Event: Newchannel", "{dumped:?}");
    assert!(!dumped.iter().any(|l| l.starts_with("Event: DialBegin")));
    assert_eq!(console.ask("dumpami off").await.1, "CTID-INFO:OK");

    assert_eq!(console.ask("loglevel debug").await.0, ["log level debug"]);
    assert!(console
        .ask("loglevel loud")
        .await
        .1
        .starts_with("CTID-INFO:KO \"loud\" is not one of"));
    assert_eq!(console.ask("loglevel default").await.1, "CTID-INFO:OK");
    assert_eq!(
        console.ask("teleport").await.1,
        "CTID-INFO:KO unknown command \"teleport\" (help lists them)"
    );
    assert_eq!(
        console.ask("kick 999999").await.1,
        "CTID-INFO:KO no session 999999"
    );
    assert_eq!(console.ask(&format!("kick {id}")).await.1, "CTID-INFO:OK");
    let last = alice.until_closed().await.pop().unwrap();
    assert_eq!(last["error_string"], "kicked");
}

/// A web service answering the directory, as `body` says now, with `status`.
async fn web_service(state: Arc<Mutex<(u16, String)>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (status, body) = state.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut request = [0u8; 2048];
                let _ = s.read(&mut request).await;
                let reason = if status == 200 {
                    "OK"
                } else {
                    "Service Unavailable"
                };
                let reply = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

fn json_directory(users: &[(u64, &str, &str, &str)]) -> String {
    let users: Vec<Value> = users
        .iter()
        .map(|(id, login, number, context)| {
            json!({"id": id, "login": login, "password": test_hash(login),
                   "line": {"interface": format!("PJSIP/{number}"), "number": number, "context": context, "dialplan": context}})
        })
        .collect();
    json!({"contexts": [{"name": "default", "dialplan": ["internal"]}, {"name": "tenant-b", "dialplan": ["tenant-b"]}], "users": users})
        .to_string()
}

#[tokio::test]
async fn a_directory_from_a_web_service_is_polled_and_kept_when_it_fails() {
    let state = Arc::new(Mutex::new((
        200,
        json_directory(&[(1, "alice", "1001", "default")]),
    )));
    let port = web_service(state.clone()).await;
    let url = format!("http://127.0.0.1:{port}/directory.json");
    let (_sim, ctid) = server(
        &["cti"],
        &[
            ("CTID__DIRECTORY__URL", &url),
            ("CTID__DIRECTORY__ALLOW_PLAIN_HTTP", "true"),
            ("CTID__TIMEOUTS__UPDATE_PERIOD", "1"),
        ],
    )
    .await;
    let cti = ctid.port("cti").await;
    ctid.wait_line(&format!("directory {url} loaded: 2 contexts, 1 users"))
        .await;
    let mut alice = Cti::connect(cti).await;
    assert_eq!(alice.login("alice").await["context"], "default");

    *state.lock().unwrap() = (
        200,
        json_directory(&[
            (1, "alice", "1001", "default"),
            (2, "bob", "1002", "default"),
        ]),
    );
    assert_eq!(
        config_push(&mut alice, "addconfig", "users").await["list"],
        json!(["2"])
    );

    state.lock().unwrap().0 = 503;
    ctid.wait_line("directory not reloaded, keeping the previous one")
        .await;
    let mut bob = Cti::connect(cti).await;
    assert_eq!(bob.login("bob").await["context"], "default");
}

/// A TCP connection from `local` (a loopback address) to `port`; what it reads until closed.
async fn read_from(local: &str, port: u16, send: &[u8]) -> Vec<u8> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(local.parse().unwrap(), 0))
        .unwrap();
    let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let _ = stream.write_all(send).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(common::PATIENCE, stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "port {port} kept a refused peer open");
    got
}

#[tokio::test]
async fn admin_ports_close_or_drop_peers_outside_their_allow_list_and_count_them() {
    let only = [
        ("CTID__LISTEN__FAGI__ALLOW", "127.0.0.1"),
        ("CTID__LISTEN__WEBI__ALLOW", "127.0.0.1"),
        ("CTID__LISTEN__INFO__ALLOW", "127.0.0.1/32, ::1"),
        ("CTID__LISTEN__ANNOUNCE__ALLOW", "127.0.0.1"),
        ("CTID__LISTEN__CTI__ALLOW", "127.0.0.1"),
        ("CTID__LISTEN__HTTP__ALLOW", "127.0.0.1"),
    ];
    let (sim, ctid) = server(&["fagi", "cti", "webi", "info", "announce", "http"], &only).await;
    let ports = [
        ctid.port("fagi").await,
        ctid.port("webi").await,
        ctid.port("info").await,
        ctid.port("cti").await,
    ];
    // From 127.0.0.2, each TCP port closes the connection without a word.
    for (port, say) in ports.iter().zip([
        &b"agi_network: yes\nagi_request: agi://x/callerid\n\n"[..],
        b"xivo[all,reload]\n",
        b"show_infos\n",
        b"{\"class\":\"keepalive\"}\n",
    ]) {
        assert!(read_from("127.0.0.2", *port, say).await.is_empty());
    }
    // The HTTP API answers 403, and closes.
    let get = b"GET /api/v1/pbxes HTTP/1.1\r\nHost: ctid\r\nConnection: close\r\n\r\n";
    let answer = read_from("127.0.0.2", ctid.port("http").await, get).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("not in listen.http.allow"), "{answer}");
    ctid.wait_line("webi: refused 127.0.0.2: not in listen.webi.allow")
        .await;
    // A reload from 127.0.0.2 is dropped; one from 127.0.0.1 then is the barrier.
    let announce = ctid.port("announce").await;
    let resyncs = || actions_named(&sim, "CoreShowChannels");
    ctid.wait_until("the first resync", || resyncs() == 1).await;
    for from in ["127.0.0.2", "127.0.0.1"] {
        let udp = tokio::net::UdpSocket::bind((from, 0)).await.unwrap();
        udp.send_to(b"reload\n", ("127.0.0.1", announce))
            .await
            .unwrap();
    }
    ctid.wait_line("announce: reload from 127.0.0.1").await;
    ctid.wait_until("a resync after reload", || resyncs() == 2)
        .await;
    assert_eq!(ctid.count("announce: reload from 127.0.0.2"), 0);
    // The console, from where it is allowed, counts them.
    let mut console = Text::connect(ports[2]).await;
    let (stats, status) = console.ask("stats").await;
    assert_eq!(status, "CTID-INFO:OK");
    let refused = stats
        .iter()
        .find(|l| l.starts_with("refused (not in listen.<name>.allow): "))
        .unwrap_or_else(|| panic!("{stats:?}"));
    assert!(
        refused.ends_with("fagi 1, cti 1, ctis 0, webi 1, info 1, announce 1, http 1"),
        "{refused}"
    );
}

#[tokio::test]
async fn the_consoles_control_commands_follow_allow_control() {
    let off = [("CTID__LISTEN__INFO__ALLOW_CONTROL", "false")];
    let (_sim, ctid) = server(&["info"], &off).await;
    let mut console = Text::connect(ctid.port("info").await).await;
    for command in ["kick 1", "loglevel debug", "dumpami on"] {
        let (_, status) = console.ask(command).await;
        let name = command.split(' ').next().unwrap();
        assert_eq!(
            status,
            format!("CTID-INFO:KO {name} is off here (listen.info.allow_control)")
        );
    }
    assert_eq!(console.ask("show_sessions").await.1, "CTID-INFO:OK");
}

#[tokio::test]
async fn ports_open_beyond_this_machine_are_warned_about_and_shown_by_the_console() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["info"])
        .replace(
            "[listen.cti]\nenabled = false\n",
            "[listen.cti]\naddress = \"0.0.0.0\"\nport = 0\n",
        )
        .replace(
            "[listen.webi]\nenabled = false\n",
            "[listen.webi]\naddress = \"0.0.0.0\"\nport = 0\n",
        );
    let ctid = Ctid::start(&config, "info");
    let cti = ctid
        .wait_line("listen.cti listens on 0.0.0.0, off loopback, while CTIs is off")
        .await;
    assert!(cti.contains("WARN"), "{cti}");
    ctid.wait_line("listen.webi listens on 0.0.0.0, off loopback, and has no authentication")
        .await;
    assert_eq!(ctid.count("listen.info listens"), 0, "info is on loopback");
    let mut console = Text::connect(ctid.port("info").await).await;
    let (infos, _) = console.ask("show_infos").await;
    let warnings: Vec<&String> = infos
        .iter()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{infos:?}");
    assert!(warnings[1].contains("passwords cross the network in the clear"));
}

/// An https web service answering `body` to requests bearing `token`, 401 to others; its
/// self-signed certificate is `web.pem` in `dir`. Returns its port.
async fn https_service(body: String, token: &'static str, dir: &std::path::Path) -> u16 {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("web.pem"), dir.join("web-key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let tls = ctid_actors::tls::server_config(&cert, &key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = vec![0u8; 4096];
                let n = s.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..n]).to_ascii_lowercase();
                let reply = if request.contains(&format!("authorization: bearer {token}\r\n")) {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_owned()
                };
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_directory_comes_over_https_with_its_token_which_is_never_logged() {
    let certs = tempfile::tempdir().unwrap();
    let body = json_directory(&[(1, "alice", "1001", "default")]);
    let port = https_service(body, "t0ken-1f2e", certs.path()).await;
    let url = format!("https://localhost:{port}/directory.json");
    let ca = certs.path().join("web.pem");
    let (_sim, ctid) = server(
        &["cti"],
        &[
            ("CTID__DIRECTORY__URL", &url),
            ("CTID__DIRECTORY__TOKEN", "t0ken-1f2e"),
            ("CTID__DIRECTORY__TLS_CA", ca.to_str().unwrap()),
        ],
    )
    .await;
    ctid.wait_line(&format!("directory {url} loaded: 2 contexts, 1 users"))
        .await;
    let mut alice = Cti::connect(ctid.port("cti").await).await;
    assert_eq!(alice.login("alice").await["context"], "default");
    assert_eq!(ctid.count("t0ken"), 0, "the token is in the log");
    assert_eq!(ctid.count("plain http"), 0);
}

#[tokio::test]
async fn a_wrong_token_or_an_untrusted_certificate_loads_nothing() {
    let certs = tempfile::tempdir().unwrap();
    let body = json_directory(&[(1, "alice", "1001", "default")]);
    let port = https_service(body, "right", certs.path()).await;
    let url = format!("https://localhost:{port}/directory.json");
    let ca = certs.path().join("web.pem");
    let (_sim, ctid) = server(
        &[],
        &[
            ("CTID__DIRECTORY__URL", &url),
            ("CTID__DIRECTORY__TOKEN", "wrong"),
            ("CTID__DIRECTORY__TLS_CA", ca.to_str().unwrap()),
        ],
    )
    .await;
    ctid.wait_line("directory not reloaded, keeping the previous one")
        .await
        .contains("HTTP 401")
        .then_some(())
        .unwrap();
    // Without the CA, Mozilla's roots do not know a self-signed certificate.
    let (_sim, ctid) = server(&[], &[("CTID__DIRECTORY__URL", &url)]).await;
    let refused = ctid
        .wait_line("directory not reloaded, keeping the previous one")
        .await;
    assert!(
        refused.contains("certificate") || refused.contains("Unknown"),
        "{refused}"
    );
}
