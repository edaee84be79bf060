//! `ctid run`: the actix system, the supervision tree, and a clean stop on SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;

use ctid_actors::ami::{AmiLink, LinkConfig, LinkStats};
use ctid_actors::settings::Settings;
use ctid_actors::supervisor::{
    ChildSpec, Exit, Intensity, Outlet, Report, Restart, Root, Shutdown, Slot,
};
use log::{error, info, warn};
use tokio::signal::unix::{signal, SignalKind};

use crate::{settings, EXIT_CONFIG};

pub fn run(path: &Path) -> ExitCode {
    let settings = match settings::load(path) {
        Ok(s) => s,
        Err(problems) => {
            for p in &problems {
                error!("{p}");
            }
            error!(
                "{}: {} problem(s); not starting",
                path.display(),
                problems.len()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let link = match LinkConfig::new(settings.ami.clone(), settings.timeouts.socket) {
        Ok(link) => link,
        Err(e) => {
            error!("ami.tls_ca: {e}; not starting");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    info!(
        "ctid {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    );
    let system = actix_rt::System::new();
    let code = system.block_on(serve(settings, link));
    actix_rt::System::current().stop();
    code
}

/// The children of the root supervisor, in start order (they stop in reverse).
fn tree(link: LinkConfig) -> Vec<ChildSpec> {
    let stats = LinkStats::default();
    vec![ChildSpec::new(
        "ami",
        Restart::Permanent,
        Slot::<AmiLink>::new(),
        move |_| AmiLink::new(link.clone(), Outlet::none(), Outlet::none(), stats.clone()),
    )]
}

async fn serve(_settings: Settings, link: LinkConfig) -> ExitCode {
    let report = Report::default();
    let root = Root::start("ctid", Intensity::default(), tree(link), report);
    let stopper = root.stopper();
    let stopped = root.stopped();
    tokio::pin!(stopped);
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            error!("cannot watch for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signal_name = tokio::select! {
        exit = &mut stopped => return exit_code(exit),
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!("{signal_name} received: stopping (send it again to exit at once)");
    if let Some(root) = stopper.get() {
        root.do_send(Shutdown {
            reason: "ctid is stopping",
        });
    }
    tokio::select! {
        exit = &mut stopped => exit_code(exit),
        _ = term.recv() => { warn!("second signal: exiting now"); ExitCode::FAILURE }
        _ = int.recv() => { warn!("second signal: exiting now"); ExitCode::FAILURE }
    }
}

fn exit_code(exit: Exit) -> ExitCode {
    match exit {
        Exit::Normal => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        other => {
            error!("supervision tree ended ({other:?}); exiting");
            ExitCode::FAILURE
        }
    }
}
