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
    let (p, k): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), key.split('.').collect());
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
    let text = "[pbx.paris]\nhost = \"10.1.0.10\"\nsecret = \"p\"\nfagi_from = [\"10.1.0.0/24\"]\n\
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
    let problems = load_str(&format!("{base}[sessions]\nwrite_delay = 0.5\n"), &[]).unwrap_err();
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
    let problems = load_str("[ami]\nsecret = \"x\"\n", &[("CTID__AMI__PORT", "many")]).unwrap_err();
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
