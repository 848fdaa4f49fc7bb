//! The MagViT-style convolutional autoencoder of the image codec.
//!
//! Port of `aion/codecs/modules/magvit.py::MagVitAE` (with `SameConv2d`, `SqueezeExcite`,
//! `ResidualUnit`, `SpatialDownsample2x`, `SpatialUpsample2x`), `polymathic-aion` 0.0.2.
//! Weight names are those of the reference state dict under the prefix `model`.
//!
//! Every convolution takes a [`Conv2dAlgo`]: the backend's own conv or a GEMM formulation
//! (see [`crate::nn::Conv2dAlgo`]); both compute the same function.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::{leaky_relu, sigmoid, softmax};
use burn::tensor::backend::Backend;

use crate::nn::native::{elu, silu};
use crate::nn::{Conv2d, Conv2dAlgo, LayerNorm};
use crate::weights::Source;

/// Shape of a MagViT autoencoder (the `MagVitAE` constructor arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MagVitShape {
    /// Input / output channels (`n_bands`; the codec's `multisurvey_projection_dims`).
    pub n_bands: usize,
    /// Channels at the bottleneck (`hidden_dims`).
    pub hidden_dims: usize,
    /// Number of 2× down / up samplings.
    pub n_compressions: usize,
    /// Residual units per stage.
    pub num_consecutive: usize,
}

impl MagVitShape {
    /// Channels at full resolution: `hidden_dims / 2^n_compressions`.
    pub fn init_dim(&self) -> usize {
        self.hidden_dims >> self.n_compressions
    }
}

/// A stride-1 "same" conv with bias (`SameConv2d`, state-dict leaf `.conv`).
fn same_conv<B: Backend>(
    w: &mut impl Source,
    prefix: &str,
    c_in: usize,
    c_out: usize,
    k: usize,
    dev: &B::Device,
) -> Conv2d<B> {
    Conv2d::load(
        w,
        &format!("{prefix}.conv"),
        c_in,
        c_out,
        k,
        1,
        k / 2,
        true,
        dev,
    )
}

/// A 1×1 conv with bias.
fn pointwise<B: Backend>(
    w: &mut impl Source,
    prefix: &str,
    c_in: usize,
    c_out: usize,
    dev: &B::Device,
) -> Conv2d<B> {
    Conv2d::load(w, prefix, c_in, c_out, 1, 1, 0, true, dev)
}

/// Global-context squeeze–excite gate (`SqueezeExcite`).
#[derive(Module, Debug)]
pub struct SqueezeExcite<B: Backend> {
    to_k: Conv2d<B>,
    hidden: Conv2d<B>,
    gate: Conv2d<B>,
}

impl<B: Backend> SqueezeExcite<B> {
    fn load(w: &mut impl Source, prefix: &str, c: usize, dev: &B::Device) -> Self {
        let h = (c / 2).max(16);
        Self {
            to_k: pointwise(w, &format!("{prefix}.to_k"), c, 1, dev),
            hidden: pointwise(w, &format!("{prefix}.net.0"), c, h, dev),
            gate: pointwise(w, &format!("{prefix}.net.2"), h, c, dev),
        }
    }

    /// `x · sigmoid(W₂ LeakyReLU₀.₁(W₁ Σ_hw softmax_hw(k(x)) x))`.
    ///
    /// # Shapes
    /// `[B, C, H, W] -> [B, C, H, W]`
    fn forward(&self, x: Tensor<B, 4>, algo: Conv2dAlgo) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let attn = softmax(
            self.to_k
                .forward_with(x.clone(), algo)
                .reshape([b, 1, h * w]),
            2,
        );
        let context = x
            .clone()
            .reshape([b, c, h * w])
            .matmul(attn.swap_dims(1, 2))
            .reshape([b, c, 1, 1]);
        let hidden = leaky_relu(self.hidden.forward_with(context, algo), 0.1);
        let gates = sigmoid(self.gate.forward_with(hidden, algo));
        x * gates
    }
}

/// `x + SE(ELU(Conv1×1(ELU(Conv3×3(x)))))` (`ResidualUnit`; leaves `net.0`, `net.2`, `net.4`).
#[derive(Module, Debug)]
pub struct ResidualUnit<B: Backend> {
    conv: Conv2d<B>,
    mix: Conv2d<B>,
    se: SqueezeExcite<B>,
}

impl<B: Backend> ResidualUnit<B> {
    fn load(w: &mut impl Source, prefix: &str, c: usize, dev: &B::Device) -> Self {
        Self {
            conv: same_conv(w, &format!("{prefix}.net.0"), c, c, 3, dev),
            mix: pointwise(w, &format!("{prefix}.net.2"), c, c, dev),
            se: SqueezeExcite::load(w, &format!("{prefix}.net.4"), c, dev),
        }
    }

    /// # Shapes
    /// `[B, C, H, W] -> [B, C, H, W]`
    fn forward(&self, x: Tensor<B, 4>, algo: Conv2dAlgo) -> Tensor<B, 4> {
        let y = elu(self.conv.forward_with(x.clone(), algo));
        let y = elu(self.mix.forward_with(y, algo));
        self.se.forward(y, algo) + x
    }
}

/// A `nn.Sequential` of residual units (`<prefix>.<j>`).
fn load_units<B: Backend>(
    w: &mut impl Source,
    prefix: &str,
    n: usize,
    c: usize,
    dev: &B::Device,
) -> Vec<ResidualUnit<B>> {
    (0..n)
        .map(|j| ResidualUnit::load(w, &format!("{prefix}.{j}"), c, dev))
        .collect()
}

fn run_units<B: Backend>(
    units: &[ResidualUnit<B>],
    x: Tensor<B, 4>,
    algo: Conv2dAlgo,
) -> Tensor<B, 4> {
    units.iter().fold(x, |x, u| u.forward(x, algo))
}

/// One encoder compression: a stride-2 3×3 conv doubling the channels, then residual units.
#[derive(Module, Debug)]
pub struct DownStage<B: Backend> {
    down: Conv2d<B>,
    units: Vec<ResidualUnit<B>>,
}

/// One decoder expansion: residual units, then `SpatialUpsample2x` (1×1 conv to 4·C/2
/// channels, SiLU, depth-to-space).
#[derive(Module, Debug)]
pub struct UpStage<B: Backend> {
    units: Vec<ResidualUnit<B>>,
    up: Conv2d<B>,
}

/// Depth-to-space by 2: channel `c·4 + p₁·2 + p₂` goes to pixel `(2h + p₁, 2w + p₂)` of
/// channel `c` (einops `b (c p1 p2) h w -> b c (h p1) (w p2)`).
///
/// # Shapes
/// `[B, 4C, H, W] -> [B, C, 2H, 2W]`
pub fn depth_to_space2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c4, h, w] = x.dims();
    let c = c4 / 4;
    x.reshape([b, c, 2, 2, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([b, c, 2 * h, 2 * w])
}

/// The MagViT encoder: `conv_in` and `encoder_layers` of `MagVitAE`.
#[derive(Module, Debug)]
pub struct MagVitEncoder<B: Backend> {
    conv_in: Conv2d<B>,
    first: ResidualUnit<B>,
    stages: Vec<DownStage<B>>,
    mid_conv: Conv2d<B>,
    mid: Vec<ResidualUnit<B>>,
    norm: LayerNorm<B>,
}

impl<B: Backend> MagVitEncoder<B> {
    /// Loads `<prefix>.conv_in.*` and `<prefix>.encoder_layers.*`.
    pub fn load(w: &mut impl Source, prefix: &str, shape: &MagVitShape, dev: &B::Device) -> Self {
        let layer = |i: usize| format!("{prefix}.encoder_layers.{i}");
        let mut dim = shape.init_dim();
        let conv_in = same_conv(w, &format!("{prefix}.conv_in"), shape.n_bands, dim, 7, dev);
        let first = ResidualUnit::load(w, &layer(0), dim, dev);
        let mut stages = Vec::new();
        for i in 0..shape.n_compressions {
            let down = Conv2d::load(
                w,
                &format!("{}.conv", layer(1 + 2 * i)),
                dim,
                2 * dim,
                3,
                2,
                1,
                true,
                dev,
            );
            dim *= 2;
            let units = load_units(w, &layer(2 + 2 * i), shape.num_consecutive, dim, dev);
            stages.push(DownStage { down, units });
        }
        let n = shape.n_compressions;
        Self {
            conv_in,
            first,
            stages,
            mid_conv: same_conv(w, &layer(1 + 2 * n), dim, dim, 7, dev),
            mid: load_units(w, &layer(2 + 2 * n), shape.num_consecutive, dim, dev),
            norm: LayerNorm::load(w, &format!("{}.1", layer(3 + 2 * n)), dim, 1e-5, true, dev),
        }
    }

    /// # Shapes
    /// `[B, n_bands, H, W] -> [B, hidden_dims, H/2^n, W/2^n]`
    pub fn forward(&self, x: Tensor<B, 4>, algo: Conv2dAlgo) -> Tensor<B, 4> {
        let x = self.conv_in.forward_with(x, algo);
        let mut x = self.first.forward(x, algo);
        for st in &self.stages {
            x = run_units(&st.units, st.down.forward_with(x, algo), algo);
        }
        let x = run_units(&self.mid, self.mid_conv.forward_with(x, algo), algo);
        self.norm.forward_channels_first(x)
    }
}

/// The MagViT decoder: `decoder_layers` and `conv_out` of `MagVitAE`.
#[derive(Module, Debug)]
pub struct MagVitDecoder<B: Backend> {
    mid: Vec<ResidualUnit<B>>,
    mid_conv: Conv2d<B>,
    stages: Vec<UpStage<B>>,
    last: ResidualUnit<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> MagVitDecoder<B> {
    /// Loads `<prefix>.decoder_layers.*` and `<prefix>.conv_out.*`.
    pub fn load(w: &mut impl Source, prefix: &str, shape: &MagVitShape, dev: &B::Device) -> Self {
        let layer = |i: usize| format!("{prefix}.decoder_layers.{i}");
        let mut dim = shape.hidden_dims;
        let mid = load_units(w, &layer(0), shape.num_consecutive, dim, dev);
        let mid_conv = same_conv(w, &layer(1), dim, dim, 3, dev);
        let mut stages = Vec::new();
        for t in 0..shape.n_compressions {
            let units = load_units(w, &layer(2 + 2 * t), shape.num_consecutive, dim, dev);
            // SpatialUpsample2x(dim → dim/2): 1×1 conv dim → 4·(dim/2).
            let up = pointwise(w, &format!("{}.net.0", layer(3 + 2 * t)), dim, 2 * dim, dev);
            stages.push(UpStage { units, up });
            dim /= 2;
        }
        let n = shape.n_compressions;
        Self {
            mid,
            mid_conv,
            stages,
            last: ResidualUnit::load(w, &layer(2 + 2 * n), dim, dev),
            conv_out: same_conv(w, &format!("{prefix}.conv_out"), dim, shape.n_bands, 3, dev),
        }
    }

    /// # Shapes
    /// `[B, hidden_dims, h, w] -> [B, n_bands, h·2^n, w·2^n]`
    pub fn forward(&self, x: Tensor<B, 4>, algo: Conv2dAlgo) -> Tensor<B, 4> {
        let x = run_units(&self.mid, x, algo);
        let mut x = self.mid_conv.forward_with(x, algo);
        for st in &self.stages {
            let y = run_units(&st.units, x, algo);
            x = depth_to_space2(silu(st.up.forward_with(y, algo)));
        }
        let x = self.last.forward(x, algo);
        self.conv_out.forward_with(x, algo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use burn_ndarray::NdArray;

    #[test]
    fn depth_to_space_matches_einops_layout() {
        let dev = Default::default();
        // [1, 8, 1, 2]: channel k holds value 10·k + w.
        let v: Vec<f32> = (0..8)
            .flat_map(|k| (0..2).map(move |w| (10 * k + w) as f32))
            .collect();
        let x = Tensor::<NdArray<f32>, 4>::from_data(TensorData::new(v, [1, 8, 1, 2]), &dev);
        let y = depth_to_space2(x);
        assert_eq!(y.dims(), [1, 2, 2, 4]);
        let y: Vec<f32> = y.into_data().to_vec().unwrap();
        // out[c, p1, 2w + p2] = in[c·4 + p1·2 + p2, 0, w]
        let want = [
            0., 10., 1., 11., 20., 30., 21., 31., // c = 0
            40., 50., 41., 51., 60., 70., 61., 71., // c = 1
        ];
        assert_eq!(y, want);
    }
}
