//! What a finished run leaves in its output directory.
//!
//! * The model in the Hub layout, loadable by `Aion::load` and every tool: `config.json`,
//!   `model.safetensors` (LoRA: the adapters fused in), `modalities.json` (extra modalities),
//!   `codecs/<name>/` (fitted, copied from the base, or the redshift grid); LoRA runs also keep
//!   the adapters alone (`adapter.safetensors`), probe runs the head (`probe/`).
//! * `train_log.jsonl` and `learning_curves.{png,svg}`; `split.json` (the rows of each part, for
//!   the baselines); `eval/` (test-split metrics of [`crate::metrics`], per-row predictions with
//!   PIT and CRPS, and a figure per point target: `test_<key>.{csv,png,svg}`);
//!   `finetune.json` (summary: configuration, its hash, steps, timing, metrics).

use std::path::Path;

use aion_model::Aion;
use aion_model::fs::copy_dir;
use aion_model::hub::layout;
use aion_model::modality::ExtraModality;
use aion_model::modality::ModalityTable;
use aion_model::modality::extra::ExtraModalitiesFile;
use aion_model::probe::ProbeHead;
use aion_mpi::Session;
use anyhow::{Context as _, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde_json::json;

use super::checkpoint::Progress;
use super::data::Split;
use super::log::{TrainLog, plot_curves};
use super::probe::{ProbeTrain, predictions};
use super::setup::{Context, new_spec};
use super::tokens::{Predictions, TokenTask, Trainee};
use crate::calibration::{self, CalibrationFile};
use crate::collective::agree;
use crate::plot::charts::EvaluationFigure;

/// The run summary file.
pub const SUMMARY: &str = "finetune.json";
/// Buckets of the redshift grid codec written for a new model (`GridScalarCodec("Z", 1024)`).
pub const GRID_K: usize = 1024;

/// Writes `split.json` (rank 0).
pub fn write_split(session: &Session, out: &Path, split: &Split) -> Result<()> {
    let r = if session.is_root() {
        let text = serde_json::to_string(split)?;
        aion_model::fs::write_atomic(&out.join("split.json"), text.as_bytes()).map_err(Into::into)
    } else {
        Ok(())
    };
    agree(session, r)
}

/// Codecs and `modalities.json` of the output model (rank 0).
fn write_codecs<B: Backend>(ctx: &Context<'_>, model: &Aion<B>) -> Result<()> {
    let (s, out) = (ctx.setup, &ctx.setup.out);
    let cfg = model.config();
    let keys: Vec<&String> = cfg.domains_in.iter().chain(&cfg.domains_out).collect();
    let mods: Vec<_> = keys.iter().filter_map(|k| cfg.modalities.get(k)).collect();
    for f in ctx.fitted {
        f.write_hub(&layout::codec(out, &f.name))?;
    }
    for m in &mods {
        let dst = layout::codec(out, &m.codec_dir);
        if ctx.fitted.iter().any(|f| f.name == m.codec_dir) {
            continue;
        }
        match &s.cfg.model.base {
            Some(base)
                if layout::codec(base, &m.codec_dir).is_dir()
                    && layout::codec(base, &m.codec_dir) != dst =>
            {
                copy_dir(&layout::codec(base, &m.codec_dir), &dst)?;
            }
            // A new model, or a base without it (pre-trained on photometry only): the grid.
            _ if m.codec == aion_model::modality::CodecKind::GridScalar && !dst.is_dir() => {
                super::codecs::write_grid_codec(&dst, &m.codec_dir, GRID_K)?;
            }
            _ => {}
        }
    }
    let mut extras: Vec<ExtraModality> = match &s.cfg.model.base {
        Some(b) => ExtraModalitiesFile::read_dir(b)?
            .map(|f| f.modalities)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    extras.extend(s.cfg.new_modalities.iter().map(new_spec));
    extras.retain(|e| keys.iter().any(|k| **k == e.token_key));
    extras.dedup();
    if !extras.is_empty() {
        ExtraModalitiesFile::new(extras).write_dir(out)?;
    }
    Ok(())
}

/// Axis titles of a target's evaluation figure: the modality of the token key, or the one
/// read from that dataset by default (probe targets are datasets), else the name itself.
fn titles(modalities: &ModalityTable, key: &str) -> (String, String, String) {
    let m = modalities
        .get(key)
        .or_else(|| modalities.iter().find(|m| m.dataset == key));
    match m {
        Some(m) if m.token_key == "tok_z" => (
            "spectroscopic redshift z_{spec}".into(),
            "predicted redshift (posterior mean)".into(),
            "z_spec".into(),
        ),
        Some(m) => (
            format!("catalogue {}", m.axis_title()),
            format!("predicted {} (posterior mean)", m.axis_title()),
            "true value".into(),
        ),
        None => (
            format!("catalogue {key}"),
            format!("predicted {key} (posterior mean)"),
            "true value".into(),
        ),
    }
}

/// Test metrics, predictions (CSV) and figures of point predictions (rank 0).
fn write_eval(
    modalities: &ModalityTable,
    out: &Path,
    split: &Split,
    preds: &[Predictions],
) -> Result<serde_json::Value> {
    let dir = out.join("eval");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut all = serde_json::Map::new();
    for p in preds {
        let key = &p.key;
        let mut csv = String::from("row,truth,mean,sigma,pit,crps\n");
        for (&r, v) in split.test.iter().zip(&p.rows) {
            csv.push_str(&format!(
                "{r},{},{},{},{},{}\n",
                v[0], v[1], v[2], v[3], v[4]
            ));
        }
        std::fs::write(dir.join(format!("test_{key}.csv")), csv)?;
        if let Some(m) = p.metrics() {
            let pred: Vec<f32> = p.rows.iter().map(|r| r[1] as f32).collect();
            let truth: Vec<f32> = p.rows.iter().map(|r| r[0] as f32).collect();
            let pits: Vec<f64> = p
                .rows
                .iter()
                .filter(|r| r[3].is_finite() && r[4].is_finite())
                .map(|r| r[3])
                .collect();
            let (truth_title, pred_title, symbol) = titles(modalities, key);
            crate::plot::save(
                &EvaluationFigure {
                    truth: &truth,
                    pred: &pred,
                    pits: &pits,
                    eval: &m,
                    truth_title: &truth_title,
                    pred_title: &pred_title,
                    truth_symbol: &symbol,
                    title: &format!("{key}: test split, {} objects", m.point.n),
                },
                &dir.join(format!("test_{key}")),
            )?;
            all.insert(key.clone(), serde_json::to_value(m)?);
        }
    }
    let v = serde_json::Value::Object(all);
    std::fs::write(
        dir.join("test_metrics.json"),
        serde_json::to_string_pretty(&v)?,
    )?;
    Ok(v)
}

/// `calibration.json` of the output model (rank 0). The work directory may hold one from an
/// earlier export of this run (resumed with another `[calibration]`): it is removed when this
/// export has none, so `aion-predict` never applies a stale one.
fn write_calibration(out: &Path, calibration: Option<&CalibrationFile>) -> Result<()> {
    match calibration {
        Some(c) => {
            for (key, t) in &c.targets {
                log::info!(
                    "{key}: temperature {:.3} fitted on the {}: 68 % coverage {:.1} % -> {:.1} %",
                    t.temperature,
                    t.fitted_on,
                    100.0 * t.coverage_68[0],
                    100.0 * t.coverage_68[1]
                );
                if let Some(n) = &t.noise_draws {
                    log::info!(
                        "{key}: averaged over {} noise draws of the inputs (aion-predict \
                         --noise-draws): temperature {:.3}, 68 % coverage {:.1} % -> {:.1} %",
                        n.draws,
                        n.temperature,
                        100.0 * n.coverage_68[0],
                        100.0 * n.coverage_68[1]
                    );
                }
            }
            c.write_dir(out)
        }
        None => match std::fs::remove_file(out.join(calibration::FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| {
                format!("cannot remove the stale calibration of {}", out.display())
            }),
            _ => Ok(()),
        },
    }
}

fn summary(
    ctx: &Context<'_>,
    progress: &Progress,
    test: serde_json::Value,
    log: &TrainLog,
    calibration: Option<&CalibrationFile>,
) -> Result<()> {
    let s = ctx.setup;
    plot_curves(
        log.path(),
        &s.out.join("learning_curves"),
        &format!(
            "{} (mode {})",
            s.final_out
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().to_string()),
            format!("{:?}", s.cfg.mode).to_lowercase()
        ),
    )?;
    let v = json!({
        "tool": super::TOOL, "version": env!("CARGO_PKG_VERSION"), "git_commit": crate::provenance::GIT_COMMIT,
        "finished": true, "finished_at": crate::provenance::now_utc(), "config_hash": s.hash, "config": s.cfg,
        "ranks": ctx.session.size(), "steps": progress.step, "early_stopped": progress.early_stopped,
        "best_step": progress.best_step, "best_val_loss": progress.best_loss,
        "seconds": ctx.seconds_before.elapsed().as_secs_f64(),
        "rows": { "train": ctx.split.train.len(), "val": ctx.split.val.len(), "test": ctx.split.test.len() },
        "test": test, "calibration": calibration,
    });
    aion_model::fs::write_atomic(
        &s.out.join(SUMMARY),
        format!("{}\n", serde_json::to_string_pretty(&v)?).as_bytes(),
    )?;
    Ok(())
}

/// What training hands an exporter: the trained module (of the inner backend), the training's
/// progress and its log.
pub struct Trained<'a, M> {
    /// The trained module.
    pub module: &'a M,
    /// Steps done, best validation, …
    pub progress: &'a Progress,
    /// The training log.
    pub log: &'a TrainLog,
}

/// Exports a token-prediction run (modes masked, full, lora).
pub fn tokens<B: AutodiffBackend>(
    ctx: &Context<'_>,
    task: &TokenTask<'_, B>,
    trained: Trained<'_, Trainee<B::InnerBackend>>,
) -> Result<()> {
    let model = trained.module.effective();
    let calibration = (ctx.setup.cfg.calibration.method == calibration::METHOD)
        .then(|| {
            task.calibrate(
                ctx.session,
                &model,
                &ctx.split.val,
                ctx.setup.cfg.calibration.noise_draws,
            )
        })
        .flatten();
    let preds = if ctx.split.test.is_empty() {
        Vec::new()
    } else {
        task.predict(ctx.session, &model, &ctx.split.test, calibration.as_ref())
    };
    let r = if ctx.session.is_root() {
        (|| -> Result<()> {
            let out = &ctx.setup.out;
            let carry = ctx
                .setup
                .cfg
                .model
                .base
                .as_ref()
                .map(|b| layout::weights(b));
            aion_model::export::save(&model, out, carry.as_deref())?;
            if let Some(l) = &trained.module.lora {
                l.save(&out.join("adapter.safetensors"))?;
            }
            write_codecs(ctx, &model)?;
            write_calibration(out, calibration.as_ref())?;
            let test = write_eval(&ctx.setup.modalities, out, ctx.split, &preds)?;
            summary(
                ctx,
                trained.progress,
                test,
                trained.log,
                calibration.as_ref(),
            )
        })()
    } else {
        Ok(())
    };
    agree(ctx.session, r)
}

/// Exports a probe run: the base model's files and the head.
pub fn probe<B: AutodiffBackend>(
    ctx: &Context<'_>,
    task: &ProbeTrain<'_, B>,
    trained: Trained<'_, ProbeHead<B::InnerBackend>>,
) -> Result<()> {
    let head = trained.module;
    let device = burn::tensor::Tensor::<B, 1>::zeros([1], &task.device)
        .inner()
        .device();
    let preds = if ctx.split.test.is_empty()
        || task.targets.cfg.task != aion_model::probe::ProbeTask::Regression
    {
        Vec::new()
    } else {
        vec![predictions(
            ctx.session,
            task,
            head,
            &ctx.split.test,
            &device,
        )]
    };
    let r = if ctx.session.is_root() {
        (|| -> Result<()> {
            let (out, base) = (
                &ctx.setup.out,
                ctx.setup.cfg.model.base.as_ref().expect("probe has a base"),
            );
            if base != out {
                // The base's calibration.json (if any) is carried: the probe leaves the base's
                // token posteriors as they were.
                let files = layout::top_level_files();
                for f in files.iter().copied().chain([calibration::FILE]) {
                    if base.join(f).is_file() {
                        let _ = std::fs::remove_file(out.join(f));
                        std::fs::hard_link(base.join(f), out.join(f))
                            .or_else(|_| std::fs::copy(base.join(f), out.join(f)).map(|_| ()))
                            .with_context(|| format!("cannot copy {} into {}", f, out.display()))?;
                    }
                }
                if layout::codecs(base).is_dir() {
                    copy_dir(&layout::codecs(base), &layout::codecs(out))?;
                }
            }
            head.save(&task.targets.cfg, out)?;
            let test = write_eval(&ctx.setup.modalities, out, ctx.split, &preds)?;
            summary(ctx, trained.progress, test, trained.log, None)
        })()
    } else {
        Ok(())
    };
    agree(ctx.session, r)
}
