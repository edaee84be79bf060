//! A session's outbound queue and the task that writes it.
//!
//! Partitions push the bytes of an event (encoded once, shared) into every subscribed
//! session's outbox; the writer takes whatever has queued and writes it in one vectored
//! write, optionally after letting events gather for a short window. The queue has a byte and a message budget: a push past either marks the session
//! a slow consumer, drops what it still had queued, and closes it after a final notice. No
//! push ever waits, so a slow client slows nobody else.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{ErrorKind, IoSlice};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::future::LocalBoxFuture;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::net::io_reason;
use crate::settings::human_duration;

/// The most a session may have queued.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_bytes: usize,
    pub max_messages: usize,
}

/// Why an outbox stopped taking messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// It went over its budget.
    SlowConsumer,
    /// Its session closed it.
    Done,
}

struct Queue {
    items: VecDeque<Bytes>,
    bytes: usize,
    /// Taken by the writer and not written yet: still counted against the budget, since
    /// they are still in memory and the client has not read them.
    writing: usize,
    writing_bytes: usize,
    closed: Option<Closed>,
    /// Sent last, after which the writer shuts the stream down.
    last: Option<Bytes>,
    /// When the AMI events behind the oldest item queued were read.
    oldest: Option<Instant>,
}

/// The session writers still running, so that a stopping server lets them send their last
/// lines before its threads go.
#[derive(Clone, Default)]
pub struct Writers(Arc<WriterCount>);

#[derive(Default)]
struct WriterCount {
    running: AtomicUsize,
    ended: Notify,
}

/// One running writer; dropping it ends the writer's count.
pub struct WriterGuard(Writers);

impl Writers {
    pub fn enter(&self) -> WriterGuard {
        self.0.running.fetch_add(1, Ordering::SeqCst);
        WriterGuard(self.clone())
    }

    fn running(&self) -> usize {
        self.0.running.load(Ordering::SeqCst)
    }

    /// Waits until no writer runs, for `limit` at most; how many still run.
    pub async fn drained(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let ended = self.0.ended.notified();
            if self.running() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return self.running();
            }
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        let count = &(self.0).0;
        count.running.fetch_sub(1, Ordering::SeqCst);
        count.ended.notify_waiters();
    }
}

pub struct Outbox {
    queue: Mutex<Queue>,
    notify: Notify,
    /// Woken when the outbox closes, so that a writer letting events gather stops waiting.
    closing: Notify,
    budget: Budget,
    written: AtomicU64,
}

impl Outbox {
    pub fn new(budget: Budget) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
                writing: 0,
                writing_bytes: 0,
                closed: None,
                last: None,
                oldest: None,
            }),
            notify: Notify::new(),
            closing: Notify::new(),
            budget,
            written: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `bytes`; wakes the writer only if `wake`. Past the budget the outbox closes as
    /// a slow consumer, and `notice` is the last thing written.
    pub fn push(
        &self,
        bytes: Bytes,
        notice: impl FnOnce() -> Bytes,
        wake: bool,
    ) -> Result<(), Closed> {
        let mut q = self.lock();
        if let Some(closed) = q.closed {
            return Err(closed);
        }
        if q.items.len() + q.writing >= self.budget.max_messages
            || q.bytes + q.writing_bytes + bytes.len() > self.budget.max_bytes
        {
            q.items.clear();
            q.bytes = 0;
            q.closed = Some(Closed::SlowConsumer);
            q.last = Some(notice());
            drop(q);
            self.notify_closed();
            return Err(Closed::SlowConsumer);
        }
        q.bytes += bytes.len();
        q.items.push_back(bytes);
        drop(q);
        if wake {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Wakes the writer after pushes made without waking it; `received` is when the AMI
    /// events behind them were read, if they came from AMI events.
    pub fn wake_since(&self, received: Option<Instant>) {
        if let Some(t) = received {
            self.lock().oldest.get_or_insert(t);
        }
        self.notify.notify_one();
    }

    /// Stops taking messages: what is queued is still written, then `last`, then the
    /// stream is shut down.
    pub fn close(&self, last: Option<Bytes>) {
        let mut q = self.lock();
        if q.closed.is_none() {
            q.closed = Some(Closed::Done);
            q.last = last;
        }
        drop(q);
        self.notify_closed();
    }

    fn notify_closed(&self) {
        self.notify.notify_one();
        self.closing.notify_one();
    }

    pub fn closed(&self) -> Option<Closed> {
        self.lock().closed
    }

    /// Messages and bytes queued and not yet written.
    pub fn pending(&self) -> (usize, usize) {
        let q = self.lock();
        (q.items.len() + q.writing, q.bytes + q.writing_bytes)
    }

    /// Bytes written to the socket so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// When the AMI events behind what is queued were read.
    #[cfg(test)]
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.lock().oldest
    }

    /// Takes everything queued for writing; the flag says the outbox is closed, the instant
    /// when the oldest AMI events among them were read. What it takes counts against the
    /// budget until [`Outbox::wrote`] says it is written.
    fn take(&self) -> (VecDeque<Bytes>, bool, Option<Instant>) {
        let mut q = self.lock();
        let oldest = q.oldest.take();
        let mut items = std::mem::take(&mut q.items);
        let closed = q.closed.is_some();
        if closed {
            items.extend(q.last.take());
        }
        q.writing += items.len();
        q.writing_bytes += items.iter().map(Bytes::len).sum::<usize>();
        q.bytes = 0;
        (items, closed, oldest)
    }

    fn has_work(&self) -> bool {
        let q = self.lock();
        !q.items.is_empty() || q.closed.is_some()
    }

    /// Waits `delay`, or until the outbox is closed.
    async fn gather(&self, delay: Duration) {
        let closing = self.closing.notified();
        if self.closed().is_none() {
            let _ = tokio::time::timeout(delay, closing).await;
        }
    }

    /// The writer wrote `bytes` more, which completed `messages` of those it took.
    fn wrote(&self, bytes: usize, messages: usize) {
        let mut q = self.lock();
        q.writing_bytes = q.writing_bytes.saturating_sub(bytes);
        q.writing = q.writing.saturating_sub(messages);
        drop(q);
        self.written.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
impl Outbox {
    /// What is queued, parsed as JSON lines.
    pub(crate) fn queued_json(&self) -> Vec<serde_json::Value> {
        self.lock()
            .items
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect()
    }
}

/// Where a writer puts what it takes from an outbox.
pub trait Writer {
    /// Writes every item, telling `outbox` what each write completed; `TimedOut` when one
    /// write waits longer than `stall`.
    fn write(
        &mut self,
        items: &mut VecDeque<Bytes>,
        stall: Duration,
        outbox: &Outbox,
    ) -> impl Future<Output = std::io::Result<()>>;

    /// Ends the stream after the last item, waiting `stall` at most.
    fn finish(&mut self, stall: Duration) -> impl Future<Output = ()>;
}

/// A byte stream: each item is a `\n`-ended line, written as it is.
pub struct Lines<W>(pub W);

impl<W: AsyncWrite + Unpin> Writer for Lines<W> {
    async fn write(
        &mut self,
        items: &mut VecDeque<Bytes>,
        stall: Duration,
        outbox: &Outbox,
    ) -> std::io::Result<()> {
        write_all_vectored(&mut self.0, items, stall, outbox).await
    }

    async fn finish(&mut self, stall: Duration) {
        let _ = tokio::time::timeout(stall, async {
            let _ = self.0.flush().await;
            let _ = self.0.shutdown().await;
        })
        .await;
    }
}

/// A transport of whole messages (WebSocket): each item goes as one message, without
/// its `\n`.
pub trait MessageSink {
    fn send(&mut self, message: Bytes) -> LocalBoxFuture<'_, std::io::Result<()>>;
    /// Closes the transport: nothing follows.
    fn close(&mut self) -> LocalBoxFuture<'_, ()>;
}

impl Writer for Box<dyn MessageSink> {
    async fn write(
        &mut self,
        items: &mut VecDeque<Bytes>,
        stall: Duration,
        outbox: &Outbox,
    ) -> std::io::Result<()> {
        while let Some(item) = items.pop_front() {
            let len = item.len();
            let message = item.slice(..item.strip_suffix(b"\n").map_or(len, <[u8]>::len));
            within(stall, self.send(message)).await?;
            outbox.wrote(len, 1);
        }
        Ok(())
    }

    async fn finish(&mut self, stall: Duration) {
        let _ = tokio::time::timeout(stall, self.close()).await;
    }
}

/// Writes `outbox` to the byte stream `w`: see [`write_to`].
pub async fn write_outbox<W: AsyncWrite + Unpin>(
    outbox: Arc<Outbox>,
    w: W,
    stall: Duration,
    delay: Duration,
    metrics: Option<Metrics>,
) -> Result<(), String> {
    write_to(outbox, Lines(w), stall, delay, metrics).await
}

/// Writes `outbox` to `w` until it is closed and drained. A write that makes no progress
/// for `stall` ends the session: its client stopped reading. Once woken, the writer lets
/// events gather for `delay` before it takes them (none if zero), unless the outbox
/// closes meanwhile. `metrics` gets the lag from the AMI read to each write's end.
pub async fn write_to<W: Writer>(
    outbox: Arc<Outbox>,
    mut w: W,
    stall: Duration,
    delay: Duration,
    metrics: Option<Metrics>,
) -> Result<(), String> {
    loop {
        let notified = outbox.notify.notified();
        if !delay.is_zero() && outbox.has_work() {
            outbox.gather(delay).await;
        }
        let (mut items, closed, oldest) = outbox.take();
        if items.is_empty() && !closed {
            notified.await;
            continue;
        }
        if let Err(e) = w.write(&mut items, stall, &outbox).await {
            return Err(match e.kind() {
                ErrorKind::TimedOut => format!("client read nothing for {}", human_duration(stall)),
                _ => format!("write failed ({})", io_reason(&e)),
            });
        }
        if let (Some(m), Some(t)) = (&metrics, oldest) {
            m.written_lag(t.elapsed());
        }
        if closed {
            w.finish(stall).await;
            return Ok(());
        }
    }
}

/// Writes every buffer, as few syscalls as the socket allows, telling `outbox` what each
/// write completed; `TimedOut` when one write, or the flush (where TLS does its socket
/// writes), waits longer than `stall`.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    items: &mut VecDeque<Bytes>,
    stall: Duration,
    outbox: &Outbox,
) -> std::io::Result<()> {
    const MAX_SLICES: usize = 64;
    while !items.is_empty() {
        let slices: Vec<IoSlice<'_>> = items
            .iter()
            .take(MAX_SLICES)
            .map(|b| IoSlice::new(b))
            .collect();
        let n = within(stall, w.write_vectored(&slices)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let (mut left, mut done) = (n, 0);
        while left > 0 {
            let Some(front) = items.front_mut() else {
                break;
            };
            if left >= front.len() {
                left -= front.len();
                items.pop_front();
                done += 1;
            } else {
                front.advance(left);
                left = 0;
            }
        }
        outbox.wrote(n, done);
    }
    within(stall, w.flush()).await
}

/// `io`, or `TimedOut` after `stall`; the timer is armed only if `io` has to wait.
async fn within<T>(
    stall: Duration,
    io: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    let mut io = std::pin::pin!(io);
    let first = std::future::poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx))).await;
    if let Poll::Ready(done) = first {
        return done;
    }
    tokio::time::timeout(stall, io)
        .await
        .map_err(|_| std::io::Error::from(ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests;
