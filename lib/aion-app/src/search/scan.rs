//! One rank's scan of its block of rows, in chunks (bounded memory).
//!
//! A reader thread reads chunk i+1 (embedding, object ids, `modalities_used`) while chunk i is
//! scored; at most two chunks are held at a time. Each chunk is split into `threads` contiguous
//! parts scored on scoped threads, each with its own per-query top-k (merged at the end). No MPI
//! call happens here, so ranks need not stay in step while scanning.

use std::ops::Range;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::Result;

use super::kernel::{self, Metric, Prepared, Rows, Scratch, Skipped};
use super::queries::Table;
use super::topk::TopK;
use crate::progress::Progress;

/// What a rank's scan found.
#[derive(Debug)]
pub struct Scanned {
    /// Per query, the k best rows of this rank's block.
    pub topk: Vec<TopK>,
    /// Rows skipped as invalid.
    pub skipped: Skipped,
    /// Rows read.
    pub rows: u64,
    /// Seconds of the whole scan.
    pub seconds: f64,
    /// Seconds the scoring waited for the reader.
    pub read_wait: f64,
}

/// A chunk as read.
struct Chunk {
    start: usize,
    x: Vec<f32>,
    ids: Vec<i64>,
    used: Vec<bool>,
}

/// Scans rows `block` of `table` in chunks of `chunk_rows`, scoring on `threads` threads.
#[allow(clippy::too_many_arguments)]
pub fn scan_block(
    table: &Table,
    block: Range<usize>,
    chunk_rows: usize,
    threads: usize,
    q: &Prepared,
    metric: Metric,
    k: usize,
    progress: &mut Progress,
) -> Result<Scanned> {
    let t0 = Instant::now();
    let threads = threads.max(1);
    let d = table.d;
    let mut states: Vec<(Vec<TopK>, Scratch)> = (0..threads)
        .map(|_| {
            (
                (0..q.len()).map(|_| TopK::new(k)).collect(),
                Scratch::default(),
            )
        })
        .collect();
    let mut skipped = Skipped::default();
    let mut rows = 0u64;
    let mut read_wait = 0.0;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = sync_channel::<Result<Chunk>>(1);
        let chunks: Vec<Range<usize>> = aion_mpi::blocks(block.clone(), chunk_rows).collect();
        scope.spawn(move || {
            for c in chunks {
                let read = table.read(c.clone()).map(|(x, ids, used)| Chunk {
                    start: c.start,
                    x,
                    ids,
                    used,
                });
                let failed = read.is_err();
                if tx.send(read).is_err() || failed {
                    break;
                }
            }
        });
        loop {
            let w = Instant::now();
            let Ok(chunk) = rx.recv() else { break };
            read_wait += w.elapsed().as_secs_f64();
            let chunk = chunk?;
            let n = chunk.ids.len();
            let per = n.div_ceil(threads).max(1);
            let part = |i: usize| {
                let r = (i * per).min(n)..((i + 1) * per).min(n);
                Rows {
                    start: (chunk.start + r.start) as u64,
                    x: &chunk.x[r.start * d..r.end * d],
                    ids: &chunk.ids[r.clone()],
                    used: &chunk.used[r],
                }
            };
            if threads == 1 {
                let (topk, scratch) = &mut states[0];
                skipped.add(kernel::scan(part(0), q, metric, topk, scratch));
            } else {
                let parts: Vec<Skipped> = std::thread::scope(|s| {
                    let handles: Vec<_> = states
                        .iter_mut()
                        .enumerate()
                        .map(|(i, (topk, scratch))| {
                            let rows = part(i);
                            s.spawn(move || kernel::scan(rows, q, metric, topk, scratch))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("scoring thread panicked"))
                        .collect()
                });
                parts.into_iter().for_each(|p| skipped.add(p));
            }
            rows += n as u64;
            progress.set(rows);
        }
        Ok(())
    })?;
    let mut states = states.into_iter();
    let (mut topk, _) = states.next().expect("at least one thread");
    for (other, _) in states {
        for (a, b) in topk.iter_mut().zip(other) {
            a.merge(b);
        }
    }
    Ok(Scanned {
        topk,
        skipped,
        rows,
        seconds: t0.elapsed().as_secs_f64(),
        read_wait,
    })
}
