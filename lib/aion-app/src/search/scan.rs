//! One rank's scan of its block of rows, in chunks (bounded memory).
//!
//! Chunk edges fall on global multiples of the chunk size, itself a multiple of the GEMM tile
//! ([`TILE_ROWS`]), so only a rank's first and last tiles can be partial.
//!
//! A reader thread reads chunk i+1 (embedding, object ids, `modalities_used`) while chunk i is
//! scored; at most two chunks are held at a time. Each chunk is split into `threads` contiguous
//! parts scored on scoped threads, each with its own per-query top-k (merged at the end). No MPI
//! call happens here, so ranks need not stay in step while scanning.

use std::ops::Range;
use std::sync::mpsc::{channel, sync_channel};
use std::time::Instant;

use anyhow::Result;

use super::kernel::{self, Metric, Prepared, Rows, Scratch, Skipped, TILE_ROWS};
use super::queries::Table;
use super::topk::TopK;
use crate::progress::Progress;
use crate::stages::process_cpu_seconds;

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
    /// CPU seconds (user + system, all threads) the scan used, when the OS says (Linux).
    pub cpu_seconds: Option<f64>,
}

/// A chunk as read.
struct Chunk {
    start: usize,
    x: Vec<f32>,
    ids: Vec<i64>,
    used: Vec<bool>,
}

/// Cuts `block` at the global multiples of `size` (so chunk and tile edges line up for every
/// rank count).
fn aligned(block: Range<usize>, size: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = block.start;
    while at < block.end {
        let next = ((at / size + 1) * size).min(block.end);
        out.push(at..next);
        at = next;
    }
    out
}

/// Scans rows `block` of `table` in chunks of about `chunk_rows` (rounded up to whole tiles,
/// aligned on global rows), scoring on `threads` threads.
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
    let cpu0 = process_cpu_seconds();
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
        // Scored chunks go back to the reader, which reads into their buffers: no allocation
        // (and no page faults) per chunk once three buffers exist.
        let (back_tx, back_rx) = channel::<Chunk>();
        let chunks = aligned(
            block.clone(),
            chunk_rows.div_ceil(TILE_ROWS).max(1) * TILE_ROWS,
        );
        scope.spawn(move || {
            for c in chunks {
                let mut x = back_rx.try_recv().map(|b| b.x).unwrap_or_default();
                let read = table.read_into(c.clone(), &mut x).map(|(ids, used)| Chunk {
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
            // Threads take whole tiles (global alignment, as the kernel wants).
            let end = chunk.start + n;
            let first_tile = chunk.start / TILE_ROWS;
            let tiles = (end - 1) / TILE_ROWS + 1 - first_tile;
            let per = tiles.div_ceil(threads) * TILE_ROWS;
            let part = |i: usize| {
                let bound = |i: usize| {
                    (first_tile * TILE_ROWS + i * per).clamp(chunk.start, end) - chunk.start
                };
                let r = bound(i)..bound(i + 1);
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
            let _ = back_tx.send(chunk); // the reader may be done already
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
        cpu_seconds: process_cpu_seconds().zip(cpu0).map(|(b, a)| b - a),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_is_read() {
        if cfg!(target_os = "linux") {
            let t = super::process_cpu_seconds().expect("/proc/self/stat");
            assert!(t >= 0.0);
        }
    }

    #[test]
    fn aligned_chunks() {
        assert_eq!(super::aligned(5..25, 10), vec![5..10, 10..20, 20..25]);
        assert_eq!(super::aligned(10..20, 10), vec![10..20]);
        assert!(super::aligned(3..3, 10).is_empty());
    }
}
