//! `aion-fit-codecs`: fit scalar quantile codecs on catalogue columns, MPI-parallel, and write
//! them in the Hub layout (see `docs/finetune.md`).

fn main() -> std::process::ExitCode {
    aion_app::cli::main::<aion_app::fit_codecs::FitCodecsArgs>()
}
