//! `aion-embed`: AION-1 embeddings of catalogue objects (see `docs/cli.md`).

use std::process::ExitCode;

use aion_app::embed::{EmbedArgs, TOOL, run};

fn main() -> ExitCode {
    aion_app::cli::tool_main::<EmbedArgs>(TOOL, run)
}
