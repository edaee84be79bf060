//! `ctid demo`: ctid against the built-in simulated PBX with the example directory, and two
//! desktops of different tenants printing the calls they see.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ctid_actors::settings::{Database, Settings};
use ctid_actors::supervisor::Shutdown;
use ctid_pbxsim::calls::{CallPlan, Tenant};
use ctid_pbxsim::{PbxSim, SimConfig};
use log::error;
use serde_json::Value;

use crate::client::Connection;
use crate::run::{prepare, start, Refusal, Server};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// The directory to run with (the example one has users alice..erin, passwords = logins).
    #[arg(long, default_value = "config/directory.toml")]
    pub directory: PathBuf,
    /// Port of the CTI listener, for your own `ctid client`.
    #[arg(long, default_value_t = 5003)]
    pub cti_port: u16,
    /// Simulated calls started per second.
    #[arg(long, default_value_t = 0.5)]
    pub rate: f64,
}

fn tenant(context: &str, first: u32, last: u32) -> Tenant {
    Tenant {
        context: context.into(),
        tech: "PJSIP".into(),
        first,
        last,
    }
}

/// The demo's call records: a file of its own, removed when it ends.
fn demo_store() -> PathBuf {
    std::env::temp_dir().join(format!("ctid-demo-{}.sqlite", std::process::id()))
}

fn settings(args: &DemoArgs, ami_port: u16) -> Settings {
    let mut s = Settings::default();
    let ami = &mut s.pbxes[0].ami;
    ami.port = ami_port;
    ami.username = "cti".into();
    ami.secret = ctid_actors::settings::Secret::new("ctipass");
    s.directory.path = args.directory.clone();
    s.store.database = Database::Sqlite(demo_store());
    s.listen.cti.address = [127, 0, 0, 1].into();
    s.listen.cti.port = args.cti_port;
    for l in [
        &mut s.listen.fagi,
        &mut s.listen.webi,
        &mut s.listen.info,
        &mut s.listen.announce,
        &mut s.listen.http.listener,
    ] {
        l.enabled = false;
    }
    s
}

/// `HH:MM:SS` (UTC) of an epoch time.
fn clock(t: f64) -> String {
    let s = t as u64 % 86400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn party(p: &Value) -> String {
    let number = p["number"].as_str().unwrap_or("?");
    match p["name"].as_str() {
        Some(name) => format!("{number} {name}"),
        None => number.to_owned(),
    }
}

/// Logs in as `user` and prints each call event it gets.
async fn desktop(port: u16, user: &'static str) {
    let mut conn = match Connection::connect("127.0.0.1", port, None).await {
        Ok(c) => c,
        Err(e) => return error!("demo desktop {user}: {e}"),
    };
    let context = match conn.login(user, user).await {
        Ok(capas) => capas["context"].as_str().unwrap_or("none").to_owned(),
        Err(e) => return error!("demo desktop {user}: {e}"),
    };
    println!("[{user:<5}] logged in, context {context}");
    while let Ok(Some(m)) = conn.recv().await {
        if m["class"] != "call_event" {
            continue;
        }
        let call = &m["call"];
        println!(
            "[{user:<5}] {} {:<15} {:<24} -> {:<24} call {} ({})",
            clock(m["timenow"].as_f64().unwrap_or(0.0)),
            m["event"].as_str().unwrap_or("?"),
            party(&call["caller"]),
            party(&call["callee"]),
            call["id"].as_str().unwrap_or("?"),
            call["contexts"][0].as_str().unwrap_or("-"),
        );
    }
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    let sim = PbxSim::start(SimConfig::default())
        .await
        .map_err(|e| format!("cannot start the simulated PBX: {e}"))?;
    let _calls = sim.run_calls(CallPlan {
        rate: args.rate,
        ring: Duration::from_millis(1500),
        talk: Duration::from_secs(4),
        tenants: vec![
            tenant("internal", 1001, 1003),
            tenant("tenant-b-internal", 2001, 2002),
        ],
        limit: None,
        caller_up: false,
    });
    let prepared = prepare(settings(&args, sim.addr().port()), &args.directory)
        .map_err(|Refusal(why, _)| why)?;
    let Server { root, workers, .. } = start(prepared).await?;
    println!(
        "ctid demo: a simulated Asterisk (AMI on {}) places calls between phones 1001-1003 of\n\
         tenant `default` and 2001-2002 of `tenant-b`. ctid serves CTI on 127.0.0.1:{}.\n\
         Two desktops are logged in, alice (default) and dave (tenant-b): each sees only its\n\
         own tenant's calls. Log in yourself with `ctid client --port {} --user bob` (password\n\
         bob). Ctrl-C stops.\n",
        sim.addr(),
        args.cti_port,
        args.cti_port
    );
    actix_rt::spawn(desktop(args.cti_port, "alice"));
    actix_rt::spawn(desktop(args.cti_port, "dave"));
    let stopper = root.stopper();
    let stopped = root.stopped();
    tokio::pin!(stopped);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        exit = &mut stopped => return Err(format!("ctid stopped: {exit:?}")),
    }
    if let Some(root) = stopper.get() {
        root.do_send(Shutdown {
            reason: "demo over",
        });
    }
    stopped.await;
    workers.finish().await;
    Ok(())
}

pub fn run(args: DemoArgs) -> ExitCode {
    let system = actix_rt::System::new();
    let result = system.block_on(demo(args));
    actix_rt::System::current().stop();
    let store = demo_store().into_os_string();
    for suffix in ["", "-wal", "-shm"] {
        let mut file = store.clone();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
