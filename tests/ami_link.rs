//! ctid against the simulated Asterisk, through real sockets: login, keepalive, drops,
//! reconnects, a wrong secret, and TLS.

mod common;

use std::time::Duration;

use common::{actions_named, ami_config, fixture, Ctid};
use ctid_pbxsim::{PbxSim, SimConfig};

fn accepted(sim: &PbxSim) -> usize {
    sim.logins().iter().filter(|l| l.accepted).count()
}

/// The delay a "retrying in 870ms" (or "1.8s") log line announces.
fn retry_delay(line: &str) -> Duration {
    let text = line.rsplit("retrying in ").next().unwrap().trim();
    match text.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().unwrap()),
        None => Duration::from_secs_f64(text.trim_end_matches('s').parse().unwrap()),
    }
}

#[tokio::test]
async fn logs_in_pings_and_logs_in_again_after_a_drop() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let port = sim.addr().port();
    let config = ami_config(port, "secret = \"ctipass\"\nping_interval = 0.2");
    let mut ctid = Ctid::start(&config, "info,ctid_actors::ami=debug");

    ctid.wait_line("logged in as 'cti'").await;
    assert_eq!(accepted(&sim), 1);
    assert!(
        sim.logins()[0].md5,
        "the default login is the MD5 challenge"
    );
    // A Ping is sent only once the previous one is answered; an unanswered one drops the link.
    ctid.wait_until("a Ping", || actions_named(&sim, "Ping") >= 2)
        .await;
    assert_eq!(ctid.count("no answer to Ping"), 0);

    // Events it reads are logged at debug level.
    sim.replay(&fixture("ami/bridged_call.txt"));
    ctid.wait_line(&format!(
        "AMI default (127.0.0.1:{port}): Newchannel Local/1001@default-00000001;1"
    ))
    .await;
    ctid.wait_line(&format!(
        "AMI default (127.0.0.1:{port}): Hangup Local/1002@default-00000002;2"
    ))
    .await;

    sim.drop_connections();
    let lost = ctid
        .wait_line(&format!(
            "AMI default (127.0.0.1:{port}) lost (closed by Asterisk), retrying in"
        ))
        .await;
    let delay = retry_delay(&lost);
    assert!(
        delay <= Duration::from_secs(1),
        "past reconnect_max: {lost}"
    );
    ctid.wait_until("a second login", || accepted(&sim) == 2)
        .await;
    ctid.wait_lines("logged in as 'cti'", 2).await;

    let status = ctid.terminate().await;
    assert!(status.success(), "{status:?}");
    ctid.wait_until("a Logoff", || actions_named(&sim, "Logoff") == 1)
        .await;
    assert_eq!(ctid.count("ctid::run] stopped"), 1);
}

#[tokio::test]
async fn a_hung_asterisk_is_caught_by_the_keepalive() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config(
        sim.addr().port(),
        "secret = \"ctipass\"\nping_interval = 0.2\nauth = \"plain\"",
    );
    let ctid = Ctid::start(&config, "info");
    ctid.wait_line("logged in as 'cti'").await;

    sim.set_muted(true);
    ctid.wait_line("lost (no answer to Ping within 2s), retrying in")
        .await;
    ctid.wait_line("login timed out (no answer within 2s), retrying in")
        .await;
    sim.set_muted(false);
    ctid.wait_lines("logged in as 'cti'", 2).await;
}

#[tokio::test]
async fn a_wrong_secret_is_one_error_per_attempt_with_backoff_and_never_logged() {
    const SECRET: &str = "wrong-XYZZY-secret";
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config(sim.addr().port(), "auth = \"plain\"");
    // The secret comes from the environment, and every log level is on.
    let mut ctid = Ctid::start_with(&config, "trace", &[("CTID__AMI__SECRET", SECRET)]);

    let rejected = "login as 'cti' rejected (Authentication failed), retrying in";
    let announced: Vec<Duration> = ctid
        .wait_lines(rejected, 5)
        .await
        .iter()
        .map(|l| retry_delay(l))
        .collect();
    let status = ctid.terminate().await;
    assert!(status.success());
    // The waits double from reconnect_min (0.2 s) up to reconnect_max (1 s), each up to
    // 20% shorter at random: 0.2, 0.4, 0.8, 1, 1.
    for (i, delay) in announced.iter().take(5).enumerate() {
        let full = Duration::from_millis(200 << i).min(Duration::from_secs(1));
        assert!(
            *delay <= full && *delay >= full.mul_f64(0.8) - Duration::from_millis(1),
            "wait {i} is {delay:?}, expected {full:?} less up to 20%: {announced:?}"
        );
    }

    let attempts = sim.logins();
    assert!(attempts.iter().all(|a| !a.accepted && !a.md5));
    let errors = ctid
        .lines()
        .into_iter()
        .filter(|l| l.contains(rejected))
        .collect::<Vec<_>>();
    assert!(errors.iter().all(|l| l.contains(" ERROR ")), "{errors:?}");
    // One line per attempt (the last attempt may have been cut short by the stop).
    assert!(
        errors.len() == attempts.len() || errors.len() + 1 == attempts.len(),
        "{} error lines for {} attempts",
        errors.len(),
        attempts.len()
    );
    // Attempts really wait what was announced.
    for (pair, delay) in attempts.windows(2).zip(&announced) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= *delay,
            "attempts {gap:?} apart, after announcing {delay:?}"
        );
    }
    let lines = ctid.lines();
    assert!(
        lines.iter().all(|l| !l.contains(SECRET)),
        "the secret was logged"
    );
    // The login action itself was logged at trace level, masked.
    assert!(
        lines.iter().any(|l| l.contains(r#""Secret": "***""#)),
        "login not traced"
    );
}

#[tokio::test]
async fn a_wrong_md5_secret_is_rejected_too() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let config = ami_config(sim.addr().port(), "secret = \"not-it\"");
    let ctid = Ctid::start(&config, "info");
    ctid.wait_lines(
        "login as 'cti' rejected (Authentication failed), retrying in",
        2,
    )
    .await;
    assert!(sim.logins().iter().all(|a| a.md5 && !a.accepted));
}

#[tokio::test]
async fn no_asterisk_is_retried_with_a_clear_line() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let ctid = Ctid::start(&ami_config(port, "secret = \"x\""), "info");
    let line = ctid
        .wait_line("unreachable (connection refused), retrying in")
        .await;
    assert!(
        line.contains(&format!("AMI default (127.0.0.1:{port}) ")),
        "{line}"
    );
    ctid.wait_lines("unreachable (connection refused), retrying in", 3)
        .await;
}

#[test]
fn a_bad_configuration_stops_start_up_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctid.toml");
    std::fs::write(&path, "[ami]\nport = 70000\n[listen.cti]\nprot = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ctid"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let log = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "ami.port: expected a whole number",
        "ami.secret: required",
        "listen.cti.prot: unknown key (did you mean listen.cti.port?)",
        "3 problem(s); not starting",
    ] {
        assert!(log.contains(needle), "{needle:?} missing from:\n{log}");
    }
    assert!(
        !log.contains("panicked") && !log.contains("backtrace"),
        "{log}"
    );
}

/// A self-signed certificate for `localhost` in `dir` (`<name>.pem`, `<name>.key`).
fn certificate(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// A TLS port in front of the simulator, as Asterisk's AMI over TLS: each connection is
/// decrypted and relayed to the simulator's plain port.
async fn tls_front(sim: &PbxSim, cert: &std::path::Path, key: &std::path::Path) -> u16 {
    let acceptor =
        tokio_rustls::TlsAcceptor::from(ctid_actors::tls::server_config(cert, key).unwrap().config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let plain = sim.addr();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut sim) = tokio::net::TcpStream::connect(plain).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut sim).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn ami_over_tls_checks_the_certificate_and_logs_in() {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path(), "pbx");
    let (stranger, _) = certificate(certs.path(), "stranger");
    let port = tls_front(&sim, &cert, &key).await;
    let tls = |ca: &std::path::Path| {
        ami_config(
            port,
            &format!(
                "secret = \"ctipass\"\ntls = true\ntls_ca = \"{}\"\ntls_server_name = \"localhost\"",
                ca.display()
            ),
        )
    };

    let trusted = Ctid::start(&tls(&cert), "info");
    trusted.wait_line("logged in as 'cti'").await;
    assert_eq!(accepted(&sim), 1);
    drop(trusted);

    // A PBX whose certificate the CA file does not vouch for is refused, and retried.
    let refused = Ctid::start(&tls(&stranger), "info");
    refused
        .wait_lines("TLS handshake failed (invalid peer certificate", 2)
        .await;
    assert_eq!(accepted(&sim), 1);
}
