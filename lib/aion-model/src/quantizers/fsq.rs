//! Finite scalar quantization (FSQ; Mentzer et al., arXiv:2309.15505).
//!
//! Port of `aion/codecs/quantizers/__init__.py::FiniteScalarQuantizer` (`polymathic-aion`
//! 0.0.2). Each of the `D` latent channels is squashed into `L_d` levels and the per-channel
//! digits form one mixed-radix token. All float arithmetic follows the reference in `f32`,
//! including its per-level constants (`half_l`, `offset`, `shift`), and rounding is
//! half-to-even (`torch.round`).
//!
//! The reference forms the token in float (`(q/h)·h + h`, times the basis, summed, truncated to
//! int32); here the digits are combined in integer arithmetic. Both agree exactly whenever
//! `(q/h)·h == q` in `f32`, which holds for every half-width `h ≤ 12` (levels up to 25; the
//! codecs use 5, 7 and 8).

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::weights::{Init, IntType, Source};

/// An FSQ quantizer with fixed levels (`eps = 1e-3` as in the reference).
#[derive(Debug, Clone, PartialEq)]
pub struct Fsq {
    levels: Vec<u32>,
    eps: f32,
}

/// Per-channel constants, in the reference's `f32` arithmetic.
struct Consts {
    half_l: Vec<f32>,
    offset: Vec<f32>,
    shift: Vec<f32>,
    half_width: Vec<f32>,
}

impl Fsq {
    /// Default `eps` of the reference.
    pub const EPS: f32 = 1e-3;

    /// An FSQ over `levels` (each at least 2; the codebook must fit in `i32`, like the
    /// reference's int32 tokens).
    pub fn new(levels: &[u32]) -> Result<Self> {
        if levels.is_empty() || levels.iter().any(|&l| l < 2) {
            return Err(Error::Input(format!(
                "FSQ levels must be a non-empty list of values >= 2, got {levels:?}"
            )));
        }
        let size = levels
            .iter()
            .try_fold(1u64, |acc, &l| acc.checked_mul(u64::from(l)));
        if size.is_none_or(|s| s > i32::MAX as u64) {
            return Err(Error::Input(format!(
                "FSQ levels {levels:?}: codebook larger than i32"
            )));
        }
        Ok(Self {
            levels: levels.to_vec(),
            eps: Self::EPS,
        })
    }

    /// Levels per channel.
    pub fn levels(&self) -> &[u32] {
        &self.levels
    }

    /// Number of latent channels `D`.
    pub fn dim(&self) -> usize {
        self.levels.len()
    }

    /// Number of distinct tokens, `Π L_d`.
    pub fn codebook_size(&self) -> usize {
        self.levels.iter().map(|&l| l as usize).product()
    }

    /// Mixed-radix basis `[1, L_0, L_0·L_1, …]` (not stored in the weights; recomputed).
    pub fn basis(&self) -> Vec<i64> {
        let mut b = Vec::with_capacity(self.levels.len());
        let mut acc = 1i64;
        for &l in &self.levels {
            b.push(acc);
            acc *= i64::from(l);
        }
        b
    }

    /// An FSQ over `levels`, checked against the `<prefix>.levels` buffer (int32) of a weight
    /// source. A prefix starting with `_` may also be stored without it (the Hub's scalar codecs
    /// write `quantizer.` for the module's `_quantizer.`).
    pub fn load(w: &mut impl Source, prefix: &str, levels: &[u32]) -> Result<Self> {
        let fsq = Self::new(levels)?;
        if let Some(bare) = prefix.strip_prefix('_') {
            w.stored_prefix(&format!("{prefix}."), &format!("{bare}."), false);
        }
        let own: Vec<i64> = levels.iter().map(|&l| i64::from(l)).collect();
        let name = format!("{prefix}.levels");
        let stored = w.ints(&name, &[fsq.dim()], IntType::I32, &Init::Ints(own));
        if !w.has_problems() {
            fsq.check_levels_buffer(&stored)
                .map_err(|e| Error::config(w.label(), e.to_string()))?;
        }
        Ok(fsq)
    }

    /// Checks a stored `levels` buffer (int32 in the weight files) against these levels.
    pub fn check_levels_buffer(&self, stored: &[i64]) -> Result<()> {
        let ours: Vec<i64> = self.levels.iter().map(|&l| i64::from(l)).collect();
        if ours == stored {
            Ok(())
        } else {
            Err(Error::Input(format!(
                "FSQ levels buffer {stored:?} differs from the configured levels {ours:?}"
            )))
        }
    }

    fn consts(&self) -> Consts {
        let mut c = Consts {
            half_l: vec![],
            offset: vec![],
            shift: vec![],
            half_width: vec![],
        };
        for &l in &self.levels {
            // (L - 1) * (1 + eps) / 2, each step rounded to f32 as torch does.
            let half_l = (l - 1) as f32 * (1.0 + self.eps) / 2.0;
            let offset = if l % 2 == 1 { 0.0f32 } else { 0.5 };
            let shift = (f64::from(offset / half_l)).atanh() as f32;
            c.half_l.push(half_l);
            c.offset.push(offset);
            c.shift.push(shift);
            c.half_width.push((l / 2) as f32);
        }
        c
    }

    fn column<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 3> {
        let d = values.len();
        Tensor::from_data(TensorData::new(values, [1, d, 1]), device)
    }

    fn int_column<B: Backend>(values: Vec<i64>, device: &B::Device) -> Tensor<B, 3, Int> {
        let d = values.len();
        Tensor::from_data(TensorData::new(values, [1, d, 1]), device)
    }

    /// The rounded levels `round(tanh(z + shift)·half_l − offset)`, in `[-⌊L/2⌋, ⌊L/2⌋]`
    /// (`[-L/2, L/2 − 1]` for even `L`).
    ///
    /// # Shapes
    /// `z [B, D, N] -> [B, D, N]`
    fn rounded<B: Backend>(&self, z: Tensor<B, 3>) -> Tensor<B, 3> {
        let dev = z.device();
        let c = self.consts();
        let bounded = (z + Self::column::<B>(c.shift, &dev)).tanh()
            * Self::column::<B>(c.half_l, &dev)
            - Self::column::<B>(c.offset, &dev);
        bounded.round()
    }

    /// Quantized latents normalised to `[-1, 1]` (the reference's `quantize`).
    ///
    /// # Shapes
    /// `z [B, D, N] -> [B, D, N]`
    pub fn quantize<B: Backend>(&self, z: Tensor<B, 3>) -> Tensor<B, 3> {
        let dev = z.device();
        let hw = Self::column::<B>(self.consts().half_width, &dev);
        self.rounded(z) / hw
    }

    /// Tokens of latents `z` (channel axis 1).
    ///
    /// # Shapes
    /// `z [B, D, N] -> [B, N]` (values in `0..codebook_size`)
    pub fn encode<B: Backend>(&self, z: Tensor<B, 3>) -> Tensor<B, 2, Int> {
        let dev = z.device();
        let [b, d, n] = z.dims();
        assert_eq!(d, self.dim(), "FSQ expects {} channels", self.dim());
        let hw: Vec<i64> = self.levels.iter().map(|&l| i64::from(l / 2)).collect();
        let shape = [b, d, n];
        let digits = self.rounded(z).int() + Self::int_column::<B>(hw, &dev).expand(shape);
        (digits * Self::int_column::<B>(self.basis(), &dev).expand(shape))
            .sum_dim(1)
            .reshape([b, n])
    }

    /// Latents of tokens, normalised to `[-1, 1]`. Tokens must lie in `0..codebook_size`
    /// (see [`check_tokens`](Self::check_tokens)).
    ///
    /// # Shapes
    /// `tokens [B, N] -> [B, D, N]`
    pub fn decode<B: Backend>(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let dev = tokens.device();
        let [b, n] = tokens.dims();
        let shape = [b, self.dim(), n];
        let levels: Vec<i64> = self.levels.iter().map(|&l| i64::from(l)).collect();
        // Broadcasting is spelled out: not every backend broadcasts integer `remainder`.
        let digits = tokens
            .unsqueeze_dim::<3>(1)
            .expand(shape)
            .div(Self::int_column::<B>(self.basis(), &dev).expand(shape))
            .remainder(Self::int_column::<B>(levels, &dev).expand(shape));
        let hw = Self::column::<B>(self.consts().half_width, &dev);
        (digits.float() - hw.clone()) / hw
    }

    /// Fails unless every token lies in `0..codebook_size`.
    pub fn check_tokens<B: Backend>(&self, tokens: &Tensor<B, 2, Int>) -> Result<()> {
        if tokens.dims().iter().product::<usize>() == 0 {
            return Ok(());
        }
        let min: i64 = tokens.clone().min().into_scalar().elem();
        let max: i64 = tokens.clone().max().into_scalar().elem();
        let size = self.codebook_size() as i64;
        if min < 0 || max >= size {
            return Err(Error::Input(format!(
                "tokens must lie in 0..{size}, found values in {min}..={max}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn constants_match_torch_bits() {
        // Bit patterns printed by torch 2.9 for FiniteScalarQuantizer([8,5,5,5]) / ([7,...]).
        let c = Fsq::new(&[7, 5, 8]).unwrap().consts();
        assert_eq!(c.half_l[0].to_bits(), 0x4040_3128);
        assert_eq!(c.half_l[1].to_bits(), 0x4000_20c5);
        assert_eq!(c.half_l[2].to_bits(), 0x4060_3959);
        assert_eq!(c.shift[2].to_bits(), 0x3e13_24e0);
        assert_eq!(c.shift[0], 0.0);
    }

    #[test]
    fn basis_and_size() {
        let f = Fsq::new(&[7, 5, 5, 5, 5]).unwrap();
        assert_eq!(f.basis(), vec![1, 7, 35, 175, 875]);
        assert_eq!(f.codebook_size(), 4375);
        assert_eq!(
            Fsq::new(&[8, 5, 5, 5]).unwrap().basis(),
            vec![1, 8, 40, 200]
        );
        assert!(Fsq::new(&[]).is_err());
        assert!(Fsq::new(&[1, 5]).is_err());
    }

    #[test]
    fn every_token_round_trips() {
        let dev = Default::default();
        for levels in [[7u32, 5, 5, 5, 5].as_slice(), &[8, 5, 5, 5]] {
            let f = Fsq::new(levels).unwrap();
            let (n, d) = (f.codebook_size(), f.dim());
            let tokens: Vec<i64> = (0..n as i64).collect();
            let t = Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.clone(), [1, n]), &dev);
            f.check_tokens(&t).unwrap();
            let zhat: Vec<f32> = f.decode(t).into_data().to_vec().unwrap();
            assert!(zhat.iter().all(|v| (-1.0..=1.0).contains(v)));
            // Invert the bound: the latent whose bounded value is exactly the decoded level.
            let c = f.consts();
            let z: Vec<f32> = zhat
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = i / n;
                    let q = f64::from(v * c.half_width[ch]);
                    let arg = (q + f64::from(c.offset[ch])) / f64::from(c.half_l[ch]);
                    (arg.atanh() - f64::from(c.shift[ch])) as f32
                })
                .collect();
            let z = Tensor::<B, 3>::from_data(TensorData::new(z, [1, d, n]), &dev);
            let again: Vec<i64> = f.encode(z).into_data().to_vec().unwrap();
            assert_eq!(again, tokens, "levels {levels:?}");
        }
    }

    #[test]
    fn rounding_is_half_to_even_and_quantize_is_normalised() {
        let dev = Default::default();
        let f = Fsq::new(&[7]).unwrap();
        // Pick z so that tanh(z)·3.003 hits ±0.5, ±1.5, ±2.5 (up to f32 rounding of atanh).
        let half_l = 3.003f64;
        let zs: Vec<f32> = [0.2f64, 1.2, 2.7, -0.2, -2.7]
            .iter()
            .map(|&b| (b / half_l).atanh() as f32)
            .collect();
        let t = Tensor::<B, 3>::from_data(TensorData::new(zs, [1, 1, 5]), &dev);
        let q: Vec<f32> = f.quantize(t.clone()).into_data().to_vec().unwrap();
        assert_eq!(q, vec![0.0, 1.0 / 3.0, 1.0, 0.0, -1.0]);
        let tok: Vec<i64> = f.encode(t).into_data().to_vec().unwrap();
        assert_eq!(tok, vec![3, 4, 6, 3, 0]);
        let exact_half = Tensor::<B, 1>::from_data([0.5f32, 1.5, 2.5, -0.5, -1.5], &dev);
        let r: Vec<f32> = exact_half.round().into_data().to_vec().unwrap();
        assert_eq!(r, vec![0.0, 2.0, 2.0, -0.0, -2.0]);
    }

    #[test]
    fn out_of_range_tokens_are_rejected() {
        let dev = Default::default();
        let f = Fsq::new(&[8, 5, 5, 5]).unwrap();
        let t = Tensor::<B, 2, Int>::from_data([[0i64, 1000]], &dev);
        assert!(f.check_tokens(&t).is_err());
        let t = Tensor::<B, 2, Int>::from_data([[-1i64, 3]], &dev);
        assert!(f.check_tokens(&t).is_err());
    }
}
