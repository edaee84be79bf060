//! rustls configuration from PEM files, with the ring provider chosen explicitly (a process
//! with two providers enabled and none chosen panics at the first handshake). The CTIs
//! server speaks TLS 1.2 and 1.3 only, and its certificate is swapped without a restart
//! when the files are renewed ([`CertWatcher`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use log::{error, info};
use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::supervisor::Shutdown;

/// A TLS configuration problem, naming the file concerned.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    pub path: String,
    pub reason: String,
}

fn tls_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// A client configuration that trusts only the CAs in `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| tls_error(ca, e))?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(ca, e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificate chain of `cert` with the private key of `key`, checked to match.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(key, e))?;
    CertifiedKey::from_der(certs, key_der, &ring::default_provider()).map_err(|e| tls_error(key, e))
}

/// The server's certificate, swapped whole when renewed: handshakes after the swap get the
/// new one, connections already up keep theirs.
#[derive(Debug)]
pub struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl CertSlot {
    fn set(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// A TLS server configuration and the slot its certificate is in.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub cert: Arc<CertSlot>,
}

/// A server configuration for the certificate chain in `cert` and the private key in `key`:
/// TLS 1.2 and 1.3 only.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
    let slot = Arc::new(CertSlot(RwLock::new(Arc::new(certified_key(cert, key)?))));
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&versions)
        .map_err(|e| tls_error(cert, e))?
        .with_no_client_auth()
        .with_cert_resolver(slot.clone());
    Ok(ServerTls {
        config: Arc::new(config),
        cert: slot,
    })
}

/// Reads the certificate files again now, changed or not (SIGHUP).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadCert;

/// What identifies a version of the two files without reading them.
type Stamps = [Option<(SystemTime, u64)>; 2];

fn stamps(cert: &Path, key: &Path) -> Stamps {
    [cert, key].map(|p| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    })
}

/// Puts a renewed certificate in its slot: when the files change (checked every
/// `interval`) or when told ([`ReloadCert`]). A pair that does not load (a key that does
/// not match the certificate, say, while they are being replaced one after the other)
/// leaves the current certificate in place, with the reason logged.
pub struct CertWatcher {
    /// The listener it serves, for the log.
    name: &'static str,
    cert: PathBuf,
    key: PathBuf,
    slot: Arc<CertSlot>,
    interval: Duration,
    seen: Stamps,
    checking: bool,
}

impl CertWatcher {
    pub fn new(
        name: &'static str,
        cert: PathBuf,
        key: PathBuf,
        slot: Arc<CertSlot>,
        interval: Duration,
    ) -> Self {
        let seen = stamps(&cert, &key);
        CertWatcher {
            name,
            cert,
            key,
            slot,
            interval,
            seen,
            checking: false,
        }
    }

    fn check(&mut self, force: bool, ctx: &mut Context<Self>) {
        if self.checking {
            return;
        }
        self.checking = true;
        let (cert, key, seen) = (self.cert.clone(), self.key.clone(), self.seen);
        let load = tokio::task::spawn_blocking(move || {
            let now = stamps(&cert, &key);
            if !force && now == seen {
                return None;
            }
            Some((now, certified_key(&cert, &key)))
        });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(load).map(|loaded, act, _| {
                act.checking = false;
                let Ok(Some((now, loaded))) = loaded else {
                    return;
                };
                act.seen = now;
                match loaded {
                    Ok(key) => {
                        act.slot.set(key);
                        info!(
                            "{}: certificate reloaded from {}; new connections get it",
                            act.name,
                            act.cert.display()
                        );
                    }
                    Err(e) => error!(
                        "{}: certificate not reloaded, keeping the current one: {e}",
                        act.name
                    ),
                }
            }),
        );
    }
}

impl Actor for CertWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |act, ctx| act.check(false, ctx));
    }
}

impl Handler<ReloadCert> for CertWatcher {
    type Result = ();

    fn handle(&mut self, _: ReloadCert, ctx: &mut Context<Self>) {
        self.check(true, ctx);
    }
}

impl Handler<Shutdown> for CertWatcher {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
