//! `aion-finetune`: fine-tune AION-1 on a catalogue, data-parallel over MPI (see
//! `docs/finetune.md`).

use std::process::ExitCode;

use aion_app::finetune::{FinetuneArgs, TOOL, run};

fn main() -> ExitCode {
    aion_app::cli::tool_main::<FinetuneArgs>(TOOL, run)
}
