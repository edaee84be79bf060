//! CTIs: the CTI protocol inside TLS from the first byte.

mod common;

use std::time::Duration;

use common::{ami_config_with, two_tenant_calls, Cti, Ctid};
use ctid_pbxsim::{PbxSim, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `localhost`, written as cert.pem and key.pem in `dir`.
fn certificate(dir: &std::path::Path) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
}

async fn tls_server() -> (PbxSim, Ctid, tempfile::TempDir, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    certificate(certs.path());
    let config = ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["ctis"]);
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let env = [
        ("CTID__LISTEN__CTIS__CERT", cert.to_str().unwrap()),
        ("CTID__LISTEN__CTIS__KEY", key.to_str().unwrap()),
    ];
    let ctid = Ctid::start_with(&config, "info,ctid_actors::listener=debug", &env);
    let port = ctid.port("ctis").await;
    (sim, ctid, certs, port)
}

#[tokio::test]
async fn ctis_serves_the_cti_protocol_inside_tls() {
    let (sim, ctid, certs, port) = tls_server().await;
    ctid.wait_line("ctis: listening on 127.0.0.1:")
        .await
        .contains("(TLS)")
        .then_some(())
        .unwrap();
    let mut alice = Cti::connect_tls(port, &certs.path().join("cert.pem"))
        .await
        .unwrap();
    let capas = alice.login("alice").await;
    assert_eq!(capas["context"], "default");
    let _calls = sim.run_calls(two_tenant_calls(40.0));
    for e in alice.events(10).await {
        assert_eq!(e["call"]["contexts"], serde_json::json!(["default"]));
    }
}

#[tokio::test]
async fn a_plaintext_client_on_ctis_gets_no_json() {
    let (_sim, ctid, _certs, port) = tls_server().await;
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(b"{\"class\":\"login_id\",\"userlogin\":\"alice\"}\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server must close the connection");
    assert!(
        !String::from_utf8_lossy(&got).contains("login_id"),
        "no CTI reply in clear"
    );
    ctid.wait_line("TLS handshake with 127.0.0.1").await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_cannot_connect() {
    let (_sim, _ctid, _certs, port) = tls_server().await;
    let other = tempfile::tempdir().unwrap();
    certificate(other.path());
    assert!(Cti::connect_tls(port, &other.path().join("cert.pem"))
        .await
        .is_err());
}

#[test]
fn a_bad_certificate_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    std::fs::write(dir.path().join("directory.toml"), common::two_tenants()).unwrap();
    std::fs::write(
        dir.path().join("ctid.toml"),
        ami_config_with(1, "secret = \"x\"", &["ctis"]),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ctid"))
        .args(["run", "--config"])
        .arg(dir.path().join("ctid.toml"))
        .env("CTID__LISTEN__CTIS__CERT", "cert.pem")
        .env("CTID__LISTEN__CTIS__KEY", "key.pem")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("listen.ctis: ")
            && log.contains("cert.pem: no PEM certificate found; not starting"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
