//! The command line: --version, --help, check-config (on the example settings and on a
//! broken file) and hash-password.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

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
    for sub in ["run", "check-config", "hash-password", "client", "demo"] {
        assert!(help.contains(sub), "{sub} missing from:\n{help}");
    }
}

#[test]
fn the_example_settings_pass_check_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ctid.toml");
    let out = ctid(&["check-config", example.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).trim_end().ends_with(": ok"));
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
