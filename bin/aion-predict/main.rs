//! `aion-predict`: posteriors of scalar properties of catalogue objects (see `docs/cli.md`).

use std::process::ExitCode;

use aion_app::predict::{PredictArgs, TOOL, run};

fn main() -> ExitCode {
    aion_app::cli::tool_main::<PredictArgs>(TOOL, run)
}
