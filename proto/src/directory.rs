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
mod tests;
