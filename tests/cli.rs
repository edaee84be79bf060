//! The command line: --version, --help, check-config (on the example settings and on a
//! broken file), hash-password, and the client and demo against real sockets.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use common::{ami_config_with, Ctid, PATIENCE};
use ctid_pbxsim::{PbxSim, SimConfig};
use serde_json::Value;

fn ctid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctid"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_and_help_name_every_subcommand() {
    let version = ctid(&["--version"]);
    assert!(version.status.success());
    assert_eq!(
        text(&version.stdout).trim(),
        format!("ctid {}", env!("CARGO_PKG_VERSION"))
    );
    let help = text(&ctid(&["--help"]).stdout);
    for sub in [
        "run",
        "check-config",
        "hash-password",
        "token",
        "client",
        "demo",
    ] {
        assert!(help.contains(sub), "{sub} missing from:\n{help}");
    }
}

#[test]
fn the_example_settings_pass_check_config_but_for_their_placeholder_secret() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ctid.toml");
    let out = ctid(&["check-config", example.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stdout));
    let report = text(&out.stdout);
    assert!(
        report.starts_with("ami.secret is a placeholder") && report.contains("CTID__AMI__SECRET"),
        "{report}"
    );
    assert!(report.contains("1 problem(s)"), "{report}");
    let real = Command::new(env!("CARGO_BIN_EXE_ctid"))
        .args(["check-config", example.to_str().unwrap()])
        .env("CTID__AMI__SECRET", "s3cret-of-manager.conf")
        .output()
        .unwrap();
    assert!(real.status.success(), "{}", text(&real.stdout));
    assert!(text(&real.stdout).trim_end().ends_with(": ok"));
}

#[test]
fn check_config_names_each_pbxs_placeholder_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctid.toml");
    std::fs::write(dir.path().join("directory.toml"), "").unwrap();
    std::fs::write(
        &path,
        "[pbx.paris]\nsecret = \"ChangeMe\"\n[pbx.lyon]\nsecret = \"l-7f3a\"\n\
         [directory]\npath = \"directory.toml\"\n",
    )
    .unwrap();
    let out = ctid(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let report = text(&out.stdout);
    assert!(
        report.contains("pbx.paris.secret is a placeholder")
            && report.contains("CTID__PBX__PARIS__SECRET"),
        "{report}"
    );
    assert!(!report.contains("pbx.lyon"), "{report}");
}

#[test]
fn check_config_lists_every_problem_of_what_the_settings_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctid.toml");
    for pem in ["cert.pem", "key.pem"] {
        std::fs::write(dir.path().join(pem), "not PEM").unwrap();
    }
    std::fs::write(
        &path,
        "[ami]\nsecret = \"x\"\n[directory]\npath = \"nowhere.toml\"\n\
         [listen.ctis]\nenabled = true\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
    )
    .unwrap();
    let out = ctid(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let report = text(&out.stdout);
    assert!(report.contains("directory.path: "), "{report}");
    assert!(report.contains("listen.ctis: "), "{report}");
    assert!(report.contains("2 problem(s)"), "{report}");
}

#[test]
fn check_config_reports_each_pbx_problem_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctid.toml");
    std::fs::write(dir.path().join("ca.pem"), "not PEM").unwrap();
    std::fs::write(
        dir.path().join("directory.toml"),
        "[[contexts]]\nname = \"t\"\n[[queues]]\nname = \"q\"\ncontext = \"t\"\npbx = \"c\"\n",
    )
    .unwrap();
    std::fs::write(
        &path,
        "[pbx.a]\nsecret = \"x\"\ntls = true\ntls_ca = \"ca.pem\"\n\
         [pbx.b]\nsecret = \"y\"\n[directory]\npath = \"directory.toml\"\n",
    )
    .unwrap();
    let out = ctid(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let report = text(&out.stdout);
    assert!(report.contains("pbx.a.tls_ca: "), "{report}");
    assert!(
        report.contains("queues[0] (q): pbx \"c\" is not a configured PBX (a, b)"),
        "{report}"
    );
    assert!(report.contains("2 problem(s)"), "{report}");
}

#[test]
fn hash_password_prints_a_hash_of_its_input_and_nothing_of_the_password() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ctid"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret-word\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let phc = stdout.trim();
    assert!(phc.starts_with("$argon2id$"), "{stdout}");
    assert!(ctid_proto::directory::verify_password(phc, "s3cret-word"));
    assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"));

    let empty = Command::new(env!("CARGO_BIN_EXE_ctid"))
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!empty.status.success());
    assert!(text(&empty.stderr).contains("no password on standard input"));
}

#[test]
fn token_new_prints_a_fresh_token_and_its_sha256() {
    let tokens: Vec<(String, String)> = (0..2)
        .map(|_| {
            let out = ctid(&["token", "new"]);
            assert!(out.status.success());
            let stdout = text(&out.stdout);
            let value = |key: &str| {
                stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .unwrap_or_else(|| panic!("no {key} in {stdout}"))
                    .trim_matches('"')
                    .to_owned()
            };
            (value("token = "), value("token_sha256 = "))
        })
        .collect();
    for (token, hash) in &tokens {
        assert_eq!(token.len(), 64, "256 random bits in hex");
        assert_eq!(*hash, ctid_actors::http::token_sha256(token));
    }
    assert_ne!(tokens[0].0, tokens[1].0);
}

/// A running command whose standard output is read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(command: &mut Command) -> Running {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    /// The next line that `wanted` accepts.
    fn line_where(&self, wanted: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(PATIENCE)
                .expect("no such line in time");
            if wanted(&line) {
                return line;
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_client_prints_every_message_as_json_and_sends_what_is_typed() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["cti"]);
    let ctid = Ctid::start(&config, "info");
    let port = ctid.port("cti").await.to_string();
    let mut client = Running::start(
        Command::new(env!("CARGO_BIN_EXE_ctid"))
            .args(["client", "--port", &port, "--user", "alice"])
            .env("CTID_PASSWORD", "alice"),
    );
    let json = |line: &str| serde_json::from_str::<Value>(line).ok();
    let capas = client.line_where(|l| json(l).is_some_and(|m| m["class"] == "login_capas"));
    assert_eq!(json(&capas).unwrap()["login"], "alice");

    let stdin = client.child.stdin.as_mut().unwrap();
    stdin
        .write_all(b"{\"class\":\"keepalive\",\"commandid\":5}\n")
        .unwrap();
    stdin.flush().unwrap();
    client.line_where(|l| json(l).is_some_and(|m| m["replyid"] == 5));
}

#[test]
fn the_demo_shows_each_desktop_its_own_tenants_calls() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/directory.toml");
    let demo = Running::start(Command::new(env!("CARGO_BIN_EXE_ctid")).args([
        "demo",
        "--cti-port",
        &port,
        "--rate",
        "20",
        "--directory",
        directory.to_str().unwrap(),
    ]));
    let alice = demo.line_where(|l| l.starts_with("[alice]") && l.contains(" call "));
    let dave = demo.line_where(|l| l.starts_with("[dave ]") && l.contains(" call "));
    assert!(alice.ends_with("(default)"), "{alice}");
    assert!(dave.ends_with("(tenant-b)"), "{dave}");

    // Ctrl-C ends it cleanly, its call records with it.
    let pid = demo.child.id();
    let records = std::env::temp_dir().join(format!("ctid-demo-{pid}.sqlite"));
    assert!(records.exists());
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let mut demo = demo;
    assert!(demo.child.wait().unwrap().success());
    assert!(!records.exists());
}
