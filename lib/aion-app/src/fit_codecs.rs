//! `aion-fit-codecs`: fit quantile scalar codecs on catalogue columns, across MPI ranks, and
//! write them in the Hub layout (`<model>/codecs/<name>/{config.json, model.safetensors}`),
//! registering each column as an extra modality of the model directory (`modalities.json`).
//!
//! Each rank reads its block of rows and keeps a bottom-`R` sample by `hash(seed, row)`; the
//! samples are merged, so the codec is the same for any rank count (see
//! `aion_model::codecs::scalar_fit`). The table is built as the reference builds it.
//!
//! The output directory is new, empty, or one an aion-hpc tool wrote (it holds
//! [`crate::guard::MODEL_MARKER`]); codecs or modalities it already holds are replaced only with
//! `--overwrite`. The result is assembled in a temporary sibling directory (the existing files
//! hard-linked in, the new ones written) and swapped in when complete.

use std::path::{Path, PathBuf};

use aion_io::Catalog;
use aion_model::codecs::scalar_fit::FitKind;
use aion_model::hub::layout;
use aion_model::modality::ExtraModality;
use aion_model::modality::extra::ExtraModalitiesFile;
use aion_mpi::{Session, block_range};
use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use clap::Parser;

use crate::cli::{Report, RunContext, Tool, ToolArgs};
use crate::collective::agree;
use crate::finetune::codecs::fit_distributed;
use crate::guard::{Existing, Inputs, claim_output};

/// Tool name.
pub const TOOL: &str = "aion-fit-codecs";

/// Command line of `aion-fit-codecs`.
#[derive(Debug, Parser)]
#[command(name = TOOL, version,
    about = "Fit AION scalar quantile codecs on catalogue columns (MPI-parallel) and register them as new modalities of a model directory.",
    after_help = "Exit codes: 0 = done; 2 = error.")]
pub struct FitCodecsArgs {
    /// Catalogue file(s) or glob(s): HDF5, Parquet, FITS, or a HATS catalogue directory.
    #[arg(long, value_name = "IN", num_args = 1.., required = true)]
    pub catalog: Vec<String>,
    /// Catalogue format (`hdf5`, `parquet`, `hats`, `fits`); default: told from the files.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<aion_io::Format>,
    /// Survey preset: fit on the columns it computes (`FLUX_G` of `legacysurvey-piczl`, …) from
    /// a survey's own files (`legacysurvey`, `desi`, `gaia`, … or `FILE.toml`; docs/surveys.md).
    #[arg(long, value_name = "NAME|FILE.toml")]
    pub survey: Option<String>,
    /// Model directory to write `codecs/<name>/` and `modalities.json` into (created if absent).
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// `TOKEN_KEY=DATASET[:Scalar|LogScalar]`, e.g. `tok_mag_u_sdss=mag_u`; repeatable.
    #[arg(
        long = "column",
        value_name = "TOKEN_KEY=DATASET[:KIND]",
        required = true
    )]
    pub columns: Vec<String>,
    /// Codebook size K (the modality's vocabulary).
    #[arg(long, default_value_t = 1024)]
    pub codebook_size: usize,
    /// Maximum reservoir size R.
    #[arg(long, default_value_t = 100_000)]
    pub reservoir_size: usize,
    /// `min_log_value` of LogScalar codecs.
    #[arg(long, default_value_t = -3.0, allow_hyphen_values = true)]
    pub min_log_value: f64,
    /// Seed of the sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace codecs and modalities that the output directory already holds (only in a
    /// directory written by an aion-hpc tool; any other existing directory is refused).
    #[arg(long)]
    pub overwrite: bool,
    /// Log level.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

impl ToolArgs for FitCodecsArgs {
    fn log_level(&self) -> &str {
        &self.log_level
    }
}

/// The tool (`aion_app::cli::main::<FitCodecsArgs>()` is the binary).
impl Tool for FitCodecsArgs {
    const NAME: &'static str = TOOL;
    /// No checkpoints: a stop signal ends the fit (the result is swapped in only when complete).
    const STOP_SIGNALS: bool = false;

    /// Returns the fitted modalities as the summary.
    fn run<B: Backend>(&self, ctx: &RunContext, _device: B::Device) -> Result<Report> {
        let fitted = run(self, ctx.session())?;
        Ok(Report::finished(serde_json::to_value(fitted)?))
    }
}

/// One `--column`.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// Token key.
    pub token_key: String,
    /// Dataset.
    pub dataset: String,
    /// Codec kind name.
    pub kind: String,
}

/// Parses `TOKEN_KEY=DATASET[:KIND]`.
pub fn parse_column(s: &str) -> Result<ColumnSpec> {
    let (key, rest) = s
        .split_once('=')
        .with_context(|| format!("--column {s}: expected TOKEN_KEY=DATASET[:KIND]"))?;
    let (dataset, kind) = rest.split_once(':').unwrap_or((rest, "Scalar"));
    if key.is_empty() || dataset.is_empty() || !["Scalar", "LogScalar"].contains(&kind) {
        bail!("--column {s}: expected TOKEN_KEY=DATASET[:Scalar|LogScalar]");
    }
    Ok(ColumnSpec {
        token_key: key.into(),
        dataset: dataset.into(),
        kind: kind.into(),
    })
}

/// Runs the tool; returns the fitted modalities.
fn run(args: &FitCodecsArgs, session: &Session) -> Result<Vec<ExtraModality>> {
    let specs = agree(
        session,
        args.columns
            .iter()
            .map(|c| parse_column(c))
            .collect::<Result<Vec<_>>>(),
    )?;
    let catalog = agree(
        session,
        (|| {
            let preset = args
                .survey
                .as_deref()
                .map(crate::survey::load)
                .transpose()?;
            let mut c = Catalog::open_with(&args.catalog, args.format, preset.as_ref())?;
            let ds: Vec<String> = specs.iter().map(|s| s.dataset.clone()).collect();
            for d in &ds {
                if !c.has(d) {
                    bail!(
                        "dataset {d} is in none of the catalogue files; the catalogue's columns: {}",
                        crate::run_config::column_list(&c)
                    );
                }
            }
            c.size_by(&ds)?;
            if c.n_rows() == 0 {
                bail!(
                    "the catalogue ({}) has no rows: there is nothing to fit a codec on",
                    c.paths_text()
                );
            }
            Ok(c)
        })(),
    )?;
    let mut inputs = Inputs::new();
    inputs.files("catalogue file", catalog.paths());
    let claim = claim_output(
        session,
        TOOL,
        &inputs,
        &args.output,
        Existing::model_dir,
        &[],
    )?;
    let clash = if session.is_root() && claim.exists && !args.overwrite {
        refuse_replacing(&args.output, &specs)
    } else {
        Ok(())
    };
    agree(session, clash)?;
    let rows = block_range(catalog.n_rows(), session.rank(), session.size());
    let mut out = Vec::new();
    let mut fitted_codecs = Vec::new();
    for s in &specs {
        let col = agree(
            session,
            catalog
                .read(&s.dataset, rows.clone())
                .map_err(Into::into)
                .and_then(|c| {
                    if c.row_len() != 1 {
                        bail!(
                            "{}: one value per row expected, found {:?}",
                            s.dataset,
                            c.row_shape
                        );
                    }
                    let v = c
                        .to_f32()
                        .with_context(|| format!("{} is not numeric", s.dataset))?;
                    Ok(v.into_iter()
                        .zip(c.present)
                        .map(|(x, p)| if p { x } else { f32::NAN })
                        .collect::<Vec<f32>>())
                }),
        )?;
        let kind = if s.kind == "LogScalar" {
            FitKind::LogScalar {
                min_log_value: args.min_log_value,
            }
        } else {
            FitKind::Scalar
        };
        let fitted = agree(
            session,
            fit_distributed(
                session,
                &s.dataset,
                kind,
                args.codebook_size,
                args.reservoir_size,
                args.seed,
                rows.clone().zip(col).map(|(r, x)| (r as u64, x)),
            ),
        )?;
        let spec = ExtraModality {
            token_key: s.token_key.clone(),
            codec: s.kind.clone(),
            codec_dir: s.dataset.clone(),
            vocab: args.codebook_size,
            tokens: 1,
            dataset: s.dataset.clone(),
            class_name: None,
            units: None,
            label: None,
        };
        agree(session, spec.validate().map_err(anyhow::Error::msg))?;
        if session.is_root() {
            log::info!(
                "{} <- {}: {:?} codec, K = {}, R = {}",
                s.token_key,
                s.dataset,
                s.kind,
                fitted.table.len(),
                fitted.reservoir.len()
            );
        }
        fitted_codecs.push(fitted);
        out.push(spec);
    }
    let written = if session.is_root() {
        write_model_dir(&args.output, claim.exists, &fitted_codecs, &out)
    } else {
        Ok(())
    };
    agree(session, written)?;
    drop(claim);
    Ok(out)
}

/// Refuses (without `--overwrite`) to replace a codec or a registered modality that the output
/// directory already holds.
fn refuse_replacing(dir: &Path, specs: &[ColumnSpec]) -> Result<()> {
    let registered = ExtraModalitiesFile::read_dir(dir)?
        .map(|f| f.modalities)
        .unwrap_or_default();
    let clashes: Vec<String> = specs
        .iter()
        .flat_map(|s| {
            let codec = layout::codec(dir, &s.dataset);
            let mut c = Vec::new();
            if codec.exists() {
                c.push(format!("codec {}", codec.display()));
            }
            if registered.iter().any(|e| e.token_key == s.token_key) {
                c.push(format!("modality {}", s.token_key));
            }
            c
        })
        .collect();
    if !clashes.is_empty() {
        bail!(
            "{} already holds {}; use --overwrite to replace them",
            dir.display(),
            clashes.join(", ")
        );
    }
    Ok(())
}

/// Writes the codecs and `modalities.json` (rank 0): into a temporary sibling of `out` (holding
/// `out`'s files when it exists), swapped in when complete.
fn write_model_dir(
    out: &Path,
    exists: bool,
    fitted: &[aion_model::codecs::scalar_fit::FittedCodec],
    specs: &[ExtraModality],
) -> Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let stage = crate::guard::temp_sibling(out);
    let built = (|| -> Result<()> {
        if exists {
            crate::guard::link_tree(out, &stage)?;
        } else {
            std::fs::create_dir(&stage)
                .with_context(|| format!("cannot create {}", stage.display()))?;
        }
        for f in fitted {
            let dir = layout::codec(&stage, &f.name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("cannot replace {}", dir.display()))?;
            }
            f.write_hub(&dir)?;
        }
        let mut list = ExtraModalitiesFile::read_dir(&stage)?
            .map(|f| f.modalities)
            .unwrap_or_default();
        for s in specs {
            list.retain(|e| e.token_key != s.token_key);
            list.push(s.clone());
        }
        ExtraModalitiesFile::new(list).write_dir(&stage)?;
        crate::guard::mark_model_dir(&stage, TOOL)?;
        crate::guard::replace_dir(&stage, out)
    })();
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&stage);
    }
    built
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_columns() {
        let c = super::parse_column("tok_mag_u_sdss=mag_u").unwrap();
        assert_eq!((c.dataset.as_str(), c.kind.as_str()), ("mag_u", "Scalar"));
        assert_eq!(
            super::parse_column("tok_f=FLUX:LogScalar").unwrap().kind,
            "LogScalar"
        );
        assert!(super::parse_column("tok_f=FLUX:Image").is_err());
        assert!(super::parse_column("tok_f").is_err());
    }
}
