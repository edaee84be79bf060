//! Reads typed values out of the merged file and environment, noting each key read and
//! every problem with the key and where its value came from.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use config::{Map, Value, ValueKind};
use ctid_proto::cidr::Cidr;

use super::{io_reason, Problem, ENV_PREFIX};

pub(super) struct Reader {
    table: Map<String, Value>,
    /// The settings file, as named by the operator.
    file: String,
    base: PathBuf,
    used: BTreeSet<String>,
    problems: Vec<Problem>,
}

impl Reader {
    pub(super) fn new(table: Map<String, Value>, file: String, base: PathBuf) -> Reader {
        Reader {
            table,
            file,
            base,
            used: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    /// The keys read so far.
    #[cfg(test)]
    pub(super) fn into_used(self) -> BTreeSet<String> {
        self.used
    }

    /// Every problem found, unknown keys included.
    pub(super) fn finish(mut self) -> Result<(), Vec<Problem>> {
        self.report_unknown();
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.problems)
        }
    }

    pub(super) fn lookup(&self, key: &str) -> Option<&Value> {
        let mut parts = key.split('.');
        let mut value = self.table.get(parts.next()?)?;
        for part in parts {
            match &value.kind {
                ValueKind::Table(t) => value = t.get(part)?,
                _ => return None,
            }
        }
        Some(value)
    }

    /// The value at `key`, if set; marks the key as known either way.
    pub(super) fn take(&mut self, key: &str) -> Option<Value> {
        self.used.insert(key.to_owned());
        match self.lookup(key) {
            Some(v) if matches!(v.kind, ValueKind::Nil) => None,
            other => other.cloned(),
        }
    }

    /// Marks keys as known that the current settings make irrelevant.
    pub(super) fn skip(&mut self, keys: &[&str]) {
        self.used.extend(keys.iter().map(|k| (*k).to_owned()));
    }

    fn origin_of(&self, key: &str) -> Option<String> {
        let origin = self.lookup(key)?.origin()?;
        if origin == "the environment" {
            Some(format!(
                "environment variable {ENV_PREFIX}__{}",
                key.replace('.', "__").to_uppercase()
            ))
        } else {
            Some(self.file.clone())
        }
    }

    pub(super) fn problem(&mut self, key: &str, message: &str) {
        self.problems.push(Problem {
            key: key.to_owned(),
            origin: self.origin_of(key),
            message: message.to_owned(),
        });
    }

    pub(super) fn has_problem(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }

    /// Reads `key` with `parse`; on failure records the problem and returns `default`.
    fn typed<T>(
        &mut self,
        key: &str,
        default: T,
        parse: impl FnOnce(&ValueKind) -> Result<T, String>,
    ) -> T {
        match self.take(key) {
            None => default,
            Some(v) => match parse(&v.kind) {
                Ok(t) => t,
                Err(message) => {
                    self.problem(key, &format!("{message}, got {}", shown(&v.kind)));
                    default
                }
            },
        }
    }

    pub(super) fn string(&mut self, key: &str, default: &str) -> String {
        self.typed(key, default.to_owned(), |k| match k {
            ValueKind::String(s) => Ok(s.clone()),
            ValueKind::I64(_) | ValueKind::U64(_) | ValueKind::Float(_) => Ok(scalar_text(k)),
            _ => Err("expected a string".into()),
        })
    }

    /// A list of address ranges (`10.0.0.0/8`, `::1`; in one string, separated by commas,
    /// as an environment variable gives them); `default` if unset. An empty list
    /// is a problem: it would refuse everyone (turn the listener off instead).
    pub(super) fn ranges(&mut self, key: &str, default: &[Cidr]) -> Vec<Cidr> {
        let set = self.lookup(key).is_some();
        let items = self.strings(key);
        if !set || self.has_problem(key) {
            return default.to_vec();
        }
        if items.is_empty() {
            self.problem(
                key,
                "must not be empty (set enabled = false to close the port)",
            );
        }
        items
            .iter()
            .flat_map(|item| item.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .filter_map(|item| match item.parse::<Cidr>() {
                Ok(cidr) => Some(cidr),
                Err(e) => {
                    self.problem(key, &e);
                    None
                }
            })
            .collect()
    }

    /// A list of strings (a single string is a list of one); empty if unset.
    pub(super) fn strings(&mut self, key: &str) -> Vec<String> {
        self.typed(key, Vec::new(), |k| match k {
            ValueKind::String(s) => Ok(vec![s.clone()]),
            ValueKind::Array(items) => items
                .iter()
                .map(|v| match &v.kind {
                    ValueKind::String(s) => Ok(s.clone()),
                    _ => Err("expected a list of strings".to_owned()),
                })
                .collect(),
            _ => Err("expected a list of strings".into()),
        })
    }

    pub(super) fn boolean(&mut self, key: &str, default: bool) -> bool {
        self.typed(key, default, |k| match k {
            ValueKind::Boolean(b) => Ok(*b),
            ValueKind::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err("expected true or false".into()),
            },
            _ => Err("expected true or false".into()),
        })
    }

    fn number(kind: &ValueKind) -> Option<f64> {
        match kind {
            ValueKind::I64(i) => Some(*i as f64),
            ValueKind::U64(u) => Some(*u as f64),
            ValueKind::Float(f) => Some(*f),
            ValueKind::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub(super) fn integer<T: TryFrom<i64> + Copy>(
        &mut self,
        key: &str,
        default: T,
        min: i64,
        max: i64,
    ) -> T {
        self.typed(key, default, |k| {
            let n = match k {
                ValueKind::I64(i) => Some(*i),
                ValueKind::U64(u) => i64::try_from(*u).ok(),
                ValueKind::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            n.filter(|n| (min..=max).contains(n))
                .and_then(|n| T::try_from(n).ok())
                .ok_or_else(|| format!("expected a whole number from {min} to {max}"))
        })
    }

    pub(super) fn port(&mut self, key: &str, default: u16) -> u16 {
        self.integer(key, default, 0, 65535)
    }

    pub(super) fn seconds(&mut self, key: &str, default: Duration, min: f64, max: f64) -> Duration {
        self.typed(key, default, |k| {
            Self::number(k)
                .filter(|n| n.is_finite() && (min..=max).contains(n))
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("expected a number of seconds from {min} to {max}"))
        })
    }

    pub(super) fn choice(&mut self, key: &str, default: &str, allowed: &[&str]) -> String {
        self.typed(key, default.to_owned(), |k| match k {
            ValueKind::String(s) if allowed.contains(&s.as_str()) => Ok(s.clone()),
            _ => Err(format!("expected one of {}", allowed.join(", "))),
        })
    }

    pub(super) fn ip(&mut self, key: &str, default: IpAddr) -> IpAddr {
        self.typed(key, default, |k| match k {
            ValueKind::String(s) => s
                .parse()
                .map_err(|_| "expected an IP address such as 127.0.0.1 or ::".to_owned()),
            _ => Err("expected an IP address such as 127.0.0.1 or ::".into()),
        })
    }

    /// An optional path, relative to the directory of the settings file.
    pub(super) fn path(&mut self, key: &str) -> Option<PathBuf> {
        let s = self.string(key, "");
        (!s.is_empty()).then(|| self.base.join(s))
    }

    pub(super) fn existing_file(&mut self, key: &str) -> Option<PathBuf> {
        let path = self.path(key)?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Some(path),
            Ok(_) => {
                self.problem(key, &format!("{} is not a file", path.display()));
                None
            }
            Err(e) => {
                self.problem(key, &format!("{}: {}", path.display(), io_reason(&e)));
                None
            }
        }
    }

    /// Records every key of the file and environment that no reader asked for.
    fn report_unknown(&mut self) {
        let mut unknown = Vec::new();
        collect_unknown(&self.table, "", &self.used, &mut unknown);
        unknown.sort();
        for key in unknown {
            let message = match closest(&key, &self.used) {
                Some(k) => format!("unknown key (did you mean {k}?)"),
                None => "unknown key".to_owned(),
            };
            self.problem(&key, &message);
        }
    }
}

fn collect_unknown(
    table: &Map<String, Value>,
    prefix: &str,
    used: &BTreeSet<String>,
    out: &mut Vec<String>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if used.contains(&key) {
            continue;
        }
        match &v.kind {
            ValueKind::Table(t) if used.iter().any(|u| u.starts_with(&format!("{key}."))) => {
                collect_unknown(t, &key, used, out)
            }
            _ => out.push(key),
        }
    }
}

/// The known key nearest to `key` by edit distance, when it is a plausible typo.
fn closest<'a>(key: &str, known: &'a BTreeSet<String>) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 5))
        .min()
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

fn scalar_text(kind: &ValueKind) -> String {
    match kind {
        ValueKind::I64(i) => i.to_string(),
        ValueKind::U64(u) => u.to_string(),
        ValueKind::Float(f) => f.to_string(),
        ValueKind::Boolean(b) => b.to_string(),
        ValueKind::String(s) => s.clone(),
        _ => String::new(),
    }
}

fn shown(kind: &ValueKind) -> String {
    match kind {
        ValueKind::String(s) => format!("{s:?}"),
        ValueKind::Table(_) => "a table".into(),
        ValueKind::Array(_) => "a list".into(),
        ValueKind::Nil => "nothing".into(),
        other => scalar_text(other),
    }
}
