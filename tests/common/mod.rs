//! Runs the real `ctid` binary with a generated configuration and captures its log.

#![allow(dead_code)]

pub mod agi;
pub mod cluster;
pub mod openapi;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// How long a test waits for something that should happen; generous for a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn fixture(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The id ctid gives a call the simulator placed: `<pbx>:<Linkedid>`, on the PBX an
/// `[ami]` table names `default`.
pub fn ctid_id(sim_id: &str) -> String {
    format!("default:{sim_id}")
}

/// How many actions named `name` the simulator received.
pub fn actions_named(sim: &ctid_pbxsim::PbxSim, name: &str) -> usize {
    sim.actions()
        .iter()
        .filter(|a| a.get("Action") == Some(name))
        .count()
}

/// Settings with every listener off, pointed at an AMI on `port`.
pub fn ami_config(port: u16, extra_ami: &str) -> String {
    ami_config_with(port, extra_ami, &[])
}

/// Settings pointed at an AMI on `port`, with the listeners of `on` enabled on free ports.
pub fn ami_config_with(port: u16, extra_ami: &str, on: &[&str]) -> String {
    config_with(&ami_table("ami", port, extra_ami), on)
}

/// An AMI table (`[ami]`, `[pbx.<name>]`) for the simulator on `port`.
pub fn ami_table(section: &str, port: u16, extra: &str) -> String {
    format!(
        "[{section}]\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"cti\"\n\
         reconnect_min = 0.2\nreconnect_max = 1\n{extra}\n"
    )
}

/// Settings with the AMI tables `pbxes`, and the listeners of `on` enabled on free ports.
pub fn config_with(pbxes: &str, on: &[&str]) -> String {
    let mut s = format!(
        "{pbxes}[timeouts]\nsocket = 2\n[directory]\npath = \"directory.toml\"\ncheck_interval = 0.2\n\
         [store]\npath = \"data/ctid.sqlite\"\n"
    );
    for l in ["fagi", "cti", "ctis", "webi", "info", "announce", "http"] {
        if on.contains(&l) {
            s.push_str(&format!(
                "[listen.{l}]\naddress = \"127.0.0.1\"\nport = 0\nenabled = true\n"
            ));
        } else {
            s.push_str(&format!("[listen.{l}]\nenabled = false\n"));
        }
    }
    s
}

/// argon2id hashes, at the weakest cost ctid accepts, of each test user's password, which
/// is their login (erin's for any other login).
pub fn test_hash(login: &str) -> &'static str {
    match login {
        "alice" => "$argon2id$v=19$m=19456,t=2,p=1$IIbaqxtJxZbTrcNcqKxjtA$19FB4zxVR7HcPUKh5YHHHb0GJHbJvuPD3v0qIn9fmYA",
        "bob" => "$argon2id$v=19$m=19456,t=2,p=1$129RkwfDXtJ0EON2y8h0bg$n+owAEdOZ9quJ9uVxhkhzgQ9iU80AXhDvsF+1YmcL+4",
        "carol" => "$argon2id$v=19$m=19456,t=2,p=1$ODoULzS+1g2WXZ8qnCHsAA$yxnswL1ALkWXeE3efyHORlraD1VXfO/7doW9zqK9GqE",
        "dave" => "$argon2id$v=19$m=19456,t=2,p=1$B1wngsjTpH+xFYlNBq3daA$pmGSBmwE1hc6bcw7vYeikkjUR6O0G2WfWTgdKI9RbqY",
        "frank" => "$argon2id$v=19$m=19456,t=2,p=1$9C4eYSjeOpKJSCDMcHcEtQ$DN+7FO03BQigqIBe327u0K5uBEAQ0H6OJzY1tPhv/Eg",
        "zoe" => "$argon2id$v=19$m=19456,t=2,p=1$pCGs6WALb9528FgIF18OTA$vxsQJOx9MCDsWfG8d8w7fJHB4/7KC75i1J4g8V3pGKk",
        _ => "$argon2id$v=19$m=19456,t=2,p=1$XFIlxJQ+5Ws0PlNnR+7qVA$SI32e1IxxrJbyNtvHHFRoh1fMKtW4HdTg3cUvwcjv2E",
    }
}

/// Two tenants: alice, bob and carol (PJSIP/1001-1003; carol is a supervisor) in
/// `default`, dave (PJSIP/2001) in `tenant-b`, erin with no line; queue `support` in
/// `default`.
pub fn two_tenants() -> String {
    let mut d = String::from(
        "[[contexts]]\nname = \"default\"\ndialplan = [\"default\", \"internal\"]\n\
         [[contexts]]\nname = \"tenant-b\"\ndialplan = [\"tenant-b\", \"tenant-b-internal\"]\n\
         [[queues]]\nname = \"support\"\ncontext = \"default\"\n",
    );
    for (id, login, line) in [
        (1, "alice", Some(("1001", "default", "internal"))),
        (2, "bob", Some(("1002", "default", "internal"))),
        (3, "carol", Some(("1003", "default", "internal"))),
        (4, "dave", Some(("2001", "tenant-b", "tenant-b-internal"))),
        (5, "erin", None),
    ] {
        d.push_str(&format!(
            "[[users]]\nid = {id}\nlogin = \"{login}\"\npassword = \"{}\"\nfirstname = \"{login}\"\nsupervisor = {}\n",
            test_hash(login),
            login == "carol"
        ));
        if let Some((number, context, dialplan)) = line {
            d.push_str(&format!(
                "line = {{ interface = \"PJSIP/{number}\", number = \"{number}\", context = \"{context}\", dialplan = \"{dialplan}\" }}\n"
            ));
        }
    }
    d
}

/// The HTTP API's test tokens: (token, name, contexts, role).
pub const TOKENS: [(&str, &str, &str, &str); 5] = [
    ("admin-token", "admin", "[\"*\"]", "admin"),
    ("sup-token", "sup", "[\"default\"]", "supervisor"),
    ("agent-token", "agent", "[\"default\"]", "agent"),
    ("sup-b-token", "sup-b", "[\"tenant-b\"]", "supervisor"),
    (
        "both-token",
        "both",
        "[\"default\", \"tenant-b\"]",
        "supervisor",
    ),
];

/// `[[http.tokens]]` tables of [`TOKENS`].
pub fn http_tokens() -> String {
    TOKENS
        .iter()
        .map(|(token, name, contexts, role)| {
            format!(
                "[[http.tokens]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\ncontexts = {contexts}\nrole = \"{role}\"\n",
                ctid_actors::http::token_sha256(token)
            )
        })
        .collect()
}

/// A client of the HTTP API: blocking requests, run off the test's event loop.
#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    pub fn new(port: u16) -> Http {
        Http::with(
            format!("http://127.0.0.1:{port}"),
            ureq::tls::RootCerts::WebPki,
        )
    }

    /// Over TLS, trusting the CA certificate (PEM) at `ca`.
    pub fn tls(port: u16, ca: &std::path::Path) -> Http {
        let pem = std::fs::read(ca).unwrap();
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item.unwrap() {
                ureq::tls::PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        let roots = ureq::tls::RootCerts::Specific(Arc::new(certs));
        Http::with(format!("https://localhost:{port}"), roots)
    }

    fn with(base: String, roots: ureq::tls::RootCerts) -> Http {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(roots)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(PATIENCE))
            .build()
            .new_agent();
        Http { agent, base }
    }

    /// `method` on `path` with `token` and a JSON `body`: the status and the JSON answer,
    /// checked against docs/openapi.yaml.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let raw = body.map(|b| b.to_string().into_bytes());
        let (status, text) = self.raw(method, path, token, raw).await;
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        openapi::spec().check(method, path, status, &json);
        (status, json)
    }

    /// `method` on `path` with `token` and `body` as they are: the status and the body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, String) {
        self.attempt(method, path, token, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// [`Http::raw`], or why no answer came (a refused TLS handshake, ...).
    pub async fn attempt(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, String), ureq::Error> {
        let (agent, url) = (self.agent.clone(), format!("{}{path}", self.base));
        let (method, token) = (method.to_owned(), token.map(str::to_owned));
        tokio::task::spawn_blocking(move || {
            let mut request = ureq::http::Request::builder()
                .method(method.as_str())
                .uri(&url);
            if let Some(token) = token {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            if body.is_some() {
                request = request.header("Content-Type", "application/json");
            }
            let request = request.body(body.unwrap_or_default()).unwrap();
            let mut response = agent.run(request)?;
            let status = response.status().as_u16();
            Ok((status, response.body_mut().read_to_string()?))
        })
        .await
        .unwrap()
    }
}

pub struct Ctid {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Ctid {
    pub fn start(config: &str, rust_log: &str) -> Ctid {
        Self::start_with(config, rust_log, &[])
    }

    pub fn start_with(config: &str, rust_log: &str, env: &[(&str, &str)]) -> Ctid {
        Self::start_full(config, &two_tenants(), rust_log, env)
    }

    /// Starts ctid with `config`, and `directory` as its directory.toml.
    pub fn start_full(config: &str, directory: &str, rust_log: &str, env: &[(&str, &str)]) -> Ctid {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctid.toml");
        std::fs::write(&path, config).unwrap();
        std::fs::write(dir.path().join("directory.toml"), directory).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ctid"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start ctid");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Ctid {
            child,
            lines,
            _dir: dir,
        }
    }

    /// The directory of the settings file (where directory.toml is).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The port listener `name` bound, read from the log.
    pub async fn port(&self, name: &str) -> u16 {
        let needle = format!("{name}: listening on 127.0.0.1:");
        let line = self.wait_line(&needle).await;
        let tail = &line[line.find(&needle).unwrap() + needle.len()..];
        tail.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_line(&self, needle: &str) -> String {
        self.wait_lines(needle, 1).await.pop().unwrap()
    }

    /// Waits until `n` log lines contain `needle`.
    pub async fn wait_lines(&self, needle: &str, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let found: Vec<String> = self
                .lines()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if found.len() >= n {
                return found;
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "ctid never logged {n} × {needle:?}; it logged:\n{}",
                    self.lines().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for `cond`, showing ctid's log if it never holds.
    pub async fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            if start.elapsed() > PATIENCE {
                panic!("never: {what}; ctid logged:\n{}", self.lines().join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills ctid at once (SIGKILL), as a crash would.
    pub async fn kill9(&mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        self.wait_exit().await;
    }

    /// Sends a signal (`HUP`, ...) to ctid.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
    }

    /// Sends SIGTERM and waits for ctid to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.wait_exit().await
    }

    pub async fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain what the process wrote last.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return status;
            }
            if start.elapsed() > PATIENCE {
                panic!("ctid did not exit; it logged:\n{}", self.lines().join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Ctid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line-based text client (Web Interface, Info console).
pub struct Text {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>>,
    pub write: tokio::net::tcp::OwnedWriteHalf,
}

impl Text {
    pub async fn connect(port: u16) -> Text {
        let (read, write) = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap()
            .into_split();
        Text {
            lines: tokio::io::BufReader::new(read).lines(),
            write,
        }
    }

    pub async fn line(&mut self) -> Option<String> {
        tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("no answer")
            .unwrap()
    }

    /// Sends a command; returns the lines of the answer and its status line.
    pub async fn ask(&mut self, command: &str) -> (Vec<String>, String) {
        self.write
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        loop {
            let line = self.line().await.expect("closed");
            if line.starts_with("CTID-") {
                return (out, line);
            }
            out.push(line);
        }
    }
}

/// The answer of an info console command, without its status line.
pub async fn console(port: u16, command: &str) -> Vec<String> {
    Text::connect(port).await.ask(command).await.0
}

/// A CTI client for tests: every read has a deadline. Call events that arrive while a
/// reply is awaited are kept for `events`.
pub struct Cti {
    pub conn: ctid::client::Connection,
    pending: std::collections::VecDeque<serde_json::Value>,
}

impl Cti {
    pub async fn connect(port: u16) -> Cti {
        Cti {
            conn: ctid::client::Connection::connect("127.0.0.1", port, None)
                .await
                .unwrap(),
            pending: Default::default(),
        }
    }

    /// Connects from `local`, one of the loopback addresses (127.0.0.2, ...).
    pub async fn connect_from(port: u16, local: &str) -> Cti {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::new(local.parse().unwrap(), 0))
            .unwrap();
        let stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
        Cti::over(Box::new(stream))
    }

    /// A client over a stream already connected (and, for CTIs, already in TLS).
    pub fn over(io: ctid_actors::net::BoxedIo) -> Cti {
        Cti {
            conn: ctid::client::Connection::over(io),
            pending: Default::default(),
        }
    }

    pub async fn connect_tls(port: u16, ca: &std::path::Path) -> Result<Cti, String> {
        let ca = ca.to_path_buf();
        Ok(Cti {
            conn: ctid::client::Connection::connect("localhost", port, Some(&ca)).await?,
            pending: Default::default(),
        })
    }

    pub async fn send(&mut self, v: serde_json::Value) {
        self.conn.send(&v).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &str) {
        self.conn.send_raw(bytes).await.unwrap();
    }

    /// The next message, or None if the server closed the connection.
    pub async fn recv(&mut self) -> Option<serde_json::Value> {
        tokio::time::timeout(PATIENCE, self.conn.recv())
            .await
            .expect("no message from ctid")
            .ok()
            .flatten()
    }

    /// The next message that is not a call event.
    pub async fn reply(&mut self) -> serde_json::Value {
        loop {
            let m = self.recv().await.expect("connection closed");
            if m["class"] != "call_event" {
                return m;
            }
            self.pending.push_back(m);
        }
    }

    /// The next `n` call events.
    pub async fn events(&mut self, n: usize) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Some(m) = self.pending.pop_front() {
                out.push(m);
                continue;
            }
            let m = self.recv().await.expect("connection closed");
            if m["class"] == "call_event" {
                out.push(m);
            }
        }
        out
    }

    /// Sends an `ipbxcommand`; returns its acknowledgement and its outcome, or its
    /// refusal twice.
    pub async fn command(
        &mut self,
        mut request: serde_json::Value,
        id: u64,
    ) -> (serde_json::Value, serde_json::Value) {
        request["class"] = "ipbxcommand".into();
        request["commandid"] = id.into();
        self.send(request).await;
        let mut got = Vec::new();
        while got.len() < 2 {
            let m = self.reply().await;
            if m["replyid"] == id {
                if m.get("error_string").is_some() {
                    return (m.clone(), m);
                }
                got.push(m);
            }
        }
        (got.remove(0), got.remove(0))
    }

    /// Sends a request of `class`; returns the reply to it.
    pub async fn request(
        &mut self,
        class: &str,
        mut body: serde_json::Value,
        id: u64,
    ) -> serde_json::Value {
        body["class"] = class.into();
        body["commandid"] = id.into();
        self.send(body).await;
        loop {
            let m = self.reply().await;
            if m["replyid"] == id {
                return m;
            }
        }
    }

    pub async fn login(&mut self, user: &str) -> serde_json::Value {
        tokio::time::timeout(PATIENCE, self.conn.login(user, user))
            .await
            .expect("login took too long")
            .unwrap()
    }

    /// Reads until the server closes the connection; returns what came before.
    pub async fn until_closed(&mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            out.push(m);
        }
        out
    }
}

/// Calls between 1001-1003 (tenant `default`) and 2001-2003 (`tenant-b`).
pub fn two_tenant_calls(rate: f64) -> ctid_pbxsim::calls::CallPlan {
    use ctid_pbxsim::calls::Tenant;
    ctid_pbxsim::calls::CallPlan {
        rate,
        ring: Duration::from_millis(50),
        talk: Duration::from_millis(100),
        tenants: vec![
            Tenant::parse("internal:1001-1003").unwrap(),
            Tenant::parse("tenant-b-internal:2001-2003").unwrap(),
        ],
        limit: None,
        caller_up: false,
    }
}

/// Resumes `token` after `last_seq` on a new connection: the ack says which login it is
/// and that events were missed, then every missed event comes, then live ones, with no
/// gap and no duplicate. Returns the connection and the ack.
pub async fn resume_without_gap(
    port: u16,
    token: &str,
    last_seq: u64,
    login: &str,
) -> (Cti, serde_json::Value) {
    let mut again = Cti::connect(port).await;
    again
        .send(serde_json::json!({"class": "resume", "token": token, "last_seq": last_seq, "commandid": 1}))
        .await;
    let ack = again.reply().await;
    assert_eq!(
        (ack["class"].as_str(), ack["status"].as_str()),
        (Some("resume"), Some("ok")),
        "{ack}"
    );
    assert_eq!(ack["login"], login);
    let missed_up_to = ack["seq"].as_u64().unwrap();
    assert!(
        missed_up_to > last_seq + 5,
        "nothing was missed: {missed_up_to}"
    );
    let after = again.events((missed_up_to - last_seq) as usize + 20).await;
    let seqs: Vec<u64> = after.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (last_seq + 1..).take(seqs.len()).collect();
    assert_eq!(seqs, expected, "replay then live, no gap, no duplicate");
    (again, ack)
}

/// Places a call from 1001 (alice) to 1002; returns its id once ctid has read the hangups
/// of both its channels (ctid logs them with `RUST_LOG=info,ctid_actors::ami=debug`).
pub async fn call_that_ends(sim: &ctid_pbxsim::PbxSim, ctid: &Ctid) -> String {
    let (call, caller, callee) = sim.place_call(
        "internal",
        "PJSIP",
        "1001",
        "1002",
        Duration::from_millis(50),
        Duration::from_millis(100),
    );
    for channel in [caller, callee] {
        ctid.wait_line(&format!("Hangup {channel}")).await;
    }
    ctid_id(&call)
}
