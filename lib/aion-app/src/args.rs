//! Command-line arguments shared by the tools (`#[command(flatten)]` into each tool's parser).

use std::path::PathBuf;

use clap::Args;

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

    /// Rows per batch (per rank). Default: from the config, else 256.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Rows per chunk: the unit of work, of collective writes and of resuming (default 1024).
    #[arg(long, value_name = "N")]
    pub chunk_rows: Option<usize>,

    /// Replace an existing output instead of resuming it.
    #[arg(long)]
    pub overwrite: bool,

    /// Log level (error, warn, info, debug, trace); `RUST_LOG` overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}
