//! A GEMM formulation of 2-D convolution, for backends whose direct convolution is slow.

use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;
use burn::tensor::{Tensor, s};

/// How a [`Conv2d`](super::Conv2d) is evaluated.
///
/// Both give the same result up to float summation order. [`Native`](Self::Native) calls the
/// backend's `conv2d` (cuDNN / oneDNN on LibTorch). [`ShiftedMatmul`](Self::ShiftedMatmul)
/// writes the convolution as one matrix product per kernel tap (`W[:, :, i, j] · shift_ij(x)`,
/// summed over taps), which runs on the backend's GEMM: on the NdArray backend this is several
/// times faster than its direct convolution for wide kernels (a 7×7 512→512 conv: ~10×).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv2dAlgo {
    /// The backend's own convolution.
    Native,
    /// Sum over kernel taps of batched matrix products.
    ShiftedMatmul,
}

impl Conv2dAlgo {
    /// The faster choice for a backend: [`ShiftedMatmul`](Self::ShiftedMatmul) on NdArray
    /// (whose direct convolution has no GEMM path), [`Native`](Self::Native) elsewhere.
    pub fn for_backend<B: Backend>(device: &B::Device) -> Self {
        if B::name(device).contains("ndarray") {
            Self::ShiftedMatmul
        } else {
            Self::Native
        }
    }
}

/// A 2-D convolution (groups 1, dilation 1) computed as a sum over kernel taps of batched
/// matrix products; see [`Conv2dAlgo::ShiftedMatmul`].
///
/// # Shapes
/// `x [B, c_in, H, W]`, `weight [c_out, c_in, kh, kw]`, `bias [c_out]`
/// `-> [B, c_out, (H + 2p - kh)/s + 1, (W + 2p - kw)/s + 1]`
pub fn conv2d_shifted_matmul<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: usize,
    padding: usize,
) -> Tensor<B, 4> {
    // f32 NdArray: the same sum over taps, as strided GEMMs over a zero-padded copy.
    let x = match crate::nn::native::conv2d(x, &weight, bias.as_ref(), stride, padding) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let [n, c_in, h, w] = x.dims();
    let [c_out, _, kh, kw] = weight.dims();
    let h_out = (h + 2 * padding - kh) / stride + 1;
    let w_out = (w + 2 * padding - kw) / stride + 1;
    let x = if padding > 0 {
        x.pad((padding, padding, padding, padding), PadMode::Constant(0.0))
    } else {
        x
    };
    // [kh·kw, c_out, c_in]: one matrix per tap.
    let taps = weight.permute([2, 3, 0, 1]).reshape([kh * kw, c_out, c_in]);
    let step = stride as isize;
    let mut acc: Option<Tensor<B, 3>> = None;
    for i in 0..kh {
        for j in 0..kw {
            let rows = i..i + (h_out - 1) * stride + 1;
            let cols = j..j + (w_out - 1) * stride + 1;
            let shifted =
                x.clone()
                    .slice(s![.., .., rows;step, cols;step])
                    .reshape([n, c_in, h_out * w_out]);
            let tap = taps.clone().narrow(0, i * kw + j, 1);
            let term = tap.matmul(shifted);
            acc = Some(match acc {
                None => term,
                Some(a) => a + term,
            });
        }
    }
    let mut y = acc.expect("kernel has at least one tap");
    if let Some(b) = bias {
        y = y + b.reshape([1, c_out, 1]);
    }
    y.reshape([n, c_out, h_out, w_out])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Conv2d;
    use burn::module::Param;
    use burn::tensor::TensorData;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    /// Deterministic pseudo-random values in [-1, 1) (no RNG dependency).
    fn ramp(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 20_000) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn shifted_matmul_conv_matches_native() {
        let dev = Default::default();
        // (c_in, c_out, kernel, stride, padding, size): the shapes the image and segmap codecs use.
        for (i, &(ci, co, k, st, p, hw)) in [
            (3, 5, 3, 1, 1, 9),
            (4, 8, 7, 1, 3, 11),
            (3, 6, 3, 2, 1, 10),
            (2, 4, 4, 2, 1, 12),
            (5, 3, 1, 1, 0, 7),
        ]
        .iter()
        .enumerate()
        {
            let x = Tensor::<B, 4>::from_data(
                TensorData::new(ramp(2 * ci * hw * hw, i as u32), [2, ci, hw, hw]),
                &dev,
            );
            let conv = Conv2d::<B> {
                weight: Param::from_tensor(Tensor::from_data(
                    TensorData::new(ramp(co * ci * k * k, 100 + i as u32), [co, ci, k, k]),
                    &dev,
                )),
                bias: Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(ramp(co, 200 + i as u32), [co]),
                    &dev,
                ))),
                stride: st,
                padding: p,
                groups: 1,
            };
            let want = conv.forward_with(x.clone(), Conv2dAlgo::Native);
            let got = conv.forward_with(x, Conv2dAlgo::ShiftedMatmul);
            assert_eq!(got.dims(), want.dims());
            let got: Vec<f32> = got.into_data().to_vec().unwrap();
            let want: Vec<f32> = want.into_data().to_vec().unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "case {i}: {a} vs {b}");
            }
        }
    }
}
