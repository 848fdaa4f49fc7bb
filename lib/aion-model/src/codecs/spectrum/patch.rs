//! Convolutions whose stride equals their kernel size (no padding), as matrix products.
//!
//! The ConvNeXt stem / downsampling convs (`Conv1d(k, stride=k)`) and the decoder's
//! `ConvTranspose1d(k, stride=k)` touch every input sample exactly once, so they are a reshape
//! plus one matmul; this is exact and much faster on CPU than a general convolution. The weights
//! are read in PyTorch layout and rearranged once at load time.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;

use crate::weights::{Init, Layout, Source};

/// `torch.nn.Conv1d(c_in, c_out, k, stride=k)`.
#[derive(Module, Debug)]
pub struct PatchConv1d<B: Backend> {
    /// Weight as a matrix `[c_in·k, c_out]` (row index `i·k + κ`).
    pub weight: Param<Tensor<B, 2>>,
    /// Bias `[c_out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Kernel size = stride.
    pub kernel: usize,
}

impl<B: Backend> PatchConv1d<B> {
    /// Loads `<prefix>.weight` `[c_out, c_in, k]` and `<prefix>.bias` `[c_out]`.
    pub fn load(
        w: &mut impl Source,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        device: &B::Device,
    ) -> Self {
        let name = format!("{prefix}.weight");
        let (init, layout) = (Init::LeCunUniform, Layout::Transposed);
        let weight = w.param_with(&name, [c_out, c_in, k], &init, layout, device, |t| {
            t.reshape([c_out, c_in * k]).transpose()
        });
        Self {
            weight,
            bias: w.param(&format!("{prefix}.bias"), [c_out], &Init::Zeros, device),
            kernel: k,
        }
    }

    /// # Shapes
    /// `[B, c_in, L] -> [B, c_out, L / k]` (`L` must be a multiple of `k`)
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, c, l] = x.dims();
        let (k, t) = (self.kernel, l / self.kernel);
        let patches = x
            .reshape([b, c, t, k])
            .swap_dims(1, 2)
            .reshape([b, t, c * k]);
        linear(patches, self.weight.val(), Some(self.bias.val())).swap_dims(1, 2)
    }
}

/// `torch.nn.ConvTranspose1d(c_in, c_out, k, stride=k)`:
/// `out[o, k·t + κ] = b_o + Σ_i in[i, t]·W[i, o, κ]`.
#[derive(Module, Debug)]
pub struct PatchConvTranspose1d<B: Backend> {
    /// Weight as a matrix `[c_in, c_out·k]` (PyTorch's `[c_in, c_out, k]` flattened).
    pub weight: Param<Tensor<B, 2>>,
    /// Bias `[c_out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Kernel size = stride.
    pub kernel: usize,
}

impl<B: Backend> PatchConvTranspose1d<B> {
    /// Loads `<prefix>.weight` `[c_in, c_out, k]` and `<prefix>.bias` `[c_out]`.
    pub fn load(
        w: &mut impl Source,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        device: &B::Device,
    ) -> Self {
        let name = format!("{prefix}.weight");
        let (init, layout) = (Init::LeCunUniform, Layout::Reshaped);
        let weight = w.param_with(&name, [c_in, c_out, k], &init, layout, device, |t| {
            t.reshape([c_in, c_out * k])
        });
        Self {
            weight,
            bias: w.param(&format!("{prefix}.bias"), [c_out], &Init::Zeros, device),
            kernel: k,
        }
    }

    /// # Shapes
    /// `[B, c_in, T] -> [B, c_out, T·k]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, t] = x.dims();
        let k = self.kernel;
        let c_out = self.bias.dims()[0];
        let y = linear(x.swap_dims(1, 2), self.weight.val(), None);
        let y = y
            .reshape([b, t, c_out, k])
            .swap_dims(1, 2)
            .reshape([b, c_out, t * k]);
        y.add(self.bias.val().reshape([1, c_out, 1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Conv1d, ConvTranspose1d};
    use burn::tensor::Distribution;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    fn close(a: Tensor<B, 3>, b: Tensor<B, 3>) {
        assert_eq!(a.dims(), b.dims());
        let a: Vec<f32> = a.into_data().to_vec().unwrap();
        let b: Vec<f32> = b.into_data().to_vec().unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn patch_convs_equal_general_convs() {
        let dev = Default::default();
        let rnd = |s: [usize; 3]| Tensor::<B, 3>::random(s, Distribution::Normal(0.0, 1.0), &dev);
        let (w, bias) = (rnd([5, 3, 4]), rnd([1, 1, 5]).reshape([5]));
        let x = rnd([2, 3, 16]);
        let general = Conv1d {
            weight: Param::from_tensor(w.clone()),
            bias: Some(Param::from_tensor(bias.clone())),
            stride: 4,
            padding: 0,
            groups: 1,
        };
        let patch = PatchConv1d {
            weight: Param::from_tensor(w.reshape([5, 12]).transpose()),
            bias: Param::from_tensor(bias.clone()),
            kernel: 4,
        };
        close(patch.forward(x.clone()), general.forward(x));

        let wt = rnd([3, 5, 4]);
        let x = rnd([2, 3, 6]);
        let general = ConvTranspose1d {
            weight: Param::from_tensor(wt.clone()),
            bias: Some(Param::from_tensor(bias.clone())),
            stride: 4,
        };
        let patch = PatchConvTranspose1d {
            weight: Param::from_tensor(wt.reshape([3, 20])),
            bias: Param::from_tensor(bias),
            kernel: 4,
        };
        close(patch.forward(x.clone()), general.forward(x));
    }
}
