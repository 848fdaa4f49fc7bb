//! How much CPU a rank burns while it waits for another in a collective.
//!
//! Rank 0 computes for `IDLE_WAIT_SECONDS` (default 3) and then joins a collective; every other rank
//! joins at once and waits. Each rank prints its CPU seconds (user + system) over its wall
//! seconds. `MODE` picks the wait: `quiet` (the default, [`aion_mpi::Session::sum_u64`], which
//! sleeps while it waits) or `spin` (a plain blocking `MPI_Allreduce`, OpenMPI's busy-poll;
//! try it with `OMPI_MCA_mpi_yield_when_idle=1` too).
//!
//! ```text
//! cargo build --release -p aion-mpi --example idle_wait
//! mpirun -n 2 target/release/examples/idle_wait
//! MODE=spin mpirun -n 2 target/release/examples/idle_wait
//! MODE=spin OMPI_MCA_mpi_yield_when_idle=1 mpirun -n 2 target/release/examples/idle_wait
//! ```

use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::traits::*;

/// CPU seconds of this process (Linux `/proc/self/stat`, 100 ticks per second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn main() {
    let session = aion_mpi::Session::init().expect("MPI initialises");
    let seconds: f64 = std::env::var("IDLE_WAIT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let spin = std::env::var("MODE").is_ok_and(|m| m == "spin");
    // Start together, then measure.
    session.barrier();
    let (wall0, cpu0) = (Instant::now(), cpu_seconds());
    if session.is_root() {
        let mut x = 1.0f64;
        while wall0.elapsed() < Duration::from_secs_f64(seconds) {
            for _ in 0..10_000 {
                x = (x * 1.000_000_1).sin() + 1.0;
            }
        }
        std::hint::black_box(x);
    }
    if spin {
        let mut out = 0u64;
        session
            .world()
            .all_reduce_into(&1u64, &mut out, SystemOperation::sum());
    } else {
        session.sum_u64(1);
    }
    let (wall, cpu) = (wall0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    println!(
        "rank {} ({}): {cpu:.2} s CPU over {wall:.2} s wall ({:.0} %)",
        session.rank(),
        if spin { "spin" } else { "quiet" },
        100.0 * cpu / wall
    );
}
