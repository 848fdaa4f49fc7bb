//! `aion-predict`: posteriors of scalar properties of catalogue objects (see `docs/cli.md`).

fn main() -> std::process::ExitCode {
    aion_app::cli::main::<aion_app::predict::PredictArgs>()
}
