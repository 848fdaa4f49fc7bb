//! `aion-model`: write a random AION model directory, check one strictly, describe one
//! (see `docs/cli.md`).

use std::process::ExitCode;

fn main() -> ExitCode {
    aion_app::model_tool::main()
}
