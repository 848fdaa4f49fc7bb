//! `aion-generate`: cross-modal generation for catalogue objects (see `docs/generate.md`).

use std::process::ExitCode;

use aion_app::generate::{GenerateArgs, TOOL, run};

fn main() -> ExitCode {
    aion_app::cli::tool_main::<GenerateArgs>(TOOL, run)
}
