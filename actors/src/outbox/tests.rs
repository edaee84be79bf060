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
