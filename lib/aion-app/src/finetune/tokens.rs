//! The token-prediction task of modes `masked`, `full` and `lora`: the model (optionally with
//! LoRA adapters) predicts target tokens from input tokens, and the evaluation reports the loss
//! and, for every scalar modality that is only a target (e.g. redshift), point-estimate metrics
//! of its posterior (σ_NMAD, outlier fraction, bias).

use std::collections::BTreeMap;
use std::ops::Range;

use aion_model::Aion;
use aion_model::fourm::DecoderMode;
use aion_model::lora::LoraSet;
use aion_model::train::objective::{ModalityBatch, inputs, token_loss};
use aion_mpi::{Session, block_range};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::codecs::{bin_centres, posterior_moments};
use super::data::{EVAL_STEP, Masking, ModalityData, build_batch};
use super::trainer::{Evaluation, ShardLoss, Task};
use crate::calibration::{CalibrationFile, Heldout, fit_distributed, scaled};
use crate::metrics::point_metrics;
use crate::posterior::probabilities;

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

/// Logits of the point targets for this rank's block of a set of rows.
pub struct BlockLogits {
    /// Positions (in the set of rows) of this rank's block.
    pub mine: Range<usize>,
    /// Per point target: its index in the task's data and the block's logits
    /// (`block × vocab`, row-major).
    pub logits: Vec<(usize, Vec<f32>)>,
}

/// Point predictions of one target-only scalar modality.
pub struct Predictions {
    /// Token key.
    pub key: &'static str,
    /// Per row of the evaluated set: truth, posterior mean, posterior σ (NaN where absent).
    pub rows: Vec<[f64; 3]>,
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

    /// This rank's block of `rows` and, per point target (index in `data`), the block's logits
    /// (`block × vocab`, row-major).
    pub fn block_logits(
        &self,
        session: &Session,
        model: &Aion<B::InnerBackend>,
        rows: &[usize],
    ) -> BlockLogits {
        let mine = block_range(rows.len(), session.rank(), session.size());
        let full = Masking {
            mask_ratio: 0.0,
            ..self.masking
        };
        let mut logits = Vec::new();
        for t in self.point_targets() {
            let mut l = Vec::new();
            if !mine.is_empty() {
                let batch = build_batch(self.data, &rows[mine.clone()], EVAL_STEP, full);
                let ins = inputs::<B::InnerBackend>(&batch, &self.device_inner());
                l = model
                    .predict(&ins, &[self.data[t].modality], DecoderMode::Joint)
                    .pop()
                    .expect("one target")
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .expect("f32 logits");
            }
            logits.push((t, l));
        }
        BlockLogits { mine, logits }
    }

    /// Posterior point estimates of the point targets for `rows` (this rank's block; summed
    /// over the ranks so every rank gets every row), with the temperatures of `calibration`.
    pub fn predict(
        &self,
        session: &Session,
        model: &Aion<B::InnerBackend>,
        rows: &[usize],
        calibration: Option<&CalibrationFile>,
    ) -> Vec<Predictions> {
        let block = self.block_logits(session, model, rows);
        self.predictions(session, rows, &block, calibration)
    }

    /// [`predict`](Self::predict) from logits already computed (e.g. an ensemble's mixture).
    pub fn predictions(
        &self,
        session: &Session,
        rows: &[usize],
        block: &BlockLogits,
        calibration: Option<&CalibrationFile>,
    ) -> Vec<Predictions> {
        let mine = block.mine.clone();
        let mut out = Vec::new();
        for (t, l) in &block.logits {
            let d = &self.data[*t];
            let v = d.modality.vocab;
            let temperature = calibration.and_then(|c| c.temperature(d.modality.token_key));
            let codec = d.codec.as_ref().expect("point targets have codecs");
            let centres = bin_centres(codec, v);
            let mut buf = vec![0.0f64; rows.len() * 3];
            for (i, &r) in rows[mine.clone()].iter().enumerate() {
                let row = &l[i * v..(i + 1) * v];
                let row = temperature.map_or_else(|| row.to_vec(), |t| scaled(row, t));
                let (m, s) = posterior_moments(&softmax(&row), &centres);
                let truth = if d.valid[r] {
                    f64::from(d.raw.values[r])
                } else {
                    f64::NAN
                };
                buf[(mine.start + i) * 3..(mine.start + i + 1) * 3].copy_from_slice(&[truth, m, s]);
            }
            let all = session.sum_f64s(&buf);
            out.push(Predictions {
                key: d.modality.token_key,
                rows: all.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            });
        }
        out
    }

    /// Fits the temperature of every point target on `rows` (the validation split) from their
    /// logits, across the ranks; `None` without point targets.
    pub fn calibrate(
        &self,
        session: &Session,
        rows: &[usize],
        block: &BlockLogits,
    ) -> Option<CalibrationFile> {
        let mut targets = BTreeMap::new();
        for (t, l) in &block.logits {
            let d = &self.data[*t];
            let v = d.modality.vocab;
            let codec = d.codec.as_ref().expect("point targets have codecs");
            let values: Vec<f32> = (0..v)
                .map_while(|k| codec.decode_token(0, k as i64))
                .collect();
            let (mut kept, mut truth, mut truth_values) = (Vec::new(), Vec::new(), Vec::new());
            for (i, &r) in rows[block.mine.clone()].iter().enumerate() {
                if d.valid[r] {
                    kept.extend_from_slice(&l[i * v..(i + 1) * v]);
                    truth.push((d.ids[r] as usize).min(values.len() - 1));
                    truth_values.push(d.raw.values[r]);
                }
            }
            let heldout = Heldout {
                logits: &kept,
                vocab: v,
                truth: &truth,
                truth_values: &truth_values,
                values: &values,
            };
            if let Some(c) = fit_distributed(session, &heldout, "validation split") {
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
            let (pred, truth): (Vec<f32>, Vec<f32>) =
                p.rows.iter().map(|r| (r[1] as f32, r[0] as f32)).unzip();
            if let Some(m) = point_metrics(&pred, &truth) {
                metrics.push((format!("sigma_nmad_{}", p.key), m.sigma_nmad));
                metrics.push((format!("outliers_{}", p.key), m.outlier_fraction));
                metrics.push((format!("bias_{}", p.key), m.bias));
            }
        }
        Evaluation {
            loss: if t[1] > 0.0 { t[0] / t[1] } else { f64::NAN },
            metrics,
        }
    }
}

/// Softmax of one row of logits over the whole vocabulary.
fn softmax(logits: &[f32]) -> Vec<f32> {
    let (p, _) = probabilities(logits, logits.len());
    p.into_iter().map(|x| x as f32).collect()
}

fn scalar<B: AutodiffBackend>(t: burn::tensor::Tensor<B, 1>) -> f64 {
    let v: Vec<f32> = t
        .inner()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32");
    f64::from(v[0])
}

/// The module of the inner backend (for evaluation outside the loop).
pub fn inner<B: AutodiffBackend>(t: &Trainee<B>) -> Trainee<B::InnerBackend> {
    t.valid()
}
