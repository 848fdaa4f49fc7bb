//! Fault injection for the resume tests: `AION_FAULT=<point>@<chunk>[:rank]` makes the given
//! rank (default 0) die by SIGKILL — or receive SIGUSR1 for `point = usr1` — when it reaches
//! `point` while handling chunk `chunk`. Points, in order within a round:
//! `prepare` (reading the chunk), `before_write`, `mid_write` (after the first dataset of the
//! chunk is written), `after_write` (all datasets written, not yet flushed), `after_flush`
//! (flushed, not yet marked done), `after_mark`, and `usr1` (raises SIGUSR1 at `before_write`).
//! `AION_TEST_SLOW_MS=<ms>` makes the reader sleep that long per chunk (to catch a run mid-way);
//! `AION_TEST_BUSY_MS=<ms>` makes rank 0's reader compute until the process has used that much
//! more CPU time, per chunk (a rank that works while the others wait, however loaded the
//! machine).
//! Both are read once; without them nothing happens.
//!
//! All of this exists only with the cargo feature `fault-injection` of aion-app, which only the
//! tests enable (the root package's dev-dependency on aion-app turns it on for `cargo test`,
//! binaries included; `cargo build` leaves it off): without it these functions do nothing and
//! the binaries do not read the variables.

#[cfg(feature = "fault-injection")]
pub use injected::*;

#[cfg(not(feature = "fault-injection"))]
pub use inert::*;

/// The fault points, the slow reader and the busy rank (`fault-injection` builds).
#[cfg(feature = "fault-injection")]
mod injected {
    use std::cell::Cell;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, PartialEq)]
    struct Fault {
        point: String,
        chunk: usize,
        rank: usize,
    }

    fn parse(spec: &str) -> Option<Fault> {
        let (point, rest) = spec.split_once('@')?;
        let (chunk, rank) = match rest.split_once(':') {
            Some((c, r)) => (c.parse().ok()?, r.parse().ok()?),
            None => (rest.parse().ok()?, 0),
        };
        Some(Fault {
            point: point.to_string(),
            chunk,
            rank,
        })
    }

    fn fault() -> Option<&'static Fault> {
        static F: OnceLock<Option<Fault>> = OnceLock::new();
        F.get_or_init(|| std::env::var("AION_FAULT").ok().and_then(|s| parse(&s)))
            .as_ref()
    }

    static RANK: AtomicUsize = AtomicUsize::new(0);

    thread_local! {
        static WRITES: Cell<usize> = const { Cell::new(0) };
    }

    /// Records this process's rank (once, at start).
    pub fn set_rank(rank: usize) {
        RANK.store(rank, Ordering::Relaxed);
    }

    /// Called at each point of a chunk's life.
    pub fn hit(point: &str, chunk: Option<usize>) {
        let Some(f) = fault() else { return };
        let Some(chunk) = chunk else { return };
        if f.chunk != chunk || RANK.load(Ordering::Relaxed) != f.rank {
            return;
        }
        if f.point == "usr1" && point == "before_write" {
            eprintln!("AION_FAULT: raising SIGUSR1 at chunk {chunk}");
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGUSR1);
        } else if f.point == point {
            eprintln!("AION_FAULT: SIGKILL at {point} of chunk {chunk}");
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGKILL);
        }
    }

    /// Counts dataset writes of the current chunk (for `mid_write`).
    pub fn dataset_written(chunk: Option<usize>) {
        let n = WRITES.with(|w| {
            w.set(w.get() + 1);
            w.get()
        });
        if n == 1 {
            hit("mid_write", chunk);
        }
    }

    /// Resets the per-chunk write counter.
    pub fn begin_chunk() {
        WRITES.with(|w| w.set(0));
    }

    /// Sleeps `AION_TEST_SLOW_MS` if set.
    pub fn slow() {
        static MS: OnceLock<u64> = OnceLock::new();
        let ms = *MS.get_or_init(|| {
            std::env::var("AION_TEST_SLOW_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        });
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    /// Computes on rank 0 until the process has used `AION_TEST_BUSY_MS` more CPU time, if set.
    pub fn busy() {
        static MS: OnceLock<u64> = OnceLock::new();
        let ms = *MS.get_or_init(|| {
            std::env::var("AION_TEST_BUSY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        });
        if ms == 0 || RANK.load(Ordering::Relaxed) != 0 {
            return;
        }
        let until = crate::stages::process_cpu_seconds().unwrap_or(0.0) + ms as f64 / 1e3;
        let mut x = 1.0f64;
        while crate::stages::process_cpu_seconds().unwrap_or(0.0) < until {
            for _ in 0..1000 {
                x = std::hint::black_box(x * 1.000_001 + 1e-9);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn parses_specs() {
            let f = super::parse("mid_write@3:1").unwrap();
            assert_eq!((f.point.as_str(), f.chunk, f.rank), ("mid_write", 3, 1));
            assert_eq!(super::parse("after_mark@0").unwrap().rank, 0);
            assert!(super::parse("nonsense").is_none());
        }
    }
}

/// The same functions, doing nothing (builds without `fault-injection`).
#[cfg(not(feature = "fault-injection"))]
mod inert {
    /// Records this process's rank (once, at start).
    pub fn set_rank(_rank: usize) {}

    /// Called at each point of a chunk's life.
    pub fn hit(_point: &str, _chunk: Option<usize>) {}

    /// Counts dataset writes of the current chunk (for `mid_write`).
    pub fn dataset_written(_chunk: Option<usize>) {}

    /// Resets the per-chunk write counter.
    pub fn begin_chunk() {}

    /// Sleeps `AION_TEST_SLOW_MS` if set.
    pub fn slow() {}

    /// Computes on rank 0 until the process has used `AION_TEST_BUSY_MS` more CPU time, if set.
    pub fn busy() {}
}
