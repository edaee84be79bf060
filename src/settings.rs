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
mod tests {
    use super::*;
    use config::Map;
    use std::collections::{BTreeSet, HashMap};
    use std::io::Write;

    /// Every key ctid reads, as `section.key` (`listen.cti.port`).
    fn known_keys() -> BTreeSet<String> {
        let mut reader = Reader::new(Map::new(), String::new(), PathBuf::new());
        read(&mut reader);
        reader.into_used()
    }

    fn repo_file(name: &str) -> (PathBuf, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        (path, text)
    }

    /// The keys of a TOML file, commented-out examples (`# key = ...`) included; a
    /// `[pbx.<name>]` table's keys are those of `[ami]`.
    fn keys_of_example(text: &str) -> BTreeSet<String> {
        let mut section = String::new();
        let mut keys = BTreeSet::new();
        for line in text.lines().map(str::trim) {
            let line = line.trim_start_matches("# ");
            // An array of tables is a key, its fields keys under it.
            if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
                keys.insert(name.to_owned());
                section = name.to_owned();
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = match name.strip_prefix("pbx.") {
                    Some(_) => "ami".to_owned(),
                    None => name.to_owned(),
                };
                continue;
            }
            if let Some((key, _)) = line.split_once(" = ") {
                if !key.contains(' ') && !section.is_empty() {
                    keys.insert(format!("{section}.{key}"));
                }
            }
        }
        keys
    }

    /// The keys the README's settings table names: `a.b`, `.c` (a sibling of the previous
    /// one), `listen.<name>.port` (any listener).
    fn readme_patterns(text: &str) -> Vec<String> {
        let mut patterns = Vec::new();
        for row in text.lines().filter(|l| l.starts_with("| `")) {
            let first = row.split('|').nth(1).unwrap_or("");
            let mut last = String::new();
            for item in first.split(", ").map(|i| i.trim().trim_matches('`')) {
                let key = match item.strip_prefix('.') {
                    Some(leaf) => match last.rsplit_once('.') {
                        Some((parent, _)) => format!("{parent}.{leaf}"),
                        None => continue,
                    },
                    None => item.to_owned(),
                };
                last = key.clone();
                patterns.push(key);
            }
        }
        patterns
    }

    fn named_by(pattern: &str, key: &str) -> bool {
        let (p, k): (Vec<&str>, Vec<&str>) =
            (pattern.split('.').collect(), key.split('.').collect());
        p.len() == k.len() && p.iter().zip(&k).all(|(p, k)| p == k || p.starts_with('<'))
    }

    /// A setting lives in four places (its default, its reading, the example file, the
    /// README): they must agree.
    #[test]
    fn the_example_file_and_the_readme_show_every_setting_with_its_default() {
        let (example, text) = repo_file("config/ctid.toml");
        let loaded = load_with(
            &example,
            Environment::with_prefix("CTID_EXAMPLE_TEST").separator("__"),
        )
        .unwrap();
        let mut expected = Settings::default();
        // The example's own paths (documented in it), and the secret, which has no default.
        expected.directory.path = loaded.directory.path.clone();
        let Database::Sqlite(path) = &loaded.store.database else {
            panic!("the example's backend is not sqlite");
        };
        expected.store.database = Database::Sqlite(path.clone());
        expected.pbxes[0].ami.secret = loaded.pbxes[0].ami.secret.clone();
        assert_eq!(format!("{loaded:#?}"), format!("{expected:#?}"));

        let known = known_keys();
        assert_eq!(keys_of_example(&text), known, "config/ctid.toml");
        let (_, readme) = repo_file("README.md");
        let patterns = readme_patterns(&readme);
        let missing: Vec<&String> = known
            .iter()
            .filter(|k| !patterns.iter().any(|p| named_by(p, k)))
            .collect();
        assert!(
            missing.is_empty(),
            "not in the README's settings table: {missing:?}"
        );
    }

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Settings, Vec<Problem>> {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let env = Environment::with_prefix(ENV_PREFIX)
            .separator("__")
            .source(Some(vars));
        load_with(file.path(), env)
    }

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn several_pbxes_are_tables_of_their_own() {
        let text =
            "[pbx.paris]\nhost = \"10.1.0.10\"\nsecret = \"p\"\nfagi_from = [\"10.1.0.0/24\"]\n\
                    [pbx.lyon]\nhost = \"10.2.0.10\"\n";
        let s = load_str(text, &[("CTID__PBX__LYON__SECRET", "l")]).unwrap();
        let names: Vec<&str> = s.pbxes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["lyon", "paris"]);
        assert_eq!(s.pbxes[0].ami.secret.expose(), "l", "from the environment");
        assert_eq!(s.pbxes[1].section, "pbx.paris");
        assert!(s.pbxes[1].fagi_from[0].contains("10.1.0.7".parse().unwrap()));

        // Every problem of every PBX, with its key.
        let text = "[pbx.a]\nport = 99999\n[pbx.B]\nsecret = \"x\"\nfagi_from = [\"nope\"]\n";
        let problems = load_str(text, &[]).unwrap_err();
        assert_eq!(
            keys(&problems),
            ["pbx.B", "pbx.B.fagi_from", "pbx.a.secret", "pbx.a.port"],
            "{problems:?}"
        );
        let both = load_str("[ami]\nsecret = \"x\"\n[pbx.a]\nsecret = \"y\"\n", &[]).unwrap_err();
        assert_eq!(keys(&both), ["ami"]);
        assert!(
            both[0].message.contains("both [ami] and [pbx.*]"),
            "{both:?}"
        );
    }

    #[test]
    fn defaults_are_xivo_s() {
        let s = load_str("[ami]\nsecret = \"x\"\n", &[]).unwrap();
        assert_eq!(s.pbxes[0].ami.port, 5038);
        assert_eq!(s.listen.fagi.socket_addr().to_string(), "127.0.0.1:5002");
        assert_eq!(s.listen.cti.port, 5003);
        assert_eq!(s.listen.ctis.listener.port, 5013);
        assert_eq!(s.listen.webi.socket_addr().to_string(), "127.0.0.1:5004");
        assert_eq!(s.listen.info.socket_addr().to_string(), "127.0.0.1:5005");
        assert_eq!(
            s.listen.announce.socket_addr().to_string(),
            "127.0.0.1:5006"
        );
        assert_eq!(s.timeouts.socket, Duration::from_secs(10));
        assert_eq!(s.timeouts.login, Duration::from_secs(5));
        assert_eq!(s.store.queue_max, 100_000);
        assert_eq!(s.store.write_timeout, Duration::from_secs(2));
        assert_eq!(s.store.query_timeout, Duration::from_secs(2));
        assert_eq!(s.store.retention_days, 0);
        assert_eq!(s.store.sync, StoreSync::Full);
    }

    #[test]
    fn store_bounds_are_checked() {
        let problems = load_str(
            "[ami]\nsecret = \"x\"\n[store]\nqueue_max = 0\nwrite_timeout = 0\n\
             query_timeout = \"never\"\nretention_days = -1\nsync = \"sometimes\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            keys(&problems),
            [
                "store.queue_max",
                "store.write_timeout",
                "store.query_timeout",
                "store.retention_days",
                "store.sync"
            ]
        );
        assert!(
            problems[0].message.contains("from 1 to 10000000"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn the_write_window_is_off_by_default_and_at_most_a_tenth_of_a_second() {
        let base = "[ami]\nsecret = \"x\"\n";
        let s = load_str(base, &[]).unwrap();
        assert_eq!(s.sessions.write_delay, Duration::ZERO);
        let s = load_str(&format!("{base}[sessions]\nwrite_delay = 0.002\n"), &[]).unwrap();
        assert_eq!(s.sessions.write_delay, Duration::from_millis(2));
        let problems =
            load_str(&format!("{base}[sessions]\nwrite_delay = 0.5\n"), &[]).unwrap_err();
        assert_eq!(keys(&problems), ["sessions.write_delay"]);
    }

    #[test]
    fn postgres_needs_a_url_that_is_never_shown() {
        let s = load_str(
            "[ami]\nsecret = \"x\"\n[store]\nbackend = \"postgres\"\n",
            &[(
                "CTID__STORE__URL",
                "postgres://ctid:hunter2@db.example.com/calls",
            )],
        )
        .unwrap();
        let Database::Postgres(url) = &s.store.database else {
            panic!("{:?}", s.store.database);
        };
        assert_eq!(url.to_string(), "postgres://ctid@db.example.com:5432/calls");
        assert!(!format!("{s:?}").contains("hunter2"));

        let missing = load_str(
            "[ami]\nsecret = \"x\"\n[store]\nbackend = \"postgres\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(keys(&missing), ["store.url"]);
        assert!(missing[0].message.contains("required"), "{}", missing[0]);

        let problems = load_str(
            "[ami]\nsecret = \"x\"\n[store]\nbackend = \"mysql\"\n",
            &[("CTID__STORE__URL", "postgres://ctid:hunter2@db:port/calls")],
        )
        .unwrap_err();
        assert_eq!(keys(&problems), ["store.backend", "store.url"]);
        assert!(problems[0].message.contains("sqlite, postgres"));
        assert_eq!(
            problems[1].origin.as_deref(),
            Some("environment variable CTID__STORE__URL")
        );
        let shown: String = problems.iter().map(ToString::to_string).collect();
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let problems = load_str(
            "[ami]\nport = 70000\nreconect_max = 3\n[listen.cti]\naddress = \"nowhere\"\n\
             [timeouts]\nsocket = \"soon\"\n[bogus]\nx = 1\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            keys(&problems),
            [
                "ami.secret",
                "ami.port",
                "timeouts.socket",
                "listen.cti.address",
                "ami.reconect_max",
                "bogus",
            ]
        );
        let typo = &problems[4];
        assert!(
            typo.message.contains("did you mean ami.reconnect_max"),
            "{typo}"
        );
        assert!(problems[1].to_string().contains("70000"), "{}", problems[1]);
    }

    #[test]
    fn a_cluster_pinned_to_an_unknown_pbx_is_a_problem() {
        let problems = load_str(
            "[pbx.main]\nsecret = \"x\"\n[cluster]\nenabled = true\nnode = \"a\"\n\
             pbxes = [\"main\", \"mian\"]\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(keys(&problems), ["cluster.pbxes"]);
        assert!(problems[0].message.contains("\"mian\""), "{}", problems[0]);
    }

    #[test]
    fn environment_overrides_the_file_and_is_named_in_problems() {
        let s = load_str(
            "[ami]\nsecret = \"x\"\nhost = \"pbx1\"\n",
            &[
                ("CTID__AMI__HOST", "pbx2"),
                ("CTID__LISTEN__CTI__PORT", "6003"),
            ],
        )
        .unwrap();
        assert_eq!(
            (s.pbxes[0].ami.host.as_str(), s.listen.cti.port),
            ("pbx2", 6003)
        );
        let problems =
            load_str("[ami]\nsecret = \"x\"\n", &[("CTID__AMI__PORT", "many")]).unwrap_err();
        assert_eq!(
            problems[0].origin.as_deref(),
            Some("environment variable CTID__AMI__PORT")
        );
    }

    #[test]
    fn missing_file_is_one_clear_problem() {
        let problems = load(Path::new("/nonexistent/ctid.toml")).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].to_string(),
            "/nonexistent/ctid.toml: no such file"
        );
    }

    #[test]
    fn syntax_error_names_the_file_on_one_line() {
        let problems = load_str("[ami]\n[ami]\n", &[]).unwrap_err();
        let p = &problems[0].message;
        assert!(
            p.contains("TOML parse error at line 2") && p.ends_with("duplicate key"),
            "{p}"
        );
        assert!(!p.contains('\n'), "{p}");
    }

    #[test]
    fn http_tokens_are_read_and_checked_one_by_one() {
        let hash = "ab".repeat(32);
        let s = load_str(
            &format!(
                "[ami]\nsecret = \"x\"\n[[http.tokens]]\nname = \"crm\"\ntoken_sha256 = \"{hash}\"\n\
                 contexts = [\"a\", \"b\"]\nrole = \"supervisor\"\n\
                 [[http.tokens]]\nname = \"tool\"\ntoken_sha256 = \"{}\"\ncontexts = [\"*\"]\nrole = \"admin\"\n",
                "CD".repeat(32)
            ),
            &[],
        )
        .unwrap();
        let [crm, tool] = &s.http.tokens[..] else {
            panic!("{:?}", s.http.tokens);
        };
        assert_eq!(crm.sha256, [0xab; 32]);
        assert_eq!(
            crm.contexts,
            TokenContexts::Only(vec!["a".into(), "b".into()])
        );
        assert!(crm.sees("b") && !crm.sees("c"));
        assert_eq!(
            (tool.role, &tool.contexts),
            (Role::Admin, &TokenContexts::All)
        );
        assert!(!format!("{crm:?}").contains("ab"), "the hash is not shown");

        let problems = load_str(
            &format!(
                "[ami]\nsecret = \"x\"\n[[http.tokens]]\nname = \"crm\"\ntoken_sha256 = \"{hash}\"\n\
                 contexts = [\"a\"]\nrole = \"supervisor\"\n\
                 [[http.tokens]]\nname = \"crm\"\ntoken_sha256 = \"abc\"\ncontexts = []\nrole = \"boss\"\ncolour = 1\n\
                 [[http.tokens]]\nname = \"other\"\ntoken_sha256 = \"{hash}\"\ncontexts = [\"*\", \"a\"]\nrole = \"agent\"\n"
            ),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            keys(&problems),
            [
                "http.tokens[1].colour",
                "http.tokens[1].token_sha256",
                "http.tokens[1].contexts",
                "http.tokens[1].role",
                "http.tokens[2].contexts",
            ]
        );
        let duplicate = load_str(
            &format!(
                "[ami]\nsecret = \"x\"\n[[http.tokens]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\ncontexts = [\"*\"]\nrole = \"agent\"\n\
                 [[http.tokens]]\nname = \"a\"\ntoken_sha256 = \"{hash}\"\ncontexts = [\"*\"]\nrole = \"agent\"\n"
            ),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            keys(&duplicate),
            ["http.tokens[1].name", "http.tokens[1].token_sha256"]
        );
    }

    #[test]
    fn ctis_needs_its_certificate() {
        let problems = load_str(
            "[ami]\nsecret = \"x\"\n[listen.ctis]\nenabled = true\nkey = \"/nonexistent.pem\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(keys(&problems), ["listen.ctis.key", "listen.ctis.cert"]);
    }

    #[test]
    fn two_listeners_on_one_port_clash() {
        let problems =
            load_str("[ami]\nsecret = \"x\"\n[listen.info]\nport = 5004\n", &[]).unwrap_err();
        assert_eq!(keys(&problems), ["listen.info.port"]);
    }

    #[test]
    fn tls_keys_are_known_even_when_tls_is_off() {
        load_str(
            "[ami]\nsecret = \"x\"\ntls = false\ntls_ca = \"ca.pem\"\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn allow_lists_and_console_control() {
        let s = load_str(
            "[ami]\nsecret = \"x\"\n[listen.info]\naddress = \"0.0.0.0\"\n\
             [listen.fagi]\nallow = [\"10.1.0.0/24\", \"::1\"]\n",
            &[("CTID__LISTEN__WEBI__ALLOW", "10.0.0.1, 10.0.0.2")],
        )
        .unwrap();
        assert!(!s.listen.info_allow_control, "off by default off loopback");
        let shown = |l: &Listener| l.allow.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(shown(&s.listen.fagi), ["10.1.0.0/24", "::1/128"]);
        assert_eq!(shown(&s.listen.webi), ["10.0.0.1/32", "10.0.0.2/32"]);
        assert_eq!(shown(&s.listen.announce), ["127.0.0.0/8", "::1/128"]);
        assert_eq!(shown(&s.listen.cti), ["0.0.0.0/0", "::/0"]);
        assert_eq!(
            s.security_warnings().len(),
            2,
            "{:?}",
            s.security_warnings()
        );
        let problems = load_str(
            "[ami]\nsecret = \"x\"\n[listen.webi]\nallow = []\n[listen.info]\nallow = [\"nowhere\"]\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(keys(&problems), ["listen.info.allow", "listen.webi.allow"]);
    }

    #[test]
    fn a_directory_url_is_https_unless_plain_http_is_allowed() {
        let problems = load_str(
            "[ami]\nsecret = \"x\"\n[directory]\nurl = \"http://dir.example/d.json\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(keys(&problems), ["directory.url"]);
        let s = load_str(
            "[ami]\nsecret = \"x\"\n[directory]\nurl = \"http://dir.example/d.json\"\n\
             allow_plain_http = true\n",
            &[("CTID__DIRECTORY__TOKEN", "t0k")],
        )
        .unwrap();
        assert_eq!(s.directory.token.as_ref().map(|t| t.expose()), Some("t0k"));
        assert!(
            !format!("{s:?}").contains("t0k"),
            "the token is debug-printed"
        );
        assert!(s
            .security_warnings()
            .iter()
            .any(|w| w.contains("plain http")));
    }
}
