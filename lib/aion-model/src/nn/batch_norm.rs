//! Batch normalisation in evaluation mode.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::key;
use crate::weights::{Init, IntType, Source};

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
    /// (a training counter) is accepted and ignored when present. From scratch: the identity
    /// (scale 1, shift 0, mean 0, variance 1).
    pub fn load(w: &mut impl Source, prefix: &str, c: usize, eps: f64, device: &B::Device) -> Self {
        let counter = key(prefix, "num_batches_tracked");
        w.optional(&counter, &[], IntType::I64, &Init::Zeros);
        Self {
            weight: w.param(&key(prefix, "weight"), [c], &Init::Ones, device),
            bias: w.param(&key(prefix, "bias"), [c], &Init::Zeros, device),
            running_mean: w.param(&key(prefix, "running_mean"), [c], &Init::Zeros, device),
            running_var: w.param(&key(prefix, "running_var"), [c], &Init::Ones, device),
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

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
