//! `aion-tokenize`: catalogue columns → AION-1 tokens (and back with `--decode`) (see `docs/cli.md`).

use std::process::ExitCode;

use aion_app::tokenize::{TOOL, TokenizeArgs, run};

fn main() -> ExitCode {
    aion_app::cli::tool_main::<TokenizeArgs>(TOOL, run)
}
