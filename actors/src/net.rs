//! Socket helpers shared by the links and listeners.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::settings::human_duration;

/// A byte stream: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

pub type BoxedIo = Box<dyn Io>;

/// A short, lowercase reason for a socket error, as it reads well in a log line.
pub fn io_reason(e: &io::Error) -> String {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset by peer".into(),
        ConnectionAborted => "connection aborted".into(),
        BrokenPipe => "broken pipe".into(),
        TimedOut => "timed out".into(),
        NotFound => "no such file".into(),
        PermissionDenied => "permission denied".into(),
        AddrInUse => "address already in use".into(),
        AddrNotAvailable => "address not available".into(),
        UnexpectedEof => "closed by peer".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_lowercase(),
                None => text,
            }
        }
    }
}

/// Writes what the queue holds, coalescing whatever has queued into one write, until the
/// queue closes; then shuts the stream down. A write that makes no progress for `stall`
/// fails the loop.
pub async fn write_queue<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Bytes>,
    stall: Duration,
) -> Result<(), String> {
    let mut buf = BytesMut::new();
    while let Some(first) = rx.recv().await {
        buf.extend_from_slice(&first);
        while let Ok(more) = rx.try_recv() {
            buf.extend_from_slice(&more);
        }
        let write = async {
            w.write_all(&buf).await?;
            w.flush().await
        };
        match tokio::time::timeout(stall, write).await {
            Err(_) => return Err(format!("write stalled for {}", human_duration(stall))),
            Ok(Err(e)) => return Err(format!("write failed ({})", io_reason(&e))),
            Ok(Ok(())) => buf.clear(),
        }
    }
    let _ = w.shutdown().await;
    Ok(())
}
