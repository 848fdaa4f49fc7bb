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

    /// The contiguous f32 CPU data of `t`, or `None` for another dtype or device.
    fn host_f32(t: &tch::Tensor) -> Option<tch::Tensor> {
        (t.device() == tch::Device::Cpu && t.kind() == tch::Kind::Float).then(|| t.contiguous())
    }

    /// Borrows the elements of a contiguous f32 CPU tensor.
    #[allow(unsafe_code)]
    fn f32s(t: &tch::Tensor) -> &[f32] {
        let n = t.size().iter().product::<i64>() as usize;
        if n == 0 {
            return &[];
        }
        // SAFETY: `t` is a contiguous CPU tensor of kind Float (checked by `host_f32`, its only
        // source) holding `n` elements at `data_ptr`; the borrow cannot outlive `t`, and nothing
        // writes to it meanwhile (inference tensors are not shared with a writer).
        unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, n) }
    }

    /// [`super::linear`] for f32 tensors on LibTorch's CPU device, on [`crate::nn::sgemm`];
    /// `None` (nothing consumed but `x` given back) for other dtypes and devices.
    #[allow(unsafe_code)]
    pub fn linear<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        w: &Tensor<B, 2>,
        b: Option<&Tensor<B, 1>>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let t = take(x)?;
        let (Some(xc), Some(wc)) = (
            host_f32(&t.tensor),
            handle(w.clone()).as_ref().and_then(host_f32),
        ) else {
            return Err(give(t));
        };
        let bc = match b.map(|b| handle(b.clone()).as_ref().and_then(host_f32)) {
            Some(None) => return Err(give(t)),
            Some(Some(b)) => Some(b),
            None => None,
        };
        let dims = xc.size();
        let (d_in, d_out) = match wc.size()[..] {
            [i, o] => (i as usize, o as usize),
            _ => return Err(give(t)),
        };
        let rows = dims[..D - 1].iter().product::<i64>() as usize;
        let mut out_dims = dims.clone();
        out_dims[D - 1] = d_out as i64;
        let out = tch::Tensor::empty(out_dims.as_slice(), (tch::Kind::Float, tch::Device::Cpu));
        let n_out = rows * d_out;
        let dst: &mut [f32] = if n_out == 0 {
            &mut []
        } else {
            // SAFETY: `out` was just allocated as a contiguous f32 CPU tensor of `n_out`
            // elements and no other handle to it exists yet.
            unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, n_out) }
        };
        crate::nn::sgemm::linear_rows(
            f32s(&xc),
            f32s(&wc),
            bc.as_ref().map(f32s),
            rows,
            d_in,
            d_out,
            dst,
        );
        Ok(give(TchTensor::new(out)))
    }
}

/// NdArray access for [`linear`].
mod nd {
    use std::any::Any;

    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorPrimitive};
    use burn_ndarray::NdArrayTensor;
    use ndarray::{ArrayD, IxDyn};

    fn take<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<NdArrayTensor, Tensor<B, D>> {
        let boxed: Box<dyn Any> = Box::new(x.into_primitive().tensor());
        boxed
            .downcast::<NdArrayTensor>()
            .map(|t| *t)
            .map_err(|other| {
                let prim = *other
                    .downcast::<B::FloatTensorPrimitive>()
                    .unwrap_or_else(|_| unreachable!("boxed from this type just above"));
                Tensor::from_primitive(TensorPrimitive::Float(prim))
            })
    }

    fn give<B: Backend, const D: usize>(t: NdArrayTensor) -> Tensor<B, D> {
        let boxed: Box<dyn Any> = Box::new(t);
        let prim = *boxed
            .downcast::<B::FloatTensorPrimitive>()
            .unwrap_or_else(|_| {
                unreachable!("B's float tensors are NdArrayTensor (take succeeded)")
            });
        Tensor::from_primitive(TensorPrimitive::Float(prim))
    }

    /// [`super::linear`] for f32 NdArray tensors, on [`crate::nn::sgemm`].
    pub fn linear<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        w: &Tensor<B, 2>,
        b: Option<&Tensor<B, 1>>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let t = take(x)?;
        let NdArrayTensor::F32(xs) = &t else {
            return Err(give(t));
        };
        let Ok(NdArrayTensor::F32(ws)) = take(w.clone()) else {
            return Err(give(t));
        };
        let bs = match b.map(|b| take(b.clone())) {
            Some(Ok(NdArrayTensor::F32(s))) => Some(s),
            Some(_) => return Err(give(t)),
            None => None,
        };
        let xv = xs.view();
        let xv = xv.as_standard_layout();
        let wv = ws.view();
        let wv = wv.as_standard_layout();
        let bv = bs
            .as_ref()
            .map(|s| s.view().as_standard_layout().into_owned());
        let dims = xv.shape().to_vec();
        let (d_in, d_out) = match wv.shape() {
            &[i, o] => (i, o),
            _ => return Err(give(t)),
        };
        let rows: usize = dims[..D - 1].iter().product();
        let mut out = vec![0f32; rows * d_out];
        crate::nn::sgemm::linear_rows(
            xv.as_slice().expect("standard layout"),
            wv.as_slice().expect("standard layout"),
            bv.as_ref().map(|b| b.as_slice().expect("standard layout")),
            rows,
            d_in,
            d_out,
            &mut out,
        );
        let mut out_dims = dims;
        out_dims[D - 1] = d_out;
        let arr = ArrayD::from_shape_vec(IxDyn(&out_dims), out).expect("rows · d_out elements");
        Ok(give(NdArrayTensor::from(arr.into_shared())))
    }
}

/// `x · w + b` over the last dimension (`w` stored `[d_in, d_out]`), on the AVX-512 GEMM of
/// [`crate::nn::sgemm`] for f32 tensors of NdArray and of LibTorch's CPU device; the backend's
/// own matmul otherwise (bf16/f16, CUDA, autodiff).
pub fn linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    w: Tensor<B, 2>,
    b: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    let x = match torch::linear(x, &w, b.as_ref()) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let x = match nd::linear(x, &w, b.as_ref()) {
        Ok(y) => return y,
        Err(x) => x,
    };
    burn::tensor::module::linear(x, w, b)
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
