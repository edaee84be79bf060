//! AMI decode throughput over the recorded fixtures, beside a baseline measured in the same
//! run: splitting the same bytes into lines with memchr, no parsing. Runs alternate between
//! the two so that a noisy neighbour slows both alike; medians are reported.
//!
//! `cargo bench -p ctid-proto --bench ami_decode` (or `scripts/bench-ami-decode`).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ctid_proto::ami::{AmiCodec, AmiFrame};
use tokio_util::codec::Decoder;

const TARGET_BYTES: usize = 32 << 20;
const READ_SIZE: usize = 64 << 10;
const RUNS: usize = 15;

/// The messages Asterisk sent in every recording, banners removed, repeated to ~32 MiB.
fn corpus() -> (Vec<u8>, usize) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ami");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/ami")
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".sent.txt"))
        .collect();
    files.sort();
    let mut once = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let banner_end = memchr::memchr(b'\n', &bytes).unwrap() + 1;
        once.extend_from_slice(&bytes[banner_end..]);
    }
    let mut corpus = b"Asterisk Call Manager/11.0.0\r\n".to_vec();
    while corpus.len() < TARGET_BYTES {
        corpus.extend_from_slice(&once);
    }
    (corpus, files.len())
}

/// Reads the corpus as a socket would deliver it and decodes every message.
fn decode(corpus: &[u8]) -> usize {
    let mut codec = AmiCodec::default();
    let mut buf = BytesMut::with_capacity(2 * READ_SIZE);
    let mut messages = 0;
    for chunk in corpus.chunks(READ_SIZE) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            if let AmiFrame::Message(m) = frame {
                black_box(m.event());
                messages += 1;
            }
        }
    }
    messages
}

/// The baseline: every line found with memchr, blank lines counted as message ends.
fn split_lines(corpus: &[u8]) -> usize {
    let mut messages = 0;
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', corpus) {
        if end - start <= 1 {
            messages += 1;
        }
        start = end + 1;
    }
    messages
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let (corpus, files) = corpus();
    let expected = decode(&corpus);
    assert_eq!(
        split_lines(&corpus),
        expected,
        "both must see the same messages"
    );
    let (mut base, mut codec) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        black_box(split_lines(black_box(&corpus)));
        base.push(t.elapsed());
        let t = Instant::now();
        black_box(decode(black_box(&corpus)));
        codec.push(t.elapsed());
    }
    let (base, codec) = (median(base), median(codec));
    let mb = corpus.len() as f64 / 1e6;
    let row = |name: &str, d: Duration| {
        println!(
            "  {name:<28} {:>9.1} MB/s {:>12.0} messages/s   (median {:.1} ms)",
            mb / d.as_secs_f64(),
            expected as f64 / d.as_secs_f64(),
            d.as_secs_f64() * 1e3
        );
    };
    println!(
        "AMI decode: {files} recorded streams repeated to {mb:.1} MB ({expected} messages), \
         read {} KiB at a time, {RUNS} alternating runs, medians:",
        READ_SIZE >> 10
    );
    row("baseline (memchr lines)", base);
    row("AmiCodec", codec);
    println!(
        "  AmiCodec / baseline throughput: {:.2}",
        base.as_secs_f64() / codec.as_secs_f64()
    );
}
