//! The data-parallel training loop shared by every mode.
//!
//! Each step: the global batch is cut into one contiguous shard per rank; each rank computes the
//! *summed* loss of its shard and its gradient; one all-reduce adds up the gradients, the loss
//! and target-weight sums and the ranks' stop requests; dividing by the global weight gives the
//! gradient of the global batch's mean loss, exactly what one rank alone would compute (up to
//! float summation order). Every rank then applies the same AdamW update to the same flat
//! parameter vector, so the replicas never drift apart. Evaluations, early stopping, periodic
//! checkpoints and the stop signal are decided on all-reduced values, hence identically on every
//! rank.

use aion_model::train::adamw::{AdamW, AdamWConfig, clip_global_norm, lr_at};
use aion_model::train::params::{self, Flat};
use aion_mpi::{Session, block_range};
use anyhow::Result;
use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use super::checkpoint::{Checkpoint, Progress};
use super::config::TrainSection;
use super::log::{Evaluation, TrainLog};
use crate::signals::StopFlag;

/// The summed loss of one shard.
pub struct ShardLoss<B: AutodiffBackend> {
    /// Σ weight · loss over the shard (differentiable).
    pub sum: Tensor<B, 1>,
    /// Σ weight (the normaliser's share of this shard).
    pub weight: f64,
    /// Per part (e.g. per target modality): summed loss and weight, for the log.
    pub parts: Vec<(f64, f64)>,
}

/// What a training mode provides to the loop.
pub trait Task<B: AutodiffBackend> {
    /// The trained module.
    type Module: AutodiffModule<B> + Clone;
    /// Names of the loss parts.
    fn part_names(&self) -> Vec<String>;
    /// The summed loss of `rows` at `step` (`None` if the shard has nothing to learn from).
    fn loss(&self, module: &Self::Module, rows: &[usize], step: u64) -> Option<ShardLoss<B>>;
    /// Evaluates `rows` (this rank computes its block; the result is summed over ranks).
    fn evaluate(
        &self,
        session: &Session,
        module: &<Self::Module as AutodiffModule<B>>::InnerModule,
        rows: &[usize],
    ) -> Evaluation;
}

/// Where the data and the schedule come from.
pub struct Plan<'a> {
    /// Training rows.
    pub train: &'a [usize],
    /// Validation rows (may be empty: no evaluation, no early stopping).
    pub val: &'a [usize],
    /// Seed.
    pub seed: u64,
    /// `[train]`.
    pub cfg: &'a TrainSection,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// All steps done (or early-stopped).
    Finished,
    /// Stopped by a signal after checkpointing.
    Stopped,
}

/// The result of training: the module to export (the best one when early stopping), how it
/// ended, and the progress record.
pub struct Outcome<M> {
    /// Module to export.
    pub module: M,
    /// Ending.
    pub ending: Ending,
    /// Steps done, best validation, …
    pub progress: Progress,
}

/// Runs (or resumes) training.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend, T: Task<B>>(
    session: &Session,
    task: &T,
    mut module: T::Module,
    plan: &Plan<'_>,
    ckpt: &Checkpoint,
    log: &mut TrainLog,
    stop: &StopFlag,
) -> Result<Outcome<T::Module>> {
    let cfg = plan.cfg;
    let flat: Flat = params::layout(&module);
    let decay = flat.decay_mask();
    let adam = AdamWConfig {
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
    };
    let (mut values, mut opt, mut progress) = match ckpt.load(&flat)? {
        Some(state) => {
            log.truncate(state.progress.log_bytes)?;
            if session.is_root() {
                log::info!("resuming from step {}", state.progress.step);
            }
            (
                state.values,
                AdamW {
                    cfg: adam,
                    ..state.opt
                },
                state.progress,
            )
        }
        None => {
            log.truncate(0)?;
            (
                params::values(&module, &flat),
                AdamW::new(adam, flat.len),
                Progress::default(),
            )
        }
    };
    module = params::assign(module, &flat, &values);
    let mut best: Option<Vec<f32>> = progress.best_values.take();
    let mut ema: Option<Vec<f32>> = progress
        .ema_values
        .take()
        .or_else(|| (cfg.ema > 0.0).then(|| values.clone()));
    if session.is_root() {
        log::info!(
            "{} trainable parameters; steps {}..{} of {}, global batch {}",
            flat.len,
            progress.step,
            cfg.steps,
            cfg.steps,
            cfg.batch_size
        );
    }
    let names = task.part_names();
    let t0 = std::time::Instant::now();
    let mut report = StepReport::new(progress.step, cfg.steps);
    while progress.step < cfg.steps && !progress.early_stopped {
        let step = progress.step;
        crate::fault::hit("train_step", Some(step as usize));
        crate::fault::hit("before_write", Some(step as usize));
        let batch = super::data::global_batch(plan.train, cfg.batch_size, step, plan.seed);
        let mine = &batch[block_range(batch.len(), session.rank(), session.size())];
        let (mut grads, sums) = match task.loss(&module, mine, step) {
            Some(l) => {
                let g = l.sum.backward();
                let grads = params::gradients(&module, &flat, &g);
                (grads, Some((scalar(l.sum), l.weight, l.parts)))
            }
            None => (vec![0.0; flat.len], None),
        };
        // One all-reduce: gradients, loss, weight, stop requests, per-part sums.
        let mut buf: Vec<f64> = grads.iter().map(|&g| f64::from(g)).collect();
        let (loss_sum, weight, parts) = sums.unwrap_or((0.0, 0.0, vec![(0.0, 0.0); names.len()]));
        buf.extend([loss_sum, weight, f64::from(u8::from(stop.requested()))]);
        buf.extend(parts.iter().flat_map(|&(l, w)| [l, w]));
        let total = session.sum_f64s(&buf);
        let n = flat.len;
        let (w_all, stop_all) = (total[n + 1], total[n + 2] > 0.0);
        let scale = if w_all > 0.0 { 1.0 / w_all } else { 0.0 };
        for (g, t) in grads.iter_mut().zip(&total[..n]) {
            *g = (t * scale) as f32;
        }
        let norm = clip_global_norm(&mut grads, cfg.clip_norm);
        let lr = lr_at(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.min_lr);
        opt.step(&mut values, &grads, &decay, lr);
        module = params::assign(module, &flat, &values);
        progress.step += 1;
        if let Some(e) = &mut ema {
            update_ema(e, &values, cfg.ema, progress.step);
        }
        let part_losses: Vec<(String, f64)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let (l, w) = (total[n + 3 + 2 * i], total[n + 4 + 2 * i]);
                (name.clone(), if w > 0.0 { l / w } else { f64::NAN })
            })
            .collect();
        log.step(
            step + 1,
            lr,
            total[n] * scale,
            norm,
            &part_losses,
            t0.elapsed().as_secs_f64(),
        )?;
        if session.is_root() {
            report.step(progress.step, total[n] * scale, lr);
        }

        let last = progress.step == cfg.steps;
        if !plan.val.is_empty() && (progress.step % cfg.eval_every == 0 || last) {
            let evaluated = match &ema {
                Some(e) => params::assign(module.clone(), &flat, e),
                None => module.clone(),
            };
            let eval = task.evaluate(session, &evaluated.valid(), plan.val);
            log.eval(progress.step, "val", &eval)?;
            let value = criterion(&eval, &cfg.select)?;
            if progress.best_loss.is_none_or(|b| value < b) {
                progress.best_loss = Some(value);
                progress.best_step = progress.step;
                progress.evals_since_best = 0;
                best = Some(ema.clone().unwrap_or_else(|| values.clone()));
            } else {
                progress.evals_since_best += 1;
                if cfg.patience > 0 && progress.evals_since_best >= cfg.patience {
                    progress.early_stopped = true;
                    if session.is_root() {
                        log::info!(
                            "early stop at step {}: no better validation {} since step {}",
                            progress.step,
                            cfg.select,
                            progress.best_step
                        );
                    }
                }
            }
        }
        let periodic = progress.step % cfg.checkpoint_every == 0;
        if stop_all || (periodic && !last && !progress.early_stopped) {
            progress.log_bytes = log.bytes();
            progress.best_values.clone_from(&best);
            progress.ema_values.clone_from(&ema);
            ckpt.save(session, &values, &opt, &progress)?;
            progress.best_values = None;
            progress.ema_values = None;
        }
        if stop_all {
            if session.is_root() {
                log::warn!(
                    "stopped by a signal at step {}; checkpoint saved, run again to continue",
                    progress.step
                );
            }
            return Ok(Outcome {
                module,
                ending: Ending::Stopped,
                progress,
            });
        }
    }
    if let Some(b) = best.as_ref().or(ema.as_ref()) {
        module = params::assign(module, &flat, b);
    }
    progress.log_bytes = log.bytes();
    Ok(Outcome {
        module,
        ending: Ending::Finished,
        progress,
    })
}

/// Training progress in the log (rank 0): every [`StepReport::every`] steps (about 20 lines per
/// run) or at least once a minute, the step, the mean loss since the last line, the learning
/// rate, steps per second and the time left.
struct StepReport {
    first: u64,
    total: u64,
    every: u64,
    start: std::time::Instant,
    last: std::time::Instant,
    losses: (f64, u64),
}

impl StepReport {
    fn new(first: u64, total: u64) -> Self {
        let now = std::time::Instant::now();
        Self {
            first,
            total,
            every: Self::every(total),
            start: now,
            last: now,
            losses: (0.0, 0),
        }
    }

    /// Steps between two lines for a run of `total` steps (about 20 lines).
    fn every(total: u64) -> u64 {
        total.div_ceil(20).max(1)
    }

    fn step(&mut self, done: u64, loss: f64, lr: f64) {
        self.losses = (self.losses.0 + loss, self.losses.1 + 1);
        let due = done.is_multiple_of(self.every) || done == self.total;
        if !due && self.last.elapsed() < crate::progress::LOG_EVERY {
            return;
        }
        self.last = std::time::Instant::now();
        let rate = (done - self.first) as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let left = (self.total - done) as f64 / rate.max(1e-12);
        log::info!(
            "step {done}/{} ({:.0}%): loss {:.4} (mean of the last {}), lr {lr:.3e}, {rate:.2} steps/s, ETA {}",
            self.total,
            100.0 * done as f64 / self.total.max(1) as f64,
            self.losses.0 / self.losses.1 as f64,
            self.losses.1,
            crate::progress::format_duration(left)
        );
        self.losses = (0.0, 0);
    }
}

/// `ema ← d·ema + (1 − d)·values` with the usual warm-up `d = min(decay, (1 + t) / (10 + t))`.
fn update_ema(ema: &mut [f32], values: &[f32], decay: f64, t: u64) {
    let d = decay.min((1.0 + t as f64) / (10.0 + t as f64));
    for (e, &v) in ema.iter_mut().zip(values) {
        *e = (d * f64::from(*e) + (1.0 - d) * f64::from(v)) as f32;
    }
}

/// The validation value that selects the best model (lower is better).
fn criterion(e: &Evaluation, select: &str) -> Result<f64> {
    if select == "loss" {
        return Ok(e.loss);
    }
    match e.metrics.iter().find(|(k, _)| k == select) {
        Some((_, v)) => Ok(*v),
        None => anyhow::bail!(
            "[train] select = {select:?} is not a validation metric (loss{})",
            e.metrics
                .iter()
                .map(|(k, _)| format!(", {k}"))
                .collect::<String>()
        ),
    }
}

/// The value of a one-element tensor.
pub(super) fn scalar<B: AutodiffBackend>(t: Tensor<B, 1>) -> f64 {
    let v: Vec<f32> = t
        .inner()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32");
    f64::from(v[0])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_short_run_reports_often_and_a_long_one_about_twenty_times() {
        assert_eq!(super::StepReport::every(30), 2);
        assert_eq!(super::StepReport::every(1500), 75);
        assert_eq!(super::StepReport::every(5), 1);
    }
}
