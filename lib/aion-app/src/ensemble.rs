//! Ensembles of models: a directory whose `ensemble.json` lists member model directories
//! (written by `aion-finetune` with `[ensemble] members = N`). `aion-predict --model DIR`
//! averages the members' posteriors: the ensemble's posterior of a scalar target is the mixture
//! `p(k) = (1/M) Σ_m softmax(logits_m)(k)`, summarised (after the ensemble's own
//! `calibration.json`, fitted on the mixture) exactly like one model's. Averaging probabilities,
//! not logits, keeps the disagreement between members in the width of the posterior.
//!
//! ```json
//! {"format": "aion-hpc/ensemble", "version": 1, "members": ["member-0", "member-1"],
//!  "combine": "mean of the members' posterior probabilities"}
//! ```
//!
//! Member paths are relative to the ensemble directory. Every member must read the same input
//! modalities and predict the requested targets.

use std::path::{Path, PathBuf};

use aion_model::fourm::{DecoderMode, TokenInput};
use aion_model::modality::ModalityInfo;
use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::args::IoArgs;
use crate::batching::{Batch, inputs};
use crate::codec_set::ModalityTokens;
use crate::model_plan::ModelPlan;

/// File name inside an ensemble directory.
pub const FILE: &str = "ensemble.json";
/// Value of the file's `format` field.
pub const FORMAT: &str = "aion-hpc/ensemble";
/// How members are combined (recorded in the file).
pub const COMBINE: &str = "mean of the members' posterior probabilities";

/// `ensemble.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleFile {
    /// [`FORMAT`].
    pub format: String,
    /// 1.
    pub version: u32,
    /// Member model directories, relative to the ensemble directory.
    pub members: Vec<String>,
    /// [`COMBINE`].
    pub combine: String,
}

impl EnsembleFile {
    /// An ensemble of these members.
    pub fn new(members: Vec<String>) -> Self {
        Self {
            format: FORMAT.into(),
            version: 1,
            members,
            combine: COMBINE.into(),
        }
    }

    /// Reads `dir/ensemble.json`; `None` when the directory has none (a single model).
    pub fn read_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let f: Self = serde_json::from_str(&text)
            .with_context(|| format!("invalid ensemble file {}", path.display()))?;
        ensure!(
            f.format == FORMAT && f.version == 1 && f.combine == COMBINE,
            "{}: format {:?} version {} combine {:?} (expected {FORMAT:?}, 1, {COMBINE:?})",
            path.display(),
            f.format,
            f.version,
            f.combine
        );
        ensure!(!f.members.is_empty(), "{}: no members", path.display());
        for m in &f.members {
            let p = dir.join(m);
            if !p.join("config.json").is_file() {
                bail!(
                    "{}: member {m} is not a model directory ({} has no config.json)",
                    path.display(),
                    p.display()
                );
            }
        }
        Ok(Some(f))
    }

    /// Writes `dir/ensemble.json` (atomically).
    pub fn write_dir(&self, dir: &Path) -> Result<()> {
        let text = format!("{}\n", serde_json::to_string_pretty(self)?);
        aion_model::export::write_atomic(&dir.join(FILE), text.as_bytes())?;
        Ok(())
    }
}

/// The model directories behind `--model DIR`: the members of an ensemble, or `DIR` itself.
pub fn model_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(match EnsembleFile::read_dir(dir)? {
        Some(f) => f.members.iter().map(|m| dir.join(m)).collect(),
        None => vec![dir.to_path_buf()],
    })
}

/// The plan of every model behind `io.model` (the members of an ensemble, or the model) with
/// its directory; the members must read the same modalities.
pub fn load_plans<B: Backend>(
    io: &IoArgs,
    device: &B::Device,
    targets: &[&str],
) -> Result<(Vec<PathBuf>, Vec<ModelPlan<B>>)> {
    let dirs = model_dirs(&io.model)?;
    let mut plans = Vec::new();
    for d in &dirs {
        let member = IoArgs {
            model: d.clone(),
            ..io.clone()
        };
        let plan = ModelPlan::<B>::load(&member, device, targets);
        plans.push(if dirs.len() > 1 {
            plan.with_context(|| format!("ensemble member {}", d.display()))?
        } else {
            plan?
        });
    }
    let reads = |p: &ModelPlan<B>| -> Vec<(&str, bool)> {
        p.codecs
            .bindings()
            .map(|b| b.token_key)
            .zip(p.is_input.iter().copied())
            .collect()
    };
    for (d, p) in dirs.iter().zip(&plans).skip(1) {
        ensure!(
            reads(p) == reads(&plans[0]),
            "ensemble member {} reads {:?} but {} reads {:?}: the members must read the same modalities",
            d.display(),
            reads(p),
            dirs[0].display(),
            reads(&plans[0])
        );
    }
    Ok((dirs, plans))
}

/// The files whose checksums identify the models of [`load_plans`] (and `ensemble.json`).
pub fn plan_files<B: Backend>(
    io: &IoArgs,
    dirs: &[PathBuf],
    plans: &[ModelPlan<B>],
) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .zip(plans)
        .flat_map(|(d, p)| {
            p.files(&IoArgs {
                model: d.clone(),
                ..io.clone()
            })
        })
        .collect();
    if dirs.len() > 1 {
        files.push(io.model.join(FILE));
    }
    files
}

/// Logits of each target for batch `b` (row-major `rows × tokens × vocab`): the model's, or for
/// an ensemble the [`Mixture`] of the members' posteriors as logits. `inp` are member 0's
/// inputs of the batch; `tokens` holds the chunk's tokens per member.
pub fn logits<B: Backend>(
    plans: &[ModelPlan<B>],
    tokens: &[Vec<ModalityTokens>],
    b: &Batch,
    inp: &[TokenInput<B>],
    targets: &[&'static ModalityInfo],
    mode: DecoderMode,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>> {
    let to_vec = |t: burn::tensor::Tensor<B, 3>| -> Result<Vec<f32>> {
        t.into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    if plans.len() == 1 {
        return plans[0]
            .aion
            .predict(inp, targets, mode)
            .into_iter()
            .map(to_vec)
            .collect();
    }
    let mut mix = vec![Mixture::default(); targets.len()];
    for (m, plan) in plans.iter().enumerate() {
        let own;
        let inp_m = if m == 0 {
            inp
        } else {
            own = inputs::<B>(&tokens[m], b, device);
            &own[..]
        };
        for ((x, l), t) in mix
            .iter_mut()
            .zip(plan.aion.predict(inp_m, targets, mode))
            .zip(targets)
        {
            x.add(&to_vec(l)?, t.vocab);
        }
    }
    Ok(mix.iter().map(Mixture::log_probs).collect())
}

/// Running sum of the members' posterior probabilities over rows of logits (`rows × vocab`).
#[derive(Debug, Clone, Default)]
pub struct Mixture {
    sum: Vec<f64>,
    vocab: usize,
    members: usize,
}

impl Mixture {
    /// Adds one member's logits (row-major, `vocab` per row; every member the same rows).
    pub fn add(&mut self, logits: &[f32], vocab: usize) {
        if self.members == 0 {
            self.sum = vec![0.0; logits.len()];
            self.vocab = vocab;
        }
        assert_eq!(
            (logits.len(), vocab),
            (self.sum.len(), self.vocab),
            "members disagree on the rows or the vocabulary"
        );
        for (row, acc) in logits
            .chunks_exact(vocab)
            .zip(self.sum.chunks_exact_mut(vocab))
        {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f64> = row.iter().map(|&l| f64::from(l - max).exp()).collect();
            let total: f64 = e.iter().sum();
            for (a, x) in acc.iter_mut().zip(e) {
                *a += x / total;
            }
        }
        self.members += 1;
    }

    /// The mixture as logits (log of the mean probability; a floor of 1e-300 keeps them finite),
    /// which [`crate::posterior`] and the calibration treat like one model's logits.
    pub fn log_probs(&self) -> Vec<f32> {
        let m = self.members.max(1) as f64;
        self.sum
            .iter()
            .map(|&s| (s / m).max(1e-300).ln() as f32)
            .collect()
    }

    /// Members added.
    pub fn members(&self) -> usize {
        self.members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mixture_averages_probabilities() {
        let mut m = Mixture::default();
        // Two rows of a 3-token vocabulary; member 1 certain of token 0, member 2 of token 2.
        m.add(&[0.0, -100.0, -100.0, 1.0, 1.0, 1.0], 3);
        m.add(&[-100.0, -100.0, 0.0, 1.0, 1.0, 1.0], 3);
        let p: Vec<f64> = m.log_probs().iter().map(|&l| f64::from(l).exp()).collect();
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[2] - 0.5).abs() < 1e-6 && p[1] < 1e-40);
        for x in &p[3..] {
            assert!((x - 1.0 / 3.0).abs() < 1e-6);
        }
        assert_eq!(m.members(), 2);
        // The mixture's logits summarise to the two-member posterior: half on the point 0
        // (token 0), half uniform on (1, 2] (token 2).
        let s = crate::posterior::summarize(&m.log_probs()[..3], &[0.0, 1.0, 2.0]);
        assert!((s.mean - 0.75).abs() < 1e-5, "{s:?}");
    }

    #[test]
    fn files_are_checked() {
        let dir = std::env::temp_dir().join(format!("aion-ensemble-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        assert_eq!(model_dirs(&dir).unwrap(), vec![dir.clone()]);
        EnsembleFile::new(vec!["a".into()]).write_dir(&dir).unwrap();
        let e = model_dirs(&dir).unwrap_err();
        assert!(format!("{e:#}").contains("not a model directory"), "{e:#}");
        std::fs::write(dir.join("a/config.json"), "{}").unwrap();
        assert_eq!(model_dirs(&dir).unwrap(), vec![dir.join("a")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
