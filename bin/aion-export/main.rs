//! `aion-export`: an aion-hpc output joined with catalogue columns, as Parquet, FITS or a HATS
//! catalogue (see `docs/cli.md`).

fn main() -> std::process::ExitCode {
    aion_app::cli::main::<aion_app::export::ExportArgs>()
}
