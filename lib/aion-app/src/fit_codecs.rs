//! `aion-fit-codecs`: fit quantile scalar codecs on catalogue columns, across MPI ranks, and
//! write them in the Hub layout (`<model>/codecs/<name>/{config.json, model.safetensors}`),
//! registering each column as an extra modality of the model directory (`modalities.json`).
//!
//! Each rank reads its block of rows and keeps a bottom-`R` sample by `hash(seed, row)`; the
//! samples are merged, so the codec is the same for any rank count (see
//! `aion_model::codecs::scalar_fit`). The table is built as the reference builds it.

use std::path::PathBuf;

use aion_io::Catalog;
use aion_model::codecs::scalar_fit::FitKind;
use aion_model::modality::ExtraModality;
use aion_model::modality::extra::ExtraModalitiesFile;
use aion_mpi::{Session, block_range};
use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::collective::agree;
use crate::finetune::codecs::fit_distributed;

/// Tool name.
pub const TOOL: &str = "aion-fit-codecs";

/// Command line of `aion-fit-codecs`.
#[derive(Debug, Parser)]
#[command(name = TOOL, version,
    about = "Fit AION scalar quantile codecs on catalogue columns (MPI-parallel) and register them as new modalities of a model directory.",
    after_help = "Exit codes: 0 = done; 2 = error.")]
pub struct FitCodecsArgs {
    /// Catalogue HDF5 file(s) or glob(s).
    #[arg(long, value_name = "IN.h5", num_args = 1.., required = true)]
    pub catalog: Vec<String>,
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
    /// Log level.
    #[arg(long, default_value = "info")]
    pub log_level: String,
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
pub fn run(args: &FitCodecsArgs, session: &Session) -> Result<Vec<ExtraModality>> {
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
            let mut c = Catalog::open(&args.catalog)?;
            let ds: Vec<String> = specs.iter().map(|s| s.dataset.clone()).collect();
            for d in &ds {
                if !c.has(d) {
                    bail!("dataset {d} is in none of the catalogue files");
                }
            }
            c.size_by(&ds)?;
            Ok(c)
        })(),
    )?;
    let rows = block_range(catalog.n_rows(), session.rank(), session.size());
    let mut out = Vec::new();
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
        spec.validate().map_err(anyhow::Error::msg)?;
        let r = if session.is_root() {
            fitted
                .write_hub(&args.output.join("codecs").join(&s.dataset))
                .map_err(Into::into)
        } else {
            Ok(())
        };
        agree(session, r)?;
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
        out.push(spec);
    }
    let r = if session.is_root() {
        (|| -> Result<()> {
            let mut list = ExtraModalitiesFile::read_dir(&args.output)?
                .map(|f| f.modalities)
                .unwrap_or_default();
            for s in &out {
                list.retain(|e| e.token_key != s.token_key);
                list.push(s.clone());
            }
            ExtraModalitiesFile::new(list).write_dir(&args.output)?;
            Ok(())
        })()
    } else {
        Ok(())
    };
    agree(session, r)?;
    Ok(out)
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
