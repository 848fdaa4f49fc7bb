//! `aion-export`: an aion-hpc output joined with catalogue columns, as Parquet, FITS or a HATS
//! catalogue (see `docs/cli.md`).

use std::process::ExitCode;

use aion_app::export::{ExportArgs, TOOL, run};

fn main() -> ExitCode {
    aion_app::cli::tool_main::<ExportArgs>(TOOL, run)
}
