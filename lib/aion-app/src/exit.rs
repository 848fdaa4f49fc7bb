//! Exit codes shared by all tools (documented in `docs/cli.md`).

use std::process::ExitCode;

/// The run finished; every row was written (rows with unusable values carry flags).
pub const OK: u8 = 0;
/// The run stopped on an error (bad arguments, unreadable input, failure on any rank).
pub const FAILURE: u8 = 2;

/// Prints `err` with its whole cause chain on one line, prefixed by the tool and rank, and
/// returns [`FAILURE`].
pub fn report(tool: &str, rank: Option<(usize, usize)>, err: &anyhow::Error) -> ExitCode {
    match rank {
        Some((r, n)) if n > 1 => eprintln!("{tool} [rank {r}/{n}]: error: {err:#}"),
        _ => eprintln!("{tool}: error: {err:#}"),
    }
    ExitCode::from(FAILURE)
}

/// The exit-code table shown at the end of every tool's `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 = finished, every row written (unusable values are flagged per row); \
2 = stopped on an error (printed with the file, dataset and row it concerns).";
