//! Multi-head self- and cross-attention with optional qk-norm.
//!
//! Port of `aion/fourm/fm_utils.py::{Attention, NormAttention, CrossAttention,
//! NormCrossAttention}` (polymathic-aion 0.0.2). The `Norm*` variants only add one LayerNorm over
//! the head width for the queries and one for the keys, shared by all heads; here that is an
//! optional field. Padding keys are excluded by adding `-FLT_MAX` to their scores (what the
//! reference's `masked_fill(mask, -finfo.max)` amounts to: a fully masked row becomes uniform,
//! never NaN).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor};

use super::layers::{norm, xavier};
use crate::config::AionConfig;
use crate::nn::native::{bmm, softmax_last};
use crate::nn::{LayerNorm, Linear};
use crate::weights::Source;

/// Additive attention bias from a key mask: 0 for keys to attend to, and for padding the most
/// negative finite value of the model's float type (`-finfo(dtype).max`, as the reference).
///
/// # Shapes
/// `[B, K]` (true = padding) `-> [B, 1, 1, K]`
pub fn key_bias<B: Backend>(mask: Tensor<B, 2, Bool>) -> Tensor<B, 4> {
    let [b, k] = mask.dims();
    let zeros = Tensor::<B, 2>::zeros([b, k], &mask.device());
    // f32::MIN does not fit bfloat16 / float16 (LibTorch refuses the overflow).
    let lowest = match zeros.dtype() {
        DType::BF16 => half::bf16::MIN.to_f64(),
        DType::F16 => half::f16::MIN.to_f64(),
        DType::F64 => f64::MIN,
        _ => f64::from(f32::MIN),
    };
    zeros.mask_fill(mask, lowest).reshape([b, 1, 1, k])
}

/// `[B, N, H·hd] -> [B, H, N, hd]`
fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, d] = x.dims();
    x.reshape([b, n, heads, d / heads]).swap_dims(1, 2)
}

/// `[B, H, N, hd] -> [B, N, H·hd]`
fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, hd] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * hd])
}

/// Score-matrix bytes per block of [`attend`] (see there).
const BLOCK_BYTES: usize = 16 << 20;

/// `softmax((q·s) kᵀ + bias) v` with `s = hd^-1/2`, per (row, head) pair.
///
/// The reference scales the scores rather than the queries; with a power-of-two head width
/// (64 in every released model, 16 in the tests) both are exact.
///
/// The (row, head) pairs are processed in blocks whose score matrices total about 16 MB:
/// on NdArray that halves the time of the softmax and matmuls against one `[B, H, N, M]`
/// block (no page faults from fresh large allocations, better cache use). Each pair's
/// arithmetic is the same whatever the blocking, so results do not depend on the batch.
///
/// # Shapes
/// q `[B, H, N, hd]`, k and v `[B, H, M, hd]`, bias `[B, 1, 1, M]` `-> [B, H, N, hd]`
fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
) -> Tensor<B, 4> {
    let [b, h, n, hd] = q.dims();
    let m = k.dims()[2];
    let scale = (hd as f64).powf(-0.5);
    let q = q.mul_scalar(scale).reshape([b * h, n, hd]);
    let k = k.reshape([b * h, m, hd]);
    let v = v.reshape([b * h, m, hd]);
    let bias = bias.map(|bias| bias.expand([b, h, 1, m]).reshape([b * h, 1, m]));
    let block = (BLOCK_BYTES / (4 * n * m).max(1)).clamp(1, b * h);
    let outs: Vec<_> = (0..b * h)
        .step_by(block)
        .map(|start| {
            let len = block.min(b * h - start);
            let scores = bmm(
                q.clone().narrow(0, start, len),
                k.clone().narrow(0, start, len).swap_dims(1, 2),
            );
            let scores = match &bias {
                Some(bias) => scores.add(bias.clone().narrow(0, start, len)),
                None => scores,
            };
            bmm(softmax_last(scores), v.clone().narrow(0, start, len))
        })
        .collect();
    Tensor::cat(outs, 0).reshape([b, h, n, hd])
}

/// The optional per-head LayerNorms of queries and keys (`qk_norm`).
#[derive(Module, Debug)]
pub struct QkNorm<B: Backend> {
    /// `q_norm` over the head width.
    pub q: LayerNorm<B>,
    /// `k_norm` over the head width.
    pub k: LayerNorm<B>,
}

impl<B: Backend> QkNorm<B> {
    fn load(w: &mut impl Source, prefix: &str, cfg: &AionConfig, device: &B::Device) -> Self {
        let hd = cfg.head_dim();
        Self {
            q: norm(w, &format!("{prefix}.q_norm"), hd, cfg, device),
            k: norm(w, &format!("{prefix}.k_norm"), hd, cfg, device),
        }
    }

    fn apply(
        norms: &Option<Self>,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        match norms {
            Some(n) => (n.q.forward(q), n.k.forward(k)),
            None => (q, k),
        }
    }
}

/// Self-attention (`Attention` / `NormAttention`): fused `qkv` projection, output `proj`.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// `qkv`: `D -> 3D`, features ordered `[q heads…, k heads…, v heads…]`.
    pub qkv: Linear<B>,
    /// `proj`: `D -> D`.
    pub proj: Linear<B>,
    /// `q_norm` / `k_norm` when `qk_norm`.
    pub qk_norm: Option<QkNorm<B>>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> SelfAttention<B> {
    /// Loads `<prefix>.{qkv,proj,q_norm,k_norm}`.
    pub fn load(w: &mut impl Source, prefix: &str, cfg: &AionConfig, device: &B::Device) -> Self {
        let d = cfg.dim;
        let p = |name: &str| format!("{prefix}.{name}");
        Self {
            qkv: Linear::load(w, &p("qkv"), (d, 3 * d), cfg.qkv_bias, xavier(3), device),
            proj: Linear::load(w, &p("proj"), (d, d), cfg.proj_bias, xavier(1), device),
            qk_norm: cfg.qk_norm.then(|| QkNorm::load(w, prefix, cfg, device)),
            heads: cfg.num_heads,
        }
    }

    /// Attention of every token to every non-padding token of its row.
    ///
    /// # Shapes
    /// x `[B, N, D]`, bias `[B, 1, 1, N]` (see [`key_bias`]) `-> [B, N, D]`
    pub fn forward(&self, x: Tensor<B, 3>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let h = self.heads;
        let qkv = split_heads(self.qkv.forward(x), 3 * h);
        let q = qkv.clone().narrow(1, 0, h);
        let k = qkv.clone().narrow(1, h, h);
        let v = qkv.narrow(1, 2 * h, h);
        let (q, k) = QkNorm::apply(&self.qk_norm, q, k);
        self.proj.forward(merge_heads(attend(q, k, v, bias)))
    }

    /// The decoder self-attention of `AION.forward`: its mask is true everywhere, so each row's
    /// softmax is uniform and every query receives the mean of the value vectors of its group
    /// (queries and keys, hence `q_norm`/`k_norm`, play no part). Groups are consecutive
    /// `(start, len)` ranges of the sequence.
    ///
    /// # Shapes
    /// x `[B, M, D]` `-> [B, M, D]`
    pub fn forward_uniform(&self, x: Tensor<B, 3>, groups: &[(usize, usize)]) -> Tensor<B, 3> {
        let [b, _, d] = x.dims();
        let w_v = self.qkv.weight.val().narrow(1, 2 * d, d);
        let b_v = self.qkv.bias.as_ref().map(|p| p.val().narrow(0, 2 * d, d));
        let v = burn::tensor::module::linear(x, w_v, b_v);
        let means: Vec<_> = groups
            .iter()
            .map(|&(start, len)| v.clone().narrow(1, start, len).mean_dim(1))
            .collect();
        let out = self.proj.forward(Tensor::cat(means, 1));
        let parts: Vec<_> = groups
            .iter()
            .enumerate()
            .map(|(g, &(_, len))| out.clone().narrow(1, g, 1).expand([b, len, d]))
            .collect();
        Tensor::cat(parts, 1)
    }
}

/// Cross-attention (`CrossAttention` / `NormCrossAttention`): queries from the decoder,
/// keys and values from the encoder context.
#[derive(Module, Debug)]
pub struct CrossAttention<B: Backend> {
    /// `q`: `D -> D`.
    pub q: Linear<B>,
    /// `kv`: `D -> 2D`, features ordered `[k heads…, v heads…]`.
    pub kv: Linear<B>,
    /// `proj`: `D -> D`.
    pub proj: Linear<B>,
    /// `q_norm` / `k_norm` when `qk_norm`.
    pub qk_norm: Option<QkNorm<B>>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> CrossAttention<B> {
    /// Loads `<prefix>.{q,kv,proj,q_norm,k_norm}`.
    pub fn load(w: &mut impl Source, prefix: &str, cfg: &AionConfig, device: &B::Device) -> Self {
        let d = cfg.dim;
        let p = |name: &str| format!("{prefix}.{name}");
        Self {
            q: Linear::load(w, &p("q"), (d, d), cfg.qkv_bias, xavier(1), device),
            kv: Linear::load(w, &p("kv"), (d, 2 * d), cfg.qkv_bias, xavier(2), device),
            proj: Linear::load(w, &p("proj"), (d, d), cfg.proj_bias, xavier(1), device),
            qk_norm: cfg.qk_norm.then(|| QkNorm::load(w, prefix, cfg, device)),
            heads: cfg.num_heads,
        }
    }

    /// # Shapes
    /// x `[B, N, D]`, context `[B, M, D]`, bias `[B, 1, 1, M]` `-> [B, N, D]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Tensor<B, 3>,
        bias: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let h = self.heads;
        let q = split_heads(self.q.forward(x), h);
        let kv = split_heads(self.kv.forward(context), 2 * h);
        let k = kv.clone().narrow(1, 0, h);
        let v = kv.narrow(1, h, h);
        let (q, k) = QkNorm::apply(&self.qk_norm, q, k);
        self.proj.forward(merge_heads(attend(q, k, v, bias)))
    }
}
