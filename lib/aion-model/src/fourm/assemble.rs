//! Encoder input assembly: embed every input, concatenate, move masked tokens to the end of each
//! row, keep the first `K`, zero what is masked.
//!
//! Port of `aion/model.py::AION.embed_inputs` and `aion/fourm/fm.py::FourM.{cat_encoder_tensors,
//! forward_mask_encoder}` (polymathic-aion 0.0.2). The reference sorts each row by
//! `mask + 1e-6·position`, i.e. a stable partition (valid tokens first, each group in input
//! order); here the permutation is computed from the masks on the host (`B × T` booleans) and
//! applied with one row gather, so no per-row work touches the `[B, T, D]` tensors.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use super::TokenInput;
use super::embeddings::{ModalityEmbedding, sequence_positions};
use crate::config::is_grid;

/// The encoder input: tokens, embeddings, padding mask and modality id of each kept position.
pub(crate) struct Assembled<B: Backend> {
    /// Token vectors `[B, K, D]` (zero at padding).
    pub x: Tensor<B, 3>,
    /// Position + modality vectors `[B, K, D]` (zero at padding).
    pub e: Tensor<B, 3>,
    /// Padding mask `[B, K]`, true = excluded.
    pub mask: Tensor<B, 2, Bool>,
    /// Modality id of each position `[B, K]`, −1 at padding.
    pub modality: Tensor<B, 2, Int>,
    /// The same padding mask on the host, row-major.
    pub mask_host: Vec<bool>,
}

/// The input masks on the host, row-major `[B, N]`, all false when an input has none.
fn host_masks<B: Backend>(inputs: &[TokenInput<B>]) -> Vec<Vec<bool>> {
    inputs
        .iter()
        .map(|inp| {
            let [b, n] = inp.ids.dims();
            match &inp.mask {
                Some(m) => m
                    .clone()
                    .into_data()
                    .convert::<bool>()
                    .to_vec::<bool>()
                    .expect("bool mask data"),
                None => vec![false; b * n],
            }
        })
        .collect()
}

/// Embeds and assembles the encoder input, keeping `keep` positions per row.
///
/// # Shapes
/// inputs `[B, N_m]` each `->` `[B, K, D]` with `K = min(keep, Σ N_m)`
pub(crate) fn assemble<B: Backend>(
    embeddings: &[&ModalityEmbedding<B>],
    inputs: &[TokenInput<B>],
    keep: usize,
) -> Assembled<B> {
    let device = inputs[0].ids.device();
    let masks = host_masks(inputs);
    let (x, e) = embed_all(embeddings, inputs, &masks);
    let [b, t, d] = x.dims();
    let k = keep.min(t);
    let (row_mask, row_mod) = row_layout(inputs, &masks, b, t);
    let any_masked = row_mask.iter().any(|&m| m);
    let (order, mask_host, mod_host) = keep_order(&row_mask, &row_mod, b, t, k);
    let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(mask_host.clone(), [b, k]), &device);
    let (x, e) = if any_masked {
        // Rows are reordered, then the masked positions (now at the end) are zeroed.
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(order, [b * k]), &device);
        let m3 = mask.clone().unsqueeze_dim::<3>(2).expand([b, k, d]);
        let gather = |v: Tensor<B, 3>| {
            v.reshape([b * t, d])
                .select(0, idx.clone())
                .reshape([b, k, d])
                .mask_fill(m3.clone(), 0.0)
        };
        (gather(x), gather(e))
    } else {
        (x.narrow(1, 0, k), e.narrow(1, 0, k))
    };
    let modality = Tensor::from_data(TensorData::new(mod_host, [b, k]), &device);
    Assembled {
        x,
        e,
        mask,
        modality,
        mask_host,
    }
}

/// Token vectors and position + modality vectors of every input, concatenated in input order.
///
/// # Shapes
/// inputs `[B, N_m]` each `-> ([B, T, D], [B, T, D])`, `T = Σ N_m`
fn embed_all<B: Backend>(
    embeddings: &[&ModalityEmbedding<B>],
    inputs: &[TokenInput<B>],
    masks: &[Vec<bool>],
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let (mut xs, mut es) = (Vec::new(), Vec::new());
    for ((emb, inp), mask) in embeddings.iter().zip(inputs).zip(masks) {
        let positions = (!is_grid(&inp.modality)).then(|| {
            let pos = sequence_positions(mask, inp.ids.dims()[0]);
            Tensor::from_data(TensorData::new(pos, inp.ids.dims()), &inp.ids.device())
        });
        let (x, e) = emb.encode(inp.ids.clone(), positions);
        xs.push(x);
        es.push(e);
    }
    (Tensor::cat(xs, 1), Tensor::cat(es, 1))
}

/// Mask and modality id of every concatenated position, row-major `[B, T]`.
fn row_layout<B: Backend>(
    inputs: &[TokenInput<B>],
    masks: &[Vec<bool>],
    b: usize,
    t: usize,
) -> (Vec<bool>, Vec<i64>) {
    let mut row_mask = vec![false; b * t];
    let mut row_mod = vec![0i64; b * t];
    let mut offset = 0;
    for (inp, mask) in inputs.iter().zip(masks) {
        let n = inp.ids.dims()[1];
        let id = i64::from(inp.modality.id());
        for r in 0..b {
            let span = r * t + offset..r * t + offset + n;
            row_mask[span.clone()].copy_from_slice(&mask[r * n..(r + 1) * n]);
            row_mod[span].fill(id);
        }
        offset += n;
    }
    (row_mask, row_mod)
}

/// The stable partition of each row (valid positions first, masked ones after, both in input
/// order), cut to `k`: flat source indices `r·t + j`, and the kept mask and modality ids (−1 at
/// masked positions).
fn keep_order(
    mask: &[bool],
    modality: &[i64],
    b: usize,
    t: usize,
    k: usize,
) -> (Vec<i64>, Vec<bool>, Vec<i64>) {
    let mut order = Vec::with_capacity(b * k);
    let mut kept_mask = Vec::with_capacity(b * k);
    let mut kept_mod = Vec::with_capacity(b * k);
    for r in 0..b {
        let row = &mask[r * t..(r + 1) * t];
        let valid = (0..t).filter(|&j| !row[j]);
        let masked = (0..t).filter(|&j| row[j]);
        for j in valid.chain(masked).take(k) {
            order.push((r * t + j) as i64);
            kept_mask.push(row[j]);
            kept_mod.push(if row[j] { -1 } else { modality[r * t + j] });
        }
    }
    (order, kept_mask, kept_mod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_cut() {
        let mask = [
            false, true, false, true, false, /* row 2 */ true, true, false, false, false,
        ];
        let ids = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5];
        let (order, m, md) = keep_order(&mask, &ids, 2, 5, 4);
        assert_eq!(order, [0, 2, 4, 1, 7, 8, 9, 5]);
        assert_eq!(m, [false, false, false, true, false, false, false, true]);
        assert_eq!(md, [1, 3, 5, -1, 3, 4, 5, -1]);
    }

    #[test]
    fn sequence_positions_are_compacted() {
        let mask = [
            false, true, false, false, /* row 2 */ true, false, true, false,
        ];
        assert_eq!(sequence_positions(&mask, 2), [0, 0, 1, 2, 0, 0, 0, 1]);
    }
}
