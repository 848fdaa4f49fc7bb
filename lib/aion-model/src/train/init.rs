//! A model from scratch: random weights for an [`AionConfig`], under the Hub names.
//!
//! The model is built by [`Aion::from_weights`] from an [`Initialiser`]: the same description of
//! the weights that loads a released model draws the initial values (so its names are the
//! reference's by construction). Initialisation follows 4M's choices where they matter:
//! Xavier-uniform linear weights (packed `qkv` / `kv` as separate `D×D` blocks), zero biases,
//! unit LayerNorm scales, `N(0, 0.02²)` token tables, modality embeddings and mask token, and the
//! fixed sin-cos position tables of aion-spec §3.2. Each modality's tensors come from its own
//! random stream, the blocks from a common one.
//!
//! **Ordinal tables.** A scalar codec's tokens are ordered (token `k` stands for the `k`-th
//! quantile bin), but a freshly initialised embedding table knows nothing of that: each of the
//! ~1000 rows must be learned from the few objects that fall in its bin. With
//! [`InitOptions::ordinal_scalars`] the token table of a scalar modality starts as a sin-cos code
//! of the bin's rank, `[sin(π·u·f_j), cos(π·u·f_j)] / 2` with `u = k / V` and frequencies `f_j`
//! spaced geometrically from 1 to `V/4`, so that neighbouring bins start close together; training
//! then adjusts them. This matters when a new survey has few labelled objects.

use burn::tensor::backend::Backend;
use burn_ndarray::NdArray;

use crate::config::AionConfig;
use crate::error::Result;
use crate::export::NamedTensor;
use crate::fourm::Aion;
use crate::fourm::embeddings::ModalityEmbedding;
use crate::modality::ModalityInfo;
use crate::weights::{Initialiser, Source};

pub use crate::fourm::embeddings::{ordinal_table, sincos_1d, sincos_2d};
pub use crate::weights::EMBED_STD;

/// How to initialise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitOptions {
    /// Seed of every random draw.
    pub seed: u64,
    /// Ordinal sin-cos tables for scalar-codec modalities (see the module docs).
    pub ordinal_scalars: bool,
}

impl InitOptions {
    /// The initialiser these options describe.
    pub fn initialiser(self) -> Initialiser {
        Initialiser::new(self.seed).ordinal_scalars(self.ordinal_scalars)
    }
}

/// The tensors of one modality's embeddings (encoder when `input`, decoder when `output`),
/// named as [`ModalityEmbedding::load`] takes them, with the values it draws.
pub fn modality_tensors(
    m: &ModalityInfo,
    cfg: &AionConfig,
    roles: (bool, bool),
    opts: InitOptions,
) -> Vec<NamedTensor> {
    let mut init = opts.initialiser();
    ModalityEmbedding::<NdArray<f32>>::load(&mut init, m, cfg, roles, &Default::default());
    init.into_float_tensors()
}

/// The complete initial state dict of a model.
pub fn init_state_dict(cfg: &AionConfig, opts: InitOptions) -> Result<Vec<NamedTensor>> {
    let mut init = opts.initialiser();
    Aion::<NdArray<f32>>::from_weights(cfg.clone(), &mut init, &Default::default())?;
    Ok(init.into_float_tensors())
}

/// A randomly initialised model.
pub fn init_model<B: Backend>(
    cfg: &AionConfig,
    opts: InitOptions,
    device: &B::Device,
) -> Result<Aion<B>> {
    let mut init = opts.initialiser();
    let model = Aion::from_weights(cfg.clone(), &mut init, device)?;
    debug_assert!(!Source::has_problems(&init));
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
