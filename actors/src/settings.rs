//! The settings every actor reads. Loading and validation live in the daemon (`src/settings.rs`);
//! these are plain values with XiVO's defaults.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ctid_proto::cidr::Cidr;

mod store;
pub use store::{Database, PostgresUrl, StoreSettings, StoreSync};

/// A credential: shown as `***` by `Debug` so that it never reaches a log line.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether this is a value example files ship (`change-me`, ...): never a real secret.
    pub fn is_placeholder(&self) -> bool {
        let value = self.0.trim().to_ascii_lowercase();
        PLACEHOLDERS.contains(&value.as_str())
    }
}

/// Secrets that examples and tutorials ship, compared without case.
const PLACEHOLDERS: [&str; 8] = [
    "change-me",
    "changeme",
    "change_me",
    "change-this",
    "replace-me",
    "secret",
    "password",
    "xxx",
];

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// Every PBX, in the order of their names: `[pbx.<name>]` tables, or the `[ami]` table
    /// as the PBX named `default`.
    pub pbxes: Vec<PbxSettings>,
    pub listen: ListenSettings,
    pub timeouts: Timeouts,
    pub parting: Parting,
    pub directory: DirectorySettings,
    pub sessions: SessionSettings,
    pub store: StoreSettings,
    pub commands: ctid_proto::commands::CommandSettings,
    pub wallboard: ctid_proto::wallboard::BoardSettings,
    pub threads: ThreadSettings,
    pub cluster: ClusterSettings,
    pub http: HttpSettings,
    pub health: HealthSettings,
}

/// How ctid judges what it sends.
#[derive(Clone, Debug)]
pub struct HealthSettings {
    /// A call event older than this (from its PBX timestamp, or from when it was read) when
    /// it goes to clients is marked `stale`.
    pub stale_after: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            stale_after: Duration::from_secs(2),
        }
    }
}

/// Several ctid nodes sharing the work over NATS JetStream (see docs/cluster.md).
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub enabled: bool,
    /// This node's name, unique in the cluster.
    pub node: String,
    pub nats_url: String,
    /// A NATS credentials file, if the server asks for one.
    pub nats_creds: Option<PathBuf>,
    /// The CA of the NATS server's certificate, for TLS.
    pub nats_tls_ca: Option<PathBuf>,
    /// Holds AMI links and call models (one active node per PBX, the others stand by).
    pub ingest: bool,
    /// Holds client listeners, sessions and partitions.
    pub edge: bool,
    /// The contexts an edge serves; empty: all.
    pub contexts: Vec<String>,
    /// The PBXes an ingest node may take; empty: all.
    pub pbxes: Vec<String>,
    /// Prefix of every stream, bucket and subject: clusters sharing a NATS server apart.
    pub namespace: String,
    /// How long an active ingest's lease lasts without a renewal.
    pub lease_ttl: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            enabled: false,
            node: String::new(),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_creds: None,
            nats_tls_ca: None,
            ingest: true,
            edge: true,
            contexts: Vec::new(),
            pbxes: Vec::new(),
            namespace: "ctid".into(),
            lease_ttl: Duration::from_secs(3),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pbxes: vec![PbxSettings::default()],
            listen: ListenSettings::default(),
            timeouts: Timeouts::default(),
            parting: Parting::default(),
            directory: DirectorySettings::default(),
            sessions: SessionSettings::default(),
            store: StoreSettings::default(),
            commands: Default::default(),
            wallboard: Default::default(),
            threads: ThreadSettings::default(),
            cluster: ClusterSettings::default(),
            http: HttpSettings::default(),
            health: HealthSettings::default(),
        }
    }
}

impl Settings {
    /// The names of the PBXes, in order.
    pub fn pbx_names(&self) -> Vec<String> {
        self.pbxes.iter().map(|p| p.name.clone()).collect()
    }
}

/// One Asterisk: how to reach its AMI, and which FastAGI peers are its own.
#[derive(Clone, Debug)]
pub struct PbxSettings {
    pub name: String,
    /// Where its keys are in the settings: `ami` or `pbx.<name>`.
    pub section: String,
    pub ami: AmiSettings,
    /// Addresses whose FastAGI requests are this PBX's (when a request does not say).
    pub fagi_from: Vec<ctid_proto::cidr::Cidr>,
}

impl Default for PbxSettings {
    fn default() -> Self {
        PbxSettings {
            name: ctid_proto::directory::DEFAULT_PBX.to_owned(),
            section: "ami".to_owned(),
            ami: AmiSettings::default(),
            fagi_from: Vec::new(),
        }
    }
}

/// Threads the work is spread over; 0 means one per core. The AMI link and its router
/// always have a thread of their own.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadSettings {
    /// Threads the context partitions run on, in turn.
    pub partitions: usize,
    /// Threads the client sessions run on, in turn.
    pub sessions: usize,
}

impl ThreadSettings {
    /// `n` threads, or one per core for 0.
    pub fn count(n: usize) -> usize {
        match n {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DirectorySettings {
    pub path: PathBuf,
    /// A web service answering the directory in JSON; when set, `path` is not used.
    pub url: Option<String>,
    /// Sent to the web service as `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// Whether an `http://` URL is accepted (anyone on the path could change users).
    pub allow_plain_http: bool,
    /// CA certificates (PEM) the web service's certificate must chain to; None: Mozilla's.
    pub tls_ca: Option<PathBuf>,
    /// How often the file is checked for changes.
    pub check_interval: Duration,
}

impl Default for DirectorySettings {
    fn default() -> Self {
        DirectorySettings {
            path: PathBuf::from("/etc/ctid/directory.toml"),
            url: None,
            token: None,
            allow_plain_http: false,
            tls_ca: None,
            check_interval: Duration::from_secs(2),
        }
    }
}

/// Limits of CTI client sessions.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Connections that have not logged in yet, at most; more are refused.
    pub max_unauthenticated: usize,
    /// The same, from one source address.
    pub max_unauthenticated_per_address: usize,
    /// Longest line a client may send.
    pub max_line_bytes: usize,
    /// What a session may have queued for its client before it is dropped as a slow
    /// consumer.
    pub outbound_max_bytes: usize,
    pub outbound_max_messages: usize,
    /// How long a session's writer, once woken, lets events gather before it writes them
    /// (several in one write); zero writes at once.
    pub write_delay: Duration,
    /// How long after a disconnect a session can be resumed.
    pub resume_window: Duration,
    /// Events kept per context for resumes, by count and by size.
    pub replay_events: usize,
    pub replay_bytes: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            max_unauthenticated: 1024,
            max_unauthenticated_per_address: 32,
            max_line_bytes: ctid_proto::cti::DEFAULT_MAX_LINE,
            outbound_max_bytes: 4 << 20,
            outbound_max_messages: 10_000,
            write_delay: Duration::ZERO,
            resume_window: Duration::from_secs(60),
            replay_events: 10_000,
            replay_bytes: 16 << 20,
        }
    }
}

/// How ctid proves itself to the AMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmiAuth {
    /// `Challenge` then `Login` with an MD5 key: the secret never crosses the wire.
    Md5,
    /// `Login` with `Secret:` in the clear.
    Plain,
}

#[derive(Clone, Debug)]
pub struct AmiTls {
    /// PEM bundle of the CA certificates that may sign the AMI server's certificate.
    pub ca: PathBuf,
    /// Name checked against the server certificate.
    pub server_name: String,
}

#[derive(Clone, Debug)]
pub struct AmiSettings {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub secret: Secret,
    pub auth: AmiAuth,
    pub tls: Option<AmiTls>,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Time between keepalive Pings; zero turns them off.
    pub ping_interval: Duration,
    /// Time between full resyncs of the call model with Asterisk; zero turns them off.
    pub resync_interval: Duration,
    pub max_message_bytes: usize,
}

impl PbxSettings {
    /// Why this PBX's secret must not be sent (a placeholder), naming the key and how to
    /// set it; None if it may be.
    pub fn placeholder_secret(&self) -> Option<String> {
        self.ami.secret.is_placeholder().then(|| {
            format!(
                "{}.secret is a placeholder, not the AMI user's secret: set it (manager.conf's secret) in the settings or in {}; ctid does not log in to this PBX until then",
                self.section,
                env_var(&format!("{}.secret", self.section))
            )
        })
    }
}

/// The environment variable that overrides a settings key: `CTID__AMI__SECRET`.
pub fn env_var(key: &str) -> String {
    format!("CTID__{}", key.replace('.', "__").to_uppercase())
}

impl AmiSettings {
    /// `host:port`, the name of the link in logs.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl Default for AmiSettings {
    fn default() -> Self {
        AmiSettings {
            host: "127.0.0.1".into(),
            port: 5038,
            username: "xivo_cti_user".into(),
            secret: Secret::default(),
            auth: AmiAuth::Md5,
            tls: None,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            ping_interval: Duration::from_secs(10),
            resync_interval: Duration::from_secs(600),
            max_message_bytes: ctid_proto::ami::DEFAULT_MAX_MESSAGE,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub address: IpAddr,
    pub port: u16,
    pub enabled: bool,
    /// Peers that may connect (send, for UDP); others are closed (dropped) and counted.
    pub allow: Vec<Cidr>,
}

/// Every address, IPv4 and IPv6.
pub fn anywhere() -> Vec<Cidr> {
    ["0.0.0.0/0", "::/0"]
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect()
}

impl Listener {
    fn on(address: Ipv4Addr, port: u16, enabled: bool, allow: Vec<Cidr>) -> Listener {
        Listener {
            address: IpAddr::V4(address),
            port,
            enabled,
            allow,
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

#[derive(Clone, Debug)]
pub struct TlsListener {
    pub listener: Listener,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// How often the certificate and key files are checked for a renewal.
    pub check_interval: Duration,
}

/// The HTTP listener (REST API): TLS when a certificate and key are set.
#[derive(Clone, Debug)]
pub struct HttpListen {
    pub listener: Listener,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// How often the certificate and key files are checked for a renewal.
    pub check_interval: Duration,
    /// The largest request body read; a larger one is refused (413).
    pub max_body_bytes: usize,
    /// Whether `GET /metrics` needs a bearer token of `[[http.tokens]]`.
    pub metrics_token: bool,
}

/// The listening ports of the XiVO CTI server admin page, and ctid's HTTP port.
#[derive(Clone, Debug)]
pub struct ListenSettings {
    pub fagi: Listener,
    pub cti: Listener,
    pub ctis: TlsListener,
    pub webi: Listener,
    pub info: Listener,
    /// Whether the console's `kick`, `loglevel` and `dumpami` are served.
    pub info_allow_control: bool,
    /// UDP.
    pub announce: Listener,
    pub http: HttpListen,
}

impl Default for ListenSettings {
    fn default() -> Self {
        let lo = Ipv4Addr::LOCALHOST;
        let any = Ipv4Addr::UNSPECIFIED;
        let local = || Cidr::loopback().to_vec();
        ListenSettings {
            fagi: Listener::on(lo, 5002, true, local()),
            cti: Listener::on(any, 5003, true, anywhere()),
            ctis: TlsListener {
                listener: Listener::on(any, 5013, false, anywhere()),
                cert: None,
                key: None,
                check_interval: Duration::from_secs(60),
            },
            webi: Listener::on(lo, 5004, true, local()),
            info: Listener::on(lo, 5005, true, local()),
            info_allow_control: true,
            announce: Listener::on(lo, 5006, true, local()),
            http: HttpListen {
                listener: Listener::on(lo, 9480, true, anywhere()),
                cert: None,
                key: None,
                check_interval: Duration::from_secs(60),
                max_body_bytes: 64 * 1024,
                metrics_token: false,
            },
        }
    }
}

impl Settings {
    /// What start-up warns about: ports without authentication, or a plain CTI port, open
    /// beyond this machine; a directory over plain http. The info console's `show_infos`
    /// repeats them.
    pub fn security_warnings(&self) -> Vec<String> {
        let l = &self.listen;
        let mut warnings = Vec::new();
        for (name, listener) in [
            ("webi", &l.webi),
            ("info", &l.info),
            ("fagi", &l.fagi),
            ("announce", &l.announce),
        ] {
            if listener.enabled && !listener.address.is_loopback() {
                let allow: Vec<String> = listener.allow.iter().map(Cidr::to_string).collect();
                warnings.push(format!(
                    "listen.{name} listens on {}, off loopback, and has no authentication: only listen.{name}.allow ({}) may reach it",
                    listener.address,
                    allow.join(", ")
                ));
            }
        }
        if l.cti.enabled && !l.cti.address.is_loopback() && !l.ctis.listener.enabled {
            warnings.push(format!(
                "listen.cti listens on {}, off loopback, while CTIs is off: passwords cross the network in the clear; enable listen.ctis (TLS) for desktops elsewhere",
                l.cti.address
            ));
        }
        let http = &l.http;
        if http.listener.enabled && !http.listener.address.is_loopback() && http.cert.is_none() {
            warnings.push(format!(
                "listen.http listens on {}, off loopback, without TLS: bearer tokens cross the network in the clear; set listen.http.cert and listen.http.key",
                http.listener.address
            ));
        }
        if let Some(url) = self
            .directory
            .url
            .as_ref()
            .filter(|u| u.starts_with("http://"))
        {
            warnings.push(format!(
                "directory.url {url} is plain http (directory.allow_plain_http): anyone on the path can read the directory and add a user; use https"
            ));
        }
        if l.info.enabled && l.info_allow_control && !l.info.address.is_loopback() {
            warnings.push(
                "listen.info.allow_control is on off loopback: listen.info.allow may kick sessions, change the log level and read raw AMI".to_owned(),
            );
        }
        warnings
    }
}

/// Who may use the HTTP API: `[[http.tokens]]`.
#[derive(Clone, Debug, Default)]
pub struct HttpSettings {
    pub tokens: Vec<HttpToken>,
}

/// The contexts a token reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenContexts {
    /// `["*"]`: every context.
    All,
    Only(Vec<String>),
}

/// A bearer token of the HTTP API: only its SHA-256 is known.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub contexts: TokenContexts,
    pub role: ctid_proto::rights::Role,
}

impl HttpToken {
    /// Whether the token reaches `context`.
    pub fn sees(&self, context: &str) -> bool {
        match &self.contexts {
            TokenContexts::All => true,
            TokenContexts::Only(names) => names.iter().any(|n| n == context),
        }
    }
}

impl fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpToken")
            .field("name", &self.name)
            .field("contexts", &self.contexts)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct Timeouts {
    pub update_period: Duration,
    /// How long ctid waits on a peer: connect, login to the AMI, an AMI action, a stalled write.
    pub socket: Duration,
    /// How long a CTI client has to complete its login.
    pub login: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            update_period: Duration::from_secs(3600),
            socket: Duration::from_secs(10),
            login: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Parting {
    pub context_separation: bool,
}

impl Default for Parting {
    fn default() -> Self {
        Parting {
            context_separation: true,
        }
    }
}

/// `1.5s`, `250ms`, `30s`: durations as they read well in a log line.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests;
