//! `aion-predict`: posteriors of scalar properties (redshift first) for every catalogue object.
//!
//! For each `--target` the decoder's logits are mapped through the target's codec into a
//! posterior (see [`crate::posterior`]): mean, standard deviation, median, mode, 16/84 %
//! quantiles, optionally the full probability vector (`--save-pdf`) and the raw logits
//! (`--save-logits`). Targets are never inputs. When the catalogue holds the true value, a PNG
//! of predicted (median) vs true values with σ_NMAD, outlier fraction and bias is written
//! beside the output; otherwise a histogram of the predictions.
//!
//! When the model directory holds a `calibration.json` (fitted by `aion-finetune` on its
//! validation split, [`crate::calibration`]), a target's logits are divided by its temperature
//! before anything is computed from them (summaries and `--save-pdf`; `--save-logits` keeps the
//! raw logits); every `pred/<key>/…` and `pdf/<key>` dataset records it in its `calibration`
//! attribute. `--no-calibration` ignores the file.
//!
//! With `--probe`, the probe head that `aion-finetune` (mode `probe`) left in the model directory
//! (`probe/`) is applied to each row's pooled embedding, computed from the modalities the probe
//! was trained on: a Gaussian mean and σ (regression) or class probabilities (classification).

use std::ops::Range;
use std::path::{Path, PathBuf};

use aion_model::codecs::scalar::ScalarCodec;
use aion_model::fourm::DecoderMode;
use aion_model::modality::{ModalityInfo, by_token_key};
use aion_model::probe::{ProbeConfig, ProbeHead, ProbePrediction, ProbeTask};
use aion_mpi::Session;
use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use clap::{Parser, ValueEnum};

use crate::args::IoArgs;
use crate::backend::{BackendTask, ComputeArgs, dispatch};
use crate::batching::{batches, inputs};
use crate::calibration::{CalibrationFile, scaled};
use crate::codec_set::ModalityTokens;
use crate::collective::agree;
use crate::ensemble;
use crate::model_plan::ModelPlan;
use crate::output::{flag_specs, write_masks};
use crate::pipeline::{DatasetSpec, Dtype, Outcome, RunOutput, run_chunks};
use crate::posterior::summarize;
use crate::run_config::Source;
use crate::signals::StopFlag;
use crate::tool::{RunIdentity, start};
use crate::{metrics, plot};

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
}

/// A target and the decoded value of each of its tokens (per channel).
struct Target {
    modality: &'static ModalityInfo,
    values: Vec<Vec<f32>>,
    truth: Option<(String, Option<(usize, usize)>)>,
    /// Temperature of the model's `calibration.json` the logits are divided by.
    temperature: Option<f64>,
}

impl Target {
    /// What the output records about the calibration of this target (attribute `calibration`).
    fn calibration(&self) -> String {
        match self.temperature {
            Some(t) => serde_json::json!({
                "method": "temperature", "temperature": t, "source": crate::calibration::FILE,
            })
            .to_string(),
            None => "none".into(),
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
    fn specs(&self) -> Vec<DatasetSpec> {
        let name = |s: &str| format!("probe/{}/{s}", self.cfg.target);
        match self.cfg.task {
            ProbeTask::Regression => vec![
                DatasetSpec::new(name("mean"), Dtype::F32, &[], None),
                DatasetSpec::new(name("std"), Dtype::F32, &[], None),
            ],
            ProbeTask::Classification => vec![
                DatasetSpec::new(name("probs"), Dtype::F32, &[self.cfg.outputs], None),
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

/// Per chunk: ids, tokens, and per target the row-major `(n, tokens, 7)` stats, pdf, logits;
/// with `--probe` its two outputs (mean and σ, or probabilities and class label).
struct Out {
    ids: Vec<i64>,
    tokens: Vec<ModalityTokens>,
    stats: Vec<Vec<Vec<f32>>>,
    pdf: Vec<Vec<f32>>,
    logits: Vec<Vec<f32>>,
    probe: Option<(Vec<f32>, Vec<f32>)>,
}

/// Runs `aion-predict`; returns how it ended and the summary (also in `<output>.run.json`).
pub fn run(
    args: &PredictArgs,
    session: &Session,
    stop: &StopFlag,
) -> Result<(Outcome, serde_json::Value)> {
    dispatch(
        &args.compute,
        session.local_rank(),
        Task {
            args,
            session,
            stop,
        },
    )
}

struct Task<'a> {
    args: &'a PredictArgs,
    session: &'a Session,
    stop: &'a StopFlag,
}

impl BackendTask for Task<'_> {
    type Output = (Outcome, serde_json::Value);

    fn run<B: Backend>(self, device: B::Device) -> Result<Self::Output> {
        let keys: Vec<&str> = self.args.targets.iter().map(String::as_str).collect();
        let loaded = agree(
            self.session,
            (|| {
                let (dirs, plans) = ensemble::load_plans::<B>(&self.args.io, &device, &keys)?;
                let calibration = if self.args.no_calibration {
                    None
                } else {
                    CalibrationFile::read_dir(&self.args.io.model)?
                };
                let targets = load_targets(&dirs[0], &plans[0], &keys, calibration.as_ref())?;
                if self.args.probe && plans.len() > 1 {
                    bail!(
                        "--probe: {} is an ensemble; probe heads belong to one model",
                        self.args.io.model.display()
                    );
                }
                let probe = self
                    .args
                    .probe
                    .then(|| load_probe(&self.args.io.model, &plans[0], &device))
                    .transpose()?;
                Ok((dirs, plans, targets, probe))
            })(),
        )?;
        run_plan(
            self.args,
            self.session,
            self.stop,
            &loaded.0,
            &loaded.1,
            &loaded.2,
            loaded.3.as_ref(),
            &device,
        )
    }
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
    let bound: Vec<&str> = plan.inputs().iter().map(|b| b.token_key).collect();
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

fn load_targets<B: Backend>(
    model: &Path,
    plan: &ModelPlan<B>,
    keys: &[&str],
    calibration: Option<&CalibrationFile>,
) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    for &key in keys {
        let m = by_token_key(key).with_context(|| format!("--target {key}: unknown token key"))?;
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
        let dir = model.join("codecs").join(m.codec_dir);
        let codec = ScalarCodec::load(m, &dir)
            .with_context(|| format!("cannot load the {key} codec from {}", dir.display()))?;
        let k = codec.codebook_size().min(m.vocab);
        let values = (0..codec.channels())
            .map(|c| {
                (0..k)
                    .map(|t| codec.decode_token(c, t as i64).unwrap_or(f32::NAN))
                    .collect()
            })
            .collect();
        let truth = plan
            .codecs
            .bindings()
            .find(|b| b.token_key == key)
            .and_then(|b| match &b.source {
                Source::Scalar { dataset, columns } => Some((dataset.clone(), *columns)),
                _ => None,
            });
        let temperature = calibration.and_then(|c| c.temperature(key));
        if let Some(t) = temperature {
            log::info!(
                "{key}: calibrated posteriors (temperature {t:.3}, {})",
                crate::calibration::FILE
            );
        }
        out.push(Target {
            modality: m,
            values,
            truth,
            temperature,
        });
    }
    Ok(out)
}

fn specs<B: Backend>(
    args: &PredictArgs,
    targets: &[Target],
    probe: Option<&Probe<B>>,
) -> Vec<DatasetSpec> {
    let mut specs = flag_specs();
    specs.extend(probe.map(Probe::specs).unwrap_or_default());
    for t in targets {
        let m = t.modality;
        let shape: Vec<usize> = if m.num_tokens() == 1 {
            vec![]
        } else {
            vec![m.num_tokens()]
        };
        for s in STATS {
            specs.push(
                DatasetSpec::new(
                    format!("pred/{}/{s}", m.token_key),
                    Dtype::F32,
                    &shape,
                    None,
                )
                .attr("calibration", t.calibration()),
            );
        }
        if args.save_pdf {
            specs.push(
                DatasetSpec::new(
                    format!("pdf/{}", m.token_key),
                    Dtype::F32,
                    &[m.num_tokens(), t.values[0].len()],
                    None,
                )
                .attr("calibration", t.calibration()),
            );
        }
        if args.save_logits {
            specs.push(DatasetSpec::new(
                format!("logits/{}", m.token_key),
                Dtype::F32,
                &[m.num_tokens(), m.vocab],
                None,
            ));
        }
    }
    specs
}

/// Runs the model (or the ensemble of models `plans`, from `dirs`) over the catalogue.
#[allow(clippy::too_many_arguments)]
fn run_plan<B: Backend>(
    args: &PredictArgs,
    session: &Session,
    stop: &StopFlag,
    dirs: &[PathBuf],
    plans: &[ModelPlan<B>],
    targets: &[Target],
    probe: Option<&Probe<B>>,
    device: &B::Device,
) -> Result<(Outcome, serde_json::Value)> {
    let plan = &plans[0];
    let catalog = &plan.common.catalog;
    let n = catalog.n_rows();
    if session.is_root() {
        plan.inputs()
            .iter()
            .for_each(|b| log::info!("input {}", b.describe()));
    }
    let config = serde_json::json!({
        "tool": TOOL, "model": args.io.model, "catalog": args.io.catalog, "output": args.io.output,
        "batch_size": plan.common.batch, "chunk_rows": plan.chunk_rows, "targets": args.targets,
        "decoder": args.decoder, "save_pdf": args.save_pdf, "save_logits": args.save_logits,
        "device": format!("{:?}", args.compute.device), "precision": args.compute.precision,
        "bindings": plan.codecs.bindings().collect::<Vec<_>>(), "object_id": plan.ids.source(),
        "probe": probe.map(|p| &p.cfg),
        "calibration": targets.iter().map(|t| (t.modality.token_key, t.temperature)).collect::<std::collections::BTreeMap<_, _>>(),
        "ensemble": (plans.len() > 1).then_some(dirs),
    });
    let mut all_specs = vec![plan.ids.spec()];
    all_specs.extend(specs(args, targets, probe));
    let id = RunIdentity {
        tool: TOOL,
        config,
        model: &args.io.model,
        files: ensemble::plan_files(&args.io, dirs, plans),
        catalog,
    };
    let mut started = start(
        session,
        &id,
        &args.io.output,
        args.io.overwrite,
        plan.chunk_rows,
        &all_specs,
        "predicted",
    )?;
    let run = &started.run;
    let mode = match args.decoder {
        Decoder::Joint => DecoderMode::Joint,
        Decoder::Independent => DecoderMode::Independent,
    };
    let outcome = run_chunks(
        session,
        run,
        n,
        stop,
        |rows: Range<usize>| -> Result<(Vec<i64>, Vec<Vec<ModalityTokens>>)> {
            let tokens = plans
                .iter()
                .map(|p| p.codecs.encode(catalog, rows.clone()))
                .collect::<Result<Vec<_>>>()?;
            Ok((plan.ids.read(catalog, &rows)?, tokens))
        },
        |(ids, tokens)| compute(args, plans, targets, probe, mode, device, ids, tokens),
        |rows, out| write(args, run, targets, probe, rows, out.as_ref()),
        |r| started.progress.advance(r),
    )?;
    let secs = started.close(session, outcome)?;
    let cpu = started.cpu_seconds(session);
    let mut summary = serde_json::json!({ "rows": n, "seconds": secs, "cpu_seconds": cpu, "ranks": session.size(), "finished": outcome == Outcome::Finished });
    if outcome == Outcome::Finished {
        let diag = agree(
            session,
            diagnostics(session, args, &started.run, plan, targets),
        )?;
        summary["targets"] = diag;
    }
    if session.is_root() {
        log::info!(
            "predicted {n} rows in {secs:.2} s on {} rank(s) ({:.1} rows/s)",
            session.size(),
            n as f64 / secs.max(1e-9)
        );
    }
    started.sidecar(session, &args.io.output, &summary)?;
    Ok((outcome, summary))
}

/// One chunk: `tokens` per member of `plans` (one for a single model).
#[allow(clippy::too_many_arguments)]
fn compute<B: Backend>(
    args: &PredictArgs,
    plans: &[ModelPlan<B>],
    targets: &[Target],
    probe: Option<&Probe<B>>,
    mode: DecoderMode,
    device: &B::Device,
    ids: Vec<i64>,
    mut tokens: Vec<Vec<ModalityTokens>>,
) -> Result<Out> {
    let plan = &plans[0];
    let n = ids.len();
    let mods: Vec<&'static ModalityInfo> = targets.iter().map(|t| t.modality).collect();
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
    let mut probe_out = probe.map(|p| {
        let [a, c] = p.widths();
        (vec![f32::NAN; n * a], vec![f32::NAN; n * c])
    });
    for b in batches(&tokens[0], &plan.is_input, n, plan.common.batch) {
        let inp = inputs::<B>(&tokens[0], &b, device);
        if let (Some(p), Some((first, second))) = (probe, probe_out.as_mut()) {
            let fed: Vec<_> = inp
                .iter()
                .filter(|i| p.cfg.inputs.iter().any(|k| k == i.modality.token_key))
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
        if mods.is_empty() {
            continue;
        }
        let logits = ensemble::logits(plans, &tokens, &b, &inp, &mods, mode, device)?;
        for (ti, (t, l)) in targets.iter().zip(logits).enumerate() {
            let (nt, v) = (t.modality.num_tokens(), t.modality.vocab);
            for (j, &r) in b.rows.iter().enumerate() {
                for p in 0..nt {
                    let raw = &l[(j * nt + p) * v..(j * nt + p + 1) * v];
                    let calibrated = t.temperature.map(|temp| scaled(raw, temp));
                    let row = calibrated.as_deref().unwrap_or(raw);
                    let values = &t.values[p.min(t.values.len() - 1)];
                    let s = summarize(row, values);
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
                        let (prob, _) = crate::posterior::probabilities(row, k);
                        for (q, x) in prob.into_iter().enumerate() {
                            pdf[ti][(r * nt + p) * k + q] = x as f32;
                        }
                    }
                    if args.save_logits {
                        logits_out[ti][(r * nt + p) * v..(r * nt + p + 1) * v].copy_from_slice(raw);
                    }
                }
            }
        }
    }
    Ok(Out {
        ids,
        tokens: tokens.swap_remove(0),
        stats,
        pdf,
        logits: logits_out,
        probe: probe_out,
    })
}

fn write<B: Backend>(
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
        run,
        rows.start,
        out.map_or(&[][..], |o| &o.tokens[..]),
        rows.len(),
    )?;
    if let Some(p) = probe {
        let specs = p.specs();
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
        let key = t.modality.token_key;
        for (si, s) in STATS.iter().enumerate() {
            w(
                &format!("pred/{key}/{s}"),
                out.map_or(&[][..], |o| &o.stats[ti][si][..]),
            )?;
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

/// The PNG beside the output for a target.
pub fn plot_path(output: &Path, key: &str) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(format!(".{key}.png"));
    PathBuf::from(p)
}

/// Rank 0: metrics against the truth (when the catalogue has it) and the diagnostic plot of
/// each single-token target.
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
    for t in targets.iter().filter(|t| t.modality.num_tokens() == 1) {
        let key = t.modality.token_key;
        let pred: Vec<f32> = run
            .out
            .hdf5()
            .dataset(&format!("pred/{key}/median"))?
            .read_raw()?;
        let png = plot_path(&args.io.output, key);
        let upper = key.to_uppercase();
        let truth = match &t.truth {
            Some((dataset, None)) if n > 0 => plan.common.catalog.read(dataset, 0..n)?.to_f32(),
            _ => None,
        };
        match truth
            .as_ref()
            .and_then(|tr| metrics::point_metrics(&pred, tr).map(|m| (tr, m)))
        {
            Some((tr, m)) => {
                let title = format!(
                    "{upper}: N={}  SIGMA_NMAD={:.4}  OUTLIERS={:.1}%  BIAS={:+.4}",
                    m.n,
                    m.sigma_nmad,
                    100.0 * m.outlier_fraction,
                    m.bias
                );
                plot::scatter_png(
                    &png,
                    tr,
                    &pred,
                    &title,
                    &format!("{upper} TRUE"),
                    &format!("{upper} PREDICTED (MEDIAN)"),
                )?;
                log::info!(
                    "{key}: σ_NMAD {:.4}, outliers {:.2} %, bias {:+.4} over {} rows with a true value",
                    m.sigma_nmad,
                    100.0 * m.outlier_fraction,
                    m.bias,
                    m.n
                );
                out.insert(
                    key.into(),
                    serde_json::json!({ "metrics": m, "plot": png, "calibration": t.temperature }),
                );
            }
            None => {
                plot::histogram_png(
                    &png,
                    &pred,
                    50,
                    &format!("{upper}: PREDICTED MEDIANS (NO TRUE VALUES IN THE CATALOGUE)"),
                    &format!("{upper} PREDICTED"),
                )?;
                out.insert(
                    key.into(),
                    serde_json::json!({ "plot": png, "calibration": t.temperature }),
                );
            }
        }
        log::info!("{key}: diagnostic plot {}", png.display());
    }
    Ok(out.into())
}

impl crate::cli::ToolArgs for PredictArgs {
    fn threads(&self) -> Option<usize> {
        self.compute.threads
    }
    fn log_level(&self) -> &str {
        &self.io.log_level
    }
}
