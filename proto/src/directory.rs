//! The directory: CTI contexts (tenants), users with their line, and queues, as operators
//! write them in `directory.toml`. Parsing reports every problem at once; lookups are
//! indexed (a channel's line is found by its interface, not by a scan of every line).
//!
//! Lines and queues belong to a PBX (`pbx = "<name>"`, which may be left out when only one
//! is configured): the same interface or queue name on two PBXes are two different things.
//! A context may span several PBXes. A context's `dialplan` entries name dialplan contexts
//! of every PBX, or of one when written `<pbx>:<dialplan>`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

use crate::rights::Role;

/// The weakest argon2 hash accepted: m=19456 KiB, t=2 (OWASP's minimum for argon2id).
pub const MIN_HASH: HashCost = HashCost {
    m: 19_456,
    t: 2,
    p: 1,
};
/// The costliest accepted: past it one login could take seconds and gigabytes.
pub const MAX_HASH: HashCost = HashCost {
    m: 262_144,
    t: 10,
    p: 4,
};

/// The parameters of an argon2 hash: memory in KiB, passes, lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashCost {
    pub m: u32,
    pub t: u32,
    pub p: u32,
}

impl std::fmt::Display for HashCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m={},t={},p={}", self.m, self.t, self.p)
    }
}

/// The cost of an argon2id PHC string, if it is one that may be used: between
/// [`MIN_HASH`] and [`MAX_HASH`].
pub fn hash_cost(phc: &str) -> Result<HashCost, String> {
    let make = "make one with `ctid hash-password`";
    let hash = PasswordHash::new(phc)
        .map_err(|e| format!("password is not a PHC string ({e}); {make}"))?;
    if hash.algorithm.as_str() != "argon2id" || hash.version != Some(19) {
        return Err(format!(
            "password is not an argon2id (v=19) hash but {}; {make}",
            hash.algorithm
        ));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(format!("password hash has no salt or no output; {make}"));
    }
    let get = |k: &str| {
        hash.params
            .get_decimal(k)
            .ok_or_else(|| format!("password hash has no {k} parameter; {make}"))
    };
    let cost = HashCost {
        m: get("m")?,
        t: get("t")?,
        p: get("p")?,
    };
    if cost.m < MIN_HASH.m || cost.t < MIN_HASH.t || cost.p < MIN_HASH.p {
        return Err(format!(
            "password hash {cost} is weaker than the minimum m={},t={}; {make}",
            MIN_HASH.m, MIN_HASH.t
        ));
    }
    if cost.m > MAX_HASH.m || cost.t > MAX_HASH.t || cost.p > MAX_HASH.p {
        return Err(format!(
            "password hash {cost} is past the ceiling m<={},t<={},p<={} (one login would cost too much)",
            MAX_HASH.m, MAX_HASH.t, MAX_HASH.p
        ));
    }
    Ok(cost)
}

/// A hash no password matches, at `cost`: an unknown login is checked against it, so that
/// it takes as long as a known one.
fn dummy_hash(cost: HashCost) -> String {
    format!(
        "$argon2id$v=19${cost}$Y3RpZC1kdW1teS1zYWx0IQ${}",
        "A".repeat(43)
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    #[serde(default)]
    contexts: Vec<ContextDef>,
    #[serde(default)]
    users: Vec<User>,
    #[serde(default)]
    queues: Vec<Queue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextDef {
    name: String,
    #[serde(default)]
    dialplan: Vec<String>,
}

/// The PBX of a configuration with a single `[ami]` table, and of a directory read without
/// a list of PBXes.
pub const DEFAULT_PBX: &str = "default";

/// A CTI context (tenant) and the Asterisk dialplan contexts that belong to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Context {
    pub name: String,
    pub dialplan: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// The Asterisk device, e.g. `PJSIP/1001` or `Local/1001@default`.
    pub interface: String,
    pub number: String,
    /// The CTI context of the line, and so of its user.
    pub context: String,
    /// The dialplan context calls placed for this line start in.
    pub dialplan: String,
    /// The PBX the line is on.
    #[serde(default)]
    pub pbx: String,
}

#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: u64,
    pub login: String,
    /// An argon2 PHC string; never serialized.
    #[serde(skip_serializing)]
    pub password: String,
    #[serde(default)]
    pub firstname: String,
    #[serde(default)]
    pub lastname: String,
    #[serde(default)]
    pub line: Option<Line>,
    /// What the user may act on (see [`crate::rights`]).
    #[serde(default)]
    pub role: Role,
    /// Older directories' way to say `role = "supervisor"`; read as that.
    #[serde(default, skip_serializing)]
    supervisor: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("login", &self.login)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl User {
    pub fn fullname(&self) -> String {
        format!("{} {}", self.firstname, self.lastname)
            .trim()
            .to_owned()
    }

    /// The user's context: the context of their line. A user with no line has none.
    pub fn context(&self) -> Option<&str> {
        self.line.as_ref().map(|l| l.context.as_str())
    }

    /// Someone outside the directory acting with `role` and no line (an HTTP token), named
    /// `login`. Its id (0) is never looked up.
    pub fn acting(login: &str, role: Role) -> User {
        User {
            id: 0,
            login: login.to_owned(),
            password: String::new(),
            firstname: login.to_owned(),
            lastname: String::new(),
            line: None,
            role,
            supervisor: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    pub name: String,
    pub context: String,
    #[serde(default)]
    pub number: Option<String>,
    /// The PBX the queue is on.
    #[serde(default)]
    pub pbx: String,
}

/// A validated, indexed directory.
#[derive(Clone, Debug, PartialEq)]
pub struct Directory {
    contexts: BTreeMap<String, Context>,
    users: BTreeMap<u64, User>,
    by_login: HashMap<String, u64>,
    /// Users by PBX, then by the interface of their line.
    by_interface: HashMap<String, HashMap<String, u64>>,
    /// Queues by PBX and name.
    queues: BTreeMap<(String, String), Queue>,
    /// CTI contexts by dialplan context: `<pbx>:<dialplan>` for one PBX's, or the plain
    /// name for every PBX's.
    by_dialplan: HashMap<String, String>,
    /// What unknown logins are checked against: the most used cost of the users' hashes.
    dummy: String,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            contexts: BTreeMap::new(),
            users: BTreeMap::new(),
            by_login: HashMap::new(),
            by_interface: HashMap::new(),
            queues: BTreeMap::new(),
            by_dialplan: HashMap::new(),
            dummy: dummy_hash(MIN_HASH),
        }
    }
}

impl Directory {
    /// Parses and checks a directory file (TOML) for a single PBX named [`DEFAULT_PBX`].
    pub fn parse(text: &str) -> Result<Directory, Vec<String>> {
        Self::parse_for(text, &[DEFAULT_PBX.to_owned()])
    }

    /// Parses and checks a directory file (TOML) whose lines and queues are on `pbxes`; on
    /// failure returns every problem found.
    pub fn parse_for(text: &str, pbxes: &[String]) -> Result<Directory, Vec<String>> {
        let file: DirectoryFile = toml::from_str(text).map_err(|e| vec![toml_problem(text, &e)])?;
        Self::check(file, pbxes, &password_lines(text))
    }

    /// Parses and checks a directory in JSON, as a directory web service sends it: the same
    /// shape as the file.
    pub fn parse_json(text: &str, pbxes: &[String]) -> Result<Directory, Vec<String>> {
        let file: DirectoryFile = serde_json::from_str(text).map_err(|e| vec![e.to_string()])?;
        Self::check(file, pbxes, &[])
    }

    /// `lines`: the line of each user's password in the file, where known.
    fn check(
        file: DirectoryFile,
        pbxes: &[String],
        lines: &[Option<usize>],
    ) -> Result<Directory, Vec<String>> {
        let mut problems = Vec::new();
        let mut dir = Directory::default();
        let mut costs: HashMap<HashCost, usize> = HashMap::new();
        for (i, c) in file.contexts.into_iter().enumerate() {
            let at = format!("contexts[{i}] ({})", c.name);
            if c.name.is_empty() {
                problems.push(format!("contexts[{i}]: name must not be empty"));
                continue;
            }
            for d in &c.dialplan {
                if let Some((pbx, _)) = d
                    .split_once(':')
                    .filter(|(p, _)| !pbxes.contains(&(*p).to_owned()))
                {
                    problems.push(format!(
                        "{at}: dialplan {d:?} names PBX {pbx:?}, which is not configured ({})",
                        pbxes.join(", ")
                    ));
                }
                if let Some(other) = dir.by_dialplan.insert(d.clone(), c.name.clone()) {
                    problems.push(format!(
                        "{at}: dialplan context {d:?} already belongs to context {other:?}"
                    ));
                }
            }
            let name = c.name.clone();
            if dir
                .contexts
                .insert(
                    name.clone(),
                    Context {
                        name,
                        dialplan: c.dialplan,
                    },
                )
                .is_some()
            {
                problems.push(format!("{at}: context defined twice"));
            }
        }
        // A context's lists name lines by interface and queues by name, whatever their PBX.
        let mut in_context: HashMap<(String, String), String> = HashMap::new();
        for (i, mut u) in file.users.into_iter().enumerate() {
            let at = format!("users[{i}] ({})", u.login);
            if u.login.is_empty() {
                problems.push(format!("users[{i}]: login must not be empty"));
            }
            match hash_cost(&u.password) {
                Ok(cost) => *costs.entry(cost).or_default() += 1,
                Err(e) => match lines.get(i).copied().flatten() {
                    Some(line) => problems.push(format!("{at}, line {line}: {e}")),
                    None => problems.push(format!("{at}: {e}")),
                },
            }
            if u.supervisor && u.role == Role::Agent {
                u.role = Role::Supervisor;
            }
            if let Some(line) = &u.line {
                if !dir.contexts.contains_key(&line.context) {
                    problems.push(format!(
                        "{at}: line.context {:?} is not a [[contexts]] name",
                        line.context
                    ));
                }
                if line.interface.is_empty() || line.number.is_empty() {
                    problems.push(format!(
                        "{at}: line.interface and line.number must not be empty"
                    ));
                }
            }
            if let Some(line) = &mut u.line {
                match resolve_pbx(&line.pbx, pbxes) {
                    Ok(pbx) => line.pbx = pbx,
                    Err(why) => problems.push(format!("{at}: line.pbx {why}")),
                }
            }
            if let Some(line) = u.line.as_ref().filter(|l| pbxes.contains(&l.pbx)) {
                let seen = (line.context.clone(), line.interface.clone());
                if let Some(other) = in_context.insert(seen, line.pbx.clone()) {
                    if other != line.pbx {
                        problems.push(format!(
                            "{at}: context {:?} has a line {:?} on PBX {other:?} already",
                            line.context, line.interface
                        ));
                    }
                }
                let on_pbx = dir.by_interface.entry(line.pbx.clone()).or_default();
                if let Some(other) = on_pbx.insert(line.interface.clone(), u.id) {
                    problems.push(format!(
                        "{at}: line {:?} of PBX {:?} is also the line of user {other}",
                        line.interface, line.pbx
                    ));
                }
            }
            if let Some(other) = dir.by_login.insert(u.login.clone(), u.id) {
                if other != u.id {
                    problems.push(format!("{at}: login also used by user {other}"));
                }
            }
            if dir.users.insert(u.id, u).is_some() {
                problems.push(format!("{at}: user id defined twice"));
            }
        }
        for (i, mut q) in file.queues.into_iter().enumerate() {
            let at = format!("queues[{i}] ({})", q.name);
            match resolve_pbx(&q.pbx, pbxes) {
                Ok(pbx) => q.pbx = pbx,
                Err(why) => problems.push(format!("{at}: pbx {why}")),
            }
            if !dir.contexts.contains_key(&q.context) {
                problems.push(format!(
                    "{at}: context {:?} is not a [[contexts]] name",
                    q.context
                ));
            }
            let seen = (q.context.clone(), format!("queue {}", q.name));
            if let Some(other) = in_context.insert(seen, q.pbx.clone()) {
                if other != q.pbx {
                    problems.push(format!(
                        "{at}: context {:?} has a queue of that name on PBX {other:?} already",
                        q.context
                    ));
                }
            }
            if dir
                .queues
                .insert((q.pbx.clone(), q.name.clone()), q)
                .is_some()
            {
                problems.push(format!("{at}: queue defined twice on its PBX"));
            }
        }
        let usual = costs
            .into_iter()
            .max_by_key(|(cost, n)| (*n, *cost))
            .map_or(MIN_HASH, |(cost, _)| cost);
        dir.dummy = dummy_hash(usual);
        if problems.is_empty() {
            Ok(dir)
        } else {
            Err(problems)
        }
    }

    /// A hash no password matches, costing what the users' hashes mostly cost: checked for
    /// unknown logins, so that they take as long as known ones.
    pub fn dummy_hash(&self) -> &str {
        &self.dummy
    }

    pub fn contexts(&self) -> impl Iterator<Item = &Context> {
        self.contexts.values()
    }

    pub fn has_context(&self, name: &str) -> bool {
        self.contexts.contains_key(name)
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn user(&self, id: u64) -> Option<&User> {
        self.users.get(&id)
    }

    pub fn user_by_login(&self, login: &str) -> Option<&User> {
        self.by_login.get(login).and_then(|id| self.users.get(id))
    }

    /// The user whose line is `interface` on `pbx`.
    pub fn user_by_interface(&self, pbx: &str, interface: &str) -> Option<&User> {
        self.by_interface
            .get(pbx)?
            .get(interface)
            .and_then(|id| self.users.get(id))
    }

    /// The user whose line is `number` in `context`.
    pub fn user_by_number(&self, context: &str, number: &str) -> Option<&User> {
        self.users.values().find(|u| {
            u.line
                .as_ref()
                .is_some_and(|l| l.context == context && l.number == number)
        })
    }

    pub fn queues(&self) -> impl Iterator<Item = &Queue> {
        self.queues.values()
    }

    /// Queue `name` of `pbx`.
    pub fn queue(&self, pbx: &str, name: &str) -> Option<&Queue> {
        self.queues.get(&(pbx.to_owned(), name.to_owned()))
    }

    /// The contexts with a line or a queue on `pbx`, or a dialplan context of its own.
    pub fn contexts_of_pbx(&self, pbx: &str) -> BTreeSet<&str> {
        let lines = self
            .users
            .values()
            .filter_map(|u| u.line.as_ref())
            .filter(|l| l.pbx == pbx)
            .map(|l| l.context.as_str());
        let queues = self
            .queues
            .values()
            .filter(|q| q.pbx == pbx)
            .map(|q| q.context.as_str());
        let own = format!("{pbx}:");
        let dialplans = self
            .by_dialplan
            .iter()
            .filter(|(d, _)| d.starts_with(&own))
            .map(|(_, c)| c.as_str());
        lines.chain(queues).chain(dialplans).collect()
    }

    /// The CTI context a dialplan context of `pbx` belongs to.
    pub fn context_of_dialplan(&self, pbx: &str, dialplan: &str) -> Option<&str> {
        self.by_dialplan
            .get(&format!("{pbx}:{dialplan}"))
            .or_else(|| self.by_dialplan.get(dialplan))
            .map(String::as_str)
    }
}

/// The PBX a line or queue is on: the one it names, or the only one configured.
fn resolve_pbx(named: &str, pbxes: &[String]) -> Result<String, String> {
    match (named, pbxes) {
        ("", [only]) => Ok(only.clone()),
        ("", _) => Err(format!(
            "is required: several PBXes are configured ({})",
            pbxes.join(", ")
        )),
        (name, _) if pbxes.iter().any(|p| p == name) => Ok(name.to_owned()),
        (name, _) => Err(format!(
            "{name:?} is not a configured PBX ({})",
            pbxes.join(", ")
        )),
    }
}

/// The line of each `[[users]]` entry's password in a TOML directory, by entry.
fn password_lines(text: &str) -> Vec<Option<usize>> {
    use toml::de::{DeTable, DeValue};
    let Ok(root) = DeTable::parse(text) else {
        return Vec::new();
    };
    let line_of = |at: usize| {
        text.get(..at)
            .map(|before| before.matches('\n').count() + 1)
    };
    let users = root
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref() == "users")
        .map(|(_, v)| v.get_ref());
    let Some(DeValue::Array(users)) = users else {
        return Vec::new();
    };
    users
        .iter()
        .map(|u| match u.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .find(|(k, _)| k.get_ref() == "password")
                .and_then(|(_, v)| line_of(v.span().start)),
            _ => None,
        })
        .collect()
}

/// Where and what, without the offending line itself: it may hold a password.
fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or_default();
            format!("line {}: {message}", before.matches('\n').count() + 1)
        }
        None => message,
    }
}

/// The interface (device) of an Asterisk channel name: `PJSIP/1001-0000002a` is
/// `PJSIP/1001`; `Local/1001@default-00000001;2` is `Local/1001@default`.
pub fn interface_of(channel: &str) -> &str {
    let base = match channel.rsplit_once(';') {
        Some((base, half)) if channel.starts_with("Local/") && matches!(half, "1" | "2") => base,
        _ => channel,
    };
    match base.rsplit_once('-') {
        Some((interface, suffix))
            if !suffix.is_empty()
                && suffix.bytes().all(|b| b.is_ascii_hexdigit())
                && interface.contains('/') =>
        {
            interface
        }
        _ => base,
    }
}

/// Checks `password` against an argon2 PHC string. CPU-heavy by design: never call it on
/// an event loop.
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A PHC string for `password` with argon2id's default parameters and a random salt.
pub fn hash_password(password: &str, salt_bytes: &[u8; 16]) -> Result<String, String> {
    let salt = SaltString::encode_b64(salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// argon2id of "secret", at the weakest cost accepted.
    pub const SECRET: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$PmUfvJSx/XoaiPI5CGZKyQ$widnLdjpam9VZ0OVSdxdkHJkTCIH1RSgZ5vw0n8DyHo";

    fn sample() -> String {
        format!(
            r#"
[[contexts]]
name = "default"
dialplan = ["default", "internal"]
[[contexts]]
name = "tenant-b"
dialplan = ["tenant-b"]
[[users]]
id = 1
login = "alice"
password = "{SECRET}"
firstname = "Alice"
lastname = "Martin"
line = {{ interface = "PJSIP/1001", number = "1001", context = "default", dialplan = "internal" }}
[[users]]
id = 2
login = "nobody"
password = "{SECRET}"
[[queues]]
name = "support"
context = "default"
"#
        )
    }

    #[test]
    fn parses_and_indexes() {
        let dir = Directory::parse(&sample()).unwrap();
        let alice = dir.user_by_login("alice").unwrap();
        assert_eq!(alice.fullname(), "Alice Martin");
        assert_eq!(alice.context(), Some("default"));
        assert_eq!(
            dir.user_by_interface("default", "PJSIP/1001").unwrap().id,
            1
        );
        assert_eq!(dir.user_by_interface("other", "PJSIP/1001"), None);
        assert_eq!(dir.user_by_number("default", "1001").unwrap().id, 1);
        assert_eq!(dir.user_by_login("nobody").unwrap().context(), None);
        assert_eq!(
            dir.context_of_dialplan("default", "internal"),
            Some("default")
        );
        assert_eq!(
            dir.context_of_dialplan("default", "tenant-b"),
            Some("tenant-b")
        );
        assert_eq!(dir.queue("default", "support").unwrap().context, "default");
        assert!(
            !format!("{alice:?}").contains("argon2"),
            "the hash must not be debug-printed"
        );
    }

    fn line(pbx: &str, interface: &str, context: &str) -> String {
        let pbx = if pbx.is_empty() {
            String::new()
        } else {
            format!(", pbx = \"{pbx}\"")
        };
        format!("line = {{ interface = \"{interface}\", number = \"1\", context = \"{context}\", dialplan = \"d\"{pbx} }}\n")
    }

    #[test]
    fn lines_and_queues_belong_to_a_pbx() {
        let two = ["a".to_owned(), "b".to_owned()];
        let contexts = "[[contexts]]\nname = \"t1\"\ndialplan = [\"in\", \"b:trunk\"]\n\
                        [[contexts]]\nname = \"t2\"\ndialplan = [\"a:trunk\"]\n";
        let user = |id: u32, line: String| {
            format!("[[users]]\nid = {id}\nlogin = \"u{id}\"\npassword = \"{SECRET}\"\n{line}")
        };
        // The same interface on two PBXes, in two contexts: two lines.
        let text = format!(
            "{contexts}{}{}[[queues]]\nname = \"q\"\ncontext = \"t1\"\npbx = \"b\"\n",
            user(1, line("a", "PJSIP/1", "t1")),
            user(2, line("b", "PJSIP/1", "t2")),
        );
        let dir = Directory::parse_for(&text, &two).unwrap();
        assert_eq!(dir.user_by_interface("a", "PJSIP/1").unwrap().id, 1);
        assert_eq!(dir.user_by_interface("b", "PJSIP/1").unwrap().id, 2);
        assert!(dir.queue("b", "q").is_some() && dir.queue("a", "q").is_none());
        // A dialplan entry may be scoped to one PBX.
        assert_eq!(dir.context_of_dialplan("b", "trunk"), Some("t1"));
        assert_eq!(dir.context_of_dialplan("a", "trunk"), Some("t2"));
        assert_eq!(dir.context_of_dialplan("a", "in"), Some("t1"));
        // One PBX: it may be left out.
        let one = Directory::parse(&format!("{contexts}{}", user(1, line("", "PJSIP/1", "t1"))));
        let one = one.unwrap_err().join("; ");
        assert!(
            one.contains("names PBX \"b\", which is not configured (default)"),
            "{one}"
        );

        let problems = Directory::parse_for(
            &format!(
                "{contexts}{}{}{}",
                user(1, line("", "PJSIP/1", "t1")),
                user(2, line("c", "PJSIP/2", "t1")),
                user(3, line("b", "PJSIP/2", "t1"))
            ),
            &two,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0]
            .contains("users[0] (u1): line.pbx is required: several PBXes are configured (a, b)"));
        assert!(
            problems[1].contains("users[1] (u2): line.pbx \"c\" is not a configured PBX (a, b)")
        );
        let clash = Directory::parse_for(
            &format!(
                "{contexts}{}{}",
                user(1, line("a", "PJSIP/1", "t1")),
                user(2, line("b", "PJSIP/1", "t1"))
            ),
            &two,
        )
        .unwrap_err();
        assert!(
            clash[0].contains("context \"t1\" has a line \"PJSIP/1\" on PBX \"a\" already"),
            "{clash:?}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
[[contexts]]
name = "a"
dialplan = ["x"]
[[contexts]]
name = "b"
dialplan = ["x"]
[[users]]
id = 1
login = "u"
password = "plain"
line = { interface = "PJSIP/1", number = "1", context = "nowhere", dialplan = "x" }
[[users]]
id = 1
login = "u"
password = "plain"
[[queues]]
name = "q"
context = "c"
"#;
        let problems = Directory::parse(text).unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[0].contains("dialplan context \"x\" already belongs to context \"a\""));
        assert!(problems
            .iter()
            .any(|p| p.contains("line.context \"nowhere\"")));
        assert!(problems.iter().any(|p| p.contains("user id defined twice")));
        assert!(problems
            .iter()
            .any(|p| p.contains("queues[0] (q): context \"c\"")));
    }

    #[test]
    fn json_has_the_shape_of_the_file() {
        let json = format!(
            r#"{{"contexts":[{{"name":"a","dialplan":["a"]}}],"users":[{{"id":1,"login":"x","password":"{SECRET}","line":{{"interface":"PJSIP/1","number":"1","context":"a","dialplan":"a"}}}}]}}"#
        );
        assert_eq!(
            Directory::parse_json(&json, &[DEFAULT_PBX.to_owned()])
                .unwrap()
                .user(1)
                .unwrap()
                .context(),
            Some("a")
        );
        let pbxes = [DEFAULT_PBX.to_owned()];
        assert!(Directory::parse_json(r#"{"users":[{"id":1,"login":"x","password":"p","line":{"interface":"i","number":"1","context":"nowhere","dialplan":"d"}}]}"#, &pbxes).is_err());
        assert!(Directory::parse_json("[", &pbxes).is_err());
    }

    #[test]
    fn unknown_fields_and_bad_toml_are_one_clear_line() {
        let problems =
            Directory::parse("[[users]]\nid = 1\nlogin = \"a\"\npassword = \"x\"\nmail = 1\n")
                .unwrap_err();
        assert!(problems[0].contains("unknown field `mail`"), "{problems:?}");
        assert!(problems[0].starts_with("line 5: "), "{problems:?}");
        assert!(!problems[0].contains('\n'));
    }

    #[test]
    fn a_toml_error_never_quotes_the_line_it_is_on() {
        let problems = Directory::parse("[[users]]\nid = 1\npassword = \"hunter2\nlogin = \"a\"\n")
            .unwrap_err();
        assert!(problems[0].starts_with("line 3: "), "{problems:?}");
        assert!(!problems[0].contains("hunter2"), "{problems:?}");
    }

    #[test]
    fn passwords_verify() {
        assert!(verify_password(SECRET, "secret"));
        assert!(!verify_password(SECRET, "Secret"));
        assert!(!verify_password("not a hash", "secret"));
        let phc = hash_password("pw", &[7; 16]).unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password(&phc, "pw"));
    }

    #[test]
    fn interfaces_of_channels() {
        assert_eq!(interface_of("PJSIP/1001-0000002a"), "PJSIP/1001");
        assert_eq!(
            interface_of("Local/1001@default-00000001;1"),
            "Local/1001@default"
        );
        assert_eq!(
            interface_of("Local/1001@default-00000001;2"),
            "Local/1001@default"
        );
        assert_eq!(
            interface_of("PJSIP/trunk-provider-0000001a"),
            "PJSIP/trunk-provider"
        );
        assert_eq!(interface_of("PJSIP/alice"), "PJSIP/alice");
        assert_eq!(interface_of("Local/1001@default"), "Local/1001@default");
    }

    #[test]
    fn hashes_too_weak_or_too_costly_are_refused_naming_their_line() {
        let weak = "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHRzYWx0$LEoDiKolAdO6CICRtIsNfS7pzASNysREYbKPF9VwGok";
        let huge = SECRET.replace("m=19456,t=2,p=1", "m=4194304,t=2,p=1");
        let argon2i = SECRET.replace("argon2id", "argon2i");
        let text = format!(
            "[[users]]\nid = 1\nlogin = \"a\"\npassword = \"{SECRET}\"\n\
             [[users]]\nid = 2\nlogin = \"b\"\npassword = \"{weak}\"\n\
             [[users]]\nid = 3\nlogin = \"c\"\npassword = \"{huge}\"\n\
             [[users]]\nid = 4\nlogin = \"d\"\npassword = \"{argon2i}\"\n"
        );
        let problems = Directory::parse(&text).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems[0].starts_with("users[1] (b), line 8: password hash m=256,t=1,p=1 is weaker than the minimum m=19456,t=2"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].starts_with("users[2] (c), line 12: "),
            "{}",
            problems[1]
        );
        assert!(problems[1].contains("past the ceiling m<=262144,t<=10,p<=4"));
        assert!(
            problems[2].contains("not an argon2id (v=19) hash"),
            "{}",
            problems[2]
        );
        assert!(
            problems.iter().all(|p| !p.contains("LEoD")),
            "no hash in a message"
        );
        // The same checks apply to a web service's JSON, without line numbers.
        let json = format!(r#"{{"users":[{{"id":1,"login":"x","password":"{weak}"}}]}}"#);
        let problems = Directory::parse_json(&json, &[DEFAULT_PBX.to_owned()]).unwrap_err();
        assert!(
            problems[0].starts_with("users[0] (x): password hash m=256"),
            "{problems:?}"
        );
        assert!(hash_cost(&SECRET.replace("t=2", "t=11")).is_err());
        assert!(hash_cost(&SECRET.replace("p=1", "p=5")).is_err());
        assert_eq!(hash_cost(SECRET), Ok(MIN_HASH));
    }

    #[test]
    fn roles_are_read_and_supervisor_true_is_a_supervisor() {
        let text = format!(
            "[[users]]\nid = 1\nlogin = \"a\"\npassword = \"{SECRET}\"\n\
             [[users]]\nid = 2\nlogin = \"b\"\npassword = \"{SECRET}\"\nrole = \"supervisor\"\n\
             [[users]]\nid = 3\nlogin = \"c\"\npassword = \"{SECRET}\"\nsupervisor = true\n\
             [[users]]\nid = 4\nlogin = \"d\"\npassword = \"{SECRET}\"\nrole = \"admin\"\n"
        );
        let dir = Directory::parse(&text).unwrap();
        let role = |login: &str| dir.user_by_login(login).unwrap().role;
        assert_eq!(
            [role("a"), role("b"), role("c"), role("d")],
            [Role::Agent, Role::Supervisor, Role::Supervisor, Role::Admin]
        );
        let bad =
            format!("[[users]]\nid = 1\nlogin = \"a\"\npassword = \"{SECRET}\"\nrole = \"root\"\n");
        let problems = Directory::parse(&bad).unwrap_err();
        assert!(
            problems[0].contains("unknown variant `root`"),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_logins_are_checked_at_the_users_usual_cost() {
        assert!(Directory::default()
            .dummy_hash()
            .contains("$m=19456,t=2,p=1$"));
        let strong = dummy_hash(HashCost {
            m: 32_768,
            t: 3,
            p: 1,
        });
        let text = format!(
            "[[users]]\nid = 1\nlogin = \"a\"\npassword = \"{strong}\"\n\
             [[users]]\nid = 2\nlogin = \"b\"\npassword = \"{strong}\"\n\
             [[users]]\nid = 3\nlogin = \"c\"\npassword = \"{SECRET}\"\n"
        );
        let dir = Directory::parse(&text).unwrap();
        let dummy = dir.dummy_hash();
        assert_eq!(
            hash_cost(dummy),
            Ok(HashCost {
                m: 32_768,
                t: 3,
                p: 1
            })
        );
        assert!(!verify_password(dummy, "") && !verify_password(dummy, "pw"));
    }
}
