//! `ctid`: the contact-center CTI server.

mod run;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Where `ctid run` looks for its settings unless told otherwise.
const DEFAULT_CONFIG: &str = "/etc/ctid/ctid.toml";

/// sysexits' EX_CONFIG: the settings are wrong, restarting will not help.
const EXIT_CONFIG: u8 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "ctid",
    version,
    about = "Contact-center CTI server for Asterisk",
    long_about = "ctid sits between Asterisk and business applications: it follows calls on the \
                  Asterisk Manager Interface, pushes them to agent desktops over the CTI \
                  protocol, and takes call control from them.\n\nWith no subcommand, ctid runs \
                  the server (as `ctid run`). Logging is set by RUST_LOG (default: info)."
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The settings file (TOML); CTID__SECTION__KEY variables override its keys.
    #[arg(long, short, env = "CTID_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Check a settings file: print every problem with its key, exit 78 if there is any.
    CheckConfig {
        /// The settings file to check.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    install_panic_hook();
    match cli.command {
        None => run::run(&cli.run.config),
        Some(Command::Run(args)) => run::run(&args.config),
        Some(Command::CheckConfig { path }) => check_config(&path),
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match settings::load(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in &problems {
                println!("{p}");
            }
            println!("{}: {} problem(s)", path.display(), problems.len());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Panics are reported as one log line with their place; the supervisor does the rest.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        log::error!(
            "panic in thread {}{place}: {message}",
            thread.name().unwrap_or("?")
        );
    }));
}
