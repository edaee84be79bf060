//! Runs the real `ctid` binary with a generated configuration and captures its log.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen; generous for a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn fixture(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Settings with every listener off, pointed at an AMI on `port`.
pub fn ami_config(port: u16, extra_ami: &str) -> String {
    let mut s = format!(
        "[ami]\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"cti\"\n\
         reconnect_min = 0.2\nreconnect_max = 1\n{extra_ami}\n\
         [timeouts]\nsocket = 2\n"
    );
    for l in ["fagi", "cti", "ctis", "webi", "info", "announce"] {
        s.push_str(&format!("[listen.{l}]\nenabled = false\n"));
    }
    s
}

pub struct Ctid {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Ctid {
    pub fn start(config: &str, rust_log: &str) -> Ctid {
        Self::start_with(config, rust_log, &[])
    }

    pub fn start_with(config: &str, rust_log: &str, env: &[(&str, &str)]) -> Ctid {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctid.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ctid"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start ctid");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Ctid {
            child,
            lines,
            _dir: dir,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_line(&self, needle: &str) -> String {
        self.wait_lines(needle, 1).await.pop().unwrap()
    }

    /// Waits until `n` log lines contain `needle`.
    pub async fn wait_lines(&self, needle: &str, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let found: Vec<String> = self
                .lines()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if found.len() >= n {
                return found;
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "ctid never logged {n} × {needle:?}; it logged:\n{}",
                    self.lines().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for `cond`, showing ctid's log if it never holds.
    pub async fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            if start.elapsed() > PATIENCE {
                panic!("never: {what}; ctid logged:\n{}", self.lines().join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for ctid to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.wait_exit().await
    }

    pub async fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain what the process wrote last.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return status;
            }
            if start.elapsed() > PATIENCE {
                panic!("ctid did not exit; it logged:\n{}", self.lines().join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Ctid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
