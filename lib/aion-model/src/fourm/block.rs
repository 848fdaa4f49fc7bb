//! Transformer blocks: pre-norm encoder block and decoder block (self-, cross-attention, MLP).
//!
//! Port of `aion/fourm/fm_utils.py::{LayerNorm, Mlp, GatedMlp, Block, DecoderBlock}`
//! (polymathic-aion 0.0.2). Dropout and drop-path are identities at inference and absent here.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;

use super::attention::{CrossAttention, SelfAttention};
use super::layers::{norm, xavier};
use crate::config::{Activation, AionConfig};
use crate::nn::{LayerNorm, Linear};
use crate::weights::Source;

/// Feed-forward layer: `fc2(act(fc1 x))`, or gated `fc2(act(fc1 x) ⊙ fc3 x)` (SwiGLU).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `fc1`: `D -> F`.
    pub fc1: Linear<B>,
    /// `fc2`: `F -> D`.
    pub fc2: Linear<B>,
    /// `fc3`: `D -> F`, the gate (gated MLPs only).
    pub fc3: Option<Linear<B>>,
    /// Activation.
    pub act: Activation,
}

impl<B: Backend> Mlp<B> {
    /// Loads `<prefix>.{fc1,fc2,fc3}`.
    pub fn load(w: &mut impl Source, prefix: &str, cfg: &AionConfig, device: &B::Device) -> Self {
        let (d, f, bias) = (cfg.dim, cfg.mlp_hidden(), cfg.mlp_bias);
        let mut linear = |name: &str, dims| {
            let p = format!("{prefix}.{name}");
            Linear::load(w, &p, dims, bias, xavier(1), device)
        };
        Self {
            fc1: linear("fc1", (d, f)),
            fc2: linear("fc2", (f, d)),
            fc3: cfg.gated_mlp.then(|| linear("fc3", (d, f))),
            act: cfg.act_layer,
        }
    }

    /// # Shapes
    /// `[B, N, D] -> [B, N, D]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.fc1.forward(x.clone());
        let h = match self.act {
            Activation::SiLU => crate::nn::native::silu(h),
            Activation::GELU => gelu(h),
        };
        let h = match &self.fc3 {
            Some(fc3) => h.mul(fc3.forward(x)),
            None => h,
        };
        self.fc2.forward(h)
    }
}

/// Encoder block (`Block`): `x + attn(norm1 x)`, then `x + mlp(norm2 x)`.
#[derive(Module, Debug)]
pub struct EncoderBlock<B: Backend> {
    /// `norm1`.
    pub norm1: LayerNorm<B>,
    /// `attn`.
    pub attn: SelfAttention<B>,
    /// `norm2`.
    pub norm2: LayerNorm<B>,
    /// `mlp`.
    pub mlp: Mlp<B>,
}

impl<B: Backend> EncoderBlock<B> {
    /// Loads `<prefix>.{norm1,attn,norm2,mlp}` (prefix `encoder.<i>`).
    pub fn load(w: &mut impl Source, prefix: &str, cfg: &AionConfig, device: &B::Device) -> Self {
        let d = cfg.dim;
        Self {
            norm1: norm(w, &format!("{prefix}.norm1"), d, cfg, device),
            attn: SelfAttention::load(w, &format!("{prefix}.attn"), cfg, device),
            norm2: norm(w, &format!("{prefix}.norm2"), d, cfg, device),
            mlp: Mlp::load(w, &format!("{prefix}.mlp"), cfg, device),
        }
    }

    /// # Shapes
    /// x `[B, N, D]`, key bias `[B, 1, 1, N]` (None: no padding) `-> [B, N, D]`
    pub fn forward(&self, x: Tensor<B, 3>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x), bias);
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// Decoder block (`DecoderBlock`): self-attention, cross-attention to the context, MLP.
#[derive(Module, Debug)]
pub struct DecoderBlock<B: Backend> {
    /// `norm1`.
    pub norm1: LayerNorm<B>,
    /// `self_attn`.
    pub self_attn: SelfAttention<B>,
    /// `query_norm` (before the cross-attention, on the decoder stream).
    pub query_norm: LayerNorm<B>,
    /// `context_norm` (before the cross-attention, on the context).
    pub context_norm: LayerNorm<B>,
    /// `cross_attn`.
    pub cross_attn: CrossAttention<B>,
    /// `norm2`.
    pub norm2: LayerNorm<B>,
    /// `mlp`.
    pub mlp: Mlp<B>,
}

impl<B: Backend> DecoderBlock<B> {
    /// Loads `<prefix>.{norm1,self_attn,query_norm,context_norm,cross_attn,norm2,mlp}`.
    pub fn load(w: &mut impl Source, prefix: &str, cfg: &AionConfig, device: &B::Device) -> Self {
        let d = cfg.dim;
        Self {
            norm1: norm(w, &format!("{prefix}.norm1"), d, cfg, device),
            self_attn: SelfAttention::load(w, &format!("{prefix}.self_attn"), cfg, device),
            query_norm: norm(w, &format!("{prefix}.query_norm"), d, cfg, device),
            context_norm: norm(w, &format!("{prefix}.context_norm"), d, cfg, device),
            cross_attn: CrossAttention::load(w, &format!("{prefix}.cross_attn"), cfg, device),
            norm2: norm(w, &format!("{prefix}.norm2"), d, cfg, device),
            mlp: Mlp::load(w, &format!("{prefix}.mlp"), cfg, device),
        }
    }

    /// One block with AION's all-masked decoder self-attention: each query receives the mean of
    /// the values of its group (see [`SelfAttention::forward_uniform`]).
    ///
    /// # Shapes
    /// y `[B, M, D]`, context `[B, K, D]`, context key bias `[B, 1, 1, K]` `-> [B, M, D]`
    pub fn forward(
        &self,
        y: Tensor<B, 3>,
        context: Tensor<B, 3>,
        bias: Option<Tensor<B, 4>>,
        groups: &[(usize, usize)],
    ) -> Tensor<B, 3> {
        let y = y.clone()
            + self
                .self_attn
                .forward_uniform(self.norm1.forward(y), groups);
        let context = self.context_norm.forward(context);
        let y = y.clone()
            + self
                .cross_attn
                .forward(self.query_norm.forward(y), context, bias);
        y.clone() + self.mlp.forward(self.norm2.forward(y))
    }
}
