//! Element-wise functions and norms that burn composes from several kernels, run as LibTorch's
//! single fused kernel when the tensor lives on LibTorch (feature `tch`).
//!
//! burn's generic ELU, for instance, makes five passes over the tensor and four temporaries;
//! on the image codec's full-resolution activations (tens of MB per batch) those passes and the
//! page faults of the fresh allocations cost about a sixth of the codec's time (5.4 → 4.5 s per
//! 24 base-size rows on 2 cores). Other backends
//! (NdArray, and the autodiff backend used for training) take the generic formula; both paths
//! compute the same function (the parity tests run on both).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

#[cfg(feature = "tch")]
mod torch {
    use std::any::Any;

    use burn::backend::libtorch::TchTensor;
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorPrimitive};

    /// The LibTorch tensor behind `x`, or `x` back when `B` is not LibTorch.
    pub fn take<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<TchTensor, Tensor<B, D>> {
        let boxed: Box<dyn Any> = Box::new(x.into_primitive().tensor());
        boxed.downcast::<TchTensor>().map(|t| *t).map_err(|other| {
            let prim = *other
                .downcast::<B::FloatTensorPrimitive>()
                .unwrap_or_else(|_| unreachable!("boxed from this type just above"));
            Tensor::from_primitive(TensorPrimitive::Float(prim))
        })
    }

    /// Wraps a LibTorch result; only called for a `B` whose tensors [`take`] accepted.
    pub fn give<B: Backend, const D: usize>(t: TchTensor) -> Tensor<B, D> {
        let boxed: Box<dyn Any> = Box::new(t);
        let prim = *boxed
            .downcast::<B::FloatTensorPrimitive>()
            .unwrap_or_else(|_| unreachable!("B's float tensors are TchTensor (take succeeded)"));
        Tensor::from_primitive(TensorPrimitive::Float(prim))
    }

    /// The shared `tch::Tensor` of a parameter (a handle, not a copy).
    pub fn handle<B: Backend, const D: usize>(x: Tensor<B, D>) -> Option<tch::Tensor> {
        take(x).ok().map(|t| t.tensor.shallow_clone())
    }
}

/// `ELU(x) = x` for `x > 0`, `eˣ − 1` otherwise (α = 1).
pub fn elu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    let x = match torch::take(x) {
        Ok(t) => return torch::give(t.unary_ops(|mut t| t.elu_(), |t| t.elu())),
        Err(x) => x,
    };
    burn::tensor::activation::elu(x, 1.0)
}

/// `SiLU(x) = x / (1 + e⁻ˣ)` (torch's formula; burn's `silu` goes through a log-sigmoid).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    let x = match torch::take(x) {
        Ok(t) => return torch::give(t.unary_ops(|mut t| t.silu_(), |t| t.silu())),
        Err(x) => x,
    };
    x.clone().div(x.neg().exp().add_scalar(1.0))
}

/// Layer norm over the last dimension with biased variance, as `torch.nn.LayerNorm`.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    let x = match torch::take(x) {
        Ok(t) => {
            let d = t.tensor.size().last().copied().unwrap_or(1);
            let w = torch::handle(weight);
            let b = bias.and_then(torch::handle);
            let y = t.tensor.layer_norm([d], w.as_ref(), b.as_ref(), eps, false);
            return torch::give(burn::backend::libtorch::TchTensor::new(y));
        }
        Err(x) => x,
    };
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    let x = (x - mean).div((var + eps).sqrt());
    let x = x.mul(weight.unsqueeze());
    match bias {
        Some(b) => x.add(b.unsqueeze()),
        None => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use burn_ndarray::NdArray;

    type B = NdArray<f32>;

    fn t(v: &[f32]) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    fn vals(x: Tensor<B, 1>) -> Vec<f32> {
        x.into_data().to_vec().unwrap()
    }

    #[test]
    fn elu_and_silu_follow_torch_formulas() {
        let x = [-3.0f32, -0.5, 0.0, 0.5, 3.0];
        for (got, &v) in vals(elu(t(&x))).iter().zip(&x) {
            let want = if v > 0.0 { v } else { v.exp() - 1.0 };
            assert!((got - want).abs() < 1e-6, "elu({v}) = {got}, want {want}");
        }
        for (got, &v) in vals(silu(t(&x))).iter().zip(&x) {
            let want = v / (1.0 + (-v).exp());
            assert!((got - want).abs() < 1e-6, "silu({v}) = {got}, want {want}");
        }
    }

    #[test]
    fn layer_norm_uses_biased_variance_and_affine() {
        let y = vals(layer_norm(
            t(&[1.0, 2.0, 3.0, 6.0]),
            t(&[1.0, 2.0, 1.0, 1.0]),
            Some(t(&[0.0, 0.0, 0.0, 1.0])),
            0.0,
        ));
        // mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5.
        let s = 3.5f32.sqrt();
        let want = [-2.0 / s, -2.0 / s, 0.0, 3.0 / s + 1.0];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{y:?} vs {want:?}");
        }
    }
}
