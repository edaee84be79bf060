//! The wallboard over CTI: supervisors of each tenant get their own queues' figures and
//! agents, agents are refused, and another tenant's queue never shows.

mod common;

use std::time::Duration;

use common::{ami_config_with, test_hash, Cti, Ctid, PATIENCE};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::{json, Value};

/// Two tenants, each with a queue, two agents and a supervisor: `default` (alice, bob,
/// carol; queue `support`) and `tenant-b` (dave, zoe, frank; queue `sales`).
fn directory() -> String {
    let mut d = String::from(
        "[[contexts]]\nname = \"default\"\ndialplan = [\"default\", \"internal\"]\n\
         [[contexts]]\nname = \"tenant-b\"\ndialplan = [\"tenant-b\", \"tenant-b-internal\"]\n\
         [[queues]]\nname = \"support\"\ncontext = \"default\"\n\
         [[queues]]\nname = \"sales\"\ncontext = \"tenant-b\"\n",
    );
    for (id, login, role, number, context, dialplan) in [
        (1, "alice", "agent", "1001", "default", "internal"),
        (2, "bob", "agent", "1002", "default", "internal"),
        (3, "carol", "supervisor", "1003", "default", "internal"),
        (4, "dave", "agent", "2001", "tenant-b", "tenant-b-internal"),
        (5, "zoe", "agent", "2002", "tenant-b", "tenant-b-internal"),
        (
            6,
            "frank",
            "supervisor",
            "2003",
            "tenant-b",
            "tenant-b-internal",
        ),
    ] {
        d.push_str(&format!(
            "[[users]]\nid = {id}\nlogin = \"{login}\"\npassword = \"{}\"\nfirstname = \"{login}\"\n\
             role = \"{role}\"\nline = {{ interface = \"PJSIP/{number}\", number = \"{number}\", \
             context = \"{context}\", dialplan = \"{dialplan}\" }}\n",
            test_hash(login),
        ));
    }
    d
}

async fn server() -> (PbxSim, Ctid, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = format!(
        "{}\n[wallboard]\nservice_level_seconds = 20\n",
        ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["cti"])
    );
    let ctid = Ctid::start_full(&config, &directory(), "info", &[]);
    let port = ctid.port("cti").await;
    ctid.wait_line("logged in as 'cti'").await;
    (sim, ctid, port)
}

async fn watcher(port: u16, login: &str) -> Cti {
    let mut c = Cti::connect(port).await;
    c.login(login).await;
    c.send(json!({"class": "wallboard", "commandid": 1})).await;
    let ok = c.reply().await;
    assert_eq!(
        (ok["class"].as_str(), ok["status"].as_str()),
        (Some("wallboard"), Some("ok")),
        "{ok}"
    );
    c
}

/// The next `queue_stats` for which `cond` holds; every one read is checked by `each`.
async fn board_until(c: &mut Cti, each: &dyn Fn(&Value), cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let m = tokio::time::timeout_at(deadline, c.reply())
            .await
            .expect("the board never got there");
        if m["class"] == "queue_stats" {
            each(&m);
            if cond(&m) {
                return m;
            }
        }
    }
}

fn queue<'a>(board: &'a Value, name: &str) -> &'a Value {
    board["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["name"] == name))
        .unwrap_or(&Value::Null)
}

fn agent_state<'a>(board: &'a Value, login: &str) -> &'a str {
    board["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["login"] == login))
        .and_then(|a| a["state"].as_str())
        .unwrap_or("")
}

#[tokio::test]
async fn supervisors_see_their_own_queues_live_and_agents_are_refused() {
    let (sim, _ctid, port) = server().await;
    let mut carol = watcher(port, "carol").await;
    let mut frank = watcher(port, "frank").await;
    let only_default = |b: &Value| {
        assert_eq!(b["context"], "default");
        let text = b.to_string();
        for other in ["sales", "dave", "zoe", "frank", "PJSIP/20"] {
            assert!(!text.contains(other), "{other} reached carol: {text}");
        }
    };
    let first = board_until(&mut carol, &only_default, |_| true).await;
    assert_eq!(queue(&first, "support")["waiting"], 0);
    assert_eq!(first["service_level_seconds"], 20.0);
    assert_eq!(agent_state(&first, "alice"), "logged_out");
    assert_eq!(agent_state(&first, "carol"), "idle");

    let mut alice = Cti::connect(port).await;
    alice.login("alice").await;
    alice
        .send(json!({"class": "wallboard", "commandid": 5}))
        .await;
    let refused = alice.reply().await;
    assert_eq!(refused["error_string"], "unallowed", "{refused}");

    // A call into tenant-b's queue: frank sees it waiting, carol never hears of it.
    let (b_call, _) = sim.queue_call("tenant-b-internal", "sales", "0699", "B customer");
    board_until(&mut frank, &|_| {}, |b| queue(b, "sales")["waiting"] == 1).await;

    let (call, _) = sim.queue_call("internal", "support", "0611", "Customer");
    let waiting = board_until(&mut carol, &only_default, |b| {
        queue(b, "support")["waiting"] == 1
    })
    .await;
    assert!(queue(&waiting, "support")["oldest_since"]
        .as_f64()
        .is_some());
    assert_eq!(agent_state(&waiting, "alice"), "idle");

    sim.ring_member(call, "PJSIP/1001", "alice");
    board_until(&mut carol, &only_default, |b| {
        agent_state(b, "alice") == "ringing"
    })
    .await;
    sim.connect_member(call);
    let taken = board_until(&mut carol, &only_default, |b| {
        agent_state(b, "alice") == "on_call"
    })
    .await;
    let support = queue(&taken, "support");
    assert_eq!(
        (support["waiting"].as_u64(), support["answered"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(support["within_service_level"], 1);
    let alice_row = taken["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["login"] == "alice")
        .unwrap();
    assert_eq!(alice_row["call"]["caller"], "Customer");
    assert_eq!(alice_row["call"]["queue"], "support");

    sim.end_queue_call(call, Duration::from_secs(1));
    let (gone, _) = sim.queue_call("internal", "support", "0622", "Gone");
    board_until(&mut carol, &only_default, |b| {
        queue(b, "support")["waiting"] == 1
    })
    .await;
    sim.end_queue_call(gone, Duration::from_secs(1));
    let after = board_until(&mut carol, &only_default, |b| {
        queue(b, "support")["abandoned"] == 1 && agent_state(b, "alice") == "idle"
    })
    .await;
    let support = queue(&after, "support");
    assert_eq!(support["service_level"], 0.5);
    let periods = support["periods"].as_array().unwrap();
    assert_eq!(periods.len(), 1);
    assert_eq!(
        (periods[0][1].as_u64(), periods[0][2].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(support["history"].as_array().unwrap().len(), 30);
    assert!(after["lag_p99_ms"].as_f64().is_some(), "{after}");
    sim.end_queue_call(b_call, Duration::from_secs(1));
}

/// A TCP proxy in front of ctid's HTTP port whose connections can be cut (and new ones
/// refused) and restored: a network cut between the browser and ctid.
struct Proxy {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = watch.clone();
                if *cut.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { port, cut, task }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the browser test's node and chromium are, or why it cannot run: never skipped.
fn browser_ready() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let missing = |what: &str| {
        panic!(
            "the wallboard's browser test needs {what}: scripts/test installs it \
             (apt-get install -y chromium nodejs npm; npm ci in tests/browser)"
        )
    };
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        missing("Debian's chromium (/usr/bin/chromium)");
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        missing("node");
    }
    if !dir.join("node_modules/playwright-core").exists() {
        missing("playwright-core in tests/browser/node_modules");
    }
    dir
}

/// Runs tests/browser/wallboard.mjs against the wallboard of a real ctid, answering each
/// step it asks with `answer`; with `shot`, it only takes a screenshot into that file after
/// the given time.
async fn run_browser(
    ctid: &Ctid,
    http: u16,
    shot: Option<(&std::path::Path, Duration)>,
    mut answer: impl FnMut(&str, &Proxy) -> String,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = browser_ready();
    let proxy = Proxy::start(http).await;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join("wallboard.mjs"))
        .current_dir(&dir)
        .env(
            "WALLBOARD_URL",
            format!("http://127.0.0.1:{}/wallboard", proxy.port),
        )
        .env("WALLBOARD_TOKEN", "sup-b-token")
        .env("WALLBOARD_AGENT_TOKEN", "agent-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some((shot, _)) = shot {
        command.env("WALLBOARD_SHOT", shot);
    }
    let mut node = command.spawn().expect("cannot start node");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let limit = Duration::from_secs(120) + shot.map_or(Duration::ZERO, |(_, busy)| busy);
    let outcome = tokio::time::timeout(limit, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            println!("browser: {line}");
            if let Some(step) = line.strip_prefix("step ") {
                if let (Some((_, busy)), "busy") = (shot, step) {
                    tokio::time::sleep(busy).await;
                }
                let reply = answer(step, &proxy);
                stdin
                    .write_all(format!("{reply}\n").as_bytes())
                    .await
                    .unwrap();
            }
        }
        node.wait().await.unwrap()
    })
    .await;
    match outcome {
        Ok(status) if status.success() => {}
        other => panic!(
            "the browser test failed ({other:?}); ctid logged:\n{}",
            ctid.lines().join("\n")
        ),
    }
}

async fn http_server(directory: &str) -> (PbxSim, Ctid, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = format!(
        "{}\n[wallboard]\nservice_level_seconds = 20\n{}",
        ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["cti", "http"]),
        common::http_tokens(),
    );
    let ctid = Ctid::start_full(&config, directory, "info", &[]);
    let port = ctid.port("http").await;
    ctid.wait_line("logged in as 'cti'").await;
    (sim, ctid, port)
}

/// The page in headless Chromium: carol logs in, a queued call shows within a second,
/// alice taking it changes her state, tenant-b's call never reaches the page, and a cut
/// WebSocket shows the warning, then resumes with no gap.
#[tokio::test]
async fn the_wallboard_in_headless_chromium() {
    let (sim, ctid, http) = http_server(&directory()).await;
    let mut placed = Vec::new();
    run_browser(&ctid, http, None, |step, proxy| match step {
        "place_call" => {
            let (seq, id) = sim.queue_call("internal", "support", "0611", "Customer");
            placed.push(seq);
            format!("ok {}", common::ctid_id(&id))
        }
        "place_other" => {
            let (seq, id) = sim.queue_call("tenant-b-internal", "sales", "0699", "B customer");
            placed.push(seq);
            format!("ok {}", common::ctid_id(&id))
        }
        "ring" => ok(sim.ring_member(placed[0], "PJSIP/1001", "alice")),
        "connect" => ok(sim.connect_member(placed[0])),
        "cut" => {
            proxy.set_cut(true);
            "ok".into()
        }
        "restore" => {
            proxy.set_cut(false);
            "ok".into()
        }
        "end_all" => ok(placed
            .iter()
            .all(|seq| sim.end_queue_call(*seq, Duration::from_secs(1)))),
        _ => "ok".into(),
    })
    .await;
}

/// `GET /api/v1/wallboard`: a supervisor's token gets the board of a context it reaches
/// (its only one by default), never another's; an agent's token is refused; the page's
/// files are served without a token.
#[tokio::test]
async fn the_http_wallboard_follows_the_tokens_contexts_and_role() {
    let (sim, _ctid, port) = http_server(&directory()).await;
    let http = common::Http::new(port);
    sim.queue_call("tenant-b-internal", "sales", "0699", "B customer");
    let (status, board) = http
        .call("GET", "/api/v1/wallboard", Some("sup-token"), None)
        .await;
    assert_eq!(
        (status, board["context"].as_str()),
        (200, Some("default")),
        "{board}"
    );
    assert_eq!(queue(&board, "support")["waiting"], 0);
    assert!(!board.to_string().contains("sales"), "{board}");
    let b = "/api/v1/wallboard?context=tenant-b";
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, board) = http.call("GET", b, Some("sup-b-token"), None).await;
        assert_eq!(status, 200, "{board}");
        if queue(&board, "sales")["waiting"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{board}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, refused) = http.call("GET", b, Some("sup-token"), None).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (404, Some("not_found"))
    );
    let (status, refused) = http
        .call("GET", "/api/v1/wallboard", Some("agent-token"), None)
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (403, Some("unallowed"))
    );
    let (status, refused) = http
        .call("GET", "/api/v1/wallboard", Some("admin-token"), None)
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (400, Some("missing:context"))
    );
    let (status, refused) = http.call("GET", "/api/v1/wallboard", None, None).await;
    assert_eq!(status, 401, "{refused}");
    let (status, page) = http.raw("GET", "/wallboard", None, None).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("/wallboard/wallboard.js") && !page.contains("http"),
        "{page}"
    );
}

fn ok(done: bool) -> String {
    if done { "ok" } else { "failed" }.into()
}

/// A contact center of two queues and ten agents, for the screenshot: carol supervises
/// (password `carol`), the agents' passwords are `erin`.
fn busy_directory() -> String {
    let mut d = String::from(
        "[[contexts]]\nname = \"default\"\ndialplan = [\"default\", \"internal\"]\n\
         [[queues]]\nname = \"support\"\ncontext = \"default\"\n\
         [[queues]]\nname = \"billing\"\ncontext = \"default\"\n",
    );
    let people = [
        ("carol", "Carol", "Petit", "supervisor"),
        ("alice", "Alice", "Martin", "agent"),
        ("bob", "Bob", "Durand", "agent"),
        ("chloe", "Chloé", "Bernard", "agent"),
        ("david", "David", "Thomas", "agent"),
        ("emma", "Emma", "Robert", "agent"),
        ("hugo", "Hugo", "Richard", "agent"),
        ("ines", "Inès", "Moreau", "agent"),
        ("jules", "Jules", "Simon", "agent"),
        ("lea", "Léa", "Laurent", "agent"),
        ("nina", "Nina", "Lefebvre", "agent"),
    ];
    for (i, (login, first, last, role)) in people.iter().enumerate() {
        let number = 1000 + i + 1;
        d.push_str(&format!(
            "[[users]]\nid = {}\nlogin = \"{login}\"\npassword = \"{}\"\nfirstname = \"{first}\"\n\
             lastname = \"{last}\"\nrole = \"{role}\"\nline = {{ interface = \"PJSIP/{number}\", \
             number = \"{number}\", context = \"default\", dialplan = \"internal\" }}\n",
            i + 1,
            test_hash(login),
        ));
    }
    d
}

/// docs/wallboard.png: the board of a busy contact center, the simulator placing calls
/// into two queues at a realistic rate for a few minutes (`WALLBOARD_MINUTES`, default
/// 4). Run by hand: `cargo test --test wallboard -- --ignored`.
#[tokio::test]
#[ignore = "takes minutes; makes docs/wallboard.png"]
async fn a_screenshot_of_a_busy_wallboard() {
    use ctid_pbxsim::queue::{QueuePlan, QueueSpec};
    let (sim, ctid, http) = http_server(&busy_directory()).await;
    let dir = ctid_proto::directory::Directory::parse(&busy_directory()).unwrap();
    let members = |numbers: std::ops::RangeInclusive<u32>| {
        numbers
            .filter_map(|n| {
                let user = dir.user_by_interface("default", &format!("PJSIP/{n}"))?;
                Some((format!("PJSIP/{n}"), user.fullname()))
            })
            .collect()
    };
    let queue = |name: &str, members| QueueSpec {
        context: "internal".into(),
        queue: name.into(),
        members,
    };
    // About 0.4 calls a second for ten agents talking 20 to 60 s: busy, with calls waiting.
    let _calls = sim.run_queues(QueuePlan {
        rate: 0.4,
        queues: vec![
            queue("support", members(1002..=1007)),
            queue("billing", members(1008..=1011)),
        ],
        ring: Duration::from_secs(3),
        talk: (Duration::from_secs(20), Duration::from_secs(60)),
        patience: (Duration::from_secs(10), Duration::from_secs(90)),
        limit: None,
    });
    let minutes = std::env::var("WALLBOARD_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(4u64);
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/wallboard.png");
    let busy = Duration::from_secs(minutes * 60);
    run_browser(&ctid, http, Some((&shot, busy)), |_, _| "ok".into()).await;
}
