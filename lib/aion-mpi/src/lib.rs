//! MPI plumbing for aion-hpc: the one place MPI is initialised, the row decomposition, the few
//! collectives the tools need, and the Slurm job environment.
//!
//! - [`session`]: [`Session`] owns MPI (singleton when no launcher is used).
//! - [`partition`]: pure functions splitting N rows into contiguous blocks over R ranks.
//! - [`slurm`]: the `SLURM_*` variables as a typed struct (the `slurm-env` crate the user named
//!   does not exist on crates.io, so this small module stands in for it).
//!
//! Ranks and counts are `i32` in MPI and `usize` here; conversions happen only in this crate.

pub mod partition;
pub mod session;
pub mod slurm;

pub use partition::{block_range, blocks};
pub use session::{Session, all_gather_bytes, all_true};
pub use slurm::SlurmEnv;

/// The MPI library's own description (`MPI_Get_library_version`, e.g. `Open MPI v4.1.4, …`),
/// first line only. Needs no initialised MPI.
pub fn library_version() -> String {
    mpi::environment::library_version()
        .map(|v| v.lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
