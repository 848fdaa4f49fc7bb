//! `aion-embed`: AION-1 embeddings of catalogue objects (see `docs/cli.md`).

fn main() -> std::process::ExitCode {
    aion_app::cli::main::<aion_app::embed::EmbedArgs>()
}
