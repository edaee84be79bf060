//! Write-window mode: for each `sessions.write_delay`, S sessions in one context at a
//! steady call rate; deliveries per CPU-second of ctid and the lag of `offered` as the
//! clients see it (so the window's own wait is in it), against the first window given.

use super::*;

/// What one run at one window measured.
#[derive(Clone, Copy, Default)]
struct Sample {
    deliveries_per_s: f64,
    cpu_share: f64,
    /// `offered` from the PBX to the client: p50 and p99, in ms.
    lag: [f64; 2],
    slow: usize,
}

impl Sample {
    fn per_cpu_second(&self) -> f64 {
        if self.cpu_share > 0.0 {
            self.deliveries_per_s / self.cpu_share
        } else {
            0.0
        }
    }
}

/// Calls per second by default: 2,000 sessions then get 100,000 events/s, as many as the
/// bench's one reading thread keeps up with here, so the lag is ctid's rather than its own.
const RATE: f64 = 10.0;

pub fn run(opts: &Options, windows: &[f64]) {
    let rounds = opts.rounds.unwrap_or(3);
    let rate = opts.rate.unwrap_or(RATE);
    for sessions in opts.sessions_or(&[2000]) {
        println!(
            "write window: {sessions} sessions in one context, {} calls/s, {} s warm-up, {} s measured, {rounds} rounds, call records {}; lag is from the PBX to the client",
            rate,
            WARMUP.as_secs(),
            opts.seconds,
            if opts.store { "on" } else { "off" }
        );
        println!(
            "    {:<5} {:>8} {:>13} {:>6} {:>13} {:>9} {:>9}",
            "round", "window", "deliveries/s", "CPU", "per CPU-s", "lag p50", "p99"
        );
        let mut rows: Vec<Vec<Sample>> = vec![Vec::new(); windows.len()];
        for round in 0..rounds {
            for k in 0..windows.len() {
                let i = (k + round) % windows.len();
                let row = on_runtime(one(opts, rate, sessions, windows[i]));
                print_row(&(round + 1).to_string(), windows[i], &row);
                rows[i].push(row);
            }
        }
        println!("  medians:");
        let medians: Vec<Sample> = rows
            .iter()
            .map(|r| {
                let m = |f: &dyn Fn(&Sample) -> f64| median(r.iter().map(f).collect());
                Sample {
                    deliveries_per_s: m(&|s| s.deliveries_per_s),
                    cpu_share: m(&|s| s.cpu_share),
                    lag: [m(&|s| s.lag[0]), m(&|s| s.lag[1])],
                    slow: r.iter().map(|s| s.slow).sum(),
                }
            })
            .collect();
        for (w, m) in windows.iter().zip(&medians) {
            print_row("", *w, m);
        }
        let Some(first) = medians.first() else {
            continue;
        };
        for (w, m) in windows.iter().zip(&medians).skip(1) {
            println!(
                "    {} / {}: deliveries per CPU-second {}, lag p50 {}, p99 {}",
                shown(*w),
                shown(windows[0]),
                ratio(m.per_cpu_second(), first.per_cpu_second()),
                ratio(m.lag[0], first.lag[0]),
                ratio(m.lag[1], first.lag[1])
            );
        }
    }
}

fn shown(window: f64) -> String {
    format!("{}ms", window * 1000.0)
}

fn print_row(round: &str, window: f64, s: &Sample) {
    let slow = match s.slow {
        0 => String::new(),
        n => format!("  ({n} slow consumers dropped)"),
    };
    println!(
        "    {round:<5} {:>8} {:>13.0} {:>5.0}% {:>13.0} {:>7.2}ms {:>7.2}ms{slow}",
        shown(window),
        s.deliveries_per_s,
        s.cpu_share * 100.0,
        s.per_cpu_second(),
        s.lag[0],
        s.lag[1],
    );
}

async fn one(opts: &Options, rate: f64, sessions: usize, window: f64) -> Sample {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.toml"), directory(1)).unwrap();
    let extra = format!("write_delay = {window}");
    let launch = Launch {
        sessions: &extra,
        ..Launch::this(opts.store)
    };
    let server = start_ctid(dir.path(), sim.port(), &launch).await;
    let (pid, port) = (server.child.id(), server.port);
    let streams = connect_all(sessions, |i| {
        login(port, format!("u{}", 100_000 + i % USERS_PER_CONTEXT))
    })
    .await;
    let tally = Tally::new(1, false);
    let sent_at = sim.sent_at();
    for s in streams {
        tokio::task::spawn_local(read_events(s, tally.clone(), sent_at.clone(), None));
    }
    let _calls = sim.on(|s| {
        s.run_calls(CallPlan {
            rate,
            ring: Duration::from_millis(500),
            talk: Duration::from_secs(2),
            tenants: tenants(1),
            limit: None,
            caller_up: false,
        })
    });
    tokio::time::sleep(WARMUP).await;
    let row = measure(&tally, pid, opts.seconds).await;
    Sample {
        deliveries_per_s: row.events_per_s,
        cpu_share: row.cpu_share,
        lag: [row.lag_us[0] as f64 / 1000.0, row.lag_us[1] as f64 / 1000.0],
        slow: server.slow.load(std::sync::atomic::Ordering::Relaxed),
    }
}
