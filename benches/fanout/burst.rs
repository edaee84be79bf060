//! Burst mode: N bridged calls of one context all hang up within 100 ms, with S sessions
//! in that context.
//!
//! The calls are bridged before ctid starts, so that it learns them from the resync at its
//! AMI login and their setup adds no batch to the lag it reports; `stats reset` then drops
//! the resync's batch, so that the figures describe the burst alone. A ctid without
//! `stats reset` reports the burst with the resync's batch in it: its lag is shown apart.

use super::*;

/// The hangups are spread evenly over this window.
const WINDOW: Duration = Duration::from_millis(100);
/// How long the clients may take to get every `hungup` before a run gives up.
const DEADLINE: Duration = Duration::from_secs(60);

/// What one burst measured.
#[derive(Clone, Copy, Default)]
struct Burst {
    /// ctid's own lag, AMI read to client queues.
    lag: EventLag,
    /// The lag of the batches before the burst (the resync), and how many there were.
    resync: f64,
    before: u64,
    /// The figures are of the burst alone (`stats reset` worked).
    alone: bool,
    /// Without `stats reset`, the largest lag was the resync's: the burst's p99 and max
    /// are at most that.
    bounded: bool,
    /// `hungup` as the clients read it, from the PBX's hangup: p50, p99, max (ms).
    hungup: [f64; 3],
    /// ctid's CPU seconds from the first hangup to the last `hungup` read.
    cpu: f64,
    /// `hungup` events that never arrived.
    missing: u64,
    slow: usize,
}

pub fn run(opts: &Options, calls: usize) {
    let rounds = opts.rounds.unwrap_or(5);
    let variants = opts.variants();
    for sessions in opts.sessions_or(&[200]) {
        println!(
            "burst: {calls} bridged calls of one context hang up within {} ms, {sessions} sessions in that context, {rounds} rounds; call records {}",
            WINDOW.as_millis(),
            if opts.store { "on" } else { "off" }
        );
        for (name, bin, _) in &variants {
            println!("    {name:<7} {}", bin.display());
        }
        println!(
            "    {:<5} {:<7} {:>35} {:>8} {:>8} | {:>26} | {:>6}",
            "round",
            "binary",
            "ctid lag p50     p99     max",
            "batches",
            "resync",
            "hungup p50     p99     max",
            "CPU s"
        );
        let mut rows: Vec<Vec<Burst>> = vec![Vec::new(); variants.len()];
        for round in 0..rounds {
            for k in 0..variants.len() {
                let i = (k + round) % variants.len();
                let (name, bin, sync) = &variants[i];
                let launch = Launch {
                    bin,
                    store: opts.store,
                    sync: sync.as_deref(),
                    info: true,
                    sessions: "",
                };
                let row = on_runtime(one(&launch, calls, sessions));
                print_row(&(round + 1).to_string(), name, &row);
                rows[i].push(row);
            }
        }
        let medians: Vec<Burst> = rows.iter().map(|r| median_burst(r)).collect();
        println!("  medians:");
        for ((name, _, _), m) in variants.iter().zip(&medians) {
            print_row("", name, m);
        }
        if medians.iter().any(|m| !m.alone) {
            println!("    +N: batches before the burst (the resync, its lag under \"resync\") are in the figures, as that ctid has no `stats reset`; <= marks a p99 and max that were the resync's, so the burst's are at most that");
        }
        if let [after, before] = medians.as_slice() {
            let at_least = if before.bounded { ">=" } else { "" };
            let names = format!("{} / {}", variants[0].0, variants[1].0);
            println!(
                "    {names}: ctid lag p50 {}, p99 {at_least}{}, max {at_least}{}; hungup p50 {}, p99 {}, max {}; CPU {}",
                ratio(after.lag.p50, before.lag.p50),
                ratio(after.lag.p99, before.lag.p99),
                ratio(after.lag.max, before.lag.max),
                ratio(after.hungup[0], before.hungup[0]),
                ratio(after.hungup[1], before.hungup[1]),
                ratio(after.hungup[2], before.hungup[2]),
                ratio(after.cpu, before.cpu)
            );
        }
    }
}

fn print_row(round: &str, name: &str, r: &Burst) {
    let problems = match (r.missing, r.slow) {
        (0, 0) => String::new(),
        (m, s) => format!("  ({m} hungup missing, {s} slow consumers dropped)"),
    };
    let le = if r.bounded { "<=" } else { "  " };
    let batches = match r.alone {
        true => r.lag.batches.to_string(),
        false => format!("{}+{}", r.lag.batches.saturating_sub(r.before), r.before),
    };
    println!(
        "    {round:<5} {name:<7} {:>10.2}ms {le}{:>5.2}ms {le}{:>5.2}ms {batches:>8} {:>6.2}ms | {:>8.2}ms {:>5.2}ms {:>5.2}ms | {:>6.2}{problems}",
        r.lag.p50,
        r.lag.p99,
        r.lag.max,
        r.resync,
        r.hungup[0],
        r.hungup[1],
        r.hungup[2],
        r.cpu,
    );
}

fn median_burst(rows: &[Burst]) -> Burst {
    let m = |f: &dyn Fn(&Burst) -> f64| median(rows.iter().map(f).collect());
    Burst {
        lag: EventLag {
            p50: m(&|r| r.lag.p50),
            p99: m(&|r| r.lag.p99),
            max: m(&|r| r.lag.max),
            batches: m(&|r| r.lag.batches as f64) as u64,
        },
        resync: m(&|r| r.resync),
        before: m(&|r| r.before as f64) as u64,
        alone: rows.iter().all(|r| r.alone),
        bounded: rows.iter().filter(|r| r.bounded).count() * 2 > rows.len(),
        hungup: [0, 1, 2].map(|i| m(&|r| r.hungup[i])),
        cpu: m(&|r| r.cpu),
        missing: rows.iter().map(|r| r.missing).sum(),
        slow: rows.iter().map(|r| r.slow).sum(),
    }
}

/// Calls ctid's partitions hold, from the console's `show_contexts`.
async fn calls_known(info: u16) -> usize {
    console(info, "show_contexts")
        .await
        .0
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" sessions, ")?;
            rest.split_whitespace().next()?.parse::<usize>().ok()
        })
        .sum()
}

async fn one(launch: &Launch<'_>, calls: usize, sessions: usize) -> Burst {
    let sim = Sim::start().await;
    let _placing = sim.on(|s| {
        s.run_calls(CallPlan {
            rate: 1000.0,
            ring: Duration::from_millis(100),
            talk: Duration::from_secs(3600),
            tenants: tenants(1),
            limit: Some(calls as u64),
            caller_up: false,
        })
    });
    let waited = Instant::now();
    while sim.get().calls() != (calls, calls) {
        assert!(
            waited.elapsed() < DEADLINE,
            "the simulator's calls never all answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.toml"), directory(1)).unwrap();
    let server = start_ctid(dir.path(), sim.port(), launch).await;
    let (pid, port, info) = (
        server.child.id(),
        server.port,
        server.info.expect("console"),
    );
    let waited = Instant::now();
    while calls_known(info).await != calls {
        assert!(waited.elapsed() < DEADLINE, "ctid never learnt the calls");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let streams = connect_all(sessions, |i| {
        login(port, format!("u{}", 100_000 + i % USERS_PER_CONTEXT))
    })
    .await;
    let tally = Tally::new(1, false);
    let sent_at = sim.sent_at();
    for s in streams {
        tokio::task::spawn_local(read_events(s, tally.clone(), sent_at.clone(), None));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = event_lag(info).await;
    console(info, "stats reset").await;
    // A ctid without `stats reset` answers it as `stats`.
    let alone = event_lag(info).await.batches == 0;
    tally.measuring.set(true);
    let cpu0 = cpu_seconds(pid);
    let ending = sim.on(|s| s.hang_up_all(WINDOW));
    let expected = (calls * sessions) as u64;
    let got = || tally.lag.borrow().get(1).map_or(0, |h| h.len());
    let waited = Instant::now();
    while got() < expected && waited.elapsed() < DEADLINE {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cpu = cpu_seconds(pid) - cpu0;
    tally.measuring.set(false);
    assert_eq!(
        ending.await.unwrap(),
        calls,
        "the simulator ended fewer calls"
    );
    let lag = event_lag(info).await;
    let hungup = tally.lag.borrow().get(1).map_or([0.0; 3], |h| {
        [0.5, 0.99, 1.0].map(|q| h.value_at_quantile(q) as f64 / 1000.0)
    });
    Burst {
        lag,
        resync: before.max,
        before: before.batches,
        alone,
        bounded: !alone && lag.max <= before.max,
        hungup,
        cpu,
        missing: expected.saturating_sub(got()),
        slow: server.slow.load(std::sync::atomic::Ordering::Relaxed),
    }
}
