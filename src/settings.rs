//! Loads the settings: a TOML file, then `CTID__SECTION__KEY` environment overrides.
//!
//! Every key is read once, here, with its default; every problem is collected (not just the
//! first) with the key it concerns and where the value came from, and keys nobody read are
//! reported as unknown.

mod reader;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat, ValueKind};
use ctid_actors::directory::check_url;
use ctid_actors::settings::{
    AmiAuth, AmiSettings, AmiTls, ClusterSettings, Database, DirectorySettings, HealthSettings,
    HttpListen, HttpSettings, HttpToken, ListenSettings, Listener, Parting, PbxSettings,
    PostgresUrl, Secret, SessionSettings, Settings, StoreSettings, StoreSync, ThreadSettings,
    Timeouts, TlsListener, TokenContexts,
};
use ctid_proto::cidr::Cidr;
use ctid_proto::commands::CommandSettings;
use ctid_proto::rights::Role;
use ctid_proto::wallboard::BoardSettings;
use reader::Reader;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "CTID";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key (`ami.port`); empty for a problem with the file as a whole.
    pub key: String,
    /// Where the value came from: the file, or the environment variable.
    pub origin: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), &self.origin) {
            (true, _) => write!(f, "{}", self.message),
            (false, Some(origin)) => write!(f, "{}: {} (from {origin})", self.key, self.message),
            (false, None) => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

fn file_problem(message: String) -> Vec<Problem> {
    vec![Problem {
        key: String::new(),
        origin: None,
        message,
    }]
}

/// Reads the settings at `path` with the environment's overrides.
pub fn load(path: &Path) -> Result<Settings, Vec<Problem>> {
    load_with(path, Environment::with_prefix(ENV_PREFIX).separator("__"))
}

fn load_with(path: &Path, env: Environment) -> Result<Settings, Vec<Problem>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(file_problem(format!("{}: not a file", path.display()))),
        Err(e) => {
            return Err(file_problem(format!(
                "{}: {}",
                path.display(),
                io_reason(&e)
            )))
        }
    }
    let table = Config::builder()
        .add_source(File::from(path).format(FileFormat::Toml).required(true))
        .add_source(env)
        .build()
        .and_then(|c| c.cache.into_table())
        .map_err(|e| file_problem(format!("{}: {}", path.display(), one_line(&e.to_string()))))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut reader = Reader::new(table, path.display().to_string(), base);
    let settings = read(&mut reader);
    reader.finish().map(|()| settings)
}

/// A parse error on one line: where and what, without the drawing of the offending line
/// nor the file name the config crate appends (relative to the working directory).
fn one_line(error: &str) -> String {
    let lines: Vec<&str> = error
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('|') && !l.starts_with("in "))
        .collect();
    match (lines.first(), lines.last()) {
        (Some(first), Some(last)) if first != last => format!("{first}: {last}"),
        (Some(first), _) => (*first).to_owned(),
        _ => error.to_owned(),
    }
}

/// A short reason for an I/O error, without the `(os error N)` tail.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn read(r: &mut Reader) -> Settings {
    let d = Settings::default();
    let pbxes = read_pbxes(r, &d.pbxes[0]);
    let timeouts = Timeouts {
        update_period: r.seconds(
            "timeouts.update_period",
            d.timeouts.update_period,
            1.0,
            86400.0,
        ),
        socket: r.seconds("timeouts.socket", d.timeouts.socket, 0.01, 300.0),
        login: r.seconds("timeouts.login", d.timeouts.login, 0.01, 300.0),
    };
    let listen = read_listen(r, &d.listen);
    let parting = Parting {
        context_separation: r.boolean("parting.context_separation", d.parting.context_separation),
    };
    let url = Some(r.string("directory.url", "")).filter(|u| !u.is_empty());
    let allow_plain_http = r.boolean("directory.allow_plain_http", d.directory.allow_plain_http);
    if let Some(Err(e)) = url.as_deref().map(|u| check_url(u, allow_plain_http)) {
        r.problem("directory.url", &e);
    }
    let token = Some(Secret::new(r.string("directory.token", ""))).filter(|t| !t.is_empty());
    let tls_ca = r.existing_file("directory.tls_ca");
    let directory = DirectorySettings {
        url,
        token,
        allow_plain_http,
        tls_ca,
        path: r.path("directory.path").unwrap_or(d.directory.path.clone()),
        check_interval: r.seconds(
            "directory.check_interval",
            d.directory.check_interval,
            0.1,
            3600.0,
        ),
    };
    let s = &d.sessions;
    let sessions = SessionSettings {
        max_unauthenticated: r.integer(
            "sessions.max_unauthenticated",
            s.max_unauthenticated,
            1,
            1 << 20,
        ),
        max_unauthenticated_per_address: r.integer(
            "sessions.max_unauthenticated_per_address",
            s.max_unauthenticated_per_address,
            1,
            1 << 20,
        ),
        max_line_bytes: r.integer("sessions.max_line_bytes", s.max_line_bytes, 1024, 16 << 20),
        outbound_max_bytes: r.integer(
            "sessions.outbound_max_bytes",
            s.outbound_max_bytes,
            4096,
            1 << 30,
        ),
        outbound_max_messages: r.integer(
            "sessions.outbound_max_messages",
            s.outbound_max_messages,
            1,
            1 << 24,
        ),
        write_delay: r.seconds("sessions.write_delay", s.write_delay, 0.0, 0.1),
        resume_window: r.seconds("sessions.resume_window", s.resume_window, 0.0, 86400.0),
        replay_events: r.integer("sessions.replay_events", s.replay_events, 0, 1 << 24),
        replay_bytes: r.integer("sessions.replay_bytes", s.replay_bytes, 0, 1 << 32),
    };
    let st = &d.store;
    let store = StoreSettings {
        enabled: r.boolean("store.enabled", st.enabled),
        database: read_database(r, &st.database),
        queue_max: r.integer("store.queue_max", st.queue_max, 1, 10_000_000),
        write_timeout: r.seconds("store.write_timeout", st.write_timeout, 0.01, 60.0),
        query_timeout: r.seconds("store.query_timeout", st.query_timeout, 0.01, 60.0),
        retention_days: r.integer("store.retention_days", st.retention_days, 0, 36_500),
        sync: match r.choice("store.sync", "full", &["full", "normal"]).as_str() {
            "normal" => StoreSync::Normal,
            _ => StoreSync::Full,
        },
    };
    let c = &d.commands;
    let commands = CommandSettings {
        hold_context: r.string("commands.hold_context", &c.hold_context),
        originate_timeout_ms: r
            .seconds(
                "commands.originate_timeout",
                Duration::from_millis(c.originate_timeout_ms),
                1.0,
                600.0,
            )
            .as_millis() as u64,
    };
    if commands.hold_context.is_empty() {
        r.problem("commands.hold_context", "must not be empty");
    }
    let wallboard = BoardSettings {
        service_level: r
            .seconds(
                "wallboard.service_level_seconds",
                Duration::from_secs_f64(d.wallboard.service_level),
                1.0,
                3600.0,
            )
            .as_secs_f64(),
        utc_offset: f64::from(r.integer(
            "wallboard.utc_offset_minutes",
            (d.wallboard.utc_offset / 60.0) as i32,
            -1440,
            1440,
        )) * 60.0,
    };
    let cluster = read_cluster(r, &d.cluster, &pbxes);
    let threads = ThreadSettings {
        partitions: r.integer("threads.partitions", d.threads.partitions, 0, 1024),
        sessions: r.integer("threads.sessions", d.threads.sessions, 0, 1024),
    };
    let health = HealthSettings {
        stale_after: r.seconds("health.stale_after", d.health.stale_after, 0.001, 86400.0),
    };
    Settings {
        pbxes,
        listen,
        timeouts,
        parting,
        directory,
        sessions,
        store,
        commands,
        wallboard,
        threads,
        cluster,
        http: read_http(r),
        health,
    }
}

/// The fields of a `[[http.tokens]]` table.
const TOKEN_FIELDS: [&str; 4] = ["name", "token_sha256", "contexts", "role"];

/// `[[http.tokens]]`: each token's name, SHA-256, contexts and role; problems are named
/// `http.tokens[<i>].<field>`.
fn read_http(r: &mut Reader) -> HttpSettings {
    let fields = TOKEN_FIELDS.map(|f| format!("http.tokens.{f}"));
    r.skip(&fields.each_ref().map(String::as_str));
    let items = match r.take("http.tokens").map(|v| v.kind) {
        None => return HttpSettings::default(),
        Some(ValueKind::Array(items)) => items,
        Some(_) => {
            r.problem("http.tokens", "expected [[http.tokens]] tables");
            return HttpSettings::default();
        }
    };
    let mut tokens: Vec<HttpToken> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let key = |field: &str| format!("http.tokens[{i}].{field}");
        let ValueKind::Table(table) = item.kind else {
            r.problem(&format!("http.tokens[{i}]"), "expected a table");
            continue;
        };
        for field in table.keys().filter(|k| !TOKEN_FIELDS.contains(&k.as_str())) {
            r.problem(&key(field), "unknown key");
        }
        let text = |field: &str| match table.get(field).map(|v| &v.kind) {
            Some(ValueKind::String(s)) => Some(s.clone()),
            _ => None,
        };
        let name = text("name").filter(|n| !n.is_empty());
        if name.is_none() {
            r.problem(&key("name"), "required: a name for the logs");
        }
        let sha256 = text("token_sha256").and_then(|h| parse_sha256(&h));
        if sha256.is_none() {
            r.problem(
                &key("token_sha256"),
                "required: the token's SHA-256 in hex, 64 digits (ctid token new prints one)",
            );
        }
        let contexts: Option<Vec<String>> = match table.get("contexts").map(|v| &v.kind) {
            Some(ValueKind::Array(items)) => items
                .iter()
                .map(|v| match &v.kind {
                    ValueKind::String(s) if !s.is_empty() => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        };
        let contexts = match contexts {
            Some(c) if c == ["*"] => Some(TokenContexts::All),
            Some(c) if !c.is_empty() && !c.iter().any(|x| x == "*") => Some(TokenContexts::Only(c)),
            _ => {
                r.problem(
                    &key("contexts"),
                    "required: a list of context names, or [\"*\"] for every context",
                );
                None
            }
        };
        let role = match text("role").as_deref() {
            Some("agent") => Some(Role::Agent),
            Some("supervisor") => Some(Role::Supervisor),
            Some("admin") => Some(Role::Admin),
            _ => {
                r.problem(&key("role"), "required: agent, supervisor or admin");
                None
            }
        };
        let (Some(name), Some(sha256), Some(contexts), Some(role)) = (name, sha256, contexts, role)
        else {
            continue;
        };
        if tokens.iter().any(|t| t.name == name) {
            r.problem(&key("name"), &format!("{name:?} names another token too"));
        }
        if tokens.iter().any(|t| t.sha256 == sha256) {
            r.problem(&key("token_sha256"), "the same as another token's");
        }
        tokens.push(HttpToken {
            name,
            sha256,
            contexts,
            role,
        });
    }
    HttpSettings { tokens }
}

/// 64 hex digits as 32 bytes.
fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

fn read_cluster(r: &mut Reader, d: &ClusterSettings, known: &[PbxSettings]) -> ClusterSettings {
    let enabled = r.boolean("cluster.enabled", d.enabled);
    let node = r.string("cluster.node", &d.node);
    if enabled && node.is_empty() {
        r.problem(
            "cluster.node",
            "required with cluster.enabled: a name unique in the cluster",
        );
    }
    if !node.is_empty() && !valid_pbx_name(&node) {
        r.problem(
            "cluster.node",
            "a node name is 1 to 32 lowercase letters, digits, '-' or '_'",
        );
    }
    let nats_url = r.string("cluster.nats_url", &d.nats_url);
    if !nats_url.starts_with("nats://") && !nats_url.starts_with("tls://") {
        r.problem(
            "cluster.nats_url",
            "expected nats://host:port or tls://host:port",
        );
    }
    let given = r.lookup("cluster.roles").is_some();
    let mut roles = r.strings("cluster.roles");
    if !given {
        roles = vec!["ingest".to_owned(), "edge".to_owned()];
    }
    if let Some(bad) = roles
        .iter()
        .find(|x| !matches!(x.as_str(), "ingest" | "edge"))
    {
        r.problem(
            "cluster.roles",
            &format!("{bad:?} is not a role: ingest, edge"),
        );
    }
    if roles.is_empty() {
        r.problem(
            "cluster.roles",
            "a node has at least one role: ingest, edge",
        );
    }
    let namespace = r.string("cluster.namespace", &d.namespace);
    if !valid_pbx_name(&namespace) {
        r.problem(
            "cluster.namespace",
            "1 to 32 lowercase letters, digits, '-' or '_'",
        );
    }
    let pbxes = r.strings("cluster.pbxes");
    if let Some(bad) = pbxes.iter().find(|p| !known.iter().any(|k| &k.name == *p)) {
        r.problem("cluster.pbxes", &format!("{bad:?} is not a configured PBX"));
    }
    ClusterSettings {
        enabled,
        node,
        nats_url,
        nats_creds: r.existing_file("cluster.nats_creds"),
        nats_tls_ca: r.existing_file("cluster.nats_tls_ca"),
        ingest: roles.iter().any(|x| x == "ingest"),
        edge: roles.iter().any(|x| x == "edge"),
        contexts: r.strings("cluster.contexts"),
        pbxes,
        namespace,
        lease_ttl: r.seconds("cluster.lease_ttl", d.lease_ttl, 1.0, 60.0),
    }
}

/// Where the call records are kept: `store.backend` says which of `store.path` and
/// `store.url` is used. A URL is checked even when unused.
fn read_database(r: &mut Reader, default: &Database) -> Database {
    let default_path = match default {
        Database::Sqlite(path) => path.clone(),
        Database::Postgres(_) => PathBuf::new(),
    };
    let backend = r.choice("store.backend", "sqlite", &["sqlite", "postgres"]);
    let path = r.path("store.path").unwrap_or(default_path);
    let url = match r.string("store.url", "").as_str() {
        "" => None,
        text => PostgresUrl::parse(text)
            .map_err(|e| r.problem("store.url", &e))
            .ok(),
    };
    match (backend.as_str(), url) {
        ("postgres", Some(url)) => Database::Postgres(url),
        ("postgres", None) => {
            if !r.has_problem("store.url") {
                r.problem("store.url", "required when store.backend = \"postgres\"");
            }
            default.clone()
        }
        _ => Database::Sqlite(path),
    }
}

/// The PBXes: one per `[pbx.<name>]` table, or the `[ami]` table alone as the PBX named
/// `default`.
fn read_pbxes(r: &mut Reader, d: &PbxSettings) -> Vec<PbxSettings> {
    let names: Vec<String> = match r.lookup("pbx").map(|v| &v.kind) {
        Some(ValueKind::Table(t)) => t.keys().cloned().collect(),
        Some(_) => {
            r.problem("pbx", "expected tables such as [pbx.main]");
            Vec::new()
        }
        None => Vec::new(),
    };
    if names.is_empty() {
        return vec![PbxSettings {
            name: d.name.clone(),
            section: "ami".to_owned(),
            ami: read_ami(r, "ami", &d.ami),
            fagi_from: read_fagi_from(r, "ami"),
        }];
    }
    if r.lookup("ami").is_some() {
        r.problem(
            "ami",
            "both [ami] and [pbx.*] tables are set: keep [pbx.*] ([ami] alone is the PBX named default)",
        );
        r.skip(&["ami"]);
    }
    let mut names = names;
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let prefix = format!("pbx.{name}");
            if !valid_pbx_name(&name) {
                r.problem(
                    &prefix,
                    "a PBX name is 1 to 32 lowercase letters, digits, '-' or '_'",
                );
            }
            PbxSettings {
                ami: read_ami(r, &prefix, &d.ami),
                fagi_from: read_fagi_from(r, &prefix),
                name,
                section: prefix,
            }
        })
        .collect()
}

/// PBX names go into call ids (`<pbx>:<Linkedid>`) and environment variable names.
fn valid_pbx_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn read_fagi_from(r: &mut Reader, prefix: &str) -> Vec<Cidr> {
    let key = format!("{prefix}.fagi_from");
    r.strings(&key)
        .into_iter()
        .filter_map(|item| match item.parse::<Cidr>() {
            Ok(cidr) => Some(cidr),
            Err(e) => {
                r.problem(&key, &e);
                None
            }
        })
        .collect()
}

fn read_ami(r: &mut Reader, prefix: &str, d: &AmiSettings) -> AmiSettings {
    let k = |key: &str| format!("{prefix}.{key}");
    let host = r.string(&k("host"), &d.host);
    if host.is_empty() {
        r.problem(&k("host"), "must not be empty");
    }
    let secret = Secret::new(r.string(&k("secret"), ""));
    if secret.is_empty() {
        r.problem(
            &k("secret"),
            "required: the secret of the AMI user in Asterisk's manager.conf",
        );
    }
    let auth = match r.choice(&k("auth"), "md5", &["md5", "plain"]).as_str() {
        "plain" => AmiAuth::Plain,
        _ => AmiAuth::Md5,
    };
    let tls = if r.boolean(&k("tls"), false) {
        let ca = r.path(&k("tls_ca"));
        if ca.is_none() {
            r.problem(&k("tls_ca"), &format!("required when {prefix}.tls = true"));
        }
        let server_name = r.string(&k("tls_server_name"), &host);
        ca.map(|ca| AmiTls { ca, server_name })
    } else {
        r.skip(&[&k("tls_ca"), &k("tls_server_name")]);
        None
    };
    let reconnect_min = r.seconds(&k("reconnect_min"), d.reconnect_min, 0.01, 3600.0);
    let reconnect_max = r.seconds(&k("reconnect_max"), d.reconnect_max, 0.01, 3600.0);
    if reconnect_min > reconnect_max {
        r.problem(
            &k("reconnect_min"),
            &format!("must not exceed {prefix}.reconnect_max"),
        );
    }
    AmiSettings {
        port: r.port(&k("port"), d.port),
        username: r.string(&k("username"), &d.username),
        secret,
        auth,
        tls,
        reconnect_min,
        reconnect_max,
        ping_interval: r.seconds(&k("ping_interval"), d.ping_interval, 0.0, 3600.0),
        resync_interval: r.seconds(&k("resync_interval"), d.resync_interval, 0.0, 86400.0),
        max_message_bytes: r.integer(&k("max_message_bytes"), d.max_message_bytes, 4096, 64 << 20),
        host,
    }
}

fn read_listen(r: &mut Reader, d: &ListenSettings) -> ListenSettings {
    let listener = |r: &mut Reader, name: &str, d: &Listener| Listener {
        address: r.ip(&format!("listen.{name}.address"), d.address),
        port: r.port(&format!("listen.{name}.port"), d.port),
        enabled: r.boolean(&format!("listen.{name}.enabled"), d.enabled),
        allow: r.ranges(&format!("listen.{name}.allow"), &d.allow),
    };
    let fagi = listener(r, "fagi", &d.fagi);
    let cti = listener(r, "cti", &d.cti);
    let ctis_listener = listener(r, "ctis", &d.ctis.listener);
    let cert = r.existing_file("listen.ctis.cert");
    let key = r.existing_file("listen.ctis.key");
    if ctis_listener.enabled {
        for (k, v) in [("listen.ctis.cert", &cert), ("listen.ctis.key", &key)] {
            if v.is_none() && !r.has_problem(k) {
                r.problem(k, "required when listen.ctis.enabled = true");
            }
        }
    }
    let check_interval = r.seconds(
        "listen.ctis.check_interval",
        d.ctis.check_interval,
        0.1,
        86400.0,
    );
    let http_listener = listener(r, "http", &d.http.listener);
    let http = HttpListen {
        listener: http_listener,
        cert: r.existing_file("listen.http.cert"),
        key: r.existing_file("listen.http.key"),
        check_interval: r.seconds(
            "listen.http.check_interval",
            d.http.check_interval,
            0.1,
            86400.0,
        ),
        max_body_bytes: r.integer(
            "listen.http.max_body_bytes",
            d.http.max_body_bytes,
            1024,
            16 << 20,
        ),
        metrics_token: r.boolean("listen.http.metrics_token", d.http.metrics_token),
    };
    if http.cert.is_some() != http.key.is_some() && !r.has_problem("listen.http.cert") {
        r.problem(
            "listen.http.cert",
            "listen.http.cert and listen.http.key go together (TLS), or neither",
        );
    }
    let info = listener(r, "info", &d.info);
    // Control is on by default where the console is on loopback only.
    let info_allow_control = r.boolean("listen.info.allow_control", info.address.is_loopback());
    let listen = ListenSettings {
        fagi,
        cti,
        ctis: TlsListener {
            listener: ctis_listener,
            cert,
            key,
            check_interval,
        },
        webi: listener(r, "webi", &d.webi),
        info,
        info_allow_control,
        announce: listener(r, "announce", &d.announce),
        http,
    };
    let tcp = [
        ("fagi", &listen.fagi),
        ("cti", &listen.cti),
        ("ctis", &listen.ctis.listener),
        ("webi", &listen.webi),
        ("info", &listen.info),
        ("http", &listen.http.listener),
    ];
    for (i, (name, l)) in tcp.iter().enumerate() {
        let clash = tcp[..i].iter().find(|(_, o)| {
            l.enabled && o.enabled && l.port != 0 && o.port == l.port && o.address == l.address
        });
        if let Some((other, _)) = clash {
            r.problem(
                &format!("listen.{name}.port"),
                &format!("{} is also listen.{other}'s address", l.socket_addr()),
            );
        }
    }
    listen
}

#[cfg(test)]
mod tests;
