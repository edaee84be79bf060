//! `ctid`: the contact-center CTI server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
#[cfg(feature = "demo")]
use ctid::demo;
use ctid::{client, run, settings, EXIT_CONFIG};

/// Where `ctid run` looks for its settings unless told otherwise.
const DEFAULT_CONFIG: &str = "/etc/ctid/ctid.toml";

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
    /// Check a settings file and the directory it names: print every problem with its key,
    /// exit 78 if there is any.
    CheckConfig {
        /// The settings file to check.
        path: PathBuf,
    },
    /// Read a password on standard input and print its argon2id hash, for directory.toml.
    HashPassword,
    /// HTTP API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Log in to a CTI server and print every message as a JSON line; lines typed on
    /// standard input are sent as they are.
    Client(client::ClientArgs),
    /// Run ctid against a built-in simulated PBX with the example directory, with two
    /// desktops printing the calls they see.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Print a fresh random token, for the HTTP client, and its SHA-256, for the
    /// `token_sha256` of its `[[http.tokens]]` table.
    New,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = match &cli.command {
        Some(Command::Client(_)) => true,
        #[cfg(feature = "demo")]
        Some(Command::Demo(_)) => true,
        _ => false,
    };
    ctid::logging::init(if quiet { "warn" } else { "info" });
    install_panic_hook();
    match cli.command {
        None => run::run(&cli.run.config),
        Some(Command::Run(args)) => run::run(&args.config),
        Some(Command::CheckConfig { path }) => check_config(&path),
        Some(Command::HashPassword) => hash_password(),
        Some(Command::Token(TokenCommand::New)) => new_token(),
        Some(Command::Client(args)) => client::run(args),
        #[cfg(feature = "demo")]
        Some(Command::Demo(args)) => demo::run(args),
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("cannot read the password: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("no password on standard input");
        return ExitCode::FAILURE;
    }
    let salt = match ctid_actors::auth::random_bytes::<16>() {
        Ok(salt) => salt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match ctid_proto::directory::hash_password(password, &salt) {
        Ok(phc) => {
            println!("{phc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot hash the password: {e}");
            ExitCode::FAILURE
        }
    }
}

fn new_token() -> ExitCode {
    match ctid_actors::auth::random_hex(32) {
        Ok(token) => {
            println!("token = {token}");
            println!(
                "token_sha256 = \"{}\"",
                ctid_actors::http::token_sha256(&token)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let problems = match settings::load(path) {
        Ok(s) => run::check(&s).err().unwrap_or_default(),
        Err(problems) => problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    if problems.is_empty() {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        println!("{p}");
    }
    println!("{}: {} problem(s)", path.display(), problems.len());
    ExitCode::from(EXIT_CONFIG)
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
