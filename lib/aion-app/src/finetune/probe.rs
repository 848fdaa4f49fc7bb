//! Mode `probe`: a linear or MLP head on the frozen model's pooled embeddings.
//!
//! The pooled embedding of every row ([`Aion::embed`], the mean of the context over the row's
//! tokens) is computed once, each rank its block, and shared; training then only runs the small
//! head. Regression heads minimise the Gaussian negative log-likelihood of the standardised
//! target, `½((y − μ)/σ)² + log σ`, so each prediction has an uncertainty; classifiers minimise
//! the cross-entropy. The head is written to `<output>/probe/` (format in
//! `aion_model::probe`).

use aion_model::Aion;
use aion_model::fourm::TokenInput;
use aion_model::nn::Linear;
use aion_model::probe::{LOG_SIGMA_BOUND, ProbeConfig, ProbeHead, ProbeTask};
use aion_model::rng::{Rng, tags};
use aion_model::train::objective::inputs;
use aion_mpi::{Session, block_range};
use anyhow::{Result, bail};
use burn::module::Param;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};

use super::data::{EVAL_STEP, Masking, ModalityData, build_batch};
use super::log::Evaluation;
use super::tokens::Predictions;
use super::trainer::{ShardLoss, Task};
use crate::metrics::{Gaussian, Posterior};

/// Pooled embeddings `[rows, D]` of every catalogue row (NaN rows where no input is usable).
pub fn pooled_embeddings<B: Backend>(
    session: &Session,
    model: &Aion<B>,
    data: &[ModalityData],
    n_rows: usize,
    device: &B::Device,
) -> Vec<f32> {
    let d = model.config().dim;
    let mine = block_range(n_rows, session.rank(), session.size());
    let how = Masking {
        seed: 0,
        mask_ratio: 0.0,
        soft_sigma: 0.0,
    };
    let mut buf = vec![0.0f64; n_rows * d];
    let rows: Vec<usize> = mine.collect();
    for chunk in rows.chunks(256) {
        let batch = build_batch(data, chunk, EVAL_STEP, how);
        let ins: Vec<TokenInput<B>> = inputs(&batch, device);
        if ins.is_empty() {
            continue;
        }
        let e: Vec<f32> = model
            .embed(&ins)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32");
        for (i, &r) in chunk.iter().enumerate() {
            for j in 0..d {
                buf[r * d + j] = f64::from(e[i * d + j]);
            }
        }
    }
    session.sum_f64s(&buf).iter().map(|&v| v as f32).collect()
}

/// A freshly initialised head (Xavier-uniform weights, zero biases).
pub fn init_head<B: Backend>(cfg: &ProbeConfig, seed: u64, device: &B::Device) -> ProbeHead<B> {
    let mut rng = Rng::new(seed, tags::INIT, 0x9b0e);
    let mut lin = |d_in: usize, d_out: usize| {
        let bound = (6.0 / (d_in + d_out) as f64).sqrt();
        let w: Vec<f32> = (0..d_in * d_out)
            .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
            .collect();
        Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [d_in, d_out]),
                device,
            )),
            bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
        }
    };
    let hidden = cfg.hidden.map(|h| lin(cfg.input_dim, h));
    let out = lin(cfg.hidden.unwrap_or(cfg.input_dim), cfg.outputs);
    ProbeHead { hidden, out }
}

/// Targets of the probe: standardised values (regression) or class indices (classification),
/// NaN / −1 where absent.
pub struct ProbeTargets {
    /// Per row: standardised value, or the class index as f32 (−1 = none).
    pub y: Vec<f32>,
    /// The head's config (task, standardisation, classes).
    pub cfg: ProbeConfig,
}

/// Prepares the targets from the raw column, the standardisation / classes coming from the
/// training rows only.
pub fn targets(raw: &[f32], train: &[usize], mut cfg: ProbeConfig) -> Result<ProbeTargets> {
    match cfg.task {
        ProbeTask::Regression => {
            let v: Vec<f64> = train
                .iter()
                .map(|&r| f64::from(raw[r]))
                .filter(|x| x.is_finite())
                .collect();
            if v.len() < 2 {
                bail!(
                    "the probe target {} has fewer than 2 finite training values",
                    cfg.target
                );
            }
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64)
                .sqrt()
                .max(1e-12);
            cfg.target_mean = mean;
            cfg.target_std = std;
            let y = raw
                .iter()
                .map(|&x| ((f64::from(x) - mean) / std) as f32)
                .collect();
            Ok(ProbeTargets { y, cfg })
        }
        ProbeTask::Classification => {
            let mut classes: Vec<i64> = train
                .iter()
                .map(|&r| raw[r])
                .filter(|x| x.is_finite())
                .map(|x| x as i64)
                .collect();
            classes.sort_unstable();
            classes.dedup();
            if classes.len() < 2 {
                bail!(
                    "the probe target {} has fewer than 2 classes in the training rows",
                    cfg.target
                );
            }
            let y = raw
                .iter()
                .map(|&x| match classes.binary_search(&(x as i64)) {
                    Ok(i) if x.is_finite() => i as f32,
                    _ => -1.0,
                })
                .collect();
            cfg.outputs = classes.len();
            cfg.classes = Some(classes);
            Ok(ProbeTargets { y, cfg })
        }
    }
}

/// The probe task.
pub struct ProbeTrain<'a, B: Backend> {
    /// Pooled embeddings `[rows, D]`.
    pub emb: &'a [f32],
    /// Targets.
    pub targets: &'a ProbeTargets,
    /// Device.
    pub device: B::Device,
}

impl<B: AutodiffBackend> ProbeTrain<'_, B> {
    fn usable(&self, rows: &[usize]) -> Vec<usize> {
        let d = self.targets.cfg.input_dim;
        rows.iter()
            .copied()
            .filter(|&r| {
                let y = self.targets.y[r];
                let ok_y = match self.targets.cfg.task {
                    ProbeTask::Regression => y.is_finite(),
                    ProbeTask::Classification => y >= 0.0,
                };
                ok_y && self.emb[r * d..(r + 1) * d].iter().all(|v| v.is_finite())
            })
            .collect()
    }

    /// Summed loss of `rows` (usable ones) for a head on backend `C`.
    fn loss_on<C: Backend>(
        &self,
        head: &ProbeHead<C>,
        rows: &[usize],
        device: &C::Device,
    ) -> Option<(Tensor<C, 1>, usize)> {
        let rows = self.usable(rows);
        if rows.is_empty() {
            return None;
        }
        let (d, b) = (self.targets.cfg.input_dim, rows.len());
        let x: Vec<f32> = rows
            .iter()
            .flat_map(|&r| self.emb[r * d..(r + 1) * d].iter().copied())
            .collect();
        let x = Tensor::<C, 2>::from_data(TensorData::new(x, [b, d]), device);
        let out = head.forward(x);
        let y: Vec<f32> = rows.iter().map(|&r| self.targets.y[r]).collect();
        let loss = match self.targets.cfg.task {
            ProbeTask::Regression => {
                let y = Tensor::<C, 1>::from_data(TensorData::new(y, [b]), device);
                let mu = out.clone().narrow(1, 0, 1).reshape([b]);
                let log_sigma = out
                    .narrow(1, 1, 1)
                    .reshape([b])
                    .clamp(-LOG_SIGMA_BOUND, LOG_SIGMA_BOUND);
                let z = (y - mu) / log_sigma.clone().exp();
                (z.powf_scalar(2.0).mul_scalar(0.5) + log_sigma).sum()
            }
            ProbeTask::Classification => {
                let idx: Vec<i64> = y.iter().map(|&c| c as i64).collect();
                let idx = Tensor::<C, 2, Int>::from_data(TensorData::new(idx, [b, 1]), device);
                log_softmax(out, 1).gather(1, idx).neg().sum()
            }
        };
        Some((loss, b))
    }
}

impl<B: AutodiffBackend> Task<B> for ProbeTrain<'_, B> {
    type Module = ProbeHead<B>;

    fn part_names(&self) -> Vec<String> {
        vec![self.targets.cfg.target.clone()]
    }

    fn loss(&self, head: &ProbeHead<B>, rows: &[usize], _step: u64) -> Option<ShardLoss<B>> {
        let (sum, n) = self.loss_on(head, rows, &self.device)?;
        let v: Vec<f32> = sum
            .clone()
            .inner()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32");
        Some(ShardLoss {
            sum,
            weight: n as f64,
            parts: vec![(f64::from(v[0]), n as f64)],
        })
    }

    fn evaluate(
        &self,
        session: &Session,
        head: &ProbeHead<B::InnerBackend>,
        rows: &[usize],
    ) -> Evaluation {
        let device = Tensor::<B, 1>::zeros([1], &self.device).inner().device();
        let mine = &rows[block_range(rows.len(), session.rank(), session.size())];
        let (mut l, mut n) = (0.0, 0.0);
        if let Some((sum, k)) = self.loss_on(head, mine, &device) {
            let v: Vec<f32> = sum.into_data().convert::<f32>().to_vec().expect("f32");
            l = f64::from(v[0]);
            n = k as f64;
        }
        let t = session.sum_f64s(&[l, n]);
        let mut metrics = Vec::new();
        if self.targets.cfg.task == ProbeTask::Regression
            && let Some(m) = predictions(session, self, head, rows, &device).metrics()
        {
            metrics.extend(m.named().into_iter().map(|(k, v)| (k.to_string(), v)));
        }
        Evaluation {
            loss: if t[1] > 0.0 { t[0] / t[1] } else { f64::NAN },
            metrics,
        }
    }
}

/// Regression predictions of `rows` on every rank: per row the truth, the Gaussian mean and σ
/// (target units) and the truth's PIT and CRPS under that Gaussian; NaN for rows without a
/// usable embedding or truth.
pub fn predictions<B: AutodiffBackend>(
    session: &Session,
    task: &ProbeTrain<'_, B>,
    head: &ProbeHead<B::InnerBackend>,
    rows: &[usize],
    device: &burn::tensor::ops::Device<B::InnerBackend>,
) -> Predictions {
    const W: usize = 5;
    let cfg = &task.targets.cfg;
    let d = cfg.input_dim;
    let mine = block_range(rows.len(), session.rank(), session.size());
    // Each row is filled by one rank (the others leave 0), so the sum is every rank's result.
    let mut buf = vec![0.0f64; rows.len() * W];
    let ok = task.usable(&rows[mine.clone()]);
    let usable: std::collections::HashSet<usize> = task.usable(rows).into_iter().collect();
    if !ok.is_empty() {
        let x: Vec<f32> = ok
            .iter()
            .flat_map(|&r| task.emb[r * d..(r + 1) * d].iter().copied())
            .collect();
        let x = Tensor::from_data(TensorData::new(x, [ok.len(), d]), device);
        if let aion_model::probe::ProbePrediction::Gaussian { mean, sigma } = head.predict(cfg, x) {
            let pos: std::collections::HashMap<usize, usize> =
                rows.iter().enumerate().map(|(i, &r)| (r, i)).collect();
            for ((&r, m), s) in ok.iter().zip(mean).zip(sigma) {
                let i = pos[&r];
                let truth = cfg.target_mean + cfg.target_std * f64::from(task.targets.y[r]);
                let (m, s) = (f64::from(m), f64::from(s));
                let score = Gaussian { mean: m, sigma: s }
                    .score(truth)
                    .map_or([f64::NAN; 2], |sc| [sc.pit, sc.crps]);
                buf[i * W..(i + 1) * W].copy_from_slice(&[truth, m, s, score[0], score[1]]);
            }
        }
    }
    let all = session.sum_f64s(&buf);
    let rows = all
        .chunks_exact(W)
        .zip(rows)
        .map(|(c, r)| {
            if usable.contains(r) {
                [c[0], c[1], c[2], c[3], c[4]]
            } else {
                [f64::NAN; W]
            }
        })
        .collect();
    Predictions {
        key: cfg.target.clone(),
        rows,
    }
}
