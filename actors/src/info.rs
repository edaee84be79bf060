//! The Info port: a plain-text debugging console, one command per line, each answer ended
//! by `CTID-INFO:OK` or `CTID-INFO:KO <reason>`. It has no authentication: it listens on
//! loopback by default, serves only `listen.info.allow`, and serves `kick`, `loglevel` and
//! `dumpami` only with `listen.info.allow_control`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ctid_proto::cti::ErrorCode;
use futures_util::StreamExt;
use log::{info, warn};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::allow::AllowList;
use crate::ami::AmiTaps;
use crate::directory::DirectoryHandle;
use crate::listener::Accept;
use crate::metrics::Metrics;
use crate::partition::Partitions;
use crate::pbx::{Pbx, Pbxes};
use crate::session::SessionRegistry;
use crate::settings::human_duration;
use crate::supervisor::{ChildState, Report};

/// Consoles open at once, at most.
const MAX_CONSOLES: usize = 16;
const MAX_LINE: usize = 1024;

/// Changes the log level; answers what it is now.
pub type SetLogLevel = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// What the console shows and acts on.
pub struct InfoShared {
    pub started: Instant,
    pub config: PathBuf,
    pub pbxes: Pbxes,
    pub taps: AmiTaps,
    pub report: Report,
    pub sessions: SessionRegistry,
    pub partitions: Partitions,
    pub directory: DirectoryHandle,
    pub metrics: Metrics,
    pub log_level: SetLogLevel,
    /// Whether `kick`, `loglevel` and `dumpami` are served (`listen.info.allow_control`).
    pub control: bool,
    /// What start-up warned about (ports open beyond this machine).
    pub warnings: Vec<String>,
    /// Each listener's allow-list, with its count of refusals.
    pub allow: Vec<AllowList>,
}

/// The console commands that change state or show raw AMI (other tenants' calls too).
const CONTROL: [&str; 3] = ["kick", "loglevel", "dumpami"];

#[derive(Clone)]
pub struct InfoAccept {
    shared: Arc<InfoShared>,
    open: Arc<AtomicUsize>,
}

impl InfoAccept {
    pub fn new(shared: Arc<InfoShared>) -> Self {
        InfoAccept {
            shared,
            open: Arc::default(),
        }
    }
}

impl Accept for InfoAccept {
    fn accept(&mut self, stream: TcpStream, peer: SocketAddr) {
        let (shared, open) = (self.shared.clone(), self.open.clone());
        actix_rt::spawn(async move {
            if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONSOLES {
                warn!("info: refused {peer}: {MAX_CONSOLES} consoles already open");
                let mut stream = stream;
                let _ = stream.write_all(b"CTID-INFO:KO too many consoles\n").await;
            } else {
                info!("info: console opened from {peer}");
                serve(stream, &shared).await;
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

const HELP: &str = "\
help                      this list
show_infos                version, uptime, settings file
show_ami [pbx]            the AMI links (of one PBX): state, events, reconnects
show_actors               the supervision tree: state, restarts, last failure
show_sessions             connected CTI sessions
show_users                users and how many sessions each has
show_calls [context]      live calls (of one context)
show_contexts             contexts: dialplan contexts, sessions, calls, events
stats [pbx]               event lag, call setup, screen pops, drops; each AMI link's
stats reset               starts event lag, call setup and screen pops afresh
kick <session>            closes a CTI session
loglevel <level>          error, warn, info, debug, trace, or default (RUST_LOG)
dumpami on [pbx] [Event ...]  streams raw AMI events (of one PBX, those named) here
dumpami off               stops it";

fn ago(t: SystemTime) -> String {
    let d = SystemTime::now().duration_since(t).unwrap_or_default();
    format!("{} ago", uptime(d))
}

fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86400, s / 3600 % 24),
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

/// The PBXes a command names (its first argument), or all of them.
fn links<'a>(s: &'a InfoShared, args: &[&str]) -> Result<Vec<&'a Pbx>, String> {
    match args.first() {
        Some(name) => s
            .pbxes
            .get(name)
            .map(|p| vec![p])
            .ok_or_else(|| format!("no PBX {name:?}")),
        None => Ok(s.pbxes.iter().collect()),
    }
}

/// Runs one command; `Ok` holds the lines of its answer.
fn run(command: &str, args: &[&str], s: &InfoShared) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    match command {
        "help" => out.extend(HELP.lines().map(str::to_owned)),
        "show_infos" => {
            out.push(format!("version {}", env!("CARGO_PKG_VERSION")));
            out.push(format!("uptime {}", uptime(s.started.elapsed())));
            out.push(format!("config {}", s.config.display()));
            out.extend(s.warnings.iter().map(|w| format!("warning: {w}")));
        }
        "show_ami" => {
            for pbx in links(s, args)? {
                let l = pbx.stats.snapshot();
                let rate = l.events as f64 / s.started.elapsed().as_secs_f64().max(1.0);
                out.push(format!(
                    "{} {} {} since {}; {} events ({rate:.1}/s since start), last {}; {} logins, {} overflows, {} oversized messages skipped",
                    pbx.name,
                    pbx.endpoint,
                    l.state,
                    ago(l.since),
                    l.events,
                    l.last_event.map_or_else(|| "never".to_owned(), ago),
                    l.logins,
                    l.overflows,
                    l.discarded
                ));
            }
        }
        "show_actors" => {
            for (path, c) in s.report.snapshot() {
                let state = match c.state {
                    ChildState::Running => "running",
                    ChildState::Stopped => "stopped",
                    ChildState::GivenUp => "given up",
                };
                let last = c.last_failure.map_or_else(
                    || "-".to_owned(),
                    |(at, why)| format!("{why} ({})", ago(at)),
                );
                out.push(format!(
                    "{path} {state}, {} restarts, last failure: {last}",
                    c.restarts
                ));
            }
        }
        "show_sessions" => {
            for (id, i) in s.sessions.snapshot() {
                let (queued, bytes) = i.outbox.pending();
                out.push(format!(
                    "{id} {} {} {} context {} since {} queued {queued} ({bytes} bytes) sent {} bytes",
                    i.listener,
                    i.peer,
                    i.login.as_deref().unwrap_or("(logging in)"),
                    i.partition.as_deref().unwrap_or("-"),
                    ago(i.since),
                    i.outbox.written()
                ));
            }
            out.push(format!("{} sessions", s.sessions.len()));
        }
        "show_users" => {
            let mut online: BTreeMap<String, usize> = BTreeMap::new();
            for (_, i) in s.sessions.snapshot() {
                if let Some(login) = i.login {
                    *online.entry(login).or_default() += 1;
                }
            }
            for u in s.directory.get().users() {
                out.push(format!(
                    "{} {} ({}) context {} line {} sessions {}",
                    u.id,
                    u.login,
                    u.fullname(),
                    u.context().unwrap_or("-"),
                    u.line.as_ref().map_or("-", |l| l.interface.as_str()),
                    online.get(&u.login).unwrap_or(&0)
                ));
            }
        }
        "show_calls" => {
            let only = args.first().copied();
            // A call of several contexts is in each of their partitions: shown once.
            let mut shown = std::collections::HashSet::new();
            for key in s.partitions.keys() {
                let Some(core) = s.partitions.core(&key) else {
                    continue;
                };
                let core = core.lock().unwrap_or_else(|p| p.into_inner());
                for c in core.calls() {
                    if only.is_some_and(|o| !c.contexts.iter().any(|x| x == o))
                        || !shown.insert(c.id.clone())
                    {
                        continue;
                    }
                    let party = |p: &ctid_proto::calls::Party| {
                        p.number.clone().unwrap_or_else(|| "?".into())
                    };
                    out.push(format!(
                        "{} {:?} {:?} {} -> {} contexts {} since {}",
                        c.id,
                        c.state,
                        c.direction,
                        party(&c.caller),
                        party(&c.callee),
                        c.contexts.join(","),
                        uptime(Duration::from_secs_f64(
                            (ctid_proto::cti::timenow() - c.created).max(0.0)
                        ))
                    ));
                }
            }
        }
        "show_contexts" => {
            let dir = s.directory.get();
            for c in dir.contexts() {
                let key = s.partitions.key(&c.name).to_owned();
                let (members, calls, seq) = s.partitions.core(&key).map_or((0, 0, 0), |core| {
                    let core = core.lock().unwrap_or_else(|p| p.into_inner());
                    (core.member_count(), core.calls().count(), core.seq())
                });
                out.push(format!(
                    "{} dialplan {} partition {key}: {members} sessions, {calls} calls, {seq} events",
                    c.name,
                    c.dialplan.join(",")
                ));
            }
        }
        "stats" if args == ["reset"] => {
            s.metrics.reset();
            out.push("event lag, call setup and screen pops start afresh".to_owned());
        }
        "stats" => {
            let m = s.metrics.snapshot();
            let l = m.event_lag_us;
            out.push(format!(
                "event lag (AMI read to client queues): p50 {} p99 {} p999 {} max {} ({} batches)",
                ms(l.p50),
                ms(l.p99),
                ms(l.p999),
                ms(l.max),
                l.count
            ));
            let c = m.setup_ms;
            out.push(format!(
                "call setup (offered to answered): p50 {} p99 {} max {} ({} calls)",
                human_duration(Duration::from_millis(c.p50)),
                human_duration(Duration::from_millis(c.p99)),
                human_duration(Duration::from_millis(c.max)),
                c.count
            ));
            let share = if m.offered == 0 {
                100.0
            } else {
                100.0 * m.complete as f64 / m.offered as f64
            };
            out.push(format!(
                "screen pops: {share:.1}% of {} offered calls had the caller in the directory, or attached data",
                m.offered
            ));
            let slow: u64 = s
                .partitions
                .keys()
                .iter()
                .filter_map(|k| s.partitions.core(k))
                .map(|core| {
                    core.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .stats
                        .slow_consumers
                })
                .sum();
            let pbxes = links(s, args)?;
            let stats: Vec<_> = pbxes.iter().map(|p| p.stats.snapshot()).collect();
            out.push(format!(
                "drops: {slow} slow consumers, {} AMI overflows, {} oversized AMI messages, {} partition gaps, {} dumpami events, {} call records",
                stats.iter().map(|l| l.overflows).sum::<u64>(),
                stats.iter().map(|l| l.discarded).sum::<u64>(),
                m.gaps,
                s.taps.dropped(),
                m.dropped_records
            ));
            let refused: Vec<String> = s
                .allow
                .iter()
                .map(|a| format!("{} {}", a.name(), a.refused()))
                .collect();
            out.push(format!(
                "refused (not in listen.<name>.allow): {}",
                refused.join(", ")
            ));
            for (pbx, l) in pbxes.iter().zip(&stats) {
                out.push(format!(
                    "AMI {}: {}, {} events, {} logins, {} overflows, {} oversized messages",
                    pbx.name, l.state, l.events, l.logins, l.overflows, l.discarded
                ));
            }
        }
        "kick" => {
            let id = args
                .first()
                .and_then(|a| a.parse().ok())
                .ok_or("usage: kick <session>")?;
            if !s.sessions.kick(id, ErrorCode::Kicked) {
                return Err(format!("no session {id}"));
            }
            out.push(format!("session {id} closed"));
        }
        "loglevel" => {
            let level = args
                .first()
                .ok_or("usage: loglevel <error|warn|info|debug|trace|default>")?;
            out.push(format!("log level {}", (s.log_level)(level)?));
        }
        other => return Err(format!("unknown command {other:?} (help lists them)")),
    }
    Ok(out)
}

async fn write(w: &mut OwnedWriteHalf, text: &str) -> bool {
    w.write_all(text.as_bytes()).await.is_ok()
}

async fn serve(stream: TcpStream, s: &InfoShared) {
    let (read, mut w) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    let mut tap: Option<(u64, tokio::sync::mpsc::Receiver<bytes::Bytes>)> = None;
    loop {
        let line = tokio::select! {
            line = lines.next() => line,
            Some(event) = async { tap.as_mut()?.1.recv().await }, if tap.is_some() => {
                if w.write_all(&event).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let line = match line {
            Some(Ok(line)) => line,
            Some(Err(_)) => {
                let _ = write(
                    &mut w,
                    &format!("CTID-INFO:KO line longer than {MAX_LINE} bytes\n"),
                )
                .await;
                break;
            }
            None => break,
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((command, args)) = words.split_first() else {
            continue;
        };
        let answer = if CONTROL.contains(command) && !s.control {
            Err(format!("{command} is off here (listen.info.allow_control)"))
        } else if *command == "dumpami" {
            match args.split_first() {
                Some((&"on", names)) => {
                    if let Some((id, _)) = tap.take() {
                        s.taps.remove(id);
                    }
                    // A first word naming a PBX is that PBX, not an event.
                    let (pbx, names) = match names.split_first() {
                        Some((first, rest)) if s.pbxes.get(first).is_some() => (Some(*first), rest),
                        _ => (None, names),
                    };
                    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
                    tap = Some(s.taps.add(pbx, &names));
                    let of = pbx.map_or_else(|| "every PBX".to_owned(), |p| format!("PBX {p}"));
                    Ok(vec![if names.is_empty() {
                        format!("dumping every AMI event of {of}")
                    } else {
                        format!("dumping AMI events {} of {of}", names.join(" "))
                    }])
                }
                Some((&"off", _)) => {
                    if let Some((id, _)) = tap.take() {
                        s.taps.remove(id);
                    }
                    Ok(vec!["dump stopped".to_owned()])
                }
                _ => Err("usage: dumpami on [pbx] [Event ...] | dumpami off".to_owned()),
            }
        } else {
            run(command, args, s)
        };
        let text = match answer {
            Ok(out) => out.into_iter().map(|l| l + "\n").collect::<String>() + "CTID-INFO:OK\n",
            Err(reason) => format!("CTID-INFO:KO {reason}\n"),
        };
        if !write(&mut w, &text).await {
            break;
        }
    }
    if let Some((id, _)) = tap {
        s.taps.remove(id);
    }
}
