//! The Web Interface port: an administration tool tells ctid that an object changed, one
//! line per command: `xivo[<user|line|queue|context>,<add|edit|delete>,<id>]` or
//! `xivo[all,reload]`. ctid re-reads the directory at once (its sessions are told what
//! changed) and answers `CTID-WEBI:OK`, or `CTID-WEBI:KO <reason>` when the directory
//! cannot be read or does not show the change.

use std::net::SocketAddr;
use std::time::Duration;

use ctid_proto::directory::Directory;
use futures_util::StreamExt;
use log::{info, warn};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::ask::{ask, Unanswered};
use crate::cluster::Notices;
use crate::directory::{DirectoryWatcher, ReloadNow};
use crate::listener::Accept;
use crate::settings::human_duration;
use crate::supervisor::Slot;

const MAX_LINE: usize = 1024;

#[derive(Clone)]
pub struct WebiAccept {
    directory: Slot<DirectoryWatcher>,
    timeout: Duration,
    /// Cluster mode: every other node re-reads the directory too.
    notices: Option<Notices>,
}

impl WebiAccept {
    pub fn new(
        directory: Slot<DirectoryWatcher>,
        timeout: Duration,
        notices: Option<Notices>,
    ) -> Self {
        WebiAccept {
            directory,
            timeout,
            notices,
        }
    }
}

impl Accept for WebiAccept {
    fn accept(&mut self, stream: TcpStream, peer: SocketAddr) {
        actix_rt::spawn(serve(stream, peer, self.clone()));
    }
}

/// A parsed command.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Reload,
    Object {
        kind: String,
        verb: String,
        id: String,
    },
}

fn parse(line: &str) -> Result<Command, String> {
    let usage =
        "expected xivo[<user|line|queue|context>,<add|edit|delete>,<id>] or xivo[all,reload]";
    let body = line
        .trim()
        .strip_prefix("xivo[")
        .and_then(|b| b.strip_suffix(']'))
        .ok_or(usage)?;
    let parts: Vec<&str> = body.split(',').map(str::trim).collect();
    match parts.as_slice() {
        ["all", "reload"] => Ok(Command::Reload),
        [kind @ ("user" | "line" | "queue" | "context"), verb @ ("add" | "edit" | "delete"), id]
            if !id.is_empty() =>
        {
            Ok(Command::Object {
                kind: (*kind).to_owned(),
                verb: (*verb).to_owned(),
                id: (*id).to_owned(),
            })
        }
        _ => Err(format!(
            "{usage}, got {:?}",
            line.trim().chars().take(80).collect::<String>()
        )),
    }
}

fn present(dir: &Directory, kind: &str, id: &str) -> bool {
    match kind {
        "user" => id.parse().ok().and_then(|id| dir.user(id)).is_some(),
        "line" => dir
            .users()
            .filter_map(|u| u.line.as_ref())
            .any(|l| l.interface == id || l.number == id),
        "queue" => dir.queues().any(|q| q.name == id),
        _ => dir.has_context(id),
    }
}

async fn answer(
    line: &str,
    directory: &Slot<DirectoryWatcher>,
    timeout: Duration,
) -> Result<(), String> {
    let command = parse(line)?;
    let watcher = directory.get().ok_or("the directory is restarting")?;
    // A reload reads the file, or asks the web service within `timeout`.
    let limit = timeout * 2;
    let dir = match ask(&watcher, ReloadNow, limit).await {
        Ok(loaded) => loaded?,
        Err(Unanswered::Late) => {
            return Err(format!(
                "the directory did not reload within {}",
                human_duration(limit)
            ))
        }
        Err(Unanswered::Gone) => return Err("the directory is restarting".into()),
    };
    match command {
        Command::Reload => Ok(()),
        Command::Object { kind, verb, id } => match (verb.as_str(), present(&dir, &kind, &id)) {
            ("delete", false) | ("add" | "edit", true) => Ok(()),
            ("delete", true) => Err(format!("{kind} {id} is still in the directory")),
            _ => Err(format!("{kind} {id} is not in the directory")),
        },
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, webi: WebiAccept) {
    let WebiAccept {
        directory,
        timeout,
        notices,
    } = webi;
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    loop {
        let line = match tokio::time::timeout(timeout, lines.next()).await {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(LinesCodecError::MaxLineLengthExceeded))) => {
                warn!("webi: {peer} sent a line over {MAX_LINE} bytes; closing");
                let _ = write
                    .write_all(
                        format!("CTID-WEBI:KO line longer than {MAX_LINE} bytes\n").as_bytes(),
                    )
                    .await;
                return;
            }
            _ => return,
        };
        if line.trim().is_empty() {
            continue;
        }
        if let (Some(notices), Ok(_)) = (&notices, parse(&line)) {
            notices.directory_changed().await;
        }
        let reply = match answer(&line, &directory, timeout).await {
            Ok(()) => {
                info!("webi: {peer}: {} done", line.trim());
                "CTID-WEBI:OK\n".to_owned()
            }
            Err(reason) => {
                warn!("webi: {peer}: {}: {reason}", line.trim());
                format!("CTID-WEBI:KO {reason}\n")
            }
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse("xivo[all,reload]"), Ok(Command::Reload));
        assert_eq!(
            parse(" xivo[user,edit,42]\r"),
            Ok(Command::Object {
                kind: "user".into(),
                verb: "edit".into(),
                id: "42".into()
            })
        );
        for bad in [
            "xivo[user,edit]",
            "xivo[phone,add,1]",
            "xivo[user,enable,1]",
            "user,edit,1",
            "xivo[user,edit,]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
