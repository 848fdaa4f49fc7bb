//! A model from scratch: random weights for an [`AionConfig`], under the Hub names.
//!
//! The initial state dict is generated here and loaded through [`Aion::from_weights`], so a
//! from-scratch model goes through the same strict loader as a released one (and its names are
//! the reference's by construction). Initialisation follows 4M's choices where they matter:
//! Xavier-uniform linear weights (packed `qkv` / `kv` as separate `D×D` blocks), zero biases,
//! unit LayerNorm scales, `N(0, 0.02²)` token tables, modality embeddings and mask token, and the
//! fixed sin-cos position tables of aion-spec §3.2.
//!
//! **Ordinal tables.** A scalar codec's tokens are ordered (token `k` stands for the `k`-th
//! quantile bin), but a freshly initialised embedding table knows nothing of that: each of the
//! ~1000 rows must be learned from the few objects that fall in its bin. With
//! [`InitOptions::ordinal_scalars`] the token table of a scalar modality starts as a sin-cos code
//! of the bin's rank, `[sin(π·u·f_j), cos(π·u·f_j)] / 2` with `u = k / V` and frequencies `f_j`
//! spaced geometrically from 1 to `V/4`, so that neighbouring bins start close together; training
//! then adjusts them. This matters when a new survey has few labelled objects.

use burn::tensor::backend::Backend;

use crate::config::AionConfig;
use crate::error::Result;
use crate::export::{NamedTensor, safetensors_bytes};
use crate::fourm::Aion;
use crate::fourm::embeddings::SEQUENCE_POSITIONS;
use crate::modality::{CodecKind, ModalityInfo, TokenLayout};
use crate::rng::{Rng, tags};
use crate::weights::WeightFile;

/// Standard deviation of token tables, modality embeddings and the mask token.
pub const EMBED_STD: f64 = 0.02;

/// How to initialise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitOptions {
    /// Seed of every random draw.
    pub seed: u64,
    /// Ordinal sin-cos tables for scalar-codec modalities (see the module docs).
    pub ordinal_scalars: bool,
}

/// 2-D sin-cos table of an `h × w` token grid (4M's `build_2d_sincos_posemb`): for flat index
/// `n`, `a = n div h`, `b = n mod h`, `P = D/4`, `ω_k = 10000^(−k/P)`:
/// `[sin(aω), cos(aω), sin(bω), cos(bω)]`. Row-major `[h·w, D]`.
pub fn sincos_2d(h: usize, w: usize, d: usize) -> Vec<f32> {
    let p = d / 4;
    let omega: Vec<f32> = (0..p)
        .map(|k| 1.0 / 10000f32.powf(k as f32 / p as f32))
        .collect();
    let mut out = Vec::with_capacity(h * w * d);
    for n in 0..h * w {
        let (a, b) = ((n / h) as f32, (n % h) as f32);
        out.extend(omega.iter().map(|o| (a * o).sin()));
        out.extend(omega.iter().map(|o| (a * o).cos()));
        out.extend(omega.iter().map(|o| (b * o).sin()));
        out.extend(omega.iter().map(|o| (b * o).cos()));
    }
    out
}

/// 1-D sin-cos table of `n` positions (`P = D/2`): `[sin(iω), cos(iω)]`. Row-major `[n, D]`.
pub fn sincos_1d(n: usize, d: usize) -> Vec<f32> {
    let p = d / 2;
    let omega: Vec<f32> = (0..p)
        .map(|k| 1.0 / 10000f32.powf(k as f32 / p as f32))
        .collect();
    let mut out = Vec::with_capacity(n * d);
    for i in 0..n {
        let x = i as f32;
        out.extend(omega.iter().map(|o| (x * o).sin()));
        out.extend(omega.iter().map(|o| (x * o).cos()));
    }
    out
}

/// The ordinal token table of a `vocab`-token scalar modality (see the module docs).
pub fn ordinal_table(vocab: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let top = (vocab as f64 / 4.0).max(1.0).ln();
    let freqs: Vec<f64> = (0..half)
        .map(|j| {
            let t = if half > 1 {
                j as f64 / (half - 1) as f64
            } else {
                0.0
            };
            std::f64::consts::PI * (t * top).exp()
        })
        .collect();
    let mut out = Vec::with_capacity(vocab * d);
    for k in 0..vocab {
        let u = k as f64 / vocab as f64;
        out.extend(freqs.iter().map(|f| (0.5 * (u * f).sin()) as f32));
        out.extend(freqs.iter().map(|f| (0.5 * (u * f).cos()) as f32));
        out.extend(std::iter::repeat_n(0.0, d - 2 * half));
    }
    out
}

fn normal(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * std) as f32).collect()
}

/// Xavier-uniform `[out, in]` weight, drawn as `packed` stacked `[out/packed, in]` blocks.
fn xavier(rng: &mut Rng, d_out: usize, d_in: usize, packed: usize) -> Vec<f32> {
    let bound = (6.0 / (d_in + d_out / packed) as f64).sqrt();
    (0..d_out * d_in)
        .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
        .collect()
}

struct Builder<'a> {
    cfg: &'a AionConfig,
    rng: Rng,
    out: Vec<NamedTensor>,
}

impl Builder<'_> {
    fn push(&mut self, name: String, shape: Vec<usize>, data: Vec<f32>) {
        self.out.push(NamedTensor::new(name, shape, data));
    }

    fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize, bias: bool, packed: usize) {
        let w = xavier(&mut self.rng, d_out, d_in, packed);
        self.push(format!("{prefix}.weight"), vec![d_out, d_in], w);
        if bias {
            self.push(format!("{prefix}.bias"), vec![d_out], vec![0.0; d_out]);
        }
    }

    fn norm(&mut self, prefix: &str, d: usize) {
        self.push(format!("{prefix}.weight"), vec![d], vec![1.0; d]);
        self.push(format!("{prefix}.bias"), vec![d], vec![0.0; d]);
    }

    fn attn(&mut self, prefix: &str, cross: bool) {
        let (d, c) = (self.cfg.dim, self.cfg);
        if cross {
            self.linear(&format!("{prefix}.q"), d, d, c.qkv_bias, 1);
            self.linear(&format!("{prefix}.kv"), d, 2 * d, c.qkv_bias, 2);
        } else {
            self.linear(&format!("{prefix}.qkv"), d, 3 * d, c.qkv_bias, 3);
        }
        self.linear(&format!("{prefix}.proj"), d, d, c.proj_bias, 1);
        if c.qk_norm {
            self.norm(&format!("{prefix}.q_norm"), c.head_dim());
            self.norm(&format!("{prefix}.k_norm"), c.head_dim());
        }
    }

    fn mlp(&mut self, prefix: &str) {
        let (d, f, b) = (self.cfg.dim, self.cfg.mlp_hidden(), self.cfg.mlp_bias);
        self.linear(&format!("{prefix}.fc1"), d, f, b, 1);
        self.linear(&format!("{prefix}.fc2"), f, d, b, 1);
        if self.cfg.gated_mlp {
            self.linear(&format!("{prefix}.fc3"), d, f, b, 1);
        }
    }
}

/// The tensors of one modality's embeddings (encoder when `input`, decoder when `output`),
/// named as [`crate::fourm::embeddings::ModalityEmbedding::load`] takes them.
pub fn modality_tensors(
    m: &ModalityInfo,
    cfg: &AionConfig,
    (input, output): (bool, bool),
    opts: InitOptions,
) -> Vec<NamedTensor> {
    let (d, v, key) = (cfg.dim, m.vocab, m.token_key);
    // One stream per modality: adding a modality never changes the others' values.
    let mut rng = Rng::new(opts.seed, tags::INIT, crate::rng::mix64(u64::from(m.id())));
    let (rows, pos) = match m.layout {
        TokenLayout::Grid { h, w } => (h * w, sincos_2d(h, w, d)),
        TokenLayout::Sequence { .. } => (SEQUENCE_POSITIONS, sincos_1d(SEQUENCE_POSITIONS, d)),
    };
    let ordinal = opts.ordinal_scalars
        && matches!(
            m.codec,
            CodecKind::Scalar | CodecKind::LogScalar | CodecKind::GridScalar
        );
    let (ep, dp) = (
        format!("encoder_embeddings.{key}"),
        format!("decoder_embeddings.{key}"),
    );
    let mut out = Vec::new();
    let mut push =
        |name: String, shape: Vec<usize>, data| out.push(NamedTensor::new(name, shape, data));
    let shared = input && output && cfg.share_modality_embeddings;
    if input && !shared {
        push(
            format!("{ep}.mod_emb"),
            vec![1, 1, d],
            normal(&mut rng, d, EMBED_STD),
        );
    }
    if output {
        push(
            format!("{dp}.mod_emb"),
            vec![1, 1, d],
            normal(&mut rng, d, EMBED_STD),
        );
    }
    if input {
        let table = if ordinal {
            ordinal_table(v, d)
        } else {
            normal(&mut rng, v * d, EMBED_STD)
        };
        push(format!("{ep}.token_emb.weight"), vec![v, d], table);
        push(format!("{ep}.pos_emb"), vec![1, rows, d], pos.clone());
    }
    if output {
        push(format!("{dp}.pos_emb"), vec![1, rows, d], pos);
        push(
            format!("{dp}.token_emb.weight"),
            vec![v, d],
            normal(&mut rng, v * d, EMBED_STD),
        );
        push(
            format!("{dp}.to_logits.weight"),
            vec![v, d],
            xavier(&mut rng, v, d, 1),
        );
    }
    out
}

/// The complete initial state dict of a model.
pub fn init_state_dict(cfg: &AionConfig, opts: InitOptions) -> Result<Vec<NamedTensor>> {
    cfg.validate()?;
    let (ins, outs) = (cfg.inputs(), cfg.outputs());
    let mut all = ins.clone();
    all.extend(outs.iter().filter(|m| !ins.contains(m)));
    let mut b = Builder {
        cfg,
        rng: Rng::new(opts.seed, tags::INIT, 0),
        out: Vec::new(),
    };
    for m in all {
        let roles = (ins.contains(&m), outs.contains(&m));
        b.out.extend(modality_tensors(m, cfg, roles, opts));
    }
    let d = cfg.dim;
    for i in 0..cfg.encoder_depth {
        let p = format!("encoder.{i}");
        b.norm(&format!("{p}.norm1"), d);
        b.attn(&format!("{p}.attn"), false);
        b.norm(&format!("{p}.norm2"), d);
        b.mlp(&format!("{p}.mlp"));
    }
    b.norm("encoder_norm", d);
    b.linear("decoder_proj_context", d, d, true, 1);
    for i in 0..cfg.decoder_depth {
        let p = format!("decoder.{i}");
        b.norm(&format!("{p}.norm1"), d);
        b.attn(&format!("{p}.self_attn"), false);
        b.norm(&format!("{p}.query_norm"), d);
        b.norm(&format!("{p}.context_norm"), d);
        b.attn(&format!("{p}.cross_attn"), true);
        b.norm(&format!("{p}.norm2"), d);
        b.mlp(&format!("{p}.mlp"));
    }
    b.norm("decoder_norm", d);
    let mask = normal(&mut b.rng, d, EMBED_STD);
    b.push("mask_token".into(), vec![1, 1, d], mask);
    Ok(b.out)
}

/// A randomly initialised model (through the strict loader).
pub fn init_model<B: Backend>(
    cfg: &AionConfig,
    opts: InitOptions,
    device: &B::Device,
) -> Result<Aion<B>> {
    let tensors = init_state_dict(cfg, opts)?;
    let mut w = WeightFile::from_bytes("<initial weights>", safetensors_bytes(&tensors, None))?;
    let model = Aion::from_weights(cfg.clone(), &mut w, device)?;
    w.finish()?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sincos_tables_have_the_reference_layout() {
        // Scalars: one position, a = b = 0 → [0…, 1…, 0…, 1…].
        let t = sincos_2d(1, 1, 8);
        assert_eq!(t, vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        // A (3, 1) grid: a = 0, b = n.
        let t = sincos_2d(3, 1, 4);
        assert_eq!(t[8], 0.0); // sin(0)
        assert!((t[8 + 2] - 2f32.sin()).abs() < 1e-7);
        let s = sincos_1d(2, 4);
        assert!((s[4] - 1f32.sin()).abs() < 1e-7 && (s[6] - 1f32.cos()).abs() < 1e-7);
    }

    #[test]
    fn ordinal_neighbours_are_close() {
        let (v, d) = (256, 32);
        let t = ordinal_table(v, d);
        let dist = |a: usize, b: usize| -> f32 {
            (0..d)
                .map(|j| (t[a * d + j] - t[b * d + j]).powi(2))
                .sum::<f32>()
                .sqrt()
        };
        assert!(dist(100, 101) < dist(100, 140));
        assert!(dist(10, 11) < dist(10, 200));
    }
}
