//! Basic layers shared by the codecs and the transformer, loaded by PyTorch state-dict name.
//!
//! Each layer is a burn [`Module`] with [`Param`] fields (so the autodiff backend can train it)
//! and a `load(w, prefix, …)` constructor that takes `<prefix>.weight` / `<prefix>.bias` from a
//! [`Source`] in PyTorch layout: the one description of the layer's weights, used for loading
//! and initialising alike. Linear weights are transposed once at load time to `[in, out]`.
//! Biases start at zero, norm scales at one, convolution weights LeCun-uniform; linear weights
//! take the rule their caller gives.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv_transpose1d, conv_transpose2d, conv1d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Int, Tensor};

use crate::weights::{Init, Source};

mod batch_norm;
mod conv_gemm;
pub mod native;
pub mod sgemm;
pub mod vmath;

pub use batch_norm::BatchNorm2d;
pub use conv_gemm::{Conv2dAlgo, conv2d_shifted_matmul};

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
    /// Loads `<prefix>.weight` `[d_out, d_in]` (+ `<prefix>.bias` when `bias`); `init` is the
    /// weight's rule from scratch.
    pub fn load(
        w: &mut impl Source,
        prefix: &str,
        (d_in, d_out): (usize, usize),
        bias: bool,
        init: Init,
        device: &B::Device,
    ) -> Self {
        // Transposed on the host so that the kept `[in, out]` tensor is contiguous (a strided
        // view would be copied by the matmul of some backends at every call).
        Self {
            weight: w.param_transposed(&key(prefix, "weight"), [d_out, d_in], &init, device),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [d_out], &Init::Zeros, device)),
        }
    }

    /// # Shapes
    /// `[..., d_in] -> [..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        native::linear(x, self.weight.val(), self.bias.as_ref().map(Param::val))
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
        w: &mut impl Source,
        prefix: &str,
        d: usize,
        eps: f64,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            weight: w.param(&key(prefix, "weight"), [d], &Init::Ones, device),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [d], &Init::Zeros, device)),
            eps,
        }
    }

    /// Normalises over the last dimension (biased variance, as torch does).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        native::layer_norm(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            self.eps,
        )
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
        w: &mut impl Source,
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
                &Init::LeCunUniform,
                device,
            ),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [c_out], &Init::Zeros, device)),
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
        w: &mut impl Source,
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
                &Init::LeCunUniform,
                device,
            ),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [c_out], &Init::Zeros, device)),
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
        w: &mut impl Source,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        bias: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            weight: w.param(
                &key(prefix, "weight"),
                [c_in, c_out, kernel],
                &Init::LeCunUniform,
                device,
            ),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [c_out], &Init::Zeros, device)),
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
        w: &mut impl Source,
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
                &Init::LeCunUniform,
                device,
            ),
            bias: bias.then(|| w.param(&key(prefix, "bias"), [c_out], &Init::Zeros, device)),
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

/// `torch.nn.Embedding` look-up table `[vocab, d]`.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// Table `[vocab, d]`.
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    /// Loads `<prefix>.weight` `[vocab, d]` (`init`: its rule from scratch).
    pub fn load(
        w: &mut impl Source,
        prefix: &str,
        (vocab, d): (usize, usize),
        init: Init,
        device: &B::Device,
    ) -> Self {
        Self {
            weight: w.param(&key(prefix, "weight"), [vocab, d], &init, device),
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
}
