//! The `aion-finetune` run configuration (TOML, `configs/finetune/*.toml`). Unknown keys are
//! errors. See `docs/finetune.md` for every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aion_model::lora::{LoraBlocks, LoraConfig, LoraTargets};
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A linear or MLP head on the frozen model's pooled embeddings.
    Probe,
    /// LoRA adapters (plus the embeddings of new modalities); the base stays frozen.
    Lora,
    /// Every weight, supervised (inputs → targets).
    Full,
    /// Every weight, 4M masked modelling over the catalogue's modalities (+ targets).
    Masked,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Training mode.
    pub mode: Mode,
    /// Seed of every random choice (initialisation, split, batches, masks, noise).
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// Catalogue file(s) or glob(s) (`--catalog` overrides).
    #[serde(default)]
    pub catalog: Vec<String>,
    /// Catalogue format (`hdf5`, `parquet`, `hats`, `fits`); default: told from the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<aion_io::Format>,
    /// Survey preset: a built-in name or a preset file, relative to this file (`--survey`
    /// overrides; docs/surveys.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survey: Option<String>,
    /// Output model directory (`--output` overrides).
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// The model to start from.
    pub model: ModelSection,
    /// Modalities to add to the model (new survey columns), with fitted codecs.
    #[serde(default, rename = "new_modality")]
    pub new_modalities: Vec<NewModalitySection>,
    /// What the model reads and predicts, and the data split.
    pub data: DataSection,
    /// `token_key = "DATASET"` (as in the other tools' run configs).
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Optimisation.
    #[serde(default)]
    pub train: TrainSection,
    /// LoRA (mode `lora`).
    #[serde(default)]
    pub lora: Option<LoraSection>,
    /// Probe head (mode `probe`).
    #[serde(default)]
    pub probe: Option<ProbeSection>,
    /// Calibration of the exported posteriors.
    #[serde(default)]
    pub calibration: CalibrationSection,
}

/// `[model]`: start from a model directory or from scratch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Existing model directory (Hub layout).
    #[serde(default)]
    pub base: Option<PathBuf>,
    /// From scratch: a size preset (`tiny`, `base`).
    #[serde(default)]
    pub init: Option<String>,
    /// From scratch: width override.
    #[serde(default)]
    pub dim: Option<usize>,
    /// From scratch: encoder depth override.
    #[serde(default)]
    pub encoder_depth: Option<usize>,
    /// From scratch: decoder depth override.
    #[serde(default)]
    pub decoder_depth: Option<usize>,
    /// From scratch: heads override.
    #[serde(default)]
    pub num_heads: Option<usize>,
    /// Ordinal sin-cos initial tables for new scalar modalities (default true).
    #[serde(default = "defaults::yes")]
    pub ordinal_init: bool,
}

/// `[[new_modality]]`: one new catalogue column as a modality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewModalitySection {
    /// Token key (`tok_mag_u_sdss`).
    pub token_key: String,
    /// Catalogue dataset (also the default mapping and the codec folder name).
    pub dataset: String,
    /// `"Scalar"` (quantiles of the values) or `"LogScalar"` (of their logarithm).
    #[serde(default = "defaults::scalar")]
    pub codec: String,
    /// Codebook size `K` (and the vocabulary of the modality).
    #[serde(default = "defaults::codebook")]
    pub codebook_size: usize,
    /// Maximum reservoir size `R` (fewer rows: all of them).
    #[serde(default = "defaults::reservoir")]
    pub reservoir_size: usize,
    /// `min_log_value` of a `LogScalar` codec.
    #[serde(default = "defaults::min_log")]
    pub min_log_value: f64,
    /// Codec folder (default: the dataset name).
    #[serde(default)]
    pub codec_dir: Option<String>,
    /// Units of the values as astropy reads them (`"mag"`; `""` = dimensionless), written to
    /// `modalities.json` and to the outputs' `units` attributes (default: `"unknown"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// Axis label for figures and outputs (default: the token key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Train / validation / test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSection {
    /// Fraction of rows held out for validation (early stopping).
    #[serde(default = "defaults::val")]
    pub val: f64,
    /// Fraction of rows held out for the final test evaluation.
    #[serde(default)]
    pub test: f64,
    /// Seed of the split (default: the run seed).
    #[serde(default)]
    pub seed: Option<u64>,
}

impl Default for SplitSection {
    fn default() -> Self {
        Self {
            val: defaults::val(),
            test: 0.0,
            seed: None,
        }
    }
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Modalities fed to the encoder.
    pub inputs: Vec<String>,
    /// Modalities predicted by the decoder (modes lora, full, masked). A modality listed in
    /// both is hidden at random in masked mode (`train.mask_ratio`) and then predicted.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Split fractions.
    #[serde(default)]
    pub split: SplitSection,
    /// A JSON file `{"train": [rows], "val": [rows], "test": [rows]}` that fixes the split.
    #[serde(default)]
    pub split_file: Option<PathBuf>,
    /// Gaussian noise augmentation: `token_key = "ERROR_DATASET"` (the value is redrawn as
    /// `x + N(0, 1)·error` at every step before tokenizing).
    #[serde(default)]
    pub noise: BTreeMap<String, String>,
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Optimiser steps (one global batch each).
    #[serde(default = "defaults::steps")]
    pub steps: u64,
    /// Rows per global batch (split over the ranks).
    #[serde(default = "defaults::batch")]
    pub batch_size: usize,
    /// Peak learning rate.
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    /// Final learning rate of the cosine schedule.
    #[serde(default)]
    pub min_lr: f64,
    /// Linear warm-up steps.
    #[serde(default = "defaults::warmup")]
    pub warmup_steps: u64,
    /// AdamW decoupled weight decay (matrices only).
    #[serde(default = "defaults::wd")]
    pub weight_decay: f64,
    /// AdamW β₁.
    #[serde(default = "defaults::beta1")]
    pub beta1: f64,
    /// AdamW β₂.
    #[serde(default = "defaults::beta2")]
    pub beta2: f64,
    /// AdamW ε.
    #[serde(default = "defaults::eps")]
    pub eps: f64,
    /// Global gradient-norm clipping (0 = off).
    #[serde(default = "defaults::clip")]
    pub clip_norm: f64,
    /// Masked mode: probability that an available input modality is hidden (and predicted).
    #[serde(default)]
    pub mask_ratio: Option<f64>,
    /// Gaussian soft-label width in token bins for scalar targets (0 = one-hot).
    #[serde(default)]
    pub soft_label_sigma: f64,
    /// Loss weight per target token key (default 1).
    #[serde(default)]
    pub target_weights: BTreeMap<String, f64>,
    /// Validation every N steps (and at the end).
    #[serde(default = "defaults::eval_every")]
    pub eval_every: u64,
    /// Early stopping: stop after this many evaluations without a better `select` value
    /// (0 = never stop early). With validation rows, the best model is the one exported.
    #[serde(default)]
    pub patience: u64,
    /// Exponential moving average of the weights (decay per step, e.g. 0.998; 0 = off):
    /// evaluations, model selection and the export use the averaged weights.
    #[serde(default)]
    pub ema: f64,
    /// What selects the best model and drives early stopping: `"loss"` (the validation loss,
    /// default) or the name of a validation metric where lower is better (e.g.
    /// `"sigma_nmad_tok_z"`).
    #[serde(default = "defaults::loss")]
    pub select: String,
    /// Checkpoint every N steps (and on the stop signal).
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: u64,
    /// Keep `checkpoint/` after a finished run.
    #[serde(default)]
    pub keep_checkpoint: bool,
}

impl Default for TrainSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// `[lora]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
    /// Rank.
    #[serde(default = "defaults::lora_rank")]
    pub rank: usize,
    /// Alpha (scale = alpha / rank); default = rank.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// `selfattn`, `crossattn`, `attn`, `mlp` or `all`.
    #[serde(default = "defaults::lora_targets")]
    pub targets: String,
    /// Encoder blocks to adapt (default all).
    #[serde(default)]
    pub encoder_blocks: Option<Vec<usize>>,
    /// Decoder blocks to adapt (default all).
    #[serde(default)]
    pub decoder_blocks: Option<Vec<usize>>,
}

impl LoraSection {
    /// The model crate's LoRA config.
    pub fn to_config(&self) -> Result<LoraConfig> {
        let targets = LoraTargets::parse(&self.targets).with_context(|| {
            format!(
                "[lora] targets = {:?}: use selfattn, crossattn, attn, mlp or all",
                self.targets
            )
        })?;
        Ok(LoraConfig {
            rank: self.rank,
            alpha: self.alpha.unwrap_or(self.rank as f64),
            targets,
            blocks: LoraBlocks {
                encoder: self.encoder_blocks.clone(),
                decoder: self.decoder_blocks.clone(),
            },
        })
    }
}

/// `[probe]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    /// Catalogue dataset of the target values (regression) or integer labels (classification).
    pub target: String,
    /// `"regression"` (Gaussian likelihood) or `"classification"`.
    #[serde(default = "defaults::regression")]
    pub task: String,
    /// Hidden width of an MLP head (0 = linear head).
    #[serde(default)]
    pub hidden: usize,
}

/// `[calibration]`: how the posteriors of point targets (scalar targets that are never inputs,
/// e.g. redshift) are calibrated at export, on the validation split (`crate::calibration`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSection {
    /// `"temperature"` (default: one temperature per target, written to `calibration.json`) or
    /// `"none"`.
    #[serde(default = "defaults::temperature")]
    pub method: String,
    /// With `[data.noise]` on inputs: also fit the temperature of the posterior averaged over
    /// this many redraws of the inputs within their errors (`aion-predict --noise-draws`); 0: no.
    /// Left out of the serialised configuration at its default, so the configuration hash of a
    /// run that does not set it is the one earlier versions computed (their checkpoints resume).
    #[serde(
        default = "defaults::noise_draws",
        skip_serializing_if = "defaults::is_noise_draws"
    )]
    pub noise_draws: usize,
}

impl Default for CalibrationSection {
    fn default() -> Self {
        Self {
            method: defaults::temperature(),
            noise_draws: defaults::noise_draws(),
        }
    }
}

mod defaults {
    pub fn seed() -> u64 {
        0
    }
    pub fn noise_draws() -> usize {
        16
    }
    pub fn is_noise_draws(n: &usize) -> bool {
        *n == noise_draws()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn scalar() -> String {
        "Scalar".into()
    }
    pub fn codebook() -> usize {
        1024
    }
    pub fn reservoir() -> usize {
        100_000
    }
    pub fn min_log() -> f64 {
        -3.0
    }
    pub fn val() -> f64 {
        0.1
    }
    pub fn steps() -> u64 {
        1000
    }
    pub fn batch() -> usize {
        256
    }
    pub fn lr() -> f64 {
        1e-3
    }
    pub fn warmup() -> u64 {
        50
    }
    pub fn wd() -> f64 {
        0.05
    }
    pub fn beta1() -> f64 {
        0.9
    }
    pub fn beta2() -> f64 {
        0.95
    }
    pub fn eps() -> f64 {
        1e-8
    }
    pub fn clip() -> f64 {
        1.0
    }
    pub fn eval_every() -> u64 {
        100
    }
    pub fn checkpoint_every() -> u64 {
        100
    }
    pub fn lora_rank() -> usize {
        4
    }
    pub fn lora_targets() -> String {
        "attn".into()
    }
    pub fn loss() -> String {
        "loss".into()
    }
    pub fn regression() -> String {
        "regression".into()
    }
    pub fn temperature() -> String {
        "temperature".into()
    }
}

impl FinetuneConfig {
    /// Reads and validates a config file. Relative paths inside it (`catalog`, `output`,
    /// `[model] base`, `[data] split_file`) are taken relative to the directory of the file, so
    /// the run does not depend on the working directory (command-line overrides stay relative to
    /// the working directory).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut cfg: Self =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("invalid config {}", path.display()))?;
        cfg.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(cfg)
    }

    /// Makes the relative paths of the file relative to `dir` (the file's directory).
    fn resolve_paths(&mut self, dir: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        self.catalog = self
            .catalog
            .iter()
            .map(|p| crate::config_path::resolve_pattern(dir, p))
            .collect();
        if let Some(s) = self.survey.as_mut().filter(|s| s.ends_with(".toml")) {
            *s = crate::config_path::resolve_pattern(dir, s);
        }
        self.output.as_mut().map(join);
        self.model.base.as_mut().map(join);
        self.data.split_file.as_mut().map(join);
    }

    /// The masking probability of masked mode (0 in the other modes).
    pub fn mask_ratio(&self) -> f64 {
        match self.mode {
            Mode::Masked => self.train.mask_ratio.unwrap_or(0.25),
            _ => self.train.mask_ratio.unwrap_or(0.0),
        }
    }

    /// Checks what can be checked without the model and the catalogue.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        match (&m.base, &m.init) {
            (Some(_), Some(_)) => bail!("[model]: give base or init, not both"),
            (None, None) => bail!("[model]: give base (a model directory) or init (a size preset)"),
            (None, Some(_)) if matches!(self.mode, Mode::Probe | Mode::Lora) => {
                bail!("mode {:?} needs a trained [model] base", self.mode)
            }
            _ => {}
        }
        let t = &self.train;
        ensure!(
            t.steps > 0 && t.batch_size > 0,
            "[train] steps and batch_size must be positive"
        );
        ensure!(
            t.lr > 0.0 && t.min_lr >= 0.0,
            "[train] lr must be positive, min_lr non-negative"
        );
        ensure!(
            t.eval_every > 0 && t.checkpoint_every > 0,
            "[train] eval_every and checkpoint_every must be positive"
        );
        ensure!(
            (0.0..1.0).contains(&self.mask_ratio()),
            "[train] mask_ratio must be in [0, 1)"
        );
        ensure!(
            t.soft_label_sigma >= 0.0,
            "[train] soft_label_sigma must be >= 0"
        );
        ensure!((0.0..1.0).contains(&t.ema), "[train] ema must be in [0, 1)");
        let s = &self.data.split;
        ensure!(
            s.val >= 0.0 && s.test >= 0.0 && s.val + s.test < 1.0,
            "[data.split] val and test must be >= 0 with val + test < 1"
        );
        ensure!(
            !self.data.inputs.is_empty(),
            "[data] inputs must not be empty"
        );
        match self.mode {
            Mode::Probe => ensure!(self.probe.is_some(), "mode probe needs a [probe] section"),
            _ => ensure!(
                !self.data.targets.is_empty(),
                "[data] targets must not be empty"
            ),
        }
        if self.mode == Mode::Lora {
            self.lora
                .clone()
                .unwrap_or(LoraSection {
                    rank: defaults::lora_rank(),
                    alpha: None,
                    targets: defaults::lora_targets(),
                    encoder_blocks: None,
                    decoder_blocks: None,
                })
                .to_config()?;
        }
        if let Some(p) = &self.probe {
            ensure!(
                p.task == "regression" || p.task == "classification",
                "[probe] task must be regression or classification"
            );
        }
        ensure!(
            ["temperature", "none"].contains(&self.calibration.method.as_str()),
            "[calibration] method must be temperature or none"
        );
        Ok(())
    }

    /// The LoRA settings (defaults when the section is absent).
    pub fn lora_config(&self) -> Result<LoraConfig> {
        match &self.lora {
            Some(l) => l.to_config(),
            None => toml::from_str::<LoraSection>("")
                .expect("defaults")
                .to_config(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_in_configs_finetune_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/finetune");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                FinetuneConfig::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 1);
    }

    /// `[calibration]` serialises as before `noise_draws` existed unless it is set: the
    /// configuration hash (checkpoints, finished runs) of existing runs does not change.
    #[test]
    fn calibration_section_keeps_its_serialised_form() {
        let d = serde_json::to_value(CalibrationSection::default()).unwrap();
        assert_eq!(d, serde_json::json!({ "method": "temperature" }));
        let set = CalibrationSection {
            noise_draws: 4,
            ..Default::default()
        };
        let v = serde_json::to_value(&set).unwrap();
        assert_eq!(v["noise_draws"], 4);
        let back: CalibrationSection = serde_json::from_value(d).unwrap();
        assert_eq!(back.noise_draws, 16);
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let dir = std::env::temp_dir().join(format!("aion-config-{}", std::process::id()));
        let sub = dir.join("configs");
        std::fs::create_dir_all(&sub).unwrap();
        let file = sub.join("run.toml");
        std::fs::write(
            &file,
            "mode = \"full\"\ncatalog = [\"../data/a.h5\", \"../more/*.h5\", \"/abs/b.h5\"]\n\
             output = \"../runs/x\"\n[model]\nbase = \"model\"\n\
             [data]\ninputs = [\"tok_z\"]\ntargets = [\"tok_z\"]\nsplit_file = \"split.json\"\n",
        )
        .unwrap();
        let cfg = FinetuneConfig::load(&file).unwrap();
        let data = sub.join("../data/a.h5");
        let more = format!(
            "{}/../more/*.h5",
            glob::Pattern::escape(sub.to_str().unwrap())
        );
        assert_eq!(cfg.catalog, [data.to_str().unwrap(), &more, "/abs/b.h5"]);
        assert_eq!(cfg.output, Some(sub.join("../runs/x")));
        assert_eq!(cfg.model.base, Some(sub.join("model")));
        assert_eq!(cfg.data.split_file, Some(sub.join("split.json")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn typos_and_contradictions_are_errors() {
        let base = "mode = \"masked\"\n[model]\ninit = \"tiny\"\n[data]\ninputs = [\"tok_z\"]\ntargets = [\"tok_z\"]\n";
        let ok: FinetuneConfig = toml::from_str(base).unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.train.batch_size, 256);
        assert!(toml::from_str::<FinetuneConfig>(&format!("{base}[train]\nstep = 3\n")).is_err());
        let probe: FinetuneConfig = toml::from_str(&base.replace("masked", "probe")).unwrap();
        assert!(probe.validate().is_err());
    }
}
