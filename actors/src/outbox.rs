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
mod tests {
    use super::*;

    fn budget(max_bytes: usize, max_messages: usize) -> Budget {
        Budget {
            max_bytes,
            max_messages,
        }
    }

    fn notice() -> Bytes {
        Bytes::from_static(b"bye\n")
    }

    #[tokio::test]
    async fn everything_queued_is_written_in_order_then_the_last_line() {
        let outbox = Outbox::new(budget(1 << 20, 1000));
        let (client, server) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(write_outbox(
            outbox.clone(),
            server,
            Duration::from_secs(5),
            Duration::ZERO,
            None,
        ));
        for i in 0..300 {
            outbox
                .push(Bytes::from(format!("{i}\n")), notice, i % 7 == 0)
                .unwrap();
        }
        outbox.close(Some(Bytes::from_static(b"end\n")));
        writer.await.unwrap().unwrap();
        let mut got = String::new();
        let mut client = client;
        tokio::io::AsyncReadExt::read_to_string(&mut client, &mut got)
            .await
            .unwrap();
        let expected: String = (0..300)
            .map(|i| format!("{i}\n"))
            .chain(["end\n".to_owned()])
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn over_budget_is_a_slow_consumer_and_drops_the_queue() {
        let outbox = Outbox::new(budget(10, 100));
        outbox
            .push(Bytes::from_static(b"12345\n"), notice, false)
            .unwrap();
        assert_eq!(
            outbox.push(Bytes::from_static(b"67890\n"), notice, false),
            Err(Closed::SlowConsumer)
        );
        assert_eq!(outbox.pending(), (0, 0));
        assert_eq!(
            outbox.push(Bytes::from_static(b"x\n"), notice, false),
            Err(Closed::SlowConsumer)
        );
        let (items, closed, _) = outbox.take();
        assert!(closed);
        assert_eq!(items, [notice()]);
    }

    #[tokio::test]
    async fn what_the_writer_took_counts_against_the_budget_until_written() {
        let outbox = Outbox::new(budget(1000, 1000));
        // The client reads nothing: 64 bytes fit in the pipe, then the writer stalls.
        let (_client, server) = tokio::io::duplex(64);
        for _ in 0..10 {
            outbox
                .push(Bytes::from(vec![b'x'; 100]), notice, true)
                .unwrap();
        }
        let writer = tokio::spawn(write_outbox(
            outbox.clone(),
            server,
            Duration::from_secs(60),
            Duration::ZERO,
            None,
        ));
        for _ in 0..1000 {
            if outbox.written() > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(outbox.written(), 64);
        assert_eq!(outbox.pending(), (10, 936));
        outbox
            .push(Bytes::from(vec![b'y'; 64]), notice, false)
            .unwrap();
        assert_eq!(
            outbox.push(Bytes::from_static(b"z"), notice, false),
            Err(Closed::SlowConsumer)
        );
        writer.abort();
    }

    #[test]
    fn the_message_budget_counts_too() {
        let outbox = Outbox::new(budget(1 << 20, 2));
        outbox
            .push(Bytes::from_static(b"a\n"), notice, false)
            .unwrap();
        outbox
            .push(Bytes::from_static(b"b\n"), notice, false)
            .unwrap();
        assert!(outbox
            .push(Bytes::from_static(b"c\n"), notice, false)
            .is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_times_the_writer_out() {
        for window in [Duration::ZERO, Duration::from_millis(50)] {
            let outbox = Outbox::new(budget(1 << 24, 100_000));
            let (_client, server) = tokio::io::duplex(64);
            outbox
                .push(Bytes::from(vec![b'x'; 4096]), notice, true)
                .unwrap();
            let err = write_outbox(outbox, server, Duration::from_millis(100), window, None)
                .await
                .unwrap_err();
            assert_eq!(err, "client read nothing for 100ms");
        }
    }

    /// Takes every write and never completes a flush: TLS to a peer that stopped reading.
    struct NeverFlushes;

    impl AsyncWrite for NeverFlushes {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Pending
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_that_never_ends_times_the_writer_out() {
        let outbox = Outbox::new(budget(1 << 24, 100_000));
        outbox
            .push(Bytes::from_static(b"x\n"), notice, true)
            .unwrap();
        let err = write_outbox(
            outbox,
            NeverFlushes,
            Duration::from_millis(100),
            Duration::ZERO,
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(err, "client read nothing for 100ms");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_slowly_but_steadily_is_kept() {
        use tokio::io::AsyncReadExt;
        let outbox = Outbox::new(budget(1 << 24, 100_000));
        let (mut client, server) = tokio::io::duplex(64);
        outbox
            .push(Bytes::from(vec![b'x'; 4096]), notice, true)
            .unwrap();
        outbox.close(None);
        // 64 reads, 50ms apart: the whole write takes 3 s, each step far less than 100ms.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0; 64];
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                match client.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        write_outbox(
            outbox,
            server,
            Duration::from_millis(100),
            Duration::ZERO,
            None,
        )
        .await
        .unwrap();
        assert_eq!(reader.await.unwrap().len(), 4096);
    }

    /// A stream that keeps the bytes of each write it passes on.
    struct Recorded<W> {
        inner: W,
        writes: Arc<Mutex<Vec<String>>>,
    }

    impl<W: AsyncWrite + Unpin> Recorded<W> {
        fn record(&self, bufs: &[IoSlice<'_>], n: usize) {
            let bytes: Vec<u8> = bufs
                .iter()
                .flat_map(|b| b.iter().copied())
                .take(n)
                .collect();
            let mut writes = self.writes.lock().unwrap();
            writes.push(String::from_utf8(bytes).unwrap());
        }
    }

    impl<W: AsyncWrite + Unpin> AsyncWrite for Recorded<W> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.as_mut().poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let done = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            if let Poll::Ready(Ok(n)) = done {
                self.record(bufs, n);
            }
            done
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Two events pushed 5 ms apart to a session whose writer gathers for `window`, over
    /// a TCP socket: the writes made, and what the client read.
    async fn two_events_with(window: Duration) -> (Vec<String>, String) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let writes = Arc::new(Mutex::new(Vec::new()));
        let recorded = Recorded {
            inner: server,
            writes: writes.clone(),
        };
        let outbox = Outbox::new(budget(1 << 20, 1000));
        let stall = Duration::from_secs(5);
        let writer = tokio::spawn(write_outbox(outbox.clone(), recorded, stall, window, None));
        outbox
            .push(Bytes::from_static(b"a\n"), notice, true)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        outbox
            .push(Bytes::from_static(b"b\n"), notice, true)
            .unwrap();
        let mut read = [0; 4];
        client.read_exact(&mut read).await.unwrap();
        outbox.close(None);
        writer.await.unwrap().unwrap();
        let writes = writes.lock().unwrap().clone();
        (writes, String::from_utf8(read.to_vec()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_window_sends_events_pushed_within_it_in_one_write() {
        let (writes, read) = two_events_with(Duration::from_millis(50)).await;
        assert_eq!(writes, ["a\nb\n"]);
        assert_eq!(read, "a\nb\n");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_window_each_event_is_written_at_once() {
        let (writes, read) = two_events_with(Duration::ZERO).await;
        assert_eq!(writes, ["a\n", "b\n"]);
        assert_eq!(read, "a\nb\n");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_ends_a_window_at_once() {
        use tokio::io::AsyncReadExt;
        let outbox = Outbox::new(budget(1 << 20, 1000));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let window = Duration::from_secs(10);
        let writer = tokio::spawn(write_outbox(outbox.clone(), server, window, window, None));
        let began = tokio::time::Instant::now();
        outbox
            .push(Bytes::from_static(b"a\n"), notice, true)
            .unwrap();
        tokio::task::yield_now().await;
        outbox.close(Some(Bytes::from_static(b"end\n")));
        writer.await.unwrap().unwrap();
        assert!(began.elapsed() < window);
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "a\nend\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_notice_ends_a_window_at_once() {
        use tokio::io::AsyncReadExt;
        let outbox = Outbox::new(budget(4, 1000));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let window = Duration::from_secs(10);
        let writer = tokio::spawn(write_outbox(outbox.clone(), server, window, window, None));
        let began = tokio::time::Instant::now();
        outbox
            .push(Bytes::from_static(b"a\n"), notice, true)
            .unwrap();
        tokio::task::yield_now().await;
        assert!(outbox
            .push(Bytes::from_static(b"bb\n"), notice, true)
            .is_err());
        writer.await.unwrap().unwrap();
        assert!(began.elapsed() < window);
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "bye\n");
    }
}
