//! `aion-model`: write a random AION model directory, check one strictly, describe one
//! (see `docs/cli.md`).

fn main() -> std::process::ExitCode {
    aion_app::cli::main::<aion_app::model_tool::ModelArgs>()
}
