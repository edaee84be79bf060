//! Fan-out: N CTI sessions over C contexts, fed by the simulated PBX at a fixed call rate.
//!
//! For each (N, C) it runs ctid (the release binary, in its own process) and then a
//! baseline: a bare tokio relay (this program, in its own process) that sends the same
//! bytes ctid delivered to each context, on the same schedule, to the same number of
//! sockets. Reported: delivered events/s (median of 1 s samples), lag p50/p99/p999 of
//! `offered` events (ctid: from the PBX writing the call's first events to the client
//! reading the event, so the AMI hop is included; baseline: from the scheduled send to the
//! read), RSS per session and CPU of the server process.
//!
//! Then, for the first (N, C), ctid with its call records on and off: records written per
//! second and the lag the store adds to `hungup` events (a call's end is reported only once
//! its record is on disk).
//!
//! `cargo bench --bench fanout [-- --sessions 1000,10000 --contexts 10,100 --rate 50 --seconds 10]`
//!
//! Other modes (see `USAGE`, or `scripts/bench-fanout --help`); given any, the above does
//! not run:
//!
//! - `--burst N`: N bridged calls of one context all hang up within 100 ms, with S
//!   sessions in that context (`--sessions`, default 200). ctid's own lag from AMI read to
//!   client queues (the info console's `stats`, p50/p99/max), the `hungup` lag the clients
//!   see, and ctid's CPU seconds over the burst; call records on unless `--store off`. With
//!   `--baseline-bin PATH`, the same for another ctid binary, the two interleaved over
//!   `--rounds` rounds: medians, after/before. With `--store-sync full,normal`, the same
//!   binary under each `store.sync`, interleaved likewise: medians, the first over the second.
//! - `--write-delay 0,0.001,0.002`: for each `sessions.write_delay`, 2,000 sessions in one
//!   context (`--sessions`) at `--rate` calls/s (default 10): deliveries per CPU-second of
//!   ctid and the lag of `offered` p50/p99, medians over rounds, against the first window.
//! - `--cluster throughput,takeover,edge`: cluster mode against NATS (see `cluster.rs`):
//!   three nodes beside one, takeovers of a killed ingest, desktops of a killed edge
//!   resuming on the others.
//! - `--idle N`: N logged-in idle sessions (clients spread over 127.0.0.2-9): RSS per
//!   session and logins per second; the first `--idle-real` logins (default 1,000) check
//!   a default-strength argon2id hash (m=19456,t=2,p=1), the others the cheap one below.

#[path = "fanout/burst.rs"]
mod burst;
#[path = "fanout/cluster.rs"]
mod cluster;
#[path = "fanout/idle.rs"]
mod idle;
#[path = "fanout/window.rs"]
mod window;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ctid_pbxsim::calls::{CallPlan, Tenant};
use ctid_pbxsim::{PbxSim, SimConfig};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{TcpSocket, TcpStream};

const USAGE: &str = "\
fan-out (default): --sessions 1000,10000 --contexts 10,100 --rate 50 --seconds 10
burst:             --burst N [--sessions 200] [--rounds 5] [--store on|off] [--baseline-bin PATH | --store-sync full,normal]
write window:      --write-delay 0,0.001,0.002 [--sessions 2000] [--rate 10] [--seconds 10] [--rounds 3] [--store on|off]
idle:              --idle 20000 [--idle-real 1000] [--rounds 1] [--baseline-bin PATH]
cluster:           --cluster throughput,takeover,edge [--sessions 300] [--contexts 10] [--rate 20] [--rounds 2] [--kills 10] [--desktops 2000]";

const WARMUP: Duration = Duration::from_secs(2);
const USERS_PER_CONTEXT: usize = 10;
/// An argon2id hash of "pw", at the weakest cost ctid accepts.
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$XWjyNJJjBQpYIhkh1qnibQ$wK61LDAWN54692J0atGsDkVAbW2bO515C7VQiABcgnk";
/// An argon2id hash of "pw" at the default strength of `ctid hash-password`.
const REAL_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$7gTkzYMkT4KiOPlBwN0LlQ$0jZgNsk8wEvC9AwiuMgzoHQBtskRDkaQv7nuJvphGx8";

struct Options {
    /// None: each mode's default.
    sessions: Option<Vec<usize>>,
    contexts: Vec<usize>,
    /// Calls per second; None: each mode's default.
    rate: Option<f64>,
    seconds: u64,
    burst: Option<usize>,
    write_delay: Option<Vec<f64>>,
    idle: Option<usize>,
    idle_real: usize,
    rounds: Option<usize>,
    baseline_bin: Option<PathBuf>,
    /// Call records on (as by default) in the burst and write-window modes.
    store: bool,
    /// The `store.sync` values the burst mode compares, this binary under each.
    store_sync: Option<Vec<String>>,
    cluster: Option<Vec<String>>,
    kills: usize,
    desktops: usize,
}

fn options() -> Options {
    let mut o = Options {
        sessions: None,
        contexts: vec![10, 100],
        rate: None,
        seconds: 10,
        burst: None,
        write_delay: None,
        idle: None,
        idle_real: 1000,
        rounds: None,
        baseline_bin: None,
        store: true,
        store_sync: None,
        cluster: None,
        kills: 10,
        desktops: 2000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        std::process::exit(0);
    }
    fn list<T: std::str::FromStr>(v: &str) -> Vec<T> {
        v.split(',').filter_map(|x| x.parse().ok()).collect()
    }
    for pair in args.windows(2) {
        let v = pair[1].as_str();
        match pair[0].as_str() {
            "--sessions" => o.sessions = Some(list(v)),
            "--contexts" => o.contexts = list(v),
            "--rate" => o.rate = v.parse().ok(),
            "--seconds" => o.seconds = v.parse().unwrap_or(o.seconds),
            "--burst" => o.burst = v.parse().ok(),
            "--write-delay" => o.write_delay = Some(list(v)),
            "--idle" => o.idle = v.parse().ok(),
            "--idle-real" => o.idle_real = v.parse().unwrap_or(o.idle_real),
            "--rounds" => o.rounds = v.parse().ok(),
            "--baseline-bin" => o.baseline_bin = Some(PathBuf::from(v)),
            "--store" => o.store = v != "off",
            "--store-sync" => o.store_sync = Some(list(v)),
            "--cluster" => o.cluster = Some(list(v)),
            "--kills" => o.kills = v.parse().unwrap_or(o.kills),
            "--desktops" => o.desktops = v.parse().unwrap_or(o.desktops),
            _ => {}
        }
    }
    o
}

impl Options {
    /// The fan-out's call rate.
    fn rate(&self) -> f64 {
        self.rate.unwrap_or(50.0)
    }

    fn sessions_or(&self, default: &[usize]) -> Vec<usize> {
        self.sessions.clone().unwrap_or_else(|| default.to_vec())
    }

    /// The binaries to compare: this build's ctid ("after"), then the baseline's.
    fn binaries(&self) -> Vec<(&'static str, PathBuf)> {
        let this = PathBuf::from(env!("CARGO_BIN_EXE_ctid"));
        match &self.baseline_bin {
            Some(base) => vec![("after", this), ("before", base.clone())],
            None => vec![("ctid", this)],
        }
    }

    /// What the burst mode compares: the binaries, or this one under each `store.sync`.
    fn variants(&self) -> Vec<(String, PathBuf, Option<String>)> {
        match &self.store_sync {
            Some(syncs) => {
                if self.baseline_bin.is_some() {
                    println!("--store-sync compares this build only: the baseline is not run");
                }
                let this = PathBuf::from(env!("CARGO_BIN_EXE_ctid"));
                syncs
                    .iter()
                    .map(|s| (s.clone(), this.clone(), Some(s.clone())))
                    .collect()
            }
            None => self
                .binaries()
                .into_iter()
                .map(|(name, bin)| (name.to_owned(), bin, None))
                .collect(),
        }
    }
}

/// What one run measured.
#[derive(Default)]
struct Row {
    events_per_s: f64,
    lag_us: [u64; 3],
    lag_samples: u64,
    /// Lag of `hungup` events: from the PBX sending the hangup to the client reading it.
    hungup_us: [u64; 3],
    records_per_s: f64,
    rss_per_session: f64,
    cpu_share: f64,
    slow_consumers: usize,
}

/// Lines received per context by one recording client, with when (since the calls began).
type Recording = Vec<Vec<(Duration, Vec<u8>)>>;

/// The events whose lag is measured, and their stage in the simulator's trace.
const TIMED: [(&str, usize); 2] = [("offered", 0), ("hungup", 2)];

/// When the source sent the events of a call's stage (0: start, 2: hangup), by call id.
type SentAt = Rc<dyn Fn(&str, usize) -> Option<Instant>>;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) the process used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The simulator's id of a call: ctid's is `<pbx>:<Linkedid>`.
fn linkedid(id: &str) -> &str {
    id.rsplit_once(':').map_or(id, |(_, linkedid)| linkedid)
}

/// The call of a line of `event`: `"event":"<event>","call":{"id":"<id>"`.
fn event_id<'a>(line: &'a [u8], event: &str) -> Option<&'a str> {
    let needle = format!(r#""event":"{event}","call":{{"id":""#);
    let at = memchr::memmem::find(line, needle.as_bytes())? + needle.len();
    let end = memchr::memchr(b'"', &line[at..])? + at;
    std::str::from_utf8(&line[at..end]).ok()
}

/// Counters shared by every client of a run (one thread: Rc and Cell).
#[derive(Default)]
struct Tally {
    measuring: Cell<bool>,
    lines: Cell<u64>,
    /// Lag of each event of TIMED.
    lag: RefCell<Vec<Histogram<u64>>>,
    /// Lines of the recording clients, per context.
    recording: RefCell<Option<Recording>>,
}

impl Tally {
    fn new(contexts: usize, record: bool) -> Rc<Tally> {
        let t = Tally::default();
        *t.lag.borrow_mut() = TIMED
            .iter()
            .filter_map(|_| Histogram::new_with_bounds(1, 60_000_000, 3).ok())
            .collect();
        if record {
            *t.recording.borrow_mut() = Some(vec![Vec::new(); contexts]);
        }
        Rc::new(t)
    }
}

/// Reads lines until the connection closes: counts them, times `offered` and `hungup`
/// events against `sent_at`, and records them if this client records its context.
async fn read_events<R: tokio::io::AsyncRead + Unpin>(
    read: R,
    tally: Rc<Tally>,
    sent_at: SentAt,
    record: Option<(usize, Instant)>,
) {
    let mut lines = TokioBufReader::with_capacity(16 << 10, read);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let now = Instant::now();
        if let Some((context, began)) = record {
            if let Some(rec) = tally.recording.borrow_mut().as_mut() {
                rec[context].push((now - began, line.clone()));
            }
        }
        if !tally.measuring.get() {
            continue;
        }
        tally.lines.set(tally.lines.get() + 1);
        for (i, (event, stage)) in TIMED.iter().enumerate() {
            if let Some(at) = event_id(&line, event).and_then(|id| sent_at(id, *stage)) {
                if let Some(h) = tally.lag.borrow_mut().get_mut(i) {
                    let _ = h.record((now - at).as_micros().max(1) as u64);
                }
            }
        }
    }
}

/// Samples the delivered events and the server's CPU each second for `seconds`.
async fn measure(tally: &Tally, pid: u32, seconds: u64) -> Row {
    tally.measuring.set(true);
    let (mut rates, mut cpus) = (Vec::new(), Vec::new());
    let (mut lines, mut cpu, mut at) = (tally.lines.get(), cpu_seconds(pid), Instant::now());
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (l, c, now) = (tally.lines.get(), cpu_seconds(pid), Instant::now());
        let dt = (now - at).as_secs_f64();
        rates.push((l - lines) as f64 / dt);
        cpus.push((c - cpu) / dt);
        (lines, cpu, at) = (l, c, now);
    }
    tally.measuring.set(false);
    let lag = tally.lag.borrow();
    let q = |i: usize| -> [u64; 3] {
        lag.get(i).map_or([0; 3], |h| {
            [0.5, 0.99, 0.999].map(|p| h.value_at_quantile(p))
        })
    };
    Row {
        events_per_s: median(rates),
        lag_us: q(0),
        lag_samples: lag.first().map_or(0, |h| h.len()),
        hungup_us: q(1),
        cpu_share: median(cpus),
        ..Row::default()
    }
}

fn directory(contexts: usize) -> String {
    let mut d = String::new();
    for c in 0..contexts {
        d.push_str(&format!(
            "[[contexts]]\nname = \"ctx{c}\"\ndialplan = [\"dp{c}\"]\n"
        ));
        for u in 0..USERS_PER_CONTEXT {
            let number = 100_000 + c * 100 + u;
            d.push_str(&format!(
                "[[users]]\nid = {number}\nlogin = \"u{number}\"\npassword = \"{HASH}\"\n\
                 line = {{ interface = \"PJSIP/{number}\", number = \"{number}\", context = \"ctx{c}\", dialplan = \"dp{c}\" }}\n"
            ));
        }
    }
    d
}

fn tenants(contexts: usize) -> Vec<Tenant> {
    (0..contexts)
        .map(|c| {
            let first = (100_000 + c * 100) as u32;
            Tenant {
                context: format!("dp{c}"),
                tech: "PJSIP".into(),
                first,
                last: first + USERS_PER_CONTEXT as u32 - 1,
            }
        })
        .collect()
}

struct Server {
    child: Child,
    port: u16,
    /// The info console's port, if it is on.
    info: Option<u16>,
    /// Sessions ctid dropped as slow consumers so far.
    slow: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// How ctid runs for one measurement.
struct Launch<'a> {
    /// This build's ctid, or a baseline's.
    bin: &'a Path,
    store: bool,
    /// `store.sync`, when not the default.
    sync: Option<&'a str>,
    /// Opens the info console, on a free port.
    info: bool,
    /// More `key = value` lines of the `[sessions]` table.
    sessions: &'a str,
}

impl Launch<'_> {
    /// This build's ctid, console closed.
    fn this(store: bool) -> Launch<'static> {
        Launch {
            bin: Path::new(env!("CARGO_BIN_EXE_ctid")),
            store,
            sync: None,
            info: false,
            sessions: "",
        }
    }
}

/// Starts ctid on a temporary configuration and the `directory.toml` already in `dir`;
/// returns once it is logged in to the PBX. Its log is read on a thread, so that a
/// simulated PBX on this runtime can answer it.
async fn start_ctid(dir: &Path, ami_port: u16, launch: &Launch<'_>) -> Server {
    let mut config = format!(
        "[ami]\nport = {ami_port}\nusername = \"cti\"\nsecret = \"ctipass\"\n\
         [directory]\npath = \"directory.toml\"\n\
         [sessions]\nmax_unauthenticated = 100000\nmax_unauthenticated_per_address = 100000\n{}\n\
         [store]\nenabled = {}\npath = \"ctid.sqlite\"\n{}\
         [listen.cti]\naddress = \"127.0.0.1\"\nport = 0\n",
        launch.sessions,
        launch.store,
        // Only when asked: a baseline older than the key refuses it.
        launch
            .sync
            .map_or(String::new(), |s| format!("sync = \"{s}\"\n"))
    );
    for l in ["fagi", "ctis", "webi", "info", "announce"] {
        if l == "info" && launch.info {
            config.push_str("[listen.info]\naddress = \"127.0.0.1\"\nport = 0\n");
        } else {
            config.push_str(&format!("[listen.{l}]\nenabled = false\n"));
        }
    }
    std::fs::write(dir.join("ctid.toml"), config).unwrap();
    let mut child = Command::new(launch.bin)
        .args(["run", "--config"])
        .arg(dir.join("ctid.toml"))
        .env(
            "RUST_LOG",
            "warn,ctid_actors::listener=info,ctid_actors::ami=info",
        )
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", launch.bin.display()));
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let slow = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = slow.clone();
    let (ready, mut started) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        const CTI: &str = "cti: listening on 127.0.0.1:";
        const INFO: &str = "info: listening on 127.0.0.1:";
        let (mut port, mut info) = (0u16, None);
        let port_after = |l: &str, at: usize| l[at..].trim().parse::<u16>().ok();
        for l in stderr.lines().map_while(Result::ok) {
            if let Some(at) = l.find(CTI) {
                port = port_after(&l, at + CTI.len()).unwrap_or(0);
            } else if let Some(at) = l.find(INFO) {
                info = port_after(&l, at + INFO.len());
            } else if l.contains("logged in as 'cti'") {
                let _ = ready.send((port, info));
            } else if l.contains("dropped: slow consumer") {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else if l.contains("WARN") || l.contains("ERROR") {
                eprintln!("  ctid: {l}");
            }
        }
    });
    let (port, info) = tokio::time::timeout(Duration::from_secs(30), started.recv())
        .await
        .ok()
        .flatten()
        .expect("ctid did not start");
    Server {
        child,
        port,
        info,
        slow,
    }
}

/// Runs one info console command; the lines of its answer, then its status line.
async fn console(port: u16, command: &str) -> (Vec<String>, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("info console");
    s.write_all(format!("{command}\n").as_bytes())
        .await
        .unwrap();
    let mut lines = TokioBufReader::new(s).lines();
    let mut out = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.starts_with("CTID-INFO:") {
            return (out, line);
        }
        out.push(line);
    }
    (out, String::new())
}

/// What the `stats` line "event lag (AMI read to client queues): p50 .. p99 .. p999 ..
/// max .. (N batches)" says: milliseconds, and batches counted since ctid started.
#[derive(Clone, Copy, Debug, Default)]
struct EventLag {
    p50: f64,
    p99: f64,
    max: f64,
    batches: u64,
}

async fn event_lag(info: u16) -> EventLag {
    let (stats, _) = console(info, "stats").await;
    let line = stats
        .iter()
        .find(|l| l.starts_with("event lag"))
        .expect("a stats line for the event lag");
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |name: &str| -> f64 {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.trim_end_matches("ms").parse().ok())
            .unwrap_or(f64::NAN)
    };
    EventLag {
        p50: after("p50"),
        p99: after("p99"),
        max: after("max"),
        batches: words
            .iter()
            .rev()
            .nth(1)
            .and_then(|n| n.trim_start_matches('(').parse().ok())
            .unwrap_or(0),
    }
}

/// The simulated PBX on a thread of its own, so that reading thousands of client sockets
/// on the bench's thread does not delay what it sends.
struct Sim {
    sim: Option<PbxSim>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Sim {
    async fn start() -> Sim {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sim = runtime
            .spawn(PbxSim::start(SimConfig {
                trace: true,
                ..SimConfig::default()
            }))
            .await
            .unwrap()
            .unwrap();
        Sim {
            sim: Some(sim),
            runtime: Some(runtime),
        }
    }

    fn port(&self) -> u16 {
        self.get().addr().port()
    }

    fn get(&self) -> &PbxSim {
        self.sim.as_ref().expect("running")
    }

    /// Runs `f`, which may spawn tasks, on the simulator's runtime.
    fn on<T>(&self, f: impl FnOnce(&PbxSim) -> T) -> T {
        let _on = self.runtime.as_ref().expect("running").enter();
        f(self.get())
    }

    /// When the simulator sent each stage of a call.
    fn sent_at(&self) -> SentAt {
        let trace = self.get().trace();
        Rc::new(move |id, stage| trace.lock().ok()?.get(linkedid(id))?[stage])
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        drop(self.sim.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A connection to ctid's CTI port, from `source` if given.
async fn connect(source: Option<IpAddr>, port: u16) -> std::io::Result<TcpStream> {
    let to = (Ipv4Addr::LOCALHOST, port).into();
    let s = match source {
        Some(ip) => {
            let socket = TcpSocket::new_v4()?;
            socket.bind((ip, 0).into())?;
            socket.connect(to).await?
        }
        None => TcpStream::connect(to).await?,
    };
    s.set_nodelay(true)?;
    Ok(s)
}

async fn login(port: u16, user: String) -> std::io::Result<TcpStream> {
    login_from(None, port, user).await
}

/// Logs `user` in (password "pw") over a connection from `source`.
async fn login_from(source: Option<IpAddr>, port: u16, user: String) -> std::io::Result<TcpStream> {
    let mut s = connect(source, port).await?;
    let first = format!(
        "{{\"class\":\"login_id\",\"userlogin\":\"{user}\"}}\n{{\"class\":\"login_pass\",\"password\":\"pw\"}}\n"
    );
    s.write_all(first.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while memchr::memmem::find(&seen, b"capalist").is_none() {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    s.write_all(b"{\"class\":\"login_capas\",\"capaid\":1}\n")
        .await?;
    seen.clear();
    while memchr::memmem::find(&seen, b"\"login_capas\"").is_none() {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(s)
}

/// Connects `n` clients with `connect(i)`, 64 at a time: as many password checks as ctid
/// queues before it answers login_busy.
async fn connect_all<F, Fut>(n: usize, connect: F) -> Vec<TcpStream>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<TcpStream>>,
{
    connect_some(0..n, 64, connect).await
}

/// Connects clients `range` with `connect(i)`, at most `at_once` under way, in order.
async fn connect_some<F, Fut>(
    range: std::ops::Range<usize>,
    at_once: usize,
    connect: F,
) -> Vec<TcpStream>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<TcpStream>>,
{
    futures_util::stream::iter(range.map(connect))
        .buffered(at_once)
        .map(|s| s.expect("a client could not connect"))
        .collect()
        .await
}

/// Call records in ctid's database so far.
fn records(dir: &std::path::Path) -> f64 {
    let Ok(conn) = rusqlite::Connection::open(dir.join("ctid.sqlite")) else {
        return 0.0;
    };
    conn.query_row("SELECT count(*) FROM calls", [], |r| r.get::<_, i64>(0))
        .map_or(0.0, |n| n as f64)
}

/// Runs ctid with `n` sessions over `contexts` contexts; returns its row and what one
/// client per context received (the baseline's schedule).
async fn run_ctid(
    n: usize,
    contexts: usize,
    opts: &Options,
    store: bool,
) -> (Row, Recording, Duration) {
    let sim = PbxSim::start(SimConfig {
        trace: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.toml"), directory(contexts)).unwrap();
    let server = start_ctid(dir.path(), sim.addr().port(), &Launch::this(store)).await;
    let pid = server.child.id();
    let rss0 = rss_kib(pid);
    let port = server.port;
    let streams = connect_all(n, |i| {
        let user = format!(
            "u{}",
            100_000 + (i % contexts) * 100 + (i / contexts) % USERS_PER_CONTEXT
        );
        login(port, user)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kib(pid);
    let tally = Tally::new(contexts, true);
    let calls = sim.run_calls(CallPlan {
        rate: opts.rate(),
        ring: Duration::from_millis(500),
        talk: Duration::from_secs(2),
        tenants: tenants(contexts),
        limit: None,
        caller_up: false,
    });
    let began = Instant::now();
    let trace = sim.trace();
    let sent_at: SentAt = Rc::new(move |id, stage| trace.lock().ok()?.get(linkedid(id))?[stage]);
    for (i, s) in streams.into_iter().enumerate() {
        let record = (i < contexts).then_some((i % contexts, began));
        tokio::task::spawn_local(read_events(s, tally.clone(), sent_at.clone(), record));
    }
    tokio::time::sleep(WARMUP).await;
    let (stored, window) = (records(dir.path()), Instant::now());
    let mut row = measure(&tally, pid, opts.seconds).await;
    row.records_per_s = (records(dir.path()) - stored) / window.elapsed().as_secs_f64();
    drop(calls);
    let recorded_for = began.elapsed();
    row.rss_per_session = (rss1.saturating_sub(rss0)) as f64 / n as f64;
    row.slow_consumers = server.slow.load(std::sync::atomic::Ordering::Relaxed);
    let recording = tally.recording.borrow_mut().take().unwrap_or_default();
    drop(server);
    (row, recording, recorded_for)
}

/// The baseline: the relay process replays `recording` to `n` sockets.
async fn run_baseline(
    n: usize,
    contexts: usize,
    recording: &Recording,
    length: Duration,
    opts: &Options,
) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&plan).unwrap());
    for (c, lines) in recording.iter().enumerate() {
        for (at, line) in lines {
            writeln!(file, "{c} {} {}", at.as_micros(), line.len()).unwrap();
            file.write_all(line).unwrap();
        }
    }
    drop(file);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("relay")
        .arg(&plan)
        .arg(contexts.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("relay");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let port: u16 = first
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .expect("relay port");
    let pid = child.id();
    let rss0 = rss_kib(pid);
    let streams = connect_all(n, |i| async move {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        s.write_all(format!("{}\n", i % contexts).as_bytes())
            .await?;
        Ok(s)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kib(pid);
    // Where each timed event is in the schedule.
    let mut offsets: HashMap<(String, usize), Duration> = HashMap::new();
    for lines in recording {
        for (at, line) in lines {
            for (event, stage) in TIMED {
                if let Some(id) = event_id(line, event) {
                    offsets.insert((id.to_owned(), stage), *at);
                }
            }
        }
    }
    let start = Instant::now() + Duration::from_millis(500);
    let start_wall = SystemTime::now() + Duration::from_millis(500);
    let micros = start_wall.duration_since(UNIX_EPOCH).unwrap().as_micros();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{micros}").unwrap();
    let tally = Tally::new(contexts, false);
    let sent_at: SentAt =
        Rc::new(move |id, stage| offsets.get(&(id.to_owned(), stage)).map(|o| start + *o));
    for s in streams {
        tokio::task::spawn_local(read_events(s, tally.clone(), sent_at.clone(), None));
    }
    tokio::time::sleep_until((start + WARMUP).into()).await;
    let mut row = measure(
        &tally,
        pid,
        opts.seconds
            .min(length.as_secs().saturating_sub(WARMUP.as_secs())),
    )
    .await;
    row.rss_per_session = (rss1.saturating_sub(rss0)) as f64 / n as f64;
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    row
}

/// The bare tokio relay: `relay PLAN CONTEXTS`. Prints its port, reads the start time
/// (epoch microseconds) on stdin, then sends each planned line to every socket of its
/// context at its time, whatever has queued in one write.
fn relay(plan: &str, contexts: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bytes = std::fs::read(plan).unwrap();
        let mut schedule: Vec<Vec<(Duration, bytes::Bytes)>> = vec![Vec::new(); contexts];
        let mut at = 0;
        while at < bytes.len() {
            let nl = memchr::memchr(b'\n', &bytes[at..]).unwrap() + at;
            let header = std::str::from_utf8(&bytes[at..nl]).unwrap();
            let mut parts = header.split(' ').map(|p| p.parse::<u128>().unwrap());
            let (c, micros, len) = (
                parts.next().unwrap() as usize,
                parts.next().unwrap(),
                parts.next().unwrap() as usize,
            );
            schedule[c].push((
                Duration::from_micros(micros as u64),
                bytes::Bytes::copy_from_slice(&bytes[nl + 1..nl + 1 + len]),
            ));
            at = nl + 1 + len;
        }
        let senders: Vec<tokio::sync::broadcast::Sender<bytes::Bytes>> = (0..contexts)
            .map(|_| tokio::sync::broadcast::channel(1 << 16).0)
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("port {}", listener.local_addr().unwrap().port());
        let groups = senders.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let groups = groups.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut first = String::new();
                    if TokioBufReader::new(read)
                        .read_line(&mut first)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let Some(group) = first
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .and_then(|g| groups.get(g))
                    else {
                        return;
                    };
                    let mut rx = group.subscribe();
                    let mut buf = Vec::new();
                    while let Ok(line) = rx.recv().await {
                        buf.clear();
                        buf.extend_from_slice(&line);
                        while let Ok(more) = rx.try_recv() {
                            buf.extend_from_slice(&more);
                        }
                        if write.write_all(&buf).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let mut start = String::new();
        TokioBufReader::new(tokio::io::stdin())
            .read_line(&mut start)
            .await
            .unwrap();
        let wall: u128 = start.trim().parse().unwrap();
        let now_wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let begin = Instant::now() + Duration::from_micros(wall.saturating_sub(now_wall) as u64);
        // One schedule, sent from a plain thread: tokio's timer is only millisecond-exact.
        let mut all: Vec<(Duration, usize, bytes::Bytes)> = schedule
            .into_iter()
            .enumerate()
            .flat_map(|(c, lines)| lines.into_iter().map(move |(at, line)| (at, c, line)))
            .collect();
        all.sort_by_key(|(at, _, _)| *at);
        let sender = std::thread::spawn(move || {
            for (at, c, line) in all {
                if let Some(wait) = (begin + at).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let _ = senders[c].send(line);
            }
        });
        while !sender.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
}

fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

fn print_row(who: &str, r: &Row) {
    println!(
        "    {who:<9} {:>10.0} {:>9} {:>9} {:>9} {:>9.1} KiB {:>6.0}%   ({} lag samples, {} slow consumers dropped)",
        r.events_per_s,
        ms(r.lag_us[0]),
        ms(r.lag_us[1]),
        ms(r.lag_us[2]),
        r.rss_per_session,
        r.cpu_share * 100.0,
        r.lag_samples,
        r.slow_consumers
    );
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("relay") {
        return relay(&args[2], args[3].parse().unwrap());
    }
    let opts = options();
    let modes = [
        opts.burst.map(|n| burst::run(&opts, n)),
        opts.write_delay.as_ref().map(|w| window::run(&opts, w)),
        opts.idle.map(|n| idle::run(&opts, n)),
        opts.cluster
            .as_ref()
            .map(|parts| cluster::run(&opts, parts)),
    ];
    if modes.iter().all(Option::is_none) {
        fan_out(&opts);
    }
}

/// Runs `f` on a fresh single-threaded runtime, where the clients' tasks are local.
fn on_runtime<T>(f: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, f)
}

/// The default mode: ctid beside the bare relay, then call records on and off.
fn fan_out(opts: &Options) {
    println!(
        "fan-out: {} calls/s from the simulated PBX (~5 events per call after coalescing), {} s warm-up, {} s measured",
        opts.rate(),
        WARMUP.as_secs(),
        opts.seconds
    );
    println!(
        "    {:<9} {:>10} {:>9} {:>9} {:>9} {:>13} {:>7}",
        "server", "events/s", "lag p50", "p99", "p999", "RSS/session", "CPU"
    );
    let sessions = opts.sessions_or(&[1000, 10000]);
    for &n in &sessions {
        for &contexts in &opts.contexts {
            let (ctid, base) = on_runtime(async {
                let (ctid, recording, length) = run_ctid(n, contexts, opts, true).await;
                let base = run_baseline(n, contexts, &recording, length, opts).await;
                (ctid, base)
            });
            println!("  {n} sessions, {contexts} contexts:");
            print_row("ctid", &ctid);
            print_row("baseline", &base);
            println!(
                "    ctid / baseline: events/s {}, lag p50 {}, p99 {}, RSS/session {}, CPU {}",
                ratio(ctid.events_per_s, base.events_per_s),
                ratio(ctid.lag_us[0] as f64, base.lag_us[0] as f64),
                ratio(ctid.lag_us[1] as f64, base.lag_us[1] as f64),
                ratio(ctid.rss_per_session, base.rss_per_session),
                ratio(ctid.cpu_share, base.cpu_share)
            );
        }
    }
    records_section(opts, &sessions);
}

/// ctid with call records on and off, at the first (sessions, contexts) of the options.
fn records_section(opts: &Options, sessions: &[usize]) {
    let (Some(&n), Some(&contexts)) = (sessions.first(), opts.contexts.first()) else {
        return;
    };
    println!("call records: {n} sessions, {contexts} contexts, {} calls/s; hungup lag is from the PBX's hangup to the client", opts.rate());
    println!(
        "    {:<10} {:>10} {:>12} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "store", "records/s", "offered p50", "hungup p50", "p99", "p999", "events/s", "CPU"
    );
    let mut rows = Vec::new();
    for store in [false, true] {
        let (row, _, _) = on_runtime(run_ctid(n, contexts, opts, store));
        println!(
            "    {:<10} {:>10.1} {:>12} {:>10} {:>10} {:>10} {:>10.0} {:>6.0}%",
            if store { "on" } else { "off" },
            row.records_per_s,
            ms(row.lag_us[0]),
            ms(row.hungup_us[0]),
            ms(row.hungup_us[1]),
            ms(row.hungup_us[2]),
            row.events_per_s,
            row.cpu_share * 100.0
        );
        rows.push(row);
    }
    println!(
        "    on / off: hungup lag p50 {}, p99 {}, CPU {}",
        ratio(rows[1].hungup_us[0] as f64, rows[0].hungup_us[0] as f64),
        ratio(rows[1].hungup_us[1] as f64, rows[0].hungup_us[1] as f64),
        ratio(rows[1].cpu_share, rows[0].cpu_share)
    );
}
