//! `aion-finetune`: fine-tune AION-1 on a catalogue, data-parallel over MPI (see
//! `docs/finetune.md`).

fn main() -> std::process::ExitCode {
    aion_app::cli::main::<aion_app::finetune::FinetuneArgs>()
}
