//! Cluster mode (`--cluster throughput,takeover,edge`), against NATS with JetStream on
//! 127.0.0.1:4222 (scripts/test starts it), each run in a namespace of its own:
//!
//! - `throughput`: S sessions (`--sessions`, default 300) over C contexts (first of
//!   `--contexts`) at `--rate` calls/s (default 20), on one plain node, then on three nodes
//!   (a: ingest and edge, b: the same, standing by; c: edge), the sessions spread over the
//!   three edges; rounds interleaved (`--rounds`, default 2). Delivered events/s and the lag
//!   of `offered` (the PBX writing the call's first events to the client reading it), CPU
//!   of all nodes; medians, cluster/single.
//! - `takeover`: two ingest nodes; the active one is killed (SIGKILL) `--kills` times
//!   (default 10) while calls run, and started again as the standby. Time from the kill
//!   to the standby holding the lease, and to its first resync; median and max.
//! - `edge`: `--desktops` desktops (default 2,000) logged in to edge b, calls running; b is
//!   killed, and every desktop resumes with its token on edge a or c (alternately). Time
//!   until every desktop has resumed, per-desktop resume time, and whether the first event
//!   after each resume follows its last `seq`.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::*;

const NATS: &str = "127.0.0.1:4222";
const LEASED: &str = "lease for PBX default acquired by";
const RESYNCED: &str = "resynced with Asterisk";
const LOGGED_IN: &str = "logged in as 'cti'";
const CAUGHT_UP: &str = "caught up with its stream";

/// Lines ctid logs that the cluster modes wait for.
const WATCH: [&str; 4] = [LEASED, RESYNCED, LOGGED_IN, CAUGHT_UP];

struct Node {
    name: String,
    child: Child,
    port: u16,
    /// Watched lines, with when they were read.
    seen: mpsc::UnboundedReceiver<(String, Instant)>,
}

impl Node {
    /// Starts a node on `config` (without its listeners, added here) in `dir`; returns once
    /// it logged each of `ready`, in any order.
    async fn start(dir: &Path, name: &str, config: &str, ready: &[&str]) -> Node {
        let mut config = format!(
            "{config}[directory]\npath = \"{}\"\n\
             [sessions]\nmax_unauthenticated = 100000\nmax_unauthenticated_per_address = 100000\n\
             [store]\nenabled = false\n[listen.cti]\naddress = \"127.0.0.1\"\nport = 0\n",
            dir.join("directory.toml").display()
        );
        for l in ["fagi", "ctis", "webi", "info", "announce", "http"] {
            config.push_str(&format!("[listen.{l}]\nenabled = false\n"));
        }
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ctid"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn,ctid_actors=info,ctid=info")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctid");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, seen) = mpsc::unbounded_channel();
        let (port_tx, mut port_rx) = mpsc::unbounded_channel();
        let who = name.to_owned();
        std::thread::spawn(move || {
            const CTI: &str = "cti: listening on 127.0.0.1:";
            for l in stderr.lines().map_while(Result::ok) {
                if let Some(at) = l.find(CTI) {
                    let _ = port_tx.send(l[at + CTI.len()..].trim().parse::<u16>().unwrap_or(0));
                } else if let Some(at) = WATCH.iter().find_map(|w| l.find(*w)) {
                    let _ = tx.send((l[at..].to_owned(), Instant::now()));
                } else if l.contains("WARN") || l.contains("ERROR") {
                    eprintln!("  {who}: {l}");
                }
            }
        });
        let port = tokio::time::timeout(Duration::from_secs(30), port_rx.recv())
            .await
            .ok()
            .flatten()
            .expect("the node did not listen");
        let mut node = Node {
            name: name.to_owned(),
            child,
            port,
            seen,
        };
        let mut left: Vec<&str> = ready.to_vec();
        while !left.is_empty() {
            match tokio::time::timeout(Duration::from_secs(60), node.seen.recv()).await {
                Ok(Some((line, _))) => left.retain(|w| !line.starts_with(w)),
                _ => panic!("node {name} never logged {left:?}"),
            }
        }
        node
    }

    /// When the node next logs a line starting with watched `needle` (and containing `and`).
    async fn wait_for(&mut self, needle: &str, and: &str) -> Instant {
        let deadline = Duration::from_secs(60);
        loop {
            match tokio::time::timeout(deadline, self.seen.recv()).await {
                Ok(Some((line, at))) if line.starts_with(needle) && line.contains(and) => {
                    return at
                }
                Ok(Some(_)) => {}
                _ => panic!("node {} never logged {needle:?} {and:?}", self.name),
            }
        }
    }

    async fn wait(&mut self, needle: &str) -> Instant {
        self.wait_for(needle, "").await
    }

    fn kill9(&mut self) -> Instant {
        let at = Instant::now();
        let _ = self.child.kill();
        let _ = self.child.wait();
        at
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A namespace of this run's own.
fn namespace() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("bench{}x{nanos}", std::process::id())
}

/// The settings of node `name` of namespace `ns` (or of a plain node, without `ns`).
fn node_config(ami_port: u16, ns: Option<&str>, name: &str, roles: &[&str]) -> String {
    let mut s = format!(
        "[ami]\nport = {ami_port}\nusername = \"cti\"\nsecret = \"ctipass\"\nping_interval = 0\n"
    );
    if let Some(ns) = ns {
        let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
        s.push_str(&format!(
            "[cluster]\nenabled = true\nnode = \"{name}\"\nnamespace = \"{ns}\"\n\
             nats_url = \"nats://{NATS}\"\nroles = [{}]\n",
            roles.join(", ")
        ));
    }
    s
}

/// Deletes what namespace `ns` left on NATS.
async fn clean(ns: &str) {
    let Ok(client) = async_nats::connect(NATS).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let mut names = js.stream_names();
    let mut ours = Vec::new();
    while let Some(Ok(name)) = names.next().await {
        if name.starts_with(&format!("{ns}_")) || name.starts_with(&format!("KV_{ns}_")) {
            ours.push(name);
        }
    }
    for name in ours {
        let _ = js.delete_stream(&name).await;
    }
}

fn require_nats() {
    if std::net::TcpStream::connect(NATS).is_err() {
        eprintln!("NATS is not answering on {NATS}: start it (scripts/test does) and run again");
        std::process::exit(1);
    }
}

pub fn run(opts: &Options, parts: &[String]) {
    require_nats();
    for part in parts {
        match part.as_str() {
            "throughput" => throughput(opts),
            "takeover" => takeover(opts),
            "edge" => edge_loss(opts),
            other => eprintln!("--cluster: unknown part {other:?} (throughput, takeover, edge)"),
        }
    }
}

/// The user of session `i` over `contexts` contexts.
fn user(i: usize, contexts: usize) -> String {
    format!(
        "u{}",
        100_000 + (i % contexts) * 100 + (i / contexts) % USERS_PER_CONTEXT
    )
}

fn throughput(opts: &Options) {
    let n = opts.sessions_or(&[300])[0];
    let contexts = opts.contexts[0];
    let rate = opts.rate.unwrap_or(20.0);
    println!(
        "cluster throughput: {n} sessions, {contexts} contexts, {rate} calls/s, {} s measured",
        opts.seconds
    );
    let mut rows: BTreeMap<&str, Vec<Row>> = BTreeMap::new();
    for _ in 0..opts.rounds.unwrap_or(2) {
        for cluster in [false, true] {
            let row = on_runtime(spread(n, contexts, rate, opts.seconds, cluster));
            rows.entry(if cluster { "3 nodes" } else { "1 node" })
                .or_default()
                .push(row);
        }
    }
    println!(
        "    {:<9} {:>10} {:>9} {:>9} {:>7}",
        "", "events/s", "lag p50", "p99", "CPU"
    );
    let med = |rows: &[Row], f: fn(&Row) -> f64| median(rows.iter().map(f).collect());
    let mut summary = Vec::new();
    for (who, rows) in &rows {
        let line = [
            med(rows, |r| r.events_per_s),
            med(rows, |r| r.lag_us[0] as f64),
            med(rows, |r| r.lag_us[1] as f64),
            med(rows, |r| r.cpu_share),
        ];
        println!(
            "    {who:<9} {:>10.0} {:>9} {:>9} {:>6.0}%",
            line[0],
            ms(line[1] as u64),
            ms(line[2] as u64),
            line[3] * 100.0
        );
        summary.push(line);
    }
    if let [single, cluster] = summary.as_slice() {
        println!(
            "    3 nodes / 1 node: events/s {}, lag p50 {}, p99 {}, CPU {}",
            ratio(cluster[0], single[0]),
            ratio(cluster[1], single[1]),
            ratio(cluster[2], single[2]),
            ratio(cluster[3], single[3])
        );
    }
}

/// One throughput run: one plain node, or three cluster nodes.
async fn spread(n: usize, contexts: usize, rate: f64, seconds: u64, cluster: bool) -> Row {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.toml"), directory(contexts)).unwrap();
    let ns = namespace();
    let nodes = if cluster {
        let a = Node::start(
            dir.path(),
            "a",
            &node_config(sim.port(), Some(&ns), "a", &["ingest", "edge"]),
            &[CAUGHT_UP, LOGGED_IN],
        )
        .await;
        let mut nodes = vec![a];
        for (name, roles) in [("b", &["ingest", "edge"][..]), ("c", &["edge"][..])] {
            let config = node_config(sim.port(), Some(&ns), name, roles);
            nodes.push(Node::start(dir.path(), name, &config, &[CAUGHT_UP]).await);
        }
        nodes
    } else {
        let config = node_config(sim.port(), None, "one", &[]);
        vec![Node::start(dir.path(), "one", &config, &[LOGGED_IN]).await]
    };
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let streams = connect_all(n, |i| login(ports[i % ports.len()], user(i, contexts))).await;
    let tally = Tally::new(contexts, false);
    let calls = sim.on(|s| {
        s.run_calls(CallPlan {
            rate,
            ring: Duration::from_millis(500),
            talk: Duration::from_secs(2),
            tenants: tenants(contexts),
            limit: None,
            caller_up: false,
        })
    });
    let sent_at = sim.sent_at();
    for s in streams {
        tokio::task::spawn_local(read_events(s, tally.clone(), sent_at.clone(), None));
    }
    tokio::time::sleep(WARMUP).await;
    let pids: Vec<u32> = nodes.iter().map(|n| n.child.id()).collect();
    let (cpu0, at) = (
        pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>(),
        Instant::now(),
    );
    let mut row = measure(&tally, pids[0], seconds).await;
    let cpu1: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    row.cpu_share = (cpu1 - cpu0) / at.elapsed().as_secs_f64();
    drop(calls);
    drop(nodes);
    if cluster {
        clean(&ns).await;
    }
    row
}

fn takeover(opts: &Options) {
    let kills = opts.kills;
    println!(
        "cluster takeover: the active ingest killed {kills} times while calls run (lease_ttl 3 s)"
    );
    let (leased, resynced) = on_runtime(async {
        let sim = Sim::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("directory.toml"), directory(1)).unwrap();
        let ns = namespace();
        let config = |name: &str| node_config(sim.port(), Some(&ns), name, &["ingest", "edge"]);
        let a = Node::start(
            dir.path(),
            "a",
            &config("a"),
            &[CAUGHT_UP, LEASED, RESYNCED],
        )
        .await;
        let b = Node::start(dir.path(), "b", &config("b"), &[CAUGHT_UP]).await;
        let _calls = sim.on(|s| {
            s.run_calls(CallPlan {
                rate: 5.0,
                ring: Duration::from_millis(500),
                talk: Duration::from_secs(3),
                tenants: tenants(1),
                limit: None,
                caller_up: false,
            })
        });
        let mut nodes = [a, b];
        let (mut leased, mut resynced) = (Vec::new(), Vec::new());
        for k in 0..kills {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (active, standby) = (k % 2, (k + 1) % 2);
            let name = nodes[standby].name.clone();
            let killed = nodes[active].kill9();
            let holds = nodes[standby].wait_for(LEASED, &format!(" {name} ")).await;
            let synced = nodes[standby].wait(RESYNCED).await;
            leased.push((holds - killed).as_secs_f64());
            resynced.push((synced - killed).as_secs_f64());
            let again = nodes[active].name.clone();
            nodes[active] = Node::start(dir.path(), &again, &config(&again), &[CAUGHT_UP]).await;
        }
        drop(nodes);
        clean(&ns).await;
        (leased, resynced)
    });
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!(
        "    lease held by the standby: median {:.2} s, max {:.2} s",
        median(leased.clone()),
        max(&leased)
    );
    println!(
        "    standby resynced:          median {:.2} s, max {:.2} s",
        median(resynced.clone()),
        max(&resynced)
    );
}

/// A desktop: its connection's reader, its token, the last `seq` it read.
struct Desktop {
    token: String,
    last: Rc<Cell<u64>>,
}

/// Logs `user` in on `port`; returns the stream after `login_capas`, its token and `seq`.
async fn login_desktop(port: u16, user: String) -> std::io::Result<(TcpStream, String, u64)> {
    let mut s = connect(None, port).await?;
    let first = format!(
        "{{\"class\":\"login_id\",\"userlogin\":\"{user}\"}}\n{{\"class\":\"login_pass\",\"password\":\"pw\"}}\n"
    );
    s.write_all(first.as_bytes()).await?;
    let mut lines = TokioBufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.contains("capalist") {
            break;
        }
    }
    lines
        .get_mut()
        .write_all(b"{\"class\":\"login_capas\",\"capaid\":1}\n")
        .await?;
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.contains("\"login_capas\"") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let token = v["resume_token"].as_str().unwrap_or_default().to_owned();
            let seq = v["seq"].as_u64().unwrap_or(0);
            return Ok((lines.into_inner(), token, seq));
        }
    }
}

/// Reads a desktop's lines until its connection ends, noting each event's `seq`.
async fn follow(read: TcpStream, last: Rc<Cell<u64>>) {
    let mut lines = TokioBufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(seq) = seq_of(&line) {
            last.set(seq);
        }
    }
}

fn seq_of(line: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(line, b"\"seq\":")? + 6;
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// How one desktop's resume went.
#[derive(Default)]
struct Resumed {
    after: Duration,
    busy: u32,
    /// The first event after the resume followed the desktop's last `seq`.
    contiguous: Option<bool>,
    failed: bool,
}

/// Resumes a desktop on `port` (again on `busy`); then reads one event.
async fn resume(port: u16, desktop: Desktop, killed: Instant) -> Resumed {
    let mut out = Resumed::default();
    let last = desktop.last.get();
    loop {
        let Ok(mut s) = connect(None, port).await else {
            out.failed = true;
            return out;
        };
        let ask = format!(
            "{{\"class\":\"resume\",\"token\":\"{}\",\"last_seq\":{last}}}\n",
            desktop.token
        );
        if s.write_all(ask.as_bytes()).await.is_err() {
            out.failed = true;
            return out;
        }
        let mut lines = TokioBufReader::new(s);
        let mut line = String::new();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            out.failed = true;
            return out;
        }
        if line.contains("\"busy\"") {
            out.busy += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if !line.contains("\"status\":\"ok\"") {
            out.failed = true;
            return out;
        }
        out.after = killed.elapsed();
        line.clear();
        let next = tokio::time::timeout(Duration::from_secs(3), lines.read_line(&mut line)).await;
        if let Ok(Ok(n)) = next {
            if n > 0 {
                out.contiguous = seq_of(line.as_bytes()).map(|s| s == last + 1);
            }
        }
        return out;
    }
}

fn edge_loss(opts: &Options) {
    let n = opts.desktops;
    println!("cluster edge loss: {n} desktops on edge b, which is killed; they resume on a and c");
    let outcomes = on_runtime(async {
        let sim = Sim::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("directory.toml"), directory(10)).unwrap();
        let ns = namespace();
        let config = |name: &str, roles: &[&str]| node_config(sim.port(), Some(&ns), name, roles);
        let a = Node::start(
            dir.path(),
            "a",
            &config("a", &["ingest", "edge"]),
            &[CAUGHT_UP, LOGGED_IN],
        )
        .await;
        let mut b = Node::start(dir.path(), "b", &config("b", &["edge"]), &[CAUGHT_UP]).await;
        let c = Node::start(dir.path(), "c", &config("c", &["edge"]), &[CAUGHT_UP]).await;
        let logged = Instant::now();
        let port_b = b.port;
        let desktops: Vec<(TcpStream, String, u64)> =
            futures_util::stream::iter((0..n).map(|i| login_desktop(port_b, user(i, 10))))
                .buffered(64)
                .map(|d| d.expect("a desktop could not log in"))
                .collect()
                .await;
        println!(
            "    {n} logins on b in {:.1} s",
            logged.elapsed().as_secs_f64()
        );
        let _calls = sim.on(|s| {
            s.run_calls(CallPlan {
                rate: 10.0,
                ring: Duration::from_millis(500),
                talk: Duration::from_secs(2),
                tenants: tenants(10),
                limit: None,
                caller_up: false,
            })
        });
        let desktops: Vec<Desktop> = desktops
            .into_iter()
            .map(|(s, token, seq)| {
                let last = Rc::new(Cell::new(seq));
                tokio::task::spawn_local(follow(s, last.clone()));
                Desktop { token, last }
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let killed = b.kill9();
        let ports = [a.port, c.port];
        let resumes: Vec<_> = desktops
            .into_iter()
            .enumerate()
            .map(|(i, d)| tokio::task::spawn_local(resume(ports[i % 2], d, killed)))
            .collect();
        let mut outcomes = Vec::with_capacity(resumes.len());
        for r in resumes {
            outcomes.push(r.await.unwrap_or_default());
        }
        drop((a, c));
        clean(&ns).await;
        outcomes
    });
    let done: Vec<f64> = outcomes
        .iter()
        .filter(|o| !o.failed)
        .map(|o| o.after.as_secs_f64())
        .collect();
    let all = done.iter().cloned().fold(0.0, f64::max);
    let mut sorted = done.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p99 = sorted.get(sorted.len() * 99 / 100).copied().unwrap_or(0.0);
    let gaps = outcomes
        .iter()
        .filter(|o| o.contiguous == Some(false))
        .count();
    let checked = outcomes.iter().filter(|o| o.contiguous.is_some()).count();
    println!(
        "    resumed {} of {}: all within {all:.2} s of the kill; per desktop median {:.2} s, p99 {p99:.2} s",
        done.len(),
        outcomes.len(),
        median(done.clone())
    );
    println!(
        "    {} busy answers retried; first event after the resume: {checked} checked, {gaps} not next in seq",
        outcomes.iter().map(|o| o.busy).sum::<u32>()
    );
}
