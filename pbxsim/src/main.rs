//! `ctid-pbxsim`: run the simulated Asterisk on its own, for demos and load tests.
//! Commands on standard input: `drop`, `mute`, `unmute`, `replay FILE`, `hangup_all [MS]`,
//! `status`, `quit`. With `--queue` and `--queue-rate`, outside callers wait in queues
//! for their members.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ctid_pbxsim::calls::{CallPlan, Tenant};
use ctid_pbxsim::queue::{QueuePlan, QueueSpec};
use ctid_pbxsim::{recorded_events, PbxSim, SimConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A simulated Asterisk AMI server for ctid's tests, benchmarks and demos"
)]
struct Args {
    /// Address to listen on for AMI clients.
    #[arg(long, default_value = "127.0.0.1:5038")]
    listen: SocketAddr,
    /// The AMI user clients must log in as.
    #[arg(long, default_value = "cti")]
    username: String,
    /// The AMI user's secret.
    #[arg(long, default_value = "ctipass")]
    secret: String,
    /// Recorded AMI streams (fixtures/ami/*.txt) replayed to each client after its login.
    #[arg(long)]
    replay: Vec<PathBuf>,
    /// Synthetic calls started per second (0: none).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds a synthetic callee rings before answering.
    #[arg(long, default_value_t = 1.0)]
    ring: f64,
    /// Seconds a synthetic call lasts once answered.
    #[arg(long, default_value_t = 5.0)]
    talk: f64,
    /// Phones calling each other: CONTEXT:FIRST-LAST (repeatable).
    #[arg(long, value_parser = Tenant::parse, default_value = "internal:1001-1010")]
    tenant: Vec<Tenant>,
    /// Stop after this many synthetic calls.
    #[arg(long)]
    calls: Option<u64>,
    /// Callers' channels answer before they dial (as in click-to-dial).
    #[arg(long)]
    caller_up: bool,
    /// Codecs of the calls (repeatable): phones have the first, callers each in turn; a
    /// caller on another codec is transcoded. Default: ulaw, alaw, g722, opus.
    #[arg(long = "codec")]
    codecs: Vec<String>,
    /// Stamp events with `Timestamp`, as Asterisk's `timestampevents = yes`.
    #[arg(long)]
    timestamps: bool,
    /// Seconds the stamps lag behind the real time (with --timestamps).
    #[arg(long, default_value_t = 0.0)]
    clock_behind: f64,
    /// A queue outside callers enter, and its members: DIALPLAN:QUEUE:INTERFACE,...
    /// (e.g. internal:support:PJSIP/1001,PJSIP/1002; repeatable).
    #[arg(long = "queue", value_parser = QueueSpec::parse)]
    queues: Vec<QueueSpec>,
    /// Queue calls arriving per second, on average (0: none).
    #[arg(long, default_value_t = 0.0)]
    queue_rate: f64,
    /// Seconds a queue caller waits at most before hanging up (abandoning).
    #[arg(long, default_value_t = 60.0)]
    patience: f64,
}

fn seconds(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{what}: {s} is not a number of seconds"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = run(Args::parse()).await {
        log::error!("{e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut on_login = Vec::new();
    for path in &args.replay {
        let recording = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (events, count) = recorded_events(&recording);
        log::info!(
            "pbxsim: {count} events of {} replayed to each client",
            path.display()
        );
        on_login.push(events);
    }
    let defaults = SimConfig::default();
    let sim = PbxSim::start(SimConfig {
        listen: args.listen,
        username: args.username,
        secret: args.secret,
        on_login,
        codecs: match args.codecs.is_empty() {
            true => defaults.codecs.clone(),
            false => args.codecs,
        },
        timestamps: args.timestamps,
        clock_behind: seconds(args.clock_behind, "clock-behind")?,
        ..defaults
    })
    .await
    .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    log::info!("pbxsim: AMI on {}", sim.addr());
    let plan = CallPlan {
        rate: args.rate,
        ring: seconds(args.ring, "ring")?,
        talk: seconds(args.talk, "talk")?,
        tenants: args.tenant,
        limit: args.calls,
        caller_up: args.caller_up,
    };
    let _calls = (plan.rate > 0.0).then(|| sim.run_calls(plan));
    let talk = seconds(args.talk, "talk")?;
    let queued = QueuePlan {
        rate: args.queue_rate,
        queues: args.queues,
        ring: seconds(args.ring, "ring")?,
        talk: (talk / 2, talk * 2),
        patience: (Duration::ZERO, seconds(args.patience, "patience")?),
        limit: None,
    };
    let _queued = (queued.rate > 0.0).then(|| sim.run_queues(queued));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if !command(&sim, line.trim()) {
                        return Ok(());
                    }
                }
                // Standard input closed (e.g. run in the background): keep serving.
                _ => std::future::pending::<()>().await,
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Runs one stdin command; false means quit.
fn command(sim: &PbxSim, line: &str) -> bool {
    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
    match verb {
        "" => {}
        "drop" => sim.drop_connections(),
        "mute" => sim.set_muted(true),
        "unmute" => sim.set_muted(false),
        "status" => {
            let (calls, bridged) = sim.calls();
            println!(
                "connections {} logins {} actions {} calls {calls} ({bridged} answered)",
                sim.connections(),
                sim.logins().len(),
                sim.actions().len()
            )
        }
        "hangup_all" => {
            let ms = if arg.is_empty() {
                Some(0)
            } else {
                arg.parse::<u64>().ok()
            };
            match ms {
                Some(ms) => drop(sim.hang_up_all(Duration::from_millis(ms))),
                None => println!("hangup_all {arg:?}: expected milliseconds"),
            }
        }
        "replay" => match std::fs::read(arg) {
            Ok(bytes) => println!("replayed {} events", sim.replay(&bytes)),
            Err(e) => println!("{arg}: {e}"),
        },
        "quit" => return false,
        other => {
            println!("unknown command {other:?}: drop, mute, unmute, replay FILE, hangup_all [MS], status, quit")
        }
    }
    true
}
