//! The token-prediction task of modes `masked`, `full` and `lora`: the model (optionally with
//! LoRA adapters) predicts target tokens from input tokens, and the evaluation reports the loss
//! and, for every scalar modality that is only a target (e.g. redshift), the metrics of
//! [`crate::metrics`] for its posterior (σ_NMAD, outlier fraction, bias of the posterior mean;
//! 68 % / 95 % interval coverage and CRPS of the binned posterior), named `<metric>_<key>`.
//! At export the temperature of each point target is fitted on the validation split
//! ([`TokenTask::calibrate`], [`crate::calibration`]) and the test-split predictions use it.

use std::collections::BTreeMap;

use aion_model::Aion;
use aion_model::fourm::DecoderMode;
use aion_model::lora::LoraSet;
use aion_model::train::objective::{ModalityBatch, inputs, token_loss};
use aion_mpi::{Session, block_range};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::codecs::{bin_centres, posterior_moments, token_values};
use super::data::{EVAL_STEP, Masking, ModalityData, build_batch};
use super::log::Evaluation;
use super::trainer::{ShardLoss, Task, scalar};
use crate::calibration::{CalibrationFile, Heldout, fit_distributed, fit_noise_draws, scaled};
use crate::metrics::{Binned, Evaluation as Metrics, Posterior, Score};
use crate::posterior::{edges, probabilities};

/// What is trained: the model, and the adapters in LoRA mode.
#[derive(Module, Debug)]
pub struct Trainee<B: Backend> {
    /// The model (frozen under LoRA, except the embeddings of new modalities).
    pub model: Aion<B>,
    /// LoRA adapters.
    pub lora: Option<LoraSet<B>>,
}

impl<B: Backend> Trainee<B> {
    /// The model the forward pass uses (adapters applied).
    pub fn effective(&self) -> Aion<B> {
        match &self.lora {
            Some(l) => l.apply(&self.model),
            None => self.model.clone(),
        }
    }
}

/// The task.
pub struct TokenTask<'a, B: Backend> {
    /// Per-modality data (inputs and targets).
    pub data: &'a [ModalityData],
    /// Batch masking.
    pub masking: Masking,
    /// Device.
    pub device: B::Device,
}

/// Σ weight · tokens of each target modality of a batch.
fn weights(batch: &[ModalityBatch]) -> Vec<f64> {
    batch
        .iter()
        .map(|b| {
            b.target_weight.iter().map(|&w| f64::from(w)).sum::<f64>()
                * b.modality.num_tokens() as f64
        })
        .collect()
}

/// Predictions of one target-only scalar modality.
pub struct Predictions {
    /// Token key (probe heads: the target dataset).
    pub key: String,
    /// Per row of the evaluated set: truth, posterior mean, posterior σ, PIT and CRPS of the
    /// truth (NaN where absent).
    pub rows: Vec<[f64; 5]>,
}

impl Predictions {
    /// The metrics of these rows (`None` without a usable pair).
    pub fn metrics(&self) -> Option<Metrics> {
        let (pred, truth): (Vec<f32>, Vec<f32>) =
            self.rows.iter().map(|r| (r[1] as f32, r[0] as f32)).unzip();
        let scores: Vec<Score> = self
            .rows
            .iter()
            .filter(|r| r[3].is_finite() && r[4].is_finite())
            .map(|r| Score {
                pit: r[3],
                crps: r[4],
            })
            .collect();
        Metrics::new(&pred, &truth, &scores)
    }
}

impl<B: AutodiffBackend> TokenTask<'_, B> {
    /// Indices (in `data`) of scalar modalities that are targets and never inputs.
    fn point_targets(&self) -> Vec<usize> {
        (0..self.data.len())
            .filter(|&i| {
                let d = &self.data[i];
                d.is_target && !d.is_input && d.codec.is_some() && d.modality.num_tokens() == 1
            })
            .collect()
    }

    /// The logits of point target `t` (index in `data`) for this rank's block `mine` of `rows`
    /// (`block × vocab`, row-major; empty for an empty block). `draw`: `None` for the inputs as
    /// they are, `Some(d)` for the inputs redrawn within their errors (`[data.noise]`), draw `d`.
    fn block_logits(
        &self,
        model: &Aion<B::InnerBackend>,
        rows: &[usize],
        mine: &std::ops::Range<usize>,
        t: usize,
        draw: Option<u64>,
    ) -> Vec<f32> {
        if mine.is_empty() {
            return Vec::new();
        }
        let full = Masking {
            mask_ratio: 0.0,
            ..self.masking
        };
        // Any step but EVAL_STEP adds the noise; these are never training steps.
        let step = draw.map_or(EVAL_STEP, |d| EVAL_STEP - 1 - d);
        let batch = build_batch(self.data, &rows[mine.clone()], step, full);
        let ins = inputs::<B::InnerBackend>(&batch, &self.device_inner());
        model
            .predict(&ins, &[&*self.data[t].modality], DecoderMode::Joint)
            .pop()
            .expect("one target")
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 logits")
    }

    /// Posterior point estimates of the point targets for `rows` (this rank's block; summed
    /// over the ranks so every rank gets every row), from the logits divided by the
    /// temperatures of `calibration`.
    pub fn predict(
        &self,
        session: &Session,
        model: &Aion<B::InnerBackend>,
        rows: &[usize],
        calibration: Option<&CalibrationFile>,
    ) -> Vec<Predictions> {
        let mine = block_range(rows.len(), session.rank(), session.size());
        let mut out = Vec::new();
        for t in self.point_targets() {
            let d = &self.data[t];
            let logits = self.block_logits(model, rows, &mine, t, None);
            let temperature = calibration.and_then(|c| c.temperature(&d.modality.token_key));
            let codec = d.codec.as_ref().expect("point targets have codecs");
            let v = d.modality.vocab;
            let centres = bin_centres(codec, v);
            let grid = edges(&token_values(codec, v));
            let k = grid.len() - 1;
            let mut buf = vec![0.0f64; rows.len() * 5];
            for (i, &r) in rows[mine.clone()].iter().enumerate() {
                let raw = &logits[i * v..(i + 1) * v];
                let row = temperature.map_or_else(|| raw.to_vec(), |temp| scaled(raw, temp));
                let (probs, _) = probabilities(&row, k);
                let p32: Vec<f32> = probs.iter().map(|&x| x as f32).collect();
                let (m, s) = posterior_moments(&p32, &centres);
                let truth = if d.valid[r] {
                    f64::from(d.raw.values[r])
                } else {
                    f64::NAN
                };
                let score = Binned {
                    probs: &probs,
                    edges: &grid,
                }
                .score(truth)
                .map_or([f64::NAN; 2], |s| [s.pit, s.crps]);
                buf[(mine.start + i) * 5..(mine.start + i + 1) * 5]
                    .copy_from_slice(&[truth, m, s, score[0], score[1]]);
            }
            let all = session.sum_f64s(&buf);
            out.push(Predictions {
                key: d.modality.token_key.to_string(),
                rows: all
                    .chunks_exact(5)
                    .map(|c| [c[0], c[1], c[2], c[3], c[4]])
                    .collect(),
            });
        }
        out
    }

    /// Fits the temperature of every point target on `rows` (the validation split), across the
    /// ranks (every rank gets the same file); `None` without point targets or rows with a truth.
    /// When inputs have a noise map and `noise_draws > 0`, also the temperature of the posterior
    /// averaged over that many redraws of the inputs (what `aion-predict --noise-draws` uses).
    pub fn calibrate(
        &self,
        session: &Session,
        model: &Aion<B::InnerBackend>,
        rows: &[usize],
        noise_draws: usize,
    ) -> Option<CalibrationFile> {
        let mine = block_range(rows.len(), session.rank(), session.size());
        let noisy = self.data.iter().any(|d| d.is_input && d.noise.is_some());
        let draws = if noisy { noise_draws } else { 0 };
        let mut targets = BTreeMap::new();
        for t in self.point_targets() {
            let d = &self.data[t];
            let v = d.modality.vocab;
            let values = token_values(d.codec.as_ref().expect("point targets have codecs"), v);
            let usable: Vec<usize> = (0..mine.len())
                .filter(|&i| d.valid[rows[mine.start + i]])
                .collect();
            let kept_logits = |draw: Option<u64>| -> Vec<f32> {
                let logits = self.block_logits(model, rows, &mine, t, draw);
                usable
                    .iter()
                    .flat_map(|&i| logits[i * v..(i + 1) * v].iter().copied())
                    .collect()
            };
            let kept = kept_logits(None);
            let (truth, truth_values): (Vec<usize>, Vec<f32>) = usable
                .iter()
                .map(|&i| {
                    let r = rows[mine.start + i];
                    (
                        (d.ids[r].max(0) as usize).min(values.len() - 1),
                        d.raw.values[r],
                    )
                })
                .unzip();
            let heldout = Heldout {
                logits: &kept,
                draws: 1,
                vocab: v,
                truth: &truth,
                truth_values: &truth_values,
                values: &values,
            };
            if let Some(mut c) = fit_distributed(session, &heldout, "validation split") {
                if draws > 0 {
                    let all: Vec<f32> = (0..draws as u64)
                        .flat_map(|k| kept_logits(Some(k)))
                        .collect();
                    let mixture = Heldout {
                        logits: &all,
                        draws,
                        ..heldout
                    };
                    c.noise_draws = fit_noise_draws(session, &mixture);
                }
                targets.insert(d.modality.token_key.to_string(), c);
            }
        }
        (!targets.is_empty()).then(|| CalibrationFile::new(targets))
    }

    fn device_inner(&self) -> burn::tensor::ops::Device<B::InnerBackend> {
        burn::tensor::Tensor::<B, 1>::zeros([1], &self.device)
            .inner()
            .device()
    }
}

impl<B: AutodiffBackend> Task<B> for TokenTask<'_, B> {
    type Module = Trainee<B>;

    fn part_names(&self) -> Vec<String> {
        self.data
            .iter()
            .filter(|d| d.is_target)
            .map(|d| d.modality.token_key.to_string())
            .collect()
    }

    fn loss(&self, module: &Trainee<B>, rows: &[usize], step: u64) -> Option<ShardLoss<B>> {
        if rows.is_empty() {
            return None;
        }
        let batch = build_batch(self.data, rows, step, self.masking);
        let w = weights(&batch);
        let model = module.effective();
        let (sum, parts) = token_loss(&model, &batch, &self.device)?;
        let mut per = Vec::new();
        for (d, wi) in self.data.iter().zip(&w) {
            if !d.is_target {
                continue;
            }
            let l = parts
                .iter()
                .find(|(k, _)| *k == d.modality.token_key)
                .map_or(0.0, |(_, t)| scalar(t.clone()));
            per.push((l, *wi));
        }
        Some(ShardLoss {
            sum,
            weight: w.iter().sum(),
            parts: per,
        })
    }

    fn evaluate(
        &self,
        session: &Session,
        module: &Trainee<B::InnerBackend>,
        rows: &[usize],
    ) -> Evaluation {
        let model = module.effective();
        // With point targets (e.g. redshift) the criterion is their loss given every input;
        // otherwise the masked loss with fixed masks.
        let point = self.point_targets();
        let how = if point.is_empty() {
            self.masking
        } else {
            Masking {
                mask_ratio: 0.0,
                ..self.masking
            }
        };
        let mine = block_range(rows.len(), session.rank(), session.size());
        let (mut l, mut w) = (0.0, 0.0);
        for chunk in rows[mine].chunks(512) {
            let batch = build_batch(self.data, chunk, EVAL_STEP, how);
            w += weights(&batch).iter().sum::<f64>();
            if let Some((sum, _)) = token_loss(&model, &batch, &self.device_inner()) {
                let v: Vec<f32> = sum.into_data().convert::<f32>().to_vec().expect("f32");
                l += f64::from(v[0]);
            }
        }
        let t = session.sum_f64s(&[l, w]);
        let mut metrics = Vec::new();
        for p in self.predict(session, &model, rows, None) {
            if let Some(m) = p.metrics() {
                metrics.extend(
                    m.named()
                        .into_iter()
                        .map(|(name, v)| (format!("{name}_{}", p.key), v)),
                );
            }
        }
        Evaluation {
            loss: if t[1] > 0.0 { t[0] / t[1] } else { f64::NAN },
            metrics,
        }
    }
}

/// The module of the inner backend (for evaluation outside the loop).
pub fn inner<B: AutodiffBackend>(t: &Trainee<B>) -> Trainee<B::InnerBackend> {
    t.valid()
}
