//! Basic layers shared by the codecs and the transformer, loaded by PyTorch state-dict name.
//!
//! Each layer is a burn [`Module`] with [`Param`] fields (so the autodiff backend can train it)
//! and a `load(w, prefix, …)` constructor that takes `<prefix>.weight` / `<prefix>.bias` from a
//! [`WeightFile`] in PyTorch layout. Linear weights are transposed once at load time to `[in, out]`.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv_transpose1d, conv_transpose2d, conv1d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, PadMode};
use burn::tensor::{Int, Tensor, s};

use crate::weights::WeightFile;

fn key(prefix: &str, leaf: &str) -> String {
    if prefix.is_empty() {
        leaf.to_string()
    } else {
        format!("{prefix}.{leaf}")
    }
}

/// `torch.nn.Linear`: `y = x Wᵀ + b`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// Weight in `[in, out]` layout (PyTorch stores `[out, in]`).
    pub weight: Param<Tensor<B, 2>>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    /// Loads `<prefix>.weight` `[d_out, d_in]` (+ `<prefix>.bias` when `bias`).
    pub fn load(
        w: &mut WeightFile,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        let weight: Tensor<B, 2> = w.tensor(&key(prefix, "weight"), [d_out, d_in], device);
        Self {
            weight: Param::from_tensor(weight.transpose()),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [d_out], device)),
        }
    }

    /// # Shapes
    /// `[..., d_in] -> [..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        burn::tensor::module::linear(x, self.weight.val(), self.bias.as_ref().map(Param::val))
    }
}

/// `LayerNorm` over the last dimension. The bias is optional (4M's `norm_bias=False` stores a
/// zero buffer, which is loaded like a bias all the same).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale `[d]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift `[d]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Epsilon added to the variance.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Loads `<prefix>.weight` (+ `<prefix>.bias` when `bias`).
    pub fn load(
        w: &mut WeightFile,
        prefix: &str,
        d: usize,
        eps: f64,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            weight: w.param(&key(prefix, "weight"), [d], device),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [d], device)),
            eps,
        }
    }

    /// Normalises over the last dimension (biased variance, as torch does).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let x = (x - mean).div((var + self.eps).sqrt());
        let x = x.mul(self.weight.val().unsqueeze());
        match &self.bias {
            Some(b) => x.add(b.val().unsqueeze()),
            None => x,
        }
    }

    /// Normalises a channels-first tensor `[B, C, ...]` over `C` (PyTorch code does
    /// `permute → LayerNorm → permute` for this).
    pub fn forward_channels_first<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.forward(x.swap_dims(1, D - 1)).swap_dims(1, D - 1)
    }
}

/// `torch.nn.Conv2d` (symmetric padding).
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    /// Kernel `[out, in/groups, kh, kw]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride.
    pub stride: usize,
    /// Padding on each side.
    pub padding: usize,
    /// Groups.
    pub groups: usize,
}

impl<B: Backend> Conv2d<B> {
    /// Loads a square-kernel conv `<prefix>.weight` `[c_out, c_in/groups, k, k]` (+ bias).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &mut WeightFile,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            weight: w.param(
                &key(prefix, "weight"),
                [c_out, c_in, kernel, kernel],
                device,
            ),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [c_out], device)),
            stride,
            padding,
            groups: 1,
        }
    }

    /// # Shapes
    /// `[B, c_in, H, W] -> [B, c_out, H', W']`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let opts = ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], self.groups);
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            opts,
        )
    }

    /// [`forward`](Self::forward) with an explicit evaluation strategy
    /// ([`Conv2dAlgo::ShiftedMatmul`] needs `groups == 1`; grouped convs always run natively).
    ///
    /// # Shapes
    /// `[B, c_in, H, W] -> [B, c_out, H', W']`
    pub fn forward_with(&self, x: Tensor<B, 4>, algo: Conv2dAlgo) -> Tensor<B, 4> {
        match algo {
            Conv2dAlgo::ShiftedMatmul if self.groups == 1 => conv2d_shifted_matmul(
                x,
                self.weight.val(),
                self.bias.as_ref().map(Param::val),
                self.stride,
                self.padding,
            ),
            _ => self.forward(x),
        }
    }
}

/// How a [`Conv2d`] is evaluated.
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
        if B::name(device).starts_with("ndarray") {
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

/// `torch.nn.Conv1d`.
#[derive(Module, Debug)]
pub struct Conv1d<B: Backend> {
    /// Kernel `[out, in/groups, k]`.
    pub weight: Param<Tensor<B, 3>>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride.
    pub stride: usize,
    /// Padding on each side.
    pub padding: usize,
    /// Groups.
    pub groups: usize,
}

impl<B: Backend> Conv1d<B> {
    /// Loads `<prefix>.weight` `[c_out, c_in/groups, k]` (+ bias).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &mut WeightFile,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            weight: w.param(
                &key(prefix, "weight"),
                [c_out, c_in / groups, kernel],
                device,
            ),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [c_out], device)),
            stride,
            padding,
            groups,
        }
    }

    /// # Shapes
    /// `[B, c_in, L] -> [B, c_out, L']`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let opts = ConvOptions::new([self.stride], [self.padding], [1], self.groups);
        conv1d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            opts,
        )
    }
}

/// `torch.nn.ConvTranspose1d` (no padding, no output padding).
#[derive(Module, Debug)]
pub struct ConvTranspose1d<B: Backend> {
    /// Kernel `[in, out, k]` (PyTorch layout for transposed convs).
    pub weight: Param<Tensor<B, 3>>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride.
    pub stride: usize,
}

impl<B: Backend> ConvTranspose1d<B> {
    /// Loads `<prefix>.weight` `[c_in, c_out, k]` (+ bias).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &mut WeightFile,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            weight: w.param(&key(prefix, "weight"), [c_in, c_out, kernel], device),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [c_out], device)),
            stride,
        }
    }

    /// # Shapes
    /// `[B, c_in, L] -> [B, c_out, (L-1)·stride + k]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let opts = ConvTransposeOptions::new([self.stride], [0], [0], [1], 1);
        conv_transpose1d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            opts,
        )
    }
}

/// `torch.nn.ConvTranspose2d` with square kernel, symmetric padding, no output padding.
#[derive(Module, Debug)]
pub struct ConvTranspose2d<B: Backend> {
    /// Kernel `[in, out, k, k]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub padding: usize,
}

impl<B: Backend> ConvTranspose2d<B> {
    /// Loads `<prefix>.weight` `[c_in, c_out, k, k]` (+ bias).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &mut WeightFile,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            weight: w.param(
                &key(prefix, "weight"),
                [c_in, c_out, kernel, kernel],
                device,
            ),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [c_out], device)),
            stride,
            padding,
        }
    }

    /// # Shapes
    /// `[B, c_in, H, W] -> [B, c_out, (H-1)·s - 2p + k, …]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let opts =
            ConvTransposeOptions::new([self.stride; 2], [self.padding; 2], [0, 0], [1, 1], 1);
        conv_transpose2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            opts,
        )
    }
}

/// `torch.nn.BatchNorm2d` in evaluation mode: normalises with the stored running statistics.
///
/// Like PyTorch's CPU kernel, the affine map is folded first (`α = γ / sqrt(var + eps)`,
/// `β = b − mean·α`) and applied as `x·α + β`.
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    /// Scale γ `[C]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift `[C]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Running mean `[C]`.
    pub running_mean: Param<Tensor<B, 1>>,
    /// Running (unbiased) variance `[C]`.
    pub running_var: Param<Tensor<B, 1>>,
    /// Epsilon added to the variance.
    pub eps: f64,
}

impl<B: Backend> BatchNorm2d<B> {
    /// Loads `<prefix>.{weight,bias,running_mean,running_var}` `[c]`; `<prefix>.num_batches_tracked`
    /// (a training counter) is accepted and ignored when present.
    pub fn load(w: &mut WeightFile, prefix: &str, c: usize, eps: f64, device: &B::Device) -> Self {
        w.skip(&key(prefix, "num_batches_tracked"));
        Self {
            weight: w.param(&key(prefix, "weight"), [c], device),
            bias: w.param(&key(prefix, "bias"), [c], device),
            running_mean: w.param(&key(prefix, "running_mean"), [c], device),
            running_var: w.param(&key(prefix, "running_var"), [c], device),
            eps,
        }
    }

    /// # Shapes
    /// `[B, C, H, W] -> [B, C, H, W]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let c = self.weight.dims()[0];
        let alpha = self.weight.val() / (self.running_var.val() + self.eps).sqrt();
        let beta = self.bias.val() - self.running_mean.val() * alpha.clone();
        x * alpha.reshape([1, c, 1, 1]) + beta.reshape([1, c, 1, 1])
    }
}

/// `torch.nn.Embedding` look-up table `[vocab, d]`.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// Table `[vocab, d]`.
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    /// Loads `<prefix>.weight` `[vocab, d]`.
    pub fn load(
        w: &mut WeightFile,
        prefix: &str,
        vocab: usize,
        d: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            weight: w.param(&key(prefix, "weight"), [vocab, d], device),
        }
    }

    /// # Shapes
    /// `[B, N] (ids) -> [B, N, d]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        burn::tensor::module::embedding(self.weight.val(), ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn layer_norm_normalises_last_dim() {
        let dev = Default::default();
        let ln = LayerNorm::<B> {
            weight: Param::from_tensor(Tensor::ones([4], &dev)),
            bias: None,
            eps: 1e-6,
        };
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0], [2, 4]),
            &dev,
        );
        let y: Vec<f32> = ln.forward(x).into_data().to_vec().unwrap();
        let s = (1.25f32 + 1e-6).sqrt();
        let want = [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s, 0.0, 0.0, 0.0, 0.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

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

    #[test]
    fn batch_norm_uses_running_stats() {
        let dev = Default::default();
        let v = |x: [f32; 2]| Param::from_tensor(Tensor::<B, 1>::from_data(x, &dev));
        let bn = BatchNorm2d::<B> {
            weight: v([2.0, 1.0]),
            bias: v([0.5, -1.0]),
            running_mean: v([1.0, 0.0]),
            running_var: v([4.0, 1.0]),
            eps: 0.0,
        };
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(vec![3.0f32, 5.0, 2.0, -2.0], [1, 2, 1, 2]),
            &dev,
        );
        let y: Vec<f32> = bn.forward(x).into_data().to_vec().unwrap();
        assert_eq!(y, vec![2.5, 4.5, 1.0, -3.0]);
    }
}
