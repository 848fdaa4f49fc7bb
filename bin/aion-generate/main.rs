//! `aion-generate`: cross-modal generation for catalogue objects (see `docs/generate.md`).

fn main() -> std::process::ExitCode {
    aion_app::cli::main::<aion_app::generate::GenerateArgs>()
}
