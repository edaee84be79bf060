//! Idle-scale mode: N logged-in sessions that receive nothing; ctid's RSS per session and
//! its logins per second.
//!
//! Clients connect from 127.0.0.2 to 127.0.0.9 (bound before connecting), so that no one
//! source address runs out of ephemeral ports. Each session holds a descriptor here and
//! one in ctid, and both processes live under the same open-files limit: N is capped to it.
//! ctid runs with `sessions.max_unauthenticated` raised (see `start_ctid`), though at most
//! `AT_ONCE` logins are ever under way; the login throttle only slows failed logins, and
//! none fail.

use super::*;

const SOURCES: usize = 8;
/// Descriptors each process keeps for other things than sessions.
const RESERVED_FDS: usize = 200;
/// Logins (half with each hash) made before the baseline RSS: the first checks of each
/// hash leave the allocator holding their memory.
const WARM: usize = 64;
/// Cheap logins under way at once. ctid's CTI listener has a backlog of 128 (the standard
/// library's): more connections at once overflow it, and the dropped ones wait a second
/// for their SYN to be sent again, which this figure is not about.
const AT_ONCE: usize = 100;

#[derive(Clone, Copy, Default)]
struct Idle {
    /// KiB, after the warm-up logins and after every login.
    rss: [u64; 2],
    per_session_kib: f64,
    /// Logins per second with the default-strength hash, and with the cheap one.
    logins_per_s: [f64; 2],
}

/// The soft limit on open files of this process (ctid inherits it).
fn open_files() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(1024)
}

/// Users of `directory(contexts)`, plus as many whose password has the default-strength
/// hash: logins `r<number>`, numbers 50 above the others'.
fn directory_with_real_hashes(contexts: usize) -> String {
    let mut d = directory(contexts);
    for c in 0..contexts {
        for u in 0..USERS_PER_CONTEXT {
            let number = 100_000 + c * 100 + 50 + u;
            d.push_str(&format!(
                "[[users]]\nid = {number}\nlogin = \"r{number}\"\npassword = \"{REAL_HASH}\"\n\
                 line = {{ interface = \"PJSIP/{number}\", number = \"{number}\", context = \"ctx{c}\", dialplan = \"dp{c}\" }}\n"
            ));
        }
    }
    d
}

pub fn run(opts: &Options, requested: usize) {
    let rounds = opts.rounds.unwrap_or(1);
    let limit = open_files();
    let n = requested.min(limit.saturating_sub(RESERVED_FDS)).max(WARM);
    let real = opts.idle_real.min(n - WARM);
    let contexts = opts.contexts.first().copied().unwrap_or(10);
    println!(
        "idle: {n} logged-in idle sessions over {contexts} contexts (asked {requested}; open files limit {limit}), {rounds} rounds"
    );
    println!(
        "    logins: {WARM} warm-up, then {real} with argon2id m=19456,t=2,p=1 (32 at once), then {} with m=256,t=1,p=1 ({AT_ONCE} at once)",
        n - WARM - real
    );
    println!(
        "    {:<5} {:<7} {:>11} {:>11} {:>12} {:>15} {:>15}",
        "round", "binary", "RSS before", "after", "per session", "logins/s real", "cheap"
    );
    let binaries = opts.binaries();
    let mut rows: Vec<Vec<Idle>> = vec![Vec::new(); binaries.len()];
    for round in 0..rounds {
        for k in 0..binaries.len() {
            let i = (k + round) % binaries.len();
            let (name, bin) = &binaries[i];
            let row = on_runtime(one(bin, n, real, contexts));
            print_row(&(round + 1).to_string(), name, &row);
            rows[i].push(row);
        }
    }
    println!("  medians:");
    let medians: Vec<Idle> = rows
        .iter()
        .map(|r| {
            let m = |f: &dyn Fn(&Idle) -> f64| median(r.iter().map(f).collect());
            Idle {
                rss: [
                    m(&|s| s.rss[0] as f64) as u64,
                    m(&|s| s.rss[1] as f64) as u64,
                ],
                per_session_kib: m(&|s| s.per_session_kib),
                logins_per_s: [m(&|s| s.logins_per_s[0]), m(&|s| s.logins_per_s[1])],
            }
        })
        .collect();
    for ((name, _), m) in binaries.iter().zip(&medians) {
        print_row("", name, m);
    }
    if let [after, before] = medians.as_slice() {
        println!(
            "    after / before: RSS per session {}, logins/s real {}, cheap {}",
            ratio(after.per_session_kib, before.per_session_kib),
            ratio(after.logins_per_s[0], before.logins_per_s[0]),
            ratio(after.logins_per_s[1], before.logins_per_s[1])
        );
    }
}

fn print_row(round: &str, name: &str, r: &Idle) {
    println!(
        "    {round:<5} {name:<7} {:>7} KiB {:>7} KiB {:>8.1} KiB {:>15.1} {:>15.0}",
        r.rss[0], r.rss[1], r.per_session_kib, r.logins_per_s[0], r.logins_per_s[1]
    );
}

async fn one(bin: &Path, n: usize, real: usize, contexts: usize) -> Idle {
    let sim = Sim::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("directory.toml"),
        directory_with_real_hashes(contexts),
    )
    .unwrap();
    let launch = Launch {
        bin,
        ..Launch::this(true)
    };
    let server = start_ctid(dir.path(), sim.port(), &launch).await;
    let (pid, port) = (server.child.id(), server.port);
    let source = |i: usize| {
        Some(IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % SOURCES) as u8,
        )))
    };
    let user = move |i: usize, real: bool| {
        let k = i % (contexts * USERS_PER_CONTEXT);
        let number = 100_000 + (k / USERS_PER_CONTEXT) * 100 + k % USERS_PER_CONTEXT;
        match real {
            true => format!("r{}", number + 50),
            false => format!("u{number}"),
        }
    };
    let mut held = connect_some(0..WARM, 16, |i| {
        login_from(source(i), port, user(i, i % 2 == 0))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = rss_kib(pid);
    let began = Instant::now();
    held.extend(
        connect_some(WARM..WARM + real, 32, |i| {
            login_from(source(i), port, user(i, true))
        })
        .await,
    );
    let real_rate = real as f64 / began.elapsed().as_secs_f64();
    let began = Instant::now();
    held.extend(
        connect_some(WARM + real..n, AT_ONCE, |i| {
            login_from(source(i), port, user(i, false))
        })
        .await,
    );
    let cheap_rate = (n - WARM - real) as f64 / began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = rss_kib(pid);
    assert_eq!(held.len(), n);
    Idle {
        rss: [rss0, rss1],
        per_session_kib: rss1.saturating_sub(rss0) as f64 / (n - WARM) as f64,
        logins_per_s: [real_rate, cheap_rate],
    }
}
