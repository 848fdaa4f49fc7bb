//! Exit codes shared by all tools (documented in `docs/cli.md`).

use std::io::Write;
use std::process::ExitCode;

use crate::collective::{AgreedError, is_output_failure};

/// The run finished; every row was written (rows with unusable values carry flags).
pub const OK: u8 = 0;
/// A stop signal (Slurm time limit, SIGTERM, SIGINT) ended the run early; the chunks done so far
/// are recorded in the output, and re-running the same command continues from there.
pub const CHECKPOINTED: u8 = 3;
/// The run stopped on an error (bad arguments, unreadable input, failure on any rank).
pub const FAILURE: u8 = 2;

/// The exit-code table shown at the end of every tool's `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 = finished, every row written (unusable values are flagged per row); \
2 = stopped on an error (printed with the file, dataset and row it concerns); \
3 = stopped by a signal (e.g. the Slurm time limit) after saving its progress: run the same command again to continue.";

/// Prints `err` with its cause chain on one line, prefixed by the tool (and the rank when the
/// error is this rank's own), and returns [`FAILURE`]. An error all ranks agreed on is printed
/// by rank 0 only, except failures of the file system (a failed write of the output, a full
/// disk), which every rank prints (a Slurm job may keep one log per rank, and each must say why
/// the job stopped).
pub fn report(tool: &str, rank: usize, size: usize, err: &anyhow::Error) -> ExitCode {
    let agreed = err.downcast_ref::<AgreedError>().is_some() && !is_output_failure(err);
    let line = if agreed || size == 1 {
        (rank == 0).then(|| format!("{tool}: error: {err:#}\n"))
    } else {
        Some(format!("{tool} [rank {rank}/{size}]: error: {err:#}\n"))
    };
    if let Some(line) = line {
        // One write, so lines of different ranks do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
    ExitCode::from(FAILURE)
}
