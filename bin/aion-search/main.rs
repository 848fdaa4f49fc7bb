//! `aion-search`: exact top-k similarity search over catalogue embeddings (see `docs/cli.md`).

fn main() -> std::process::ExitCode {
    aion_app::cli::main::<aion_app::search::SearchArgs>()
}
