//! Codecs of a fine-tuning run: quantile codecs fitted on new catalogue columns across ranks,
//! the redshift grid codec of a from-scratch model, and copying codecs into the output model.

use std::path::Path;

use aion_model::codecs::scalar::ScalarCodec;
use aion_model::codecs::scalar_fit::{self, BottomK, FitKind, FittedCodec};
use aion_model::modality::Modality;
use aion_mpi::Session;
use anyhow::{Context, Result};

/// Fits a quantile codec on the values this rank offers (`(global row, value)` pairs): each
/// rank keeps its bottom-`reservoir` sample, the samples are all-gathered and merged, and every
/// rank builds the same table (see `aion_model::codecs::scalar_fit`). The result does not
/// depend on the number of ranks or on which rank offered which rows.
pub fn fit_distributed(
    session: &Session,
    name: &str,
    kind: FitKind,
    codebook_size: usize,
    reservoir: usize,
    seed: u64,
    values: impl IntoIterator<Item = (u64, f32)>,
) -> Result<FittedCodec> {
    let mut sample = BottomK::new(reservoir, seed);
    for (row, x) in values {
        if let Some(v) = kind.reservoir_value(x) {
            sample.offer(row, v);
        }
    }
    let mut merged = BottomK::new(reservoir, seed);
    for part in session.all_gather_bytes(&sample.to_bytes()) {
        merged.merge(BottomK::parse(&part));
    }
    Ok(FittedCodec::from_sample(
        name,
        kind,
        &merged,
        codebook_size,
    )?)
}

/// Writes the `GridScalarCodec` of redshift (`codecs/Z/`: `quantizer.buckets` =
/// `linspace(0, 1, K)` in float32, as `GridScalarCodec("Z", K)` builds it).
pub fn write_grid_codec(dir: &Path, name: &str, k: usize) -> Result<()> {
    scalar_fit::write_grid_codec(dir, name, k)
        .with_context(|| format!("cannot write the {name} codec to {}", dir.display()))
}

/// Loads the codec of `m` from `model/codecs/<codec_dir>/`.
pub fn load(model: &Path, m: impl Into<Modality>) -> Result<ScalarCodec> {
    let m = m.into();
    let dir = aion_model::hub::layout::codec(model, &m.codec_dir);
    ScalarCodec::load(&m, &dir).with_context(|| {
        format!(
            "cannot load the {} codec from {}",
            m.token_key,
            dir.display()
        )
    })
}

/// Value of each token for point estimates: the centre of the token's bin. A scalar token `k`
/// stands for the interval `(v[k−1], v[k]]` of its codec's values (the codec decodes to the
/// upper edge `v[k]`); the centre is `(v[k−1] + v[k]) / 2`, and `v[0]` for token 0. Tokens
/// without a value (e.g. token 1024 of the 1025-token redshift vocabulary) are `None`.
pub fn bin_centres(codec: &ScalarCodec, vocab: usize) -> Vec<Option<f64>> {
    let edge = |k: usize| codec.decode_token(0, k as i64).map(f64::from);
    (0..vocab)
        .map(|k| {
            let hi = edge(k)?;
            Some(match k.checked_sub(1).and_then(edge) {
                Some(lo) => 0.5 * (lo + hi),
                None => hi,
            })
        })
        .collect()
}

/// The decoded value of each token that has one (tokens `0..K`; the redshift vocabulary's
/// token 1024 has none): the upper bin edges of [`crate::posterior::edges`].
pub fn token_values(codec: &ScalarCodec, vocab: usize) -> Vec<f32> {
    (0..vocab)
        .map_while(|k| codec.decode_token(0, k as i64))
        .collect()
}

/// Posterior mean and standard deviation of one row's token probabilities over `centres`.
pub fn posterior_moments(p: &[f32], centres: &[Option<f64>]) -> (f64, f64) {
    let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
    for (&pk, c) in p.iter().zip(centres) {
        if let Some(c) = c {
            let pk = f64::from(pk);
            s0 += pk;
            s1 += pk * c;
            s2 += pk * c * c;
        }
    }
    if s0 <= 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = s1 / s0;
    (mean, (s2 / s0 - mean * mean).max(0.0).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_of_a_two_bin_posterior() {
        let c = vec![Some(0.0), Some(1.0), None];
        let (m, s) = posterior_moments(&[0.5, 0.5, 0.3], &c);
        assert!((m - 0.5).abs() < 1e-12 && (s - 0.5).abs() < 1e-12);
    }
}
