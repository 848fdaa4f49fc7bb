//! Lookup-free quantization (LFQ, MagViT-v2) in its inference form.
//!
//! Port of `LucidrainsLFQ` / `LFQ` in `aion/codecs/quantizers/__init__.py` and
//! `aion/codecs/quantizers/lookup_free_quantization.py` (`polymathic-aion` 0.0.2, itself a copy
//! of lucidrains' `vector-quantize-pytorch`, MIT). Only the path the released spectrum codec
//! uses: one codebook, `dim == log2(codebook_size)` (no projections), codebook scale 1.
//!
//! Each channel of a latent vector is one bit (`z > 0`, strictly); the token is the sum of the
//! set bits' weights, the buffer `mask` = `[2^(d-1), …, 2, 1]`, so the **first channel is the most
//! significant bit**. Decoding maps each bit back to `±1`.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Error, Result};

/// LFQ with the bit weights read from the reference's `mask` buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lfq {
    /// Weight of each channel's bit, channel 0 first (`[512, 256, …, 1]` for 10 bits).
    weights: Vec<i64>,
}

impl Lfq {
    /// Builds the quantizer from the stored `mask` buffer; it must hold `dim` distinct powers of
    /// two covering `0..codebook_size` (the reference buffer is `2^(dim-1-i)`).
    pub fn new(weights: Vec<i64>, codebook_size: usize) -> std::result::Result<Self, String> {
        let mut sorted = weights.clone();
        sorted.sort_unstable();
        let want: Vec<i64> = (0..weights.len()).map(|i| 1i64 << i).collect();
        if sorted != want || 1usize << weights.len() != codebook_size {
            return Err(format!(
                "LFQ mask {weights:?} is not a permutation of the {} bit weights of a \
                 {codebook_size}-code book",
                weights.len()
            ));
        }
        Ok(Self { weights })
    }

    /// Number of channels (bits) per latent vector.
    pub fn dim(&self) -> usize {
        self.weights.len()
    }

    /// Number of distinct tokens.
    pub fn codebook_size(&self) -> usize {
        1 << self.weights.len()
    }

    /// Tokens of channels-first latents.
    ///
    /// # Shapes
    /// `z: [B, dim, N] -> [B, N]` (int)
    pub fn encode<B: Backend>(&self, z: Tensor<B, 3>) -> Tensor<B, 2, Int> {
        let device = z.device();
        let d = self.dim();
        let weights =
            Tensor::<B, 1, Int>::from_data(TensorData::new(self.weights.clone(), [d]), &device)
                .reshape([1, d, 1]);
        let bits = z.greater_elem(0.0).int();
        bits.mul(weights).sum_dim(1).squeeze_dim(1)
    }

    /// Code vectors (`±1` per channel) of tokens; fails on a token outside the codebook,
    /// naming its row and position.
    ///
    /// # Shapes
    /// `tokens: [B, N]` row-major -> `[B, dim, N]`
    pub fn decode<B: Backend>(
        &self,
        tokens: &[i64],
        batch: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>> {
        let d = self.dim();
        let n = tokens.len() / batch.max(1);
        let k = self.codebook_size() as i64;
        let mut codes = vec![0f32; batch * d * n];
        for (idx, &t) in tokens.iter().enumerate() {
            if !(0..k).contains(&t) {
                return Err(Error::Input(format!(
                    "LFQ token {t} at row {}, latent position {} is outside the codebook 0..{k}",
                    idx / n,
                    idx % n
                )));
            }
            let (b, pos) = (idx / n, idx % n);
            for (c, &w) in self.weights.iter().enumerate() {
                codes[(b * d + c) * n + pos] = if t & w != 0 { 1.0 } else { -1.0 };
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(codes, [batch, d, n]),
            device,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    fn msb_first(d: usize) -> Vec<i64> {
        (0..d).rev().map(|i| 1i64 << i).collect()
    }

    #[test]
    fn first_channel_is_most_significant_and_zero_is_a_zero_bit() {
        let dev = Default::default();
        let q = Lfq::new(msb_first(3), 8).unwrap();
        // positions: (+,-,-) -> 4, (0,+,+) -> 3 (0 is not > 0), (+,+,+) -> 7
        let z = Tensor::<B, 3>::from_data(
            TensorData::new(
                vec![1.0f32, 0.0, 2.0, -1.0, 0.5, 1e-30, -3.0, 1.0, 4.0],
                [1, 3, 3],
            ),
            &dev,
        );
        let t: Vec<i64> = q.encode(z).into_data().convert::<i64>().to_vec().unwrap();
        assert_eq!(t, vec![4, 3, 7]);
        let codes: Vec<f32> = q
            .decode::<B>(&t, 1, &dev)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(codes, vec![1., -1., 1., -1., 1., 1., -1., 1., 1.]);
    }

    #[test]
    fn rejects_bad_masks_and_tokens() {
        assert!(Lfq::new(vec![4, 2, 2], 8).is_err());
        assert!(Lfq::new(msb_first(3), 16).is_err());
        let q = Lfq::new(msb_first(3), 8).unwrap();
        let err = q.decode::<B>(&[1, 8], 1, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("latent position 1"), "{err}");
    }
}
