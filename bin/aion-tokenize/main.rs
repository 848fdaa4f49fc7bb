//! `aion-tokenize`: catalogue columns → AION-1 tokens (and back with `--decode`) (see `docs/cli.md`).

fn main() -> std::process::ExitCode {
    aion_app::cli::main::<aion_app::tokenize::TokenizeArgs>()
}
