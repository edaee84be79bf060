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
    tls_server_with(&[]).await
}

async fn tls_server_with(env: &[(&str, &str)]) -> (PbxSim, Ctid, tempfile::TempDir, u16) {
    let sim = PbxSim::start(SimConfig::default()).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    certificate(certs.path());
    let config = ami_config_with(sim.addr().port(), "secret = \"ctipass\"", &["ctis"]);
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let mut env = env.to_vec();
    env.extend([
        ("CTID__LISTEN__CTIS__CERT", cert.to_str().unwrap()),
        ("CTID__LISTEN__CTIS__KEY", key.to_str().unwrap()),
    ]);
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

/// A TLS 1.1 ClientHello (client_version 3.2, no supported_versions extension), written
/// by hand since no TLS library here still speaks 1.1. Its suites, groups and signature
/// algorithms are ones ctid has: only the version is wrong.
fn tls_1_1_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02];
    hello.extend([7u8; 32]);
    hello.push(0);
    // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256.
    hello.extend([0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]);
    hello.extend([0x01, 0x00]);
    let extensions: [&[u8]; 3] = [
        // supported_groups: x25519, secp256r1.
        &[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17],
        // ec_point_formats: uncompressed.
        &[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00],
        // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256.
        &[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04],
    ];
    let extensions = extensions.concat();
    hello.extend((extensions.len() as u16).to_be_bytes());
    hello.extend(extensions);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend((hello.len() as u16).to_be_bytes());
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x02];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test]
async fn a_tls_1_1_client_is_refused_and_a_tls_1_2_one_served() {
    let (_sim, _ctid, certs, port) = tls_server().await;
    let mut old = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    old.write_all(&tls_1_1_client_hello()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(common::PATIENCE, old.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server must close the connection");
    // One alert record: fatal (2), protocol_version (70); no ServerHello.
    assert!(got.len() >= 7, "{got:?}");
    assert_eq!((got[0], got[5], got[6]), (0x15, 2, 70), "{got:?}");

    // A client that speaks TLS 1.2 only is served.
    let mut roots = rustls::RootCertStore::empty();
    for cert in ctid_actors::tls::load_certs(&certs.path().join("cert.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut c = Cti::over(Box::new(tls));
    assert_eq!(c.login("alice").await["login"], "alice");
}

/// Replaces the certificate files in `dir` with a new certificate; returns a copy of it
/// that clients can trust.
fn renew(dir: &std::path::Path, keep: &std::path::Path) {
    certificate(dir);
    std::fs::copy(dir.join("cert.pem"), keep).unwrap();
}

#[tokio::test]
async fn a_renewed_certificate_is_served_after_sighup_without_a_restart() {
    let (_sim, ctid, certs, port) = tls_server().await;
    let old = certs.path().join("old.pem");
    std::fs::copy(certs.path().join("cert.pem"), &old).unwrap();
    assert!(Cti::connect_tls(port, &old).await.is_ok());
    let new = certs.path().join("new.pem");
    renew(certs.path(), &new);
    ctid.signal("HUP");
    ctid.wait_line("ctis: certificate reloaded").await;
    let mut renewed = Cti::connect_tls(port, &new).await.unwrap();
    assert_eq!(renewed.login("alice").await["login"], "alice");
    assert!(
        Cti::connect_tls(port, &old).await.is_err(),
        "the old one is gone"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_served_once_its_files_change() {
    let every = [("CTID__LISTEN__CTIS__CHECK_INTERVAL", "0.2")];
    let (_sim, ctid, certs, port) = tls_server_with(&every).await;
    let new = certs.path().join("new.pem");
    renew(certs.path(), &new);
    ctid.wait_line("ctis: certificate reloaded").await;
    assert!(Cti::connect_tls(port, &new).await.is_ok());
}
