//! `aion-predict`: posteriors of scalar properties (redshift first) for every catalogue object.
//!
//! For each `--target` the decoder's logits are mapped through the target's codec into a
//! posterior (see [`crate::posterior`]): mean, standard deviation, median, mode, 16/84 %
//! quantiles, optionally the full probability vector (`--save-pdf`) and the raw logits
//! (`--save-logits`). Targets are never inputs. When the catalogue holds the true value of a
//! single-token target, every row's PIT and CRPS are written too (`pred/<key>/{pit,crps}`), the
//! run summary holds the metrics of [`crate::metrics`] (σ_NMAD, outlier fraction, bias, 68 % and
//! 95 % interval coverage, mean CRPS, PIT histogram), and a figure (PNG and SVG) beside the
//! output shows predicted vs true values, the PIT histogram and the interval coverage; without
//! true values, a histogram of the predictions.
//!
//! When the model directory holds a `calibration.json` (fitted by `aion-finetune` on its
//! validation split, [`crate::calibration`]), a target's logits are divided by its temperature
//! before anything is computed from them (summaries, PIT, CRPS, metrics and `--save-pdf`;
//! `--save-logits` keeps the raw logits); every `pred/<key>/…` and `pdf/<key>` dataset records
//! it in its `calibration` attribute, and the run summary in `config.calibration`.
//! `--no-calibration` ignores the file.
//!
//! With `--ensemble DIR…`, further models (e.g. the same fine-tuning with other seeds) predict
//! every row too, and each target's posterior is the mean of the members' probabilities, each
//! member calibrated by its own `calibration.json`. Each member reads the catalogue through its
//! own codecs (once per distinct set of codec files); the modality layout and the values the
//! target tokens decode to must be `--model`'s.
//!
//! With `--probe`, the probe head that `aion-finetune` (mode `probe`) left in the model directory
//! (`probe/`) is applied to each row's pooled embedding, computed from the modalities the probe
//! was trained on: a Gaussian mean and σ (regression) or class probabilities (classification).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aion_model::ModelDir;
use aion_model::codecs::scalar::ScalarCodec;
use aion_model::fourm::{Aion, DecoderMode, TokenInput};
use aion_model::modality::{Modality, ModalityInfo, ModalityTable, UNKNOWN_UNITS};
use aion_model::probe::{ProbeConfig, ProbeHead, ProbePrediction, ProbeTask};
use aion_model::rng::{self, Rng};
use aion_model::weights::sha256_file;
use aion_mpi::Session;
use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use clap::{Parser, ValueEnum};

use crate::args::IoArgs;
use crate::backend::ComputeArgs;
use crate::batching::{batches, input_of, inputs};
use crate::calibration::{CalibrationFile, scaled};
use crate::cli::{Report, RunContext, Tool};
use crate::codec_set::{CodecSet, ModalityTokens};
use crate::collective::agree;
use crate::metrics::{Binned, Evaluation, Posterior};
use crate::model_plan::ModelPlan;
use crate::output::{Constant, Tally, flag_specs, write_constants, write_masks};
use crate::pipeline::{DatasetSpec, Dtype, Outcome, RunOutput, run_chunks};
use crate::plot;
use crate::plot::charts::{EvaluationFigure, HistogramFigure};
use crate::posterior::{centres, edges, probabilities, summarize_probabilities};
use crate::run_config::{Binding, Source};
use crate::run_config::{announce_inputs, inputs_json};
use crate::signals::StopFlag;
use crate::stages::{Stage, Stages};
use crate::tool::{RunIdentity, start};

/// Tool name.
pub const TOOL: &str = "aion-predict";

/// The posterior summaries written per target (`pred/<token_key>/<name>`).
pub const STATS: [&str; 7] = [
    "mean",
    "std",
    "median",
    "mode",
    "q16",
    "q84",
    "mass_outside",
];

/// How several targets are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Decoder {
    /// As the reference's `AION.forward`: targets requested together share the decoder's
    /// (degenerate) self-attention and influence each other.
    Joint,
    /// Each target as if requested alone.
    Independent,
}

/// Command line of `aion-predict`.
#[derive(Debug, Parser)]
#[command(name = TOOL, version, about = "Predict scalar properties (e.g. redshift posteriors) of every catalogue object with AION-1.",
    after_help = crate::exit::EXIT_CODES_HELP)]
pub struct PredictArgs {
    /// Input, output and mapping options.
    #[command(flatten)]
    pub io: IoArgs,
    /// Device, precision, threads.
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Scalar modality to predict (token key, e.g. `tok_z`); repeatable.
    #[arg(
        long = "target",
        value_name = "TOKEN_KEY",
        required_unless_present = "probe"
    )]
    pub targets: Vec<String>,
    /// Apply the model directory's probe head (`probe/`, from `aion-finetune` mode `probe`) to
    /// each row's pooled embedding: `probe/<dataset>/{mean,std}` (regression) or
    /// `probe/<dataset>/{probs,class}` (classification).
    #[arg(long)]
    pub probe: bool,
    /// Decoding of several targets.
    #[arg(long, value_enum, default_value = "joint")]
    pub decoder: Decoder,
    /// Also write the probability of every codec token (`pdf/<token_key>`).
    #[arg(long)]
    pub save_pdf: bool,
    /// Also write the raw logits (`logits/<token_key>`, shape `(N, tokens, vocab)`).
    #[arg(long)]
    pub save_logits: bool,
    /// Ignore the model directory's `calibration.json` (written by aion-finetune): summarise the
    /// raw posteriors.
    #[arg(long)]
    pub no_calibration: bool,
    /// Further model directories whose posteriors are averaged with `--model`'s (an ensemble, e.g.
    /// the same fine-tuning run with other seeds): a target's posterior is the mean of the
    /// members' probabilities, each calibrated by its own `calibration.json`. Each member reads
    /// the catalogue through its own codecs, which must have `--model`'s vocabularies and decode
    /// the target tokens to the same values; each member's transformer runs on every row.
    #[arg(long, value_name = "DIR", num_args = 1..)]
    pub ensemble: Vec<PathBuf>,
    /// Average each target's posterior over N copies of the inputs redrawn within their errors
    /// (`x + N(0, 1)·err`, as the fine-tuning's `[data.noise]` augmentation redraws them), so the
    /// posterior accounts for the measurement errors. The error datasets are the model's own
    /// `[data.noise]` map (its `finetune.json`) or `--noise`; the temperature is the one
    /// aion-finetune fitted for such averages (`calibration.json`, `noise_draws`) when there is
    /// one. Costs N times the transformer's work.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub noise_draws: usize,
    /// The error dataset of an input for `--noise-draws` (repeatable), instead of the model's map.
    #[arg(long = "noise", value_name = "TOKEN_KEY=DATASET")]
    pub noise: Vec<String>,
    /// Seed of the noise draws (a row's draws depend on the seed and the row's index in the
    /// catalogue only: the same for any number of ranks or chunk size).
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    pub noise_seed: u64,
}

impl PredictArgs {
    /// `--model`, then the `--ensemble` members.
    fn models(&self) -> Vec<&Path> {
        std::iter::once(self.io.model.as_path())
            .chain(self.ensemble.iter().map(PathBuf::as_path))
            .collect()
    }
}

crate::cli::model_tool_args!(PredictArgs);

/// The tool (`aion_app::cli::main::<PredictArgs>()` is the binary).
impl Tool for PredictArgs {
    const NAME: &'static str = TOOL;
    const STOP_SIGNALS: bool = true;

    /// Returns how the run ended and the summary (also in `<output>.run.json`).
    fn run<B: Backend>(&self, ctx: &RunContext, device: B::Device) -> Result<Report> {
        let (session, stop) = (ctx.session(), &ctx.stop);
        let keys: Vec<&str> = self.targets.iter().map(String::as_str).collect();
        let loaded = agree(
            session,
            (|| {
                if !self.ensemble.is_empty() && (self.probe || self.save_logits) {
                    bail!(
                        "--ensemble: --probe and --save-logits are one model's outputs; an \
                         ensemble has neither (--save-pdf writes its posteriors)"
                    );
                }
                let plan = ModelPlan::<B>::load(&self.io, &device, &keys, session.size())?;
                let noise = noise_plan(self, &plan)?;
                let mut calibrations = Vec::new();
                for dir in self.models() {
                    calibrations.push(if self.no_calibration {
                        None
                    } else {
                        CalibrationFile::read_dir(dir)?
                    });
                }
                let targets = load_targets(&plan, &keys, &calibrations, noise.as_ref())?;
                let codec_sums = if self.ensemble.is_empty() {
                    Vec::new()
                } else {
                    codec_sums_of(plan.common.model.path(), plan.codecs.files())?
                };
                let ensemble = self
                    .ensemble
                    .iter()
                    .map(|dir| Member::load(&plan, &targets, &codec_sums, dir, &device))
                    .collect::<Result<Vec<_>>>()?;
                let probe = self
                    .probe
                    .then(|| load_probe(&self.io.model, &plan, &device))
                    .transpose()?;
                let loaded = Loaded {
                    plan,
                    targets,
                    probe,
                    ensemble,
                    noise,
                };
                if let Some(np) = &loaded.noise {
                    for (key, _) in &np.inputs {
                        if loaded
                            .codec_sets()
                            .iter()
                            .any(|c| c.scalar_entry(key).is_none())
                        {
                            bail!(
                                "--noise-draws: an --ensemble member does not read {key} through a scalar codec"
                            );
                        }
                    }
                }
                Ok(loaded)
            })(),
        )?;
        run_plan(self, session, stop, &loaded, &device).map(Report::from)
    }
}

/// Per-row calibration scores written when the catalogue has the true value.
pub const SCORES: [&str; 2] = ["pit", "crps"];

/// What every rank loads before the run.
struct Loaded<B: Backend> {
    plan: ModelPlan<B>,
    targets: Vec<Target>,
    probe: Option<Probe<B>>,
    /// The `--ensemble` members (`--model`'s transformer is `plan.aion`).
    ensemble: Vec<Member<B>>,
    /// `--noise-draws`.
    noise: Option<NoisePlan>,
}

/// `--noise-draws`: the inputs redrawn within their errors.
struct NoisePlan {
    draws: usize,
    seed: u64,
    /// (token key, error dataset) of each redrawn input.
    inputs: Vec<(String, String)>,
}

/// The file of a fine-tuned model directory that holds its configuration (`config.data.noise`).
const FINETUNE_JSON: &str = "finetune.json";

/// The noise plan of `--noise-draws` / `--noise`, checked against the plan's inputs and the
/// catalogue; `None` without `--noise-draws`.
fn noise_plan<B: Backend>(args: &PredictArgs, plan: &ModelPlan<B>) -> Result<Option<NoisePlan>> {
    if args.noise_draws == 0 {
        if !args.noise.is_empty() {
            bail!("--noise names error datasets for --noise-draws N, which is not given");
        }
        return Ok(None);
    }
    if args.save_logits {
        bail!(
            "--noise-draws: --save-logits writes one set of raw logits, and there are N; \
             --save-pdf writes the averaged posterior"
        );
    }
    let model = plan.common.model.path();
    let explicit = !args.noise.is_empty();
    let map: Vec<(String, String)> = if explicit {
        args.noise
            .iter()
            .map(|s| match s.split_once('=') {
                Some((k, d)) if !k.is_empty() && !d.is_empty() => {
                    Ok((k.to_string(), d.to_string()))
                }
                _ => bail!("--noise {s:?}: expected TOKEN_KEY=DATASET"),
            })
            .collect::<Result<_>>()?
    } else {
        let path = model.join(FINETUNE_JSON);
        let missing = || {
            format!(
                "--noise-draws: {} has no [data.noise] map (in {FINETUNE_JSON}); give the error \
                 dataset of each input with --noise TOKEN_KEY=DATASET",
                model.display()
            )
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(missing()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("invalid JSON in {}", path.display()))?;
        let noise = v.pointer("/config/data/noise").and_then(|n| n.as_object());
        let map: Vec<(String, String)> = noise
            .into_iter()
            .flatten()
            .filter_map(|(k, d)| d.as_str().map(|d| (k.clone(), d.to_string())))
            .collect();
        if map.is_empty() {
            bail!(missing());
        }
        map
    };
    let catalog = &plan.common.catalog;
    let inputs: Vec<&str> = plan.inputs().iter().map(|b| b.token_key()).collect();
    let mut kept = Vec::new();
    for (key, err) in map {
        let entry = plan
            .codecs
            .scalar_entry(&key)
            .filter(|_| inputs.contains(&key.as_str()));
        let Some(entry) = entry else {
            if explicit {
                bail!("--noise {key}={err}: {key} is not an input read through a scalar codec");
            }
            log::info!(
                "--noise-draws: {key} (in the model's noise map) is not an input of this run"
            );
            continue;
        };
        let shape = |d: &str| -> Result<Vec<usize>> {
            match catalog.info(d)? {
                Some(i) => Ok(i.row_shape),
                None => bail!(
                    "--noise-draws: the catalogue {} has no dataset {d} (the error of {key})",
                    catalog.paths_text()
                ),
            }
        };
        let (want, got) = (shape(entry.dataset)?, shape(&err)?);
        if want != got {
            bail!(
                "--noise-draws: {err} (the error of {key}) has rows of shape {got:?}, {} {want:?}",
                entry.dataset
            );
        }
        kept.push((key, err));
    }
    if kept.is_empty() {
        bail!("--noise-draws: no input of this run has an error dataset");
    }
    log::info!(
        "posteriors averaged over {} noise draws of {} (seed {})",
        args.noise_draws,
        kept.iter()
            .map(|(k, e)| format!("{k} ± {e}"))
            .collect::<Vec<_>>()
            .join(", "),
        args.noise_seed
    );
    Ok(Some(NoisePlan {
        draws: args.noise_draws,
        seed: args.noise_seed,
        inputs: kept,
    }))
}

/// An `--ensemble` member: a transformer that reads the catalogue through its own codecs (the
/// same modalities as `--model`'s) and predicts the targets over the same bins.
struct Member<B: Backend> {
    dir: ModelDir,
    aion: Aion<B>,
    /// Its codecs, when they are not byte for byte `--model`'s; `None`: it reads `--model`'s
    /// tokens.
    codecs: Option<CodecSet<B>>,
}

impl<B: Backend> Member<B> {
    /// Opens the member `path` and checks it against `--model`'s plan: every bound modality and
    /// target with the same codec folder, vocabulary and token count, an input embedding for
    /// every input, a decoder head for every target, and target codecs that decode every token
    /// to the same value (posteriors are mixed bin by bin).
    /// `codec_sums`: [`codec_sums_of`] `--model`'s codec files.
    fn load(
        plan: &ModelPlan<B>,
        targets: &[Target],
        codec_sums: &[(PathBuf, String)],
        path: &Path,
        device: &B::Device,
    ) -> Result<Self> {
        let what = || format!("--ensemble {}", path.display());
        let dir = ModelDir::open(path).with_context(what)?;
        let cfg = dir.config().with_context(what)?;
        let base = &plan.common.model;
        let inputs: Vec<&str> = plan.inputs().iter().map(|b| b.token_key()).collect();
        let target_keys: Vec<&str> = targets.iter().map(|t| &*t.modality.token_key).collect();
        let mut keys: Vec<&str> = plan.codecs.bindings().map(|b| b.token_key()).collect();
        keys.extend(&target_keys);
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let ours = base
                .modalities()
                .get(key)
                .with_context(|| format!("{}: unknown token key {key}", base.path().display()))?;
            let theirs = dir
                .modalities()
                .get(key)
                .with_context(|| format!("{}: the model has no modality {key}", what()))?;
            let shape = |m: &ModalityInfo| (m.codec_dir.clone(), m.vocab, m.num_tokens());
            if shape(&theirs) != shape(&ours) {
                bail!(
                    "{}: {key} is (codec folder, vocabulary, tokens) {:?}, --model's {:?}",
                    what(),
                    shape(&theirs),
                    shape(&ours)
                );
            }
            if inputs.contains(&key) && !cfg.domains_in.iter().any(|d| d == key) {
                bail!("{}: the model has no input embedding for {key}", what());
            }
            if let Some(t) = targets.iter().find(|t| &*t.modality.token_key == key) {
                if !cfg.domains_out.iter().any(|d| d == key) {
                    bail!("{}: the model has no decoder head for {key}", what());
                }
                let codec_dir = dir.codec_dir(&theirs);
                let codec = ScalarCodec::load(&theirs, &codec_dir)
                    .with_context(|| format!("{}: cannot load its {key} codec", what()))?;
                let bits = |v: &[Vec<f32>]| -> Vec<Vec<u32>> {
                    v.iter()
                        .map(|c| c.iter().map(|x| x.to_bits()).collect())
                        .collect()
                };
                if bits(&decoded_values(&codec, theirs.vocab)) != bits(&t.values) {
                    bail!(
                        "{}: its {key} codec ({}) decodes tokens to other values than --model's; \
                         posteriors over different bins cannot be averaged",
                        what(),
                        codec_dir.display()
                    );
                }
            }
        }
        // The same codec files (same relative paths, same SHA-256) read the same tokens: the
        // member then reuses --model's; otherwise its own codecs are loaded.
        let theirs: Vec<PathBuf> = codec_sums
            .iter()
            .map(|(rel, _)| dir.path().join(rel))
            .collect();
        let shared = theirs.iter().all(|f| f.is_file())
            && codec_sums_of(dir.path(), &theirs).with_context(what)? == codec_sums;
        let codecs = if shared {
            None
        } else {
            log::info!(
                "{}: its own codecs (the rows are tokenized for it too)",
                what()
            );
            let bindings: Vec<Binding> = plan.codecs.bindings().cloned().collect();
            let codecs = CodecSet::<B>::load(
                &dir,
                &bindings,
                &plan.common.catalog,
                plan.common.pad,
                device,
            )
            .with_context(what)?;
            if codecs.bindings().count() != bindings.len() {
                bail!(
                    "{}: its codecs cannot read every modality --model reads",
                    what()
                );
            }
            Some(codecs)
        };
        let aion = dir.transformer::<B>(device).with_context(what)?;
        Ok(Self { dir, aion, codecs })
    }
}

/// SHA-256 of each of `files`, keyed by its path relative to `root`: what decides whether an
/// ensemble member shares `--model`'s codecs.
fn codec_sums_of(root: &Path, files: &[PathBuf]) -> Result<Vec<(PathBuf, String)>> {
    files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(root).unwrap_or(f).to_path_buf();
            Ok((rel, sha256_file(f)?))
        })
        .collect()
}

impl<B: Backend> Loaded<B> {
    /// Every model (`--model` first) with the index of the token set it reads: 0 for
    /// `--model`'s tokens, then one per member with its own codecs, in order.
    fn models(&self) -> Vec<(&Aion<B>, usize)> {
        let mut own = 0;
        std::iter::once((&self.plan.aion, 0))
            .chain(self.ensemble.iter().map(|m| {
                own += usize::from(m.codecs.is_some());
                (&m.aion, if m.codecs.is_some() { own } else { 0 })
            }))
            .collect()
    }

    /// The codec sets that tokenize each chunk: `--model`'s, then the members' own.
    fn codec_sets(&self) -> Vec<&CodecSet<B>> {
        std::iter::once(&self.plan.codecs)
            .chain(self.ensemble.iter().filter_map(|m| m.codecs.as_ref()))
            .collect()
    }
}

/// A target, the decoded value of each of its tokens and its bins (per channel).
struct Target {
    modality: Modality,
    values: Vec<Vec<f32>>,
    /// Bin edges per channel ([`edges`] of `values`).
    edges: Vec<Vec<f64>>,
    truth: Option<(String, Option<(usize, usize)>)>,
    /// Per model (`--model`, then the `--ensemble` members): the temperature of its
    /// `calibration.json` its logits are divided by.
    temperatures: Vec<Option<f64>>,
    /// `--noise-draws` (0: none), and per model whether its temperature was fitted for the
    /// average over noise draws (`calibration.json`'s `noise_draws`).
    noise_draws: usize,
    fitted_for_draws: Vec<bool>,
}

impl Target {
    /// The catalogue dataset with the true value of a single-token target.
    fn truth_dataset(&self) -> Option<&str> {
        match &self.truth {
            Some((d, None)) if self.modality.num_tokens() == 1 => Some(d),
            _ => None,
        }
    }

    /// `--model`'s temperature (the only model without `--ensemble`).
    fn temperature(&self) -> Option<f64> {
        self.temperatures[0]
    }

    /// What the output records about the calibration of this target (attribute `calibration`):
    /// `models` are `--model` and the `--ensemble` members.
    fn calibration(&self, models: &[&Path]) -> String {
        let one = |i: usize| match self.temperatures[i] {
            Some(t) if self.noise_draws > 0 => serde_json::json!({
                "method": "temperature", "temperature": t, "source": crate::calibration::FILE,
                "fitted_for_noise_draws": self.fitted_for_draws[i],
            }),
            Some(t) => serde_json::json!({
                "method": "temperature", "temperature": t, "source": crate::calibration::FILE,
            }),
            None => serde_json::json!("none"),
        };
        let each = match models {
            [_] => one(0),
            _ => serde_json::json!({
                "method": "ensemble: mean of the members' probabilities",
                "members": models.iter().enumerate().map(|(i, m)| {
                    serde_json::json!({ "model": m, "calibration": one(i) })
                }).collect::<Vec<_>>(),
            }),
        };
        match each {
            _ if self.noise_draws > 0 => serde_json::json!({
                "method": format!("mean over {} noise draws of the inputs", self.noise_draws),
                "each": each,
            })
            .to_string(),
            serde_json::Value::String(none) => none,
            v => v.to_string(),
        }
    }
}

/// A probe head and its configuration (`--probe`).
struct Probe<B: Backend> {
    head: ProbeHead<B>,
    cfg: ProbeConfig,
}

impl<B: Backend> Probe<B> {
    /// The datasets it writes, under `probe/<dataset>/`.
    fn specs(&self, modalities: &ModalityTable) -> Vec<DatasetSpec> {
        let target = &self.cfg.target;
        let name = |s: &str| format!("probe/{target}/{s}");
        // The target's units: those of the modality read from that dataset by default.
        let units = modalities
            .iter()
            .find(|m| m.dataset == target.as_str())
            .map_or(UNKNOWN_UNITS.to_string(), |m| m.units.to_string());
        let units = units.as_str();
        match self.cfg.task {
            ProbeTask::Regression => vec![
                DatasetSpec::new(name("mean"), Dtype::F32, &[], None)
                    .units(units, &format!("{target}: Gaussian mean of the probe")),
                DatasetSpec::new(name("std"), Dtype::F32, &[], None)
                    .units(units, &format!("{target}: Gaussian σ of the probe")),
            ],
            ProbeTask::Classification => vec![
                DatasetSpec::new(name("probs"), Dtype::F32, &[self.cfg.outputs], None)
                    .units("", &format!("{target}: class probabilities")),
                DatasetSpec::new(name("class"), Dtype::I64, &[], Some(-1.0)),
            ],
        }
    }

    /// Values per row of each of [`specs`](Self::specs).
    fn widths(&self) -> [usize; 2] {
        match self.cfg.task {
            ProbeTask::Regression => [1, 1],
            ProbeTask::Classification => [self.cfg.outputs, 1],
        }
    }
}

/// Per chunk: ids, tokens, and per target the row-major `(n, tokens, 7)` stats, pdf, logits,
/// PIT and CRPS (targets with a true value); with `--probe` its two outputs (mean and σ, or
/// probabilities and class label).
struct Out {
    ids: Vec<i64>,
    tokens: Vec<ModalityTokens>,
    stats: Vec<Vec<Vec<f32>>>,
    pdf: Vec<Vec<f32>>,
    logits: Vec<Vec<f32>>,
    scores: Vec<[Vec<f32>; 2]>,
    probe: Option<(Vec<f32>, Vec<f32>)>,
}

/// What the reader stage hands on per chunk: ids, the tokens of each codec set
/// ([`Loaded::codec_sets`]: `--model`'s first), and per target its true values (`None` without
/// a truth dataset).
type ChunkInput = (
    Vec<i64>,
    Vec<Vec<ModalityTokens>>,
    Vec<Option<Vec<f32>>>,
    Redrawn,
);

/// Per noise draw, per codec set: the redrawn modalities (their index among the set's tokens,
/// their tokens). Empty without `--noise-draws`.
type Redrawn = Vec<Vec<Vec<(usize, ModalityTokens)>>>;

/// The redrawn inputs of the chunk `rows` for every draw and codec set (`tokens`: each set's
/// clean tokens). Draw `d` of noisy input `k` of catalogue row `g` uses the generator keyed by
/// (seed, d, k) and `g`: independent of the chunking and the rank count.
fn redraw<B: Backend>(
    np: &NoisePlan,
    sets: &[&CodecSet<B>],
    tokens: &[Vec<ModalityTokens>],
    catalog: &aion_io::Catalog,
    rows: &Range<usize>,
) -> Result<Redrawn> {
    let mut cols = Vec::with_capacity(np.inputs.len());
    for (key, err) in &np.inputs {
        let entry = sets[0].scalar_entry(key).expect("checked at load");
        let errors = catalog.read(err, rows.clone())?;
        if errors.to_f32().is_none() {
            bail!("--noise-draws: {err} (the error of {key}) is not numeric");
        }
        cols.push((catalog.read(entry.dataset, rows.clone())?, errors));
    }
    Ok((0..np.draws as u64)
        .map(|d| {
            sets.iter()
                .zip(tokens)
                .map(|(set, clean)| {
                    np.inputs
                        .iter()
                        .zip(&cols)
                        .enumerate()
                        .map(|(k, ((key, _), (values, errors)))| {
                            let e = set.scalar_entry(key).expect("checked at load");
                            let key = rng::hash(np.seed, d, k as u64);
                            let t = e.redraw(&clean[e.position], values, errors, |r| {
                                Rng::new(key, rng::tags::NOISE, (rows.start + r) as u64)
                            });
                            (e.position, t)
                        })
                        .collect()
                })
                .collect()
        })
        .collect())
}

/// `<model>/probe/`, checked against the model and the catalogue's bindings.
fn load_probe<B: Backend>(
    model: &Path,
    plan: &ModelPlan<B>,
    device: &B::Device,
) -> Result<Probe<B>> {
    let (head, cfg) = ProbeHead::<B>::load(model, device).with_context(|| {
        format!(
            "--probe: cannot load the probe head of {} (made by aion-finetune, mode probe)",
            model.display()
        )
    })?;
    let dim = plan.aion.config().dim;
    if cfg.input_dim != dim {
        bail!(
            "--probe: the head takes {}-dimensional embeddings, the model makes {dim}",
            cfg.input_dim
        );
    }
    let bound: Vec<&str> = plan.inputs().iter().map(|b| b.token_key()).collect();
    let missing: Vec<&str> = cfg
        .inputs
        .iter()
        .map(String::as_str)
        .filter(|k| !bound.contains(k))
        .collect();
    if missing.len() == cfg.inputs.len() {
        bail!(
            "--probe: none of the probe's inputs ({}) is in the catalogue",
            cfg.inputs.join(", ")
        );
    }
    if !missing.is_empty() {
        log::warn!(
            "--probe: inputs {} are not in the catalogue; rows are embedded without them",
            missing.join(", ")
        );
    }
    Ok(Probe { head, cfg })
}

/// Per channel, the value each token with a codec value decodes to (`min(codebook, vocab)`
/// tokens; NaN where a channel has none).
fn decoded_values(codec: &ScalarCodec, vocab: usize) -> Vec<Vec<f32>> {
    let k = codec.codebook_size().min(vocab);
    (0..codec.channels())
        .map(|c| {
            (0..k)
                .map(|t| codec.decode_token(c, t as i64).unwrap_or(f32::NAN))
                .collect()
        })
        .collect()
}

/// The targets `keys`; `calibrations` per model (`--model`, then the `--ensemble` members).
fn load_targets<B: Backend>(
    plan: &ModelPlan<B>,
    keys: &[&str],
    calibrations: &[Option<CalibrationFile>],
    noise: Option<&NoisePlan>,
) -> Result<Vec<Target>> {
    let draws = noise.map_or(0, |n| n.draws);
    let mut out = Vec::new();
    for &key in keys {
        let m = plan
            .common
            .model
            .modalities()
            .get(key)
            .with_context(|| format!("--target {key}: unknown token key"))?;
        if !plan.aion.config().domains_out.iter().any(|d| d == key) {
            bail!(
                "--target {key}: the model has no decoder head for it (domains_out: {})",
                plan.aion.config().domains_out.join(", ")
            );
        }
        if !m.codec.is_scalar() {
            bail!(
                "--target {key}: only scalar modalities have posteriors here; use aion-generate for {:?} targets",
                m.codec
            );
        }
        let dir = plan.common.model.codec_dir(&m);
        let codec = ScalarCodec::load(&m, &dir)
            .with_context(|| format!("cannot load the {key} codec from {}", dir.display()))?;
        let values = decoded_values(&codec, m.vocab);
        let edges = values.iter().map(|v| edges(v)).collect();
        let truth = plan
            .codecs
            .bindings()
            .find(|b| b.token_key() == key)
            .and_then(|b| match &b.source {
                Source::Scalar { dataset, columns } => Some((dataset.clone(), *columns)),
                _ => None,
            });
        // Per model: its temperature and, with noise draws, whether it was fitted for their
        // average (the file's `noise_draws`, preferred when present; its draw count).
        let temps: Vec<(Option<f64>, Option<usize>)> = calibrations
            .iter()
            .map(|c| {
                let fitted = c
                    .as_ref()
                    .and_then(|c| c.noise_draws(key))
                    .filter(|_| draws > 0);
                let plain = c.as_ref().and_then(|c| c.temperature(key));
                (
                    fitted.map(|n| n.temperature).or(plain),
                    fitted.map(|n| n.draws),
                )
            })
            .collect();
        for (i, (t, fitted)) in temps.iter().enumerate() {
            let Some(t) = t else { continue };
            let member = if i == 0 {
                String::new()
            } else {
                format!(" (ensemble member {i})")
            };
            let how = fitted.map_or(String::new(), |n| {
                format!(", fitted for the average over {n} noise draws")
            });
            log::info!(
                "{key}{member}: calibrated posteriors (temperature {t:.3}, {}{how})",
                crate::calibration::FILE
            );
            if draws > 0 && fitted.is_none() {
                log::warn!(
                    "{key}{member}: its calibration was fitted without noise draws; the \
                     posteriors averaged over --noise-draws are wider than that temperature \
                     was fitted for (re-export with aion-finetune to fit one)"
                );
            }
        }
        let (temperatures, fitted_for_draws) =
            temps.into_iter().map(|(t, f)| (t, f.is_some())).unzip();
        out.push(Target {
            modality: m,
            values,
            edges,
            truth,
            temperatures,
            noise_draws: draws,
            fitted_for_draws,
        });
    }
    Ok(out)
}

fn specs<B: Backend>(
    modalities: &ModalityTable,
    args: &PredictArgs,
    targets: &[Target],
    probe: Option<&Probe<B>>,
) -> Vec<DatasetSpec> {
    let mut specs = flag_specs(modalities);
    specs.extend(probe.map(|p| p.specs(modalities)).unwrap_or_default());
    let models = args.models();
    for t in targets {
        let m = &t.modality;
        let shape: Vec<usize> = if m.num_tokens() == 1 {
            vec![]
        } else {
            vec![m.num_tokens()]
        };
        for s in STATS {
            let (units, what) = match s {
                "mass_outside" => ("", "posterior probability on tokens without a codec value"),
                "std" => (&*m.units, "posterior standard deviation"),
                "q16" => (&*m.units, "posterior 16 % quantile"),
                "q84" => (&*m.units, "posterior 84 % quantile"),
                "mode" => (
                    &*m.units,
                    "posterior mode (centre of the most probable bin)",
                ),
                "median" => (&*m.units, "posterior median"),
                _ => (&*m.units, "posterior mean"),
            };
            specs.push(
                DatasetSpec::new(
                    format!("pred/{}/{s}", m.token_key),
                    Dtype::F32,
                    &shape,
                    None,
                )
                .units(units, &format!("{}: {what}", m.label))
                .attr("calibration", t.calibration(&models)),
            );
        }
        if let Some(ds) = t.truth_dataset() {
            specs.push(
                DatasetSpec::new(format!("pred/{}/pit", m.token_key), Dtype::F32, &[], None)
                    .units(
                        "",
                        &format!(
                            "{}: PIT = posterior CDF at the catalogue value ({ds})",
                            m.label
                        ),
                    )
                    .attr("calibration", t.calibration(&models)),
            );
            specs.push(
                DatasetSpec::new(format!("pred/{}/crps", m.token_key), Dtype::F32, &[], None)
                    .units(
                        &m.units,
                        &format!(
                            "{}: CRPS of the posterior against the catalogue value ({ds})",
                            m.label
                        ),
                    )
                    .attr("calibration", t.calibration(&models)),
            );
        }
        if args.save_pdf {
            let key = &*m.token_key;
            specs.push(
                DatasetSpec::new(
                    format!("pdf/{key}"),
                    Dtype::F32,
                    &[m.num_tokens(), t.values[0].len()],
                    None,
                )
                .units("", &format!("{}: probability of each bin", m.label))
                .attr("bin_edges", format!("pdf/{key}_bin_edges"))
                .attr("bin_centres", format!("pdf/{key}_bin_centres"))
                .attr("calibration", t.calibration(&models)),
            );
        }
        if args.save_logits {
            specs.push(
                DatasetSpec::new(
                    format!("logits/{}", m.token_key),
                    Dtype::F32,
                    &[m.num_tokens(), m.vocab],
                    None,
                )
                .units(
                    "",
                    "raw decoder logits over the vocabulary (natural log-odds)",
                ),
            );
        }
    }
    specs
}

fn run_plan<B: Backend>(
    args: &PredictArgs,
    session: &Session,
    stop: &StopFlag,
    loaded: &Loaded<B>,
    device: &B::Device,
) -> Result<(Outcome, serde_json::Value)> {
    let (plan, targets, probe) = (&loaded.plan, &loaded.targets[..], loaded.probe.as_ref());
    let codec_sets = loaded.codec_sets();
    let catalog = &plan.common.catalog;
    let n = catalog.n_rows();
    let inputs = plan.inputs();
    announce_inputs(session, "inputs", &inputs, &plan.common);
    let config = serde_json::json!({
        "tool": TOOL, "model": args.io.model, "catalog": args.io.catalog, "output": args.io.output,
        "batch_size": plan.common.batch, "chunk_rows": plan.chunk.rows, "targets": args.targets,
        "decoder": args.decoder, "save_pdf": args.save_pdf, "save_logits": args.save_logits,
        "device": format!("{:?}", args.compute.device), "precision": args.compute.precision,
        "bindings": plan.codecs.bindings().collect::<Vec<_>>(), "object_id": plan.ids.source(),
        "noise_draws": loaded.noise.as_ref().map(|n| serde_json::json!({
            "draws": n.draws, "seed": n.seed, "errors": n.inputs,
        })),
        "probe": probe.map(|p| &p.cfg),
        "calibration": targets
            .iter()
            .map(|t| (t.modality.token_key.to_string(), t.temperature()))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "ensemble": args.ensemble.iter().enumerate().map(|(i, m)| serde_json::json!({
            "model": m,
            "calibration": targets
                .iter()
                .map(|t| (t.modality.token_key.to_string(), t.temperatures[i + 1]))
                .collect::<std::collections::BTreeMap<_, _>>(),
        })).collect::<Vec<_>>(),
    });
    let mut all_specs = vec![plan.ids.spec()];
    all_specs.extend(specs(plan.common.model.modalities(), args, targets, probe));
    let id = RunIdentity {
        side_outputs: targets
            .iter()
            .filter(|t| t.modality.num_tokens() == 1)
            .flat_map(|t| plot::paths(&figure_stem(&args.io.output, &t.modality.token_key)))
            .collect(),
        ..RunIdentity::new(
            TOOL,
            config,
            &args.io,
            &plan.common,
            plan.files()
                .into_iter()
                .chain(loaded.ensemble.iter().flat_map(|m| {
                    let codecs = m.codecs.iter().flat_map(|c| c.files().iter().cloned());
                    m.dir.transformer_files().into_iter().chain(codecs)
                }))
                .collect(),
            inputs_json(&inputs),
        )
    };
    let mut started = start(session, &id, plan.chunk, &all_specs, "predicted")?;
    if let Some(summary) = started.already_complete(session) {
        return Ok((Outcome::Finished, summary));
    }
    let mut tally = Tally::default();
    let run = &started.run;
    let stages = &run.stages;
    if args.save_pdf {
        write_constants(session, run, &grids(targets))?;
    }
    let mode = match args.decoder {
        Decoder::Joint => DecoderMode::Joint,
        Decoder::Independent => DecoderMode::Independent,
    };
    let outcome = run_chunks(
        session,
        run,
        n,
        stop,
        |rows: Range<usize>| -> Result<ChunkInput> {
            let reading = Instant::now();
            let truths = targets
                .iter()
                .map(|t| match t.truth_dataset() {
                    Some(ds) if !rows.is_empty() => catalog
                        .read(ds, rows.clone())?
                        .to_f32()
                        .map(Some)
                        .with_context(|| {
                            format!(
                                "the true values of {} ({ds}) are not numeric",
                                t.modality.token_key
                            )
                        }),
                    _ => Ok(None),
                })
                .collect::<Result<_>>()?;
            let ids = plan.ids.read(catalog, &rows)?;
            stages.add(Stage::Read, reading);
            let tokens = codec_sets
                .iter()
                .map(|c| c.encode(catalog, rows.clone(), stages))
                .collect::<Result<Vec<_>>>()?;
            let redrawn = match &loaded.noise {
                Some(np) => {
                    let coding = Instant::now();
                    let r = redraw(np, &codec_sets, &tokens, catalog, &rows)?;
                    stages.add(Stage::ScalarCodec, coding);
                    r
                }
                None => Vec::new(),
            };
            Ok((ids, tokens, truths, redrawn))
        },
        |input| compute(args, loaded, mode, device, input, stages),
        |rows, out| {
            if let Some(o) = &out {
                tally.add(rows.start, &o.ids, &o.tokens);
            }
            write(
                plan.common.model.modalities(),
                args,
                run,
                targets,
                probe,
                rows,
                out.as_ref(),
            )
        },
        |r| started.progress.advance(r),
    )?;
    let secs = started.close(session, outcome)?;
    let cpu = started.cpu_seconds(session);
    let modalities = tally.finish(session)?;
    let mut summary = serde_json::json!({ "rows": n, "seconds": secs, "cpu_seconds": cpu, "ranks": session.size(), "finished": outcome == Outcome::Finished, "modalities": modalities });
    if outcome == Outcome::Finished {
        let diag = agree(
            session,
            diagnostics(session, args, &started.run, plan, targets),
        )?;
        summary["targets"] = diag;
    }
    if session.is_root() {
        let this_run = started.progress.this_run();
        log::info!(
            "predicted {this_run} rows in {secs:.2} s on {} rank(s) ({:.1} rows/s)",
            session.size(),
            this_run as f64 / secs.max(1e-9)
        );
    }
    let summary = started.finish(session, &args.io.output, summary)?;
    Ok((outcome, summary))
}

/// `pdf/<key>_bin_edges` `(tokens, K + 1)` and `pdf/<key>_bin_centres` `(tokens, K)`: the grid
/// of `pdf/<key>` (written once, beside it).
fn grids(targets: &[Target]) -> Vec<Constant> {
    let mut out = Vec::new();
    for t in targets {
        let m = &t.modality;
        let rows: Vec<&Vec<f64>> = (0..m.num_tokens())
            .map(|p| &t.edges[p.min(t.edges.len() - 1)])
            .collect();
        let k = rows[0].len() - 1;
        let key = &*m.token_key;
        out.push(Constant {
            name: format!("pdf/{key}_bin_edges"),
            shape: vec![m.num_tokens(), k + 1],
            data: rows.iter().flat_map(|e| e.iter().copied()).collect(),
            units: m.units.to_string(),
            label: format!(
                "{}: edges of the bins of pdf/{key}: bin k spans [edges[k], edges[k+1]] \
                 (bin 0 is the point edges[0])",
                m.label
            ),
        });
        out.push(Constant {
            name: format!("pdf/{key}_bin_centres"),
            shape: vec![m.num_tokens(), k],
            data: rows.iter().flat_map(|e| centres(e)).collect(),
            units: m.units.to_string(),
            label: format!("{}: centres of the bins of pdf/{key}", m.label),
        });
    }
    out
}

fn compute<B: Backend>(
    args: &PredictArgs,
    loaded: &Loaded<B>,
    mode: DecoderMode,
    device: &B::Device,
    (ids, mut tokens, truths, redrawn): ChunkInput,
    stages: &Stages,
) -> Result<Out> {
    let (plan, targets, probe) = (&loaded.plan, &loaded.targets[..], loaded.probe.as_ref());
    let models = loaded.models();
    let n = ids.len();
    let mods: Vec<&ModalityInfo> = targets.iter().map(|t| &*t.modality).collect();
    let mut stats: Vec<Vec<Vec<f32>>> = targets
        .iter()
        .map(|t| vec![vec![f32::NAN; n * t.modality.num_tokens()]; STATS.len()])
        .collect();
    let mut pdf: Vec<Vec<f32>> = targets
        .iter()
        .map(|t| {
            if args.save_pdf {
                vec![f32::NAN; n * t.modality.num_tokens() * t.values[0].len()]
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut logits_out: Vec<Vec<f32>> = targets
        .iter()
        .map(|t| {
            if args.save_logits {
                vec![f32::NAN; n * t.modality.num_tokens() * t.modality.vocab]
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut scores: Vec<[Vec<f32>; 2]> = truths
        .iter()
        .map(|t| match t {
            Some(_) => [vec![f32::NAN; n], vec![f32::NAN; n]],
            None => [Vec::new(), Vec::new()],
        })
        .collect();
    let mut probe_out = probe.map(|p| {
        let [a, c] = p.widths();
        (vec![f32::NAN; n * a], vec![f32::NAN; n * c])
    });
    // Rows are batched by the modalities they have, which the catalogue decides, not the codecs:
    // every token set has the same (checked), so one batching serves every model.
    let own_codecs = loaded.ensemble.iter().filter(|m| m.codecs.is_some());
    for (member, other) in own_codecs.zip(&tokens[1..]) {
        for (theirs, ours) in other.iter().zip(&tokens[0]) {
            if let Some(r) = (0..n).find(|&r| theirs.used[r] != ours.used[r]) {
                bail!(
                    "--ensemble {}: object {} has {} usable through its codecs ({}) and through \
                     --model's ({}); the members must read the same modalities of every row",
                    member.dir.path().display(),
                    ids[r],
                    ours.modality.token_key,
                    theirs.used[r],
                    ours.used[r]
                );
            }
        }
    }
    for b in batches(&tokens[0], &plan.is_input, n, plan.common.batch) {
        let inp = inputs::<B>(&tokens[0], &b, device);
        let probing = Instant::now();
        if let (Some(p), Some((first, second))) = (probe, probe_out.as_mut()) {
            let fed: Vec<_> = inp
                .iter()
                .filter(|i| p.cfg.inputs.iter().any(|k| *k == i.modality.token_key))
                .cloned()
                .collect();
            if !fed.is_empty() {
                match p.head.predict(&p.cfg, plan.aion.embed(&fed)) {
                    ProbePrediction::Gaussian { mean, sigma } => {
                        for (j, &r) in b.rows.iter().enumerate() {
                            (first[r], second[r]) = (mean[j], sigma[j]);
                        }
                    }
                    ProbePrediction::Classes { probs, classes } => {
                        for (j, &r) in b.rows.iter().enumerate() {
                            let row = &probs[j * classes..(j + 1) * classes];
                            first[r * classes..(r + 1) * classes].copy_from_slice(row);
                            let best = (0..classes)
                                .max_by(|&x, &y| row[x].total_cmp(&row[y]).then(y.cmp(&x)))
                                .unwrap_or(0);
                            second[r] = best as f32;
                        }
                    }
                }
            }
        }
        if probe.is_some() {
            stages.add(Stage::Probe, probing);
        }
        if mods.is_empty() {
            continue;
        }
        let predicting = Instant::now();
        // Per model, per target: the logits of the batch, row-major (rows, tokens, vocab).
        let own: Vec<_> = tokens[1..]
            .iter()
            .map(|t| inputs::<B>(t, &b, device))
            .collect();
        let run = |aion: &Aion<B>, inp: &[TokenInput<B>]| {
            aion.predict(inp, &mods, mode)
                .into_iter()
                .map(|l| {
                    l.into_data()
                        .convert::<f32>()
                        .to_vec()
                        .map_err(|e| anyhow::anyhow!("{e:?}"))
                })
                .collect::<Result<Vec<Vec<f32>>>>()
        };
        // Per model (and, with noise draws, per draw within it): the logits of each target.
        let mut logits = Vec::with_capacity(models.len() * redrawn.len().max(1));
        let mut temperatures_of = Vec::with_capacity(logits.capacity());
        for (m, &(aion, set)) in models.iter().enumerate() {
            let inp = if set == 0 { &inp } else { &own[set - 1] };
            if redrawn.is_empty() {
                logits.push(run(aion, inp)?);
                temperatures_of.push(m);
                continue;
            }
            for draw in &redrawn {
                let mut noisy = inp.clone();
                for (position, t) in &draw[set] {
                    if let Some(j) = b.modalities.iter().position(|i| i == position) {
                        noisy[j] = input_of::<B>(t, &b.rows, device);
                    }
                }
                logits.push(run(aion, &noisy)?);
                temperatures_of.push(m);
            }
        }
        stages.add(Stage::Predict, predicting);
        let summarizing = Instant::now();
        for (ti, t) in targets.iter().enumerate() {
            let (nt, v) = (t.modality.num_tokens(), t.modality.vocab);
            for (j, &r) in b.rows.iter().enumerate() {
                for p in 0..nt {
                    let at = (j * nt + p) * v..(j * nt + p + 1) * v;
                    let values = &t.values[p.min(t.values.len() - 1)];
                    // The mean of the models' (and draws') calibrated probabilities; one
                    // model's own.
                    let (mut probs, mut outside) = (vec![0.0; values.len()], 0.0);
                    let weight = 1.0 / logits.len() as f64;
                    for (l, &m) in logits.iter().zip(&temperatures_of) {
                        let temp = &t.temperatures[m];
                        let raw = &l[ti][at.clone()];
                        let calibrated = temp.map(|temp| scaled(raw, temp));
                        let (pm, om) =
                            probabilities(calibrated.as_deref().unwrap_or(raw), values.len());
                        for (acc, x) in probs.iter_mut().zip(pm) {
                            *acc += weight * x;
                        }
                        outside += weight * om;
                    }
                    let s = summarize_probabilities(&probs, outside, values);
                    if let Some(truth) = &truths[ti] {
                        let post = Binned {
                            probs: &probs,
                            edges: &t.edges[p.min(t.edges.len() - 1)],
                        };
                        if let Some(sc) = post.score(f64::from(truth[r])) {
                            scores[ti][0][r] = sc.pit as f32;
                            scores[ti][1][r] = sc.crps as f32;
                        }
                    }
                    for (si, x) in [
                        s.mean,
                        s.std,
                        s.median,
                        s.mode,
                        s.q16,
                        s.q84,
                        s.mass_outside,
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        stats[ti][si][r * nt + p] = x;
                    }
                    if args.save_pdf {
                        let k = values.len();
                        for (q, &x) in probs.iter().enumerate() {
                            pdf[ti][(r * nt + p) * k + q] = x as f32;
                        }
                    }
                    if args.save_logits {
                        // One model (an ensemble is refused with --save-logits).
                        logits_out[ti][(r * nt + p) * v..(r * nt + p + 1) * v]
                            .copy_from_slice(&logits[0][ti][at.clone()]);
                    }
                }
            }
        }
        stages.add(Stage::Posteriors, summarizing);
    }
    Ok(Out {
        ids,
        tokens: tokens.swap_remove(0),
        stats,
        pdf,
        logits: logits_out,
        scores,
        probe: probe_out,
    })
}

fn write<B: Backend>(
    modalities: &ModalityTable,
    args: &PredictArgs,
    run: &RunOutput,
    targets: &[Target],
    probe: Option<&Probe<B>>,
    rows: Range<usize>,
    out: Option<&Out>,
) -> Result<()> {
    let w = |name: &str, data: &[f32]| run.sets.write(&run.out, name, rows.start, data);
    let ids = out.map_or(&[][..], |o| &o.ids[..]);
    run.sets.write(&run.out, "object_id", rows.start, ids)?;
    write_masks(
        modalities,
        run,
        rows.start,
        out.map_or(&[][..], |o| &o.tokens[..]),
        rows.len(),
    )?;
    if let Some(p) = probe {
        let specs = p.specs(modalities);
        let (first, second) = out
            .and_then(|o| o.probe.as_ref())
            .map_or((&[][..], &[][..]), |(a, b)| (&a[..], &b[..]));
        w(&specs[0].name, first)?;
        match p.cfg.task {
            ProbeTask::Regression => w(&specs[1].name, second)?,
            ProbeTask::Classification => {
                // Class index → label value (−1 for rows without the probe's inputs).
                let labels: Vec<i64> = second
                    .iter()
                    .map(|&x| match (x.is_nan(), &p.cfg.classes) {
                        (true, _) => -1,
                        (false, Some(c)) => c.get(x as usize).copied().unwrap_or(-1),
                        (false, None) => x as i64,
                    })
                    .collect();
                run.sets
                    .write(&run.out, &specs[1].name, rows.start, &labels[..])?
            }
        }
    }
    for (ti, t) in targets.iter().enumerate() {
        let key = &*t.modality.token_key;
        for (si, s) in STATS.iter().enumerate() {
            w(
                &format!("pred/{key}/{s}"),
                out.map_or(&[][..], |o| &o.stats[ti][si][..]),
            )?;
        }
        if t.truth_dataset().is_some() {
            for (si, s) in SCORES.iter().enumerate() {
                w(
                    &format!("pred/{key}/{s}"),
                    out.map_or(&[][..], |o| &o.scores[ti][si][..]),
                )?;
            }
        }
        if args.save_pdf {
            w(
                &format!("pdf/{key}"),
                out.map_or(&[][..], |o| &o.pdf[ti][..]),
            )?;
        }
        if args.save_logits {
            w(
                &format!("logits/{key}"),
                out.map_or(&[][..], |o| &o.logits[ti][..]),
            )?;
        }
    }
    Ok(())
}

/// The figure beside the output for a target, without extension: `<OUT>.<key>` (the figure is
/// written as `<OUT>.<key>.png` and `<OUT>.<key>.svg`).
pub fn figure_stem(output: &Path, key: &str) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(format!(".{key}"));
    PathBuf::from(p)
}

/// Axis titles of a target's figure (rich text): the true value, the prediction, and the true
/// value's symbol in plain text.
fn axis_titles(m: &ModalityInfo) -> (String, String, String) {
    if m.token_key == "tok_z" {
        (
            "spectroscopic redshift z_{spec}".into(),
            "photometric redshift z_{phot} (posterior median)".into(),
            "z_spec".into(),
        )
    } else {
        (
            format!("catalogue {}", m.axis_title()),
            format!("predicted {} (posterior median)", m.axis_title()),
            "true value".into(),
        )
    }
}

/// Rank 0: metrics against the truth (when the catalogue has it) and the figure of each
/// single-token target.
fn diagnostics<B: Backend>(
    session: &Session,
    args: &PredictArgs,
    run: &RunOutput,
    plan: &ModelPlan<B>,
    targets: &[Target],
) -> Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    if !session.is_root() {
        return Ok(out.into());
    }
    let n = plan.common.catalog.n_rows();
    let read =
        |name: String| -> Result<Vec<f32>> { Ok(run.out.hdf5().dataset(&name)?.read_raw()?) };
    for t in targets.iter().filter(|t| t.modality.num_tokens() == 1) {
        let m = &t.modality;
        let key = &*m.token_key;
        let pred = read(format!("pred/{key}/median"))?;
        let stem = figure_stem(&args.io.output, key);
        let (truth_title, pred_title, symbol) = axis_titles(m);
        let truth = match t.truth_dataset() {
            Some(dataset) if n > 0 => plan.common.catalog.read(dataset, 0..n)?.to_f32(),
            _ => None,
        };
        let scored = match &truth {
            Some(tr) => {
                let [pit, crps] = SCORES.map(|s| read(format!("pred/{key}/{s}")));
                let (pit, crps) = (pit?, crps?);
                let scores: Vec<crate::metrics::Score> = pit
                    .iter()
                    .zip(&crps)
                    .filter(|(p, c)| p.is_finite() && c.is_finite())
                    .map(|(&p, &c)| crate::metrics::Score {
                        pit: f64::from(p),
                        crps: f64::from(c),
                    })
                    .collect();
                Evaluation::new(&pred, tr, &scores).map(|e| (tr, e, scores))
            }
            None => None,
        };
        let files = match &scored {
            Some((tr, e, scores)) => {
                let p = &e.point;
                let pits: Vec<f64> = scores.iter().map(|s| s.pit).collect();
                let calibrated = match (t.temperatures.len(), t.temperature()) {
                    (1, Some(temp)) => format!(", calibrated (T = {temp:.2})"),
                    (1, None) => String::new(),
                    (n, _) => format!(", ensemble of {n} models"),
                };
                let title = format!(
                    "{}: {} objects with a catalogue value{calibrated}",
                    m.label, p.n
                );
                let files = plot::save(
                    &EvaluationFigure {
                        truth: tr,
                        pred: &pred,
                        pits: &pits,
                        eval: e,
                        truth_title: &truth_title,
                        pred_title: &pred_title,
                        truth_symbol: &symbol,
                        title: &title,
                    },
                    &stem,
                )?;
                let cal = e
                    .calibration
                    .as_ref()
                    .map(|c| {
                        format!(
                            ", 68 % / 95 % interval coverage {:.1} / {:.1} %, CRPS {:.4}",
                            100.0 * c.coverage_68,
                            100.0 * c.coverage_95,
                            c.crps
                        )
                    })
                    .unwrap_or_default();
                log::info!(
                    "{key}: σ_NMAD {:.4}, outliers {:.2} %, bias {:+.4}{cal} over {} rows with a true value",
                    p.sigma_nmad,
                    100.0 * p.outlier_fraction,
                    p.bias,
                    p.n
                );
                out.insert(
                    key.into(),
                    serde_json::json!({ "metrics": e, "figure": files, "calibration": t.temperature(), "ensemble_calibration": t.temperatures.get(1..) }),
                );
                files
            }
            None => {
                let values: Vec<f64> = pred.iter().map(|&v| f64::from(v)).collect();
                let files = plot::save(
                    &HistogramFigure {
                        values: &values,
                        xtitle: &pred_title,
                        title: &format!(
                            "{}: predictions ({} objects; the catalogue has no true values)",
                            m.label,
                            values.iter().filter(|v| v.is_finite()).count()
                        ),
                    },
                    &stem,
                )?;
                out.insert(
                    key.into(),
                    serde_json::json!({ "figure": files, "calibration": t.temperature(), "ensemble_calibration": t.temperatures.get(1..) }),
                );
                files
            }
        };
        log::info!("{key}: figure {} (and .svg)", files[0].display());
    }
    Ok(out.into())
}
