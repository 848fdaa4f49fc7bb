//! The token-prediction objective (4M's masked modelling, restricted to what a catalogue row
//! holds) and posteriors for evaluation.
//!
//! For a batch, every modality comes with its token ids and, per row, whether it is an
//! **input** (fed to the encoder) and its **target weight** (how much its cross-entropy counts;
//! 0 = not a target for that row). A modality may be an input in some rows and a target in
//! others (the masked objective hides a random subset of each row's modalities and predicts
//! them). The decoder is run in [`DecoderMode::Independent`], i.e. each target as if requested
//! alone, which is exactly what `AION.forward` computes at inference for a single target.
//!
//! The loss is `Σ_rows Σ_targets w · CE` over the target tokens, returned as a sum so that the
//! caller can divide by the global weight of the whole (multi-rank) batch: the sum of the ranks'
//! gradients is then the gradient of the global mean. Ordinal scalar targets may use Gaussian
//! soft labels (`soft_sigma` in token bins) instead of one-hot ones.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::fourm::{Aion, DecoderMode, TokenInput};
use crate::modality::{Modality, ModalityInfo};

/// One modality of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ModalityBatch {
    /// The modality.
    pub modality: Modality,
    /// Token ids, row-major `[rows, tokens]` (any valid id where the row lacks the modality).
    pub ids: Vec<i64>,
    /// Per row: fed to the encoder.
    pub input: Vec<bool>,
    /// Per row: weight of its cross-entropy (0 = not a target).
    pub target_weight: Vec<f32>,
    /// Gaussian soft-label width in token bins (0 = one-hot).
    pub soft_sigma: f32,
}

impl ModalityBatch {
    fn rows(&self) -> usize {
        self.input.len()
    }

    fn is_input(&self) -> bool {
        self.input.iter().any(|&i| i)
    }

    fn is_target(&self) -> bool {
        self.target_weight.iter().any(|&w| w > 0.0)
    }
}

/// The encoder inputs of a batch (modalities that are an input in at least one row).
pub fn inputs<B: Backend>(batch: &[ModalityBatch], device: &B::Device) -> Vec<TokenInput<B>> {
    batch
        .iter()
        .filter(|m| m.is_input())
        .map(|m| {
            let (b, n) = (m.rows(), m.modality.num_tokens());
            let ids =
                Tensor::<B, 2, Int>::from_data(TensorData::new(m.ids.clone(), [b, n]), device);
            let mask: Vec<bool> = m
                .input
                .iter()
                .flat_map(|&i| std::iter::repeat_n(!i, n))
                .collect();
            let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(mask, [b, n]), device);
            TokenInput::new(&m.modality, ids).with_mask(mask)
        })
        .collect()
}

/// Soft (or one-hot) label rows for `ids` over a vocabulary of `v`, row-major `[ids, v]`.
pub fn soft_labels(ids: &[i64], v: usize, sigma: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; ids.len() * v];
    for (r, &id) in ids.iter().enumerate() {
        let row = &mut out[r * v..(r + 1) * v];
        let id = id.clamp(0, v as i64 - 1) as usize;
        if sigma <= 0.0 {
            row[id] = 1.0;
            continue;
        }
        let reach = (4.0 * sigma).ceil() as usize;
        let (lo, hi) = (id.saturating_sub(reach), (id + reach).min(v - 1));
        let mut total = 0.0f64;
        for (k, slot) in row.iter_mut().enumerate().take(hi + 1).skip(lo) {
            let z = (k as f64 - id as f64) / f64::from(sigma);
            let w = (-0.5 * z * z).exp();
            *slot = w as f32;
            total += w;
        }
        for slot in &mut row[lo..=hi] {
            *slot = (f64::from(*slot) / total) as f32;
        }
    }
    out
}

/// The summed loss of a batch and its part per target modality.
pub type LossParts<B> = (Tensor<B, 1>, Vec<(String, Tensor<B, 1>)>);

/// Weighted cross-entropy sums of the batch's targets: the total and one value per target
/// modality (in batch order). `None` when the batch has no target or no input.
///
/// # Shapes
/// `-> [1]` (sum over rows and tokens)
pub fn token_loss<B: Backend>(
    model: &Aion<B>,
    batch: &[ModalityBatch],
    device: &B::Device,
) -> Option<LossParts<B>> {
    let ins = inputs::<B>(batch, device);
    let targets: Vec<&ModalityBatch> = batch.iter().filter(|m| m.is_target()).collect();
    if ins.is_empty() || targets.is_empty() {
        return None;
    }
    let mods: Vec<&ModalityInfo> = targets.iter().map(|t| &*t.modality).collect();
    let logits = model.predict(&ins, &mods, DecoderMode::Independent);
    let mut parts = Vec::with_capacity(targets.len());
    for (t, logit) in targets.iter().zip(logits) {
        let [b, n, v] = logit.dims();
        let logp = log_softmax(logit, 2);
        let nll = if t.soft_sigma > 0.0 {
            let q = soft_labels(&t.ids, v, t.soft_sigma);
            let q = Tensor::<B, 3>::from_data(TensorData::new(q, [b, n, v]), device);
            (logp * q).sum_dim(2).neg().reshape([b, n])
        } else {
            let ids: Vec<i64> = t.ids.iter().map(|&i| i.clamp(0, v as i64 - 1)).collect();
            let idx = Tensor::<B, 3, Int>::from_data(TensorData::new(ids, [b, n, 1]), device);
            logp.gather(2, idx).neg().reshape([b, n])
        };
        let w = Tensor::<B, 2>::from_data(TensorData::new(t.target_weight.clone(), [b, 1]), device);
        parts.push((t.modality.token_key.to_string(), (nll * w).sum()));
    }
    let total = parts
        .iter()
        .map(|(_, l)| l.clone())
        .reduce(|a, b| a + b)
        .expect("at least one target");
    Some((total, parts))
}

/// Posterior probabilities of one single-token target given the inputs, row-major `[B, V]`.
pub fn posterior<B: Backend>(
    model: &Aion<B>,
    inputs: &[TokenInput<B>],
    target: &ModalityInfo,
) -> Vec<f32> {
    let logits = model
        .predict(inputs, &[target], DecoderMode::Joint)
        .pop()
        .expect("one target");
    let [b, n, v] = logits.dims();
    softmax(logits.reshape([b * n, v]), 1)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 probabilities")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_labels_are_normalised_and_centred() {
        let q = soft_labels(&[0, 5, 9], 10, 1.0);
        for r in 0..3 {
            let s: f32 = q[r * 10..(r + 1) * 10].iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        assert!(q[10 + 5] > q[10 + 4] && (q[10 + 4] - q[10 + 6]).abs() < 1e-7);
        assert_eq!(soft_labels(&[3], 5, 0.0), vec![0.0, 0.0, 0.0, 1.0, 0.0]);
    }
}
