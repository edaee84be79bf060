//! `ctid client`: logs in to a CTI server and prints every message it receives as a JSON
//! line; lines typed on standard input are sent as they are.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ctid_actors::net::{io_reason, BoxedIo};
use rustls_pki_types::ServerName;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// The CTI server.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 5003)]
    pub port: u16,
    /// Log in with this login.
    #[arg(long, short)]
    pub user: String,
    /// The password; read from CTID_PASSWORD, else from the first line of standard input.
    #[arg(long, env = "CTID_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Connect with TLS (the CTIs port), trusting the CA certificates of this PEM file.
    #[arg(long, value_name = "CA_PEM")]
    pub tls: Option<PathBuf>,
}

/// A logged-in CTI connection.
pub struct Connection {
    lines: Lines<BufReader<ReadHalf<BoxedIo>>>,
    write: WriteHalf<BoxedIo>,
}

impl Connection {
    pub async fn connect(
        host: &str,
        port: u16,
        tls: Option<&PathBuf>,
    ) -> Result<Connection, String> {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {}", io_reason(&e)))?;
        let io: BoxedIo = match tls {
            None => Box::new(tcp),
            Some(ca) => {
                let config = ctid_actors::tls::client_config(ca).map_err(|e| e.to_string())?;
                let name =
                    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
                Box::new(tls)
            }
        };
        Ok(Connection::over(io))
    }

    /// A connection over a stream already connected (and, for CTIs, already in TLS).
    pub fn over(io: BoxedIo) -> Connection {
        let (read, write) = tokio::io::split(io);
        Connection {
            lines: BufReader::new(read).lines(),
            write,
        }
    }

    pub async fn send(&mut self, message: &Value) -> Result<(), String> {
        let mut line = message.to_string();
        line.push('\n');
        self.send_raw(&line).await
    }

    pub async fn send_raw(&mut self, line: &str) -> Result<(), String> {
        self.write
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("write failed: {}", io_reason(&e)))
    }

    /// The next message; None when the server closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Value>, String> {
        match self.lines.next_line().await {
            Ok(Some(line)) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| format!("the server sent a bad line ({e}): {line}")),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("read failed: {}", io_reason(&e))),
        }
    }

    /// Sends `request` and returns the reply of the same class.
    async fn step(&mut self, request: Value) -> Result<Value, String> {
        let class = request["class"].clone();
        self.send(&request).await?;
        loop {
            let reply = self
                .recv()
                .await?
                .ok_or("the server closed the connection")?;
            if reply["class"] == class {
                if let Some(error) = reply.get("error_string") {
                    return Err(format!(
                        "{} refused: {error}",
                        class.as_str().unwrap_or("?")
                    ));
                }
                return Ok(reply);
            }
        }
    }

    /// The three login steps; returns the `login_capas` reply.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<Value, String> {
        self.step(json!({"class": "login_id", "userlogin": user, "ident": "ctid-client", "xivoversion": "2.0"}))
            .await?;
        self.step(json!({"class": "login_pass", "password": password}))
            .await?;
        self.step(json!({"class": "login_capas", "capaid": 1, "state": "available"}))
            .await
    }
}

async fn password(args: &ClientArgs) -> Result<String, String> {
    if let Some(p) = &args.password {
        return Ok(p.clone());
    }
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await
        .map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn session(args: ClientArgs) -> Result<(), String> {
    let password = password(&args).await?;
    let mut conn = Connection::connect(&args.host, args.port, args.tls.as_ref()).await?;
    let capas = conn.login(&args.user, &password).await?;
    println!("{capas}");
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut typing = true;
    loop {
        tokio::select! {
            message = conn.recv() => match message? {
                Some(m) => println!("{m}"),
                None => return Ok(()),
            },
            line = stdin.next_line(), if typing => match line {
                Ok(Some(line)) if !line.trim().is_empty() => conn.send_raw(&format!("{line}\n")).await?,
                Ok(Some(_)) => {}
                _ => typing = false,
            },
        }
    }
}

pub fn run(args: ClientArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ctid client: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(session(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ctid client: {e}");
            ExitCode::FAILURE
        }
    }
}
