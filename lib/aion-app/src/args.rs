//! Command-line arguments shared by the tools (`#[command(flatten)]` into each tool's parser).

use std::path::PathBuf;

use clap::Args;

/// Rows per model batch per rank when neither `--batch-size` nor the run config sets it.
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// Input bytes per chunk that sets the chunk size when neither `--chunk-rows` nor the run
/// config does.
pub const CHUNK_INPUT_BYTES: usize = 64 << 20;
/// Largest chunk the adaptive size picks.
pub const MAX_CHUNK_ROWS: usize = 4096;

/// What `--batch-size` defaults to (help text and `docs/cli.md`).
pub fn batch_size_default() -> String {
    format!("batch_size of the run config, else {DEFAULT_BATCH_SIZE}")
}

/// What `--chunk-rows` defaults to.
pub fn chunk_rows_default() -> String {
    format!(
        "chunk_rows of the run config, else adaptive: about {} MiB of input per chunk, \
         1 to {MAX_CHUNK_ROWS} rows, a multiple of the batch size",
        CHUNK_INPUT_BYTES >> 20
    )
}

/// What `--threads` of the model tools and `aion-finetune` defaults to.
pub fn threads_default() -> String {
    "SLURM_CPUS_PER_TASK when set, else the node's cores divided by its MPI ranks (at least 1)"
        .into()
}

/// A help line ending in `[default: …]`, as clap writes the defaults it knows itself.
pub fn with_default(help: &str, default: &str) -> String {
    format!("{help} [default: {default}]")
}

/// Where the data comes from and goes to, and how columns map to modalities.
#[derive(Debug, Clone, Args)]
pub struct IoArgs {
    /// Model directory in the Hub layout: `config.json` + `model.safetensors` at the top (for the
    /// transformer) and `codecs/<name>/{config.json,model.safetensors}` per codec.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,

    /// Catalogue file(s) or glob pattern(s) — HDF5, Parquet or FITS files, or a HATS catalogue
    /// directory; several are read as one catalogue, in order (each glob sorted; HATS partitions
    /// by Norder, Npix).
    #[arg(long, value_name = "IN", num_args = 1.., required = true)]
    pub catalog: Vec<String>,

    /// Catalogue format: `hdf5`, `parquet`, `hats` or `fits`. Default: told from each file's
    /// content (files of different formats in one run are refused).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<aion_io::Format>,

    /// Output HDF5 file (one file, written collectively by all ranks).
    #[arg(long, value_name = "OUT.h5")]
    pub output: PathBuf,

    /// Feed a modality from a dataset: `TOKEN_KEY=DATASET` (e.g. `tok_flux_g=FLUX_G`,
    /// `tok_xp_bp=coeff[0:55]`, `tok_spectrum_sdss=spectrum`, `tok_ebv=none` to leave it out).
    /// Repeatable; overrides the run config and the Multimodal Universe defaults. Labels
    /// (redshift, `tok_z`) are inputs only when mapped here or in the run config
    /// (`--map tok_z=Z`).
    #[arg(long = "map", value_name = "TOKEN_KEY=DATASET")]
    pub maps: Vec<String>,

    /// TOML run configuration (see `configs/`); command-line flags override it.
    #[arg(long, value_name = "run.toml")]
    pub config: Option<PathBuf>,

    /// Rows per model batch (per rank).
    #[arg(long, value_name = "N",
        help = with_default("Rows per model batch (per rank)", &batch_size_default()))]
    pub batch_size: Option<usize>,

    /// Rows per chunk: the unit of work, of collective writes and of resuming.
    #[arg(long, value_name = "N", help = with_default(
        "Rows per chunk: the unit of work, of collective writes and of resuming",
        &chunk_rows_default()))]
    pub chunk_rows: Option<usize>,

    /// Replace an existing output instead of resuming it.
    #[arg(long)]
    pub overwrite: bool,

    /// Log level (error, warn, info, debug, trace); `RUST_LOG` overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}
