//! Backend-specific fast paths for the few operations that dominate inference, reached by
//! downcasting burn's float primitive to the backend's own tensor and reading its buffer in place:
//!
//! * on LibTorch, ELU, SiLU, LayerNorm and softmax as torch's single fused kernels (burn's
//!   generic ELU makes five passes and four temporaries: image tokenization 5.4 → 4.5 s per 24
//!   base-size rows on 2 cores);
//! * on NdArray, ELU, SiLU, LayerNorm and softmax as one pass per row on the rayon pool,
//!   compiled for the widest vectors the processor has ([`crate::nn::vmath`]);
//! * for f32 tensors of NdArray and of LibTorch's CPU device, linear layers, batched products and
//!   (NdArray) convolutions on the AVX-512 GEMM of [`crate::nn::sgemm`].
//!
//! Anything else (bf16/f16, CUDA, the autodiff backend used for training) takes burn's generic
//! formula; both paths compute the same function (the parity tests run on both backends).

use std::any::Any;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::nn::sgemm::Batched;
use crate::nn::vmath;

/// The backend primitive behind `x` when `B`'s float tensors are `P`, or `x` back.
fn take_as<P: 'static, B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<P, Tensor<B, D>> {
    let boxed: Box<dyn Any> = Box::new(x.into_primitive().tensor());
    boxed.downcast::<P>().map(|t| *t).map_err(|other| {
        let prim = *other
            .downcast::<B::FloatTensorPrimitive>()
            .unwrap_or_else(|_| unreachable!("boxed from this type just above"));
        Tensor::from_primitive(TensorPrimitive::Float(prim))
    })
}

/// Wraps a primitive result; only called for a `B` whose tensors [`take_as`] accepted as `P`.
fn give_as<P: 'static, B: Backend, const D: usize>(t: P) -> Tensor<B, D> {
    let boxed: Box<dyn Any> = Box::new(t);
    let prim = *boxed
        .downcast::<B::FloatTensorPrimitive>()
        .unwrap_or_else(|_| unreachable!("B's float tensors are P (take_as succeeded)"));
    Tensor::from_primitive(TensorPrimitive::Float(prim))
}

/// A 3-D strided f32 view as a [`Batched`] (`None` unless 3-D with non-negative strides).
///
/// # Safety
/// `ptr` must address a live f32 view of `shape` with `strides` (in elements): every element
/// `ptr + Σ iᵢ·strideᵢ` readable, and not written, for `'a`.
#[allow(unsafe_code)]
unsafe fn strided<'a>(ptr: *const f32, shape: &[usize], strides: &[isize]) -> Option<Batched<'a>> {
    if shape.len() != 3 || strides.len() != 3 || strides.iter().any(|&s| s < 0) {
        return None;
    }
    let stride = |i: usize| strides[i] as usize;
    let span = if shape.contains(&0) {
        0
    } else {
        1 + (0..3).map(|i| (shape[i] - 1) * stride(i)).sum::<usize>()
    };
    let data: &[f32] = if span == 0 {
        &[]
    } else {
        // SAFETY: the furthest element of the view is `span − 1` past `ptr`, and the caller
        // guarantees every element of the view is readable for `'a`.
        unsafe { std::slice::from_raw_parts(ptr, span) }
    };
    Some(Batched {
        data,
        batch: stride(0),
        row: stride(1),
        col: stride(2),
    })
}

#[cfg(feature = "tch")]
mod torch {
    use burn::backend::libtorch::TchTensor;
    use burn::tensor::Tensor;
    use burn::tensor::backend::Backend;

    use crate::nn::sgemm::Batched;

    /// The LibTorch tensor behind `x`, or `x` back when `B` is not LibTorch.
    pub fn take<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<TchTensor, Tensor<B, D>> {
        super::take_as(x)
    }

    /// Wraps a LibTorch result; only called for a `B` whose tensors [`take`] accepted.
    pub fn give<B: Backend, const D: usize>(t: TchTensor) -> Tensor<B, D> {
        super::give_as(t)
    }

    /// A new contiguous f32 CPU tensor of `dims`, its elements written by `fill`.
    #[allow(unsafe_code)]
    fn new_f32(dims: &[i64], fill: impl FnOnce(&mut [f32])) -> TchTensor {
        let out = tch::Tensor::empty(dims, (tch::Kind::Float, tch::Device::Cpu));
        let len = dims.iter().product::<i64>() as usize;
        let dst: &mut [f32] = if len == 0 {
            &mut []
        } else {
            // SAFETY: `out` was just allocated as a contiguous f32 CPU tensor of `len` elements
            // and no other handle to it exists yet.
            unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, len) }
        };
        fill(dst);
        TchTensor::new(out)
    }

    /// The shared `tch::Tensor` of a parameter (a handle, not a copy).
    pub fn handle<B: Backend, const D: usize>(x: Tensor<B, D>) -> Option<tch::Tensor> {
        take(x).ok().map(|t| t.tensor.shallow_clone())
    }

    /// Whether `t` is an f32 tensor on LibTorch's CPU device (what the fast paths take).
    fn f32_cpu(t: &tch::Tensor) -> bool {
        t.device() == tch::Device::Cpu && t.kind() == tch::Kind::Float
    }

    /// The contiguous f32 CPU data of `t`, or `None` for another dtype or device.
    fn host_f32(t: &tch::Tensor) -> Option<tch::Tensor> {
        f32_cpu(t).then(|| t.contiguous())
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

    /// Whether f32 products on LibTorch's CPU device run on [`crate::nn::sgemm`] (`true`) or
    /// on LibTorch's own matmul (MKL). Decided once per process, at the first such product, by
    /// timing both on a product of the base model's shapes on this CPU and these threads:
    /// MKL takes its AVX-512 path only on Intel processors, where it can beat ours, and a
    /// slower generic path on AMD, where ours is about twice as fast (docs/validation.md).
    /// `AION_CPU_GEMM=ours` or `=torch` decides instead (benchmarks, tests).
    pub fn ours_is_faster() -> bool {
        static CHOICE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *CHOICE.get_or_init(|| match std::env::var("AION_CPU_GEMM").as_deref() {
            Ok("ours") => true,
            Ok("torch") => false,
            Ok(other) => {
                log::warn!("AION_CPU_GEMM={other} is neither `ours` nor `torch`: timing both");
                race()
            }
            Err(_) => race(),
        })
    }

    /// Times our product and LibTorch's on `[2048, 768] · [768, 2048]`, in turn (a warm-up each,
    /// then the best of five each, ~0.3 s in all on 2 cores); `true` unless LibTorch's is more than 10 %
    /// faster (ours is the default: a noisy machine should not flip the choice).
    fn race() -> bool {
        use std::time::{Duration, Instant};
        let (rows, d_in, d_out) = (2048usize, 768usize, 2048usize);
        let opts = (tch::Kind::Float, tch::Device::Cpu);
        // Constant operands: the speed of a product does not depend on the values, and this
        // leaves LibTorch's random generator untouched.
        let x = tch::Tensor::full([rows as i64, d_in as i64], 0.5, opts);
        let w = tch::Tensor::full([d_in as i64, d_out as i64], 0.25, opts);
        let mut out = vec![0f32; rows * d_out];
        let mut ours_once =
            || crate::nn::sgemm::linear_rows(f32s(&x), f32s(&w), None, rows, d_in, d_out, &mut out);
        let mut torch_once = || drop(x.matmul(&w));
        let timed = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            t.elapsed()
        };
        ours_once();
        torch_once();
        let (mut ours, mut torch) = (Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            ours = ours.min(timed(&mut ours_once));
            torch = torch.min(timed(&mut torch_once));
        }
        let gflops =
            |d: Duration| 2.0 * (rows * d_in * d_out) as f64 / d.as_secs_f64().max(1e-9) / 1e9;
        let ours_wins = gflops(torch) <= 1.1 * gflops(ours);
        log::debug!(
            "f32 products on LibTorch's CPU device: ours {:.0} GFLOP/s, LibTorch's {:.0} GFLOP/s: using {}",
            gflops(ours),
            gflops(torch),
            if ours_wins { "ours" } else { "LibTorch's" }
        );
        ours_wins
    }

    /// [`super::linear`] for f32 tensors on LibTorch's CPU device, on [`crate::nn::sgemm`]
    /// (when [`ours_is_faster`]); `x` back for other dtypes and devices.
    pub fn linear<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        w: &Tensor<B, 2>,
        b: Option<&Tensor<B, 1>>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let t = take(x)?;
        if !f32_cpu(&t.tensor) || !ours_is_faster() {
            return Err(give(t));
        }
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
        let out = new_f32(&out_dims, |dst| {
            crate::nn::sgemm::linear_rows(
                f32s(&xc),
                f32s(&wc),
                bc.as_ref().map(f32s),
                rows,
                d_in,
                d_out,
                dst,
            )
        });
        Ok(give(out))
    }

    /// A 3-D f32 CPU tensor as a strided [`Batched`] view (`None` for other tensors, or
    /// negative strides).
    #[allow(unsafe_code)]
    fn batched(t: &tch::Tensor) -> Option<Batched<'_>> {
        if !f32_cpu(t) {
            return None;
        }
        let size: Vec<usize> = t.size().iter().map(|&n| n as usize).collect();
        let stride: Vec<isize> = t.stride().iter().map(|&s| s as isize).collect();
        // SAFETY: a valid f32 CPU tensor addresses elements `data_ptr + Σ iᵢ·strideᵢ` of its
        // storage for every index; the borrow is tied to `t`, which keeps the storage alive
        // and is only read.
        unsafe { super::strided(t.data_ptr() as *const f32, &size, &stride) }
    }

    /// [`super::bmm`] for f32 tensors on LibTorch's CPU device (when [`ours_is_faster`]); the
    /// inputs back otherwise.
    pub fn bmm<B: Backend>(
        a: Tensor<B, 3>,
        b: Tensor<B, 3>,
    ) -> Result<Tensor<B, 3>, (Tensor<B, 3>, Tensor<B, 3>)> {
        let ta = match take(a) {
            Ok(t) => t,
            Err(a) => return Err((a, b)),
        };
        let Some(tb) = handle(b.clone()) else {
            return Err((give(ta), b));
        };
        if !f32_cpu(&ta.tensor) || !f32_cpu(&tb) || !ours_is_faster() {
            return Err((give(ta), b));
        }
        let (Some(av), Some(bv)) = (batched(&ta.tensor), batched(&tb)) else {
            return Err((give(ta), b));
        };
        let ([p, n, k], [pb, kb, m]) = (dims3(&ta.tensor), dims3(&tb));
        if pb != p || kb != k {
            return Err((give(ta), b));
        }
        let out = new_f32(&[p as i64, n as i64, m as i64], |dst| {
            crate::nn::sgemm::bmm(av, bv, p, n, k, m, dst)
        });
        Ok(give(out))
    }

    fn dims3(t: &tch::Tensor) -> [usize; 3] {
        let s = t.size();
        [s[0] as usize, s[1] as usize, s[2] as usize]
    }
}

/// NdArray access for [`linear`].
mod nd {
    use burn::tensor::Tensor;
    use burn::tensor::backend::Backend;
    use burn_ndarray::NdArrayTensor;
    use ndarray::{ArrayD, IxDyn};

    use crate::nn::vmath::{self, RowKernel};

    fn take<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<NdArrayTensor, Tensor<B, D>> {
        super::take_as(x)
    }

    fn give<B: Backend, const D: usize>(t: NdArrayTensor) -> Tensor<B, D> {
        super::give_as(t)
    }

    /// A new f32 NdArray tensor of `shape` holding `data` (row-major).
    fn from_vec<B: Backend, const D: usize>(shape: &[usize], data: Vec<f32>) -> Tensor<B, D> {
        let arr = ArrayD::from_shape_vec(IxDyn(shape), data).expect("data fills the shape");
        give(NdArrayTensor::from(arr.into_shared()))
    }

    /// `kernel` over the rows (last dimension) of an f32 NdArray tensor, on the rayon pool, into
    /// a new tensor of the same shape; the input back for other tensors.
    pub fn map_rows<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        kernel: &impl RowKernel,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        use rayon::prelude::*;
        let t = take(x)?;
        let NdArrayTensor::F32(xs) = &t else {
            return Err(give(t));
        };
        let v = xs.view();
        let v = v.as_standard_layout();
        let shape = v.shape().to_vec();
        let width = shape.last().copied().unwrap_or(1).max(1);
        let src = v.as_slice().expect("standard layout");
        let mut out = vec![0f32; src.len()];
        // Rows in groups of at least ~16k elements, so that small tensors stay on one thread.
        let per_task = (16_384 / width).max(1) * width;
        out.par_chunks_mut(per_task)
            .zip(src.par_chunks(per_task))
            .for_each(|(o, i)| vmath::for_rows(i, o, width, kernel));
        Ok(from_vec(&shape, out))
    }

    /// [`super::conv2d`] for f32 NdArray tensors; `x` back otherwise.
    pub fn conv2d<B: Backend>(
        x: Tensor<B, 4>,
        weight: &Tensor<B, 4>,
        bias: Option<&Tensor<B, 1>>,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
        let t = take(x)?;
        let NdArrayTensor::F32(xs) = &t else {
            return Err(give(t));
        };
        let Ok(NdArrayTensor::F32(ws)) = take(weight.clone()) else {
            return Err(give(t));
        };
        let b = match bias.map(|b| vector(b.clone())) {
            Some(None) => return Err(give(t)),
            Some(Some(b)) => Some(b),
            None => None,
        };
        let (xv, wv) = (xs.view(), ws.view());
        let (xv, wv) = (xv.as_standard_layout(), wv.as_standard_layout());
        let (&[n, c_in, h, w], &[c_out, wc, kh, kw]) = (xv.shape(), wv.shape()) else {
            return Err(give(t));
        };
        if wc != c_in || h + 2 * padding < kh || w + 2 * padding < kw {
            return Err(give(t));
        }
        let sh = crate::nn::sgemm::ConvShape {
            n,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride,
            padding,
        };
        let (ho, wo) = sh.out_hw();
        let mut out = vec![0f32; n * c_out * ho * wo];
        crate::nn::sgemm::conv2d(
            xv.as_slice().expect("standard layout"),
            wv.as_slice().expect("standard layout"),
            b.as_deref(),
            sh,
            &mut out,
        );
        Ok(from_vec(&[n, c_out, ho, wo], out))
    }

    /// The elements of an f32 NdArray vector (a parameter), or `None`.
    pub fn vector<B: Backend>(x: Tensor<B, 1>) -> Option<Vec<f32>> {
        match take(x) {
            Ok(NdArrayTensor::F32(s)) => Some(s.view().iter().copied().collect()),
            _ => None,
        }
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
        let bv = match b.map(|b| vector(b.clone())) {
            Some(None) => return Err(give(t)),
            Some(Some(b)) => Some(b),
            None => None,
        };
        let xv = xs.view();
        let xv = xv.as_standard_layout();
        let wv = ws.view();
        let wv = wv.as_standard_layout();
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
            bv.as_deref(),
            rows,
            d_in,
            d_out,
            &mut out,
        );
        let mut out_dims = dims;
        out_dims[D - 1] = d_out;
        Ok(from_vec(&out_dims, out))
    }

    /// [`super::bmm`] for f32 NdArray tensors; the inputs back otherwise.
    #[allow(unsafe_code)]
    pub fn bmm<B: Backend>(
        a: Tensor<B, 3>,
        b: Tensor<B, 3>,
    ) -> Result<Tensor<B, 3>, (Tensor<B, 3>, Tensor<B, 3>)> {
        let ta = match take(a) {
            Ok(t) => t,
            Err(a) => return Err((a, b)),
        };
        let tb = match take(b) {
            Ok(t) => t,
            Err(b) => return Err((give(ta), b)),
        };
        let (NdArrayTensor::F32(sa), NdArrayTensor::F32(sb)) = (&ta, &tb) else {
            return Err((give(ta), give(tb)));
        };
        let (va, vb) = (sa.view(), sb.view());
        let batched = |v: &ndarray::ArrayViewD<'_, f32>| {
            // SAFETY: an ndarray view addresses elements `as_ptr + Σ iᵢ·strideᵢ` inside its
            // allocation for every index; the borrow is tied to the view (and so to the
            // tensor), which is only read.
            unsafe { super::strided(v.as_ptr(), v.shape(), v.strides()) }
        };
        let (Some(av), Some(bv)) = (batched(&va), batched(&vb)) else {
            return Err((give(ta), give(tb)));
        };
        let (&[p, n, k], &[pb, kb, m]) = (va.shape(), vb.shape()) else {
            unreachable!("3-D, checked by `batched`")
        };
        if pb != p || kb != k {
            return Err((give(ta), give(tb)));
        }
        let mut out = vec![0f32; p * n * m];
        crate::nn::sgemm::bmm(av, bv, p, n, k, m, &mut out);
        Ok(from_vec(&[p, n, m], out))
    }
}

/// Decides now (instead of at the first f32 product) whether f32 products on LibTorch's CPU
/// device run on [`crate::nn::sgemm`] or on LibTorch's matmul, and returns `true` for ours. The
/// tools call it before their pipeline starts, so the timing is not disturbed by their own
/// threads.
#[cfg(feature = "tch")]
pub fn cpu_gemm_is_ours() -> bool {
    torch::ours_is_faster()
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

/// 2-D convolution (groups 1, dilation 1) on [`crate::nn::sgemm::conv2d`] for f32 NdArray
/// tensors (NdArray's own convolution has no GEMM path); `x` back for other tensors.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
    stride: usize,
    padding: usize,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    nd::conv2d(x, weight, bias, stride, padding)
}

/// Batched matrix product `a [P, n, k] · b [P, k, m] -> [P, n, m]`, on the AVX-512 GEMM of
/// [`crate::nn::sgemm`] for f32 tensors of NdArray and of LibTorch's CPU device (strided views,
/// e.g. a transposed `b`, are read in place); the backend's own matmul otherwise.
pub fn bmm<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>) -> Tensor<B, 3> {
    #[cfg(feature = "tch")]
    let (a, b) = match torch::bmm(a, b) {
        Ok(y) => return y,
        Err(ab) => ab,
    };
    let (a, b) = match nd::bmm(a, b) {
        Ok(y) => return y,
        Err(ab) => ab,
    };
    a.matmul(b)
}

/// `ELU(x) = x` for `x > 0`, `eˣ − 1` otherwise (α = 1).
pub fn elu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    let x = match torch::take(x) {
        Ok(t) => return torch::give(t.unary_ops(|mut t| t.elu_(), |t| t.elu())),
        Err(x) => x,
    };
    let x = match nd::map_rows(x, &vmath::Elu) {
        Ok(y) => return y,
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
    let x = match nd::map_rows(x, &vmath::Silu) {
        Ok(y) => return y,
        Err(x) => x,
    };
    x.clone().div(x.neg().exp().add_scalar(1.0))
}

/// Softmax over the last dimension: torch's fused kernel on LibTorch, one pass per row on the
/// rayon pool on NdArray (f32), burn's formula otherwise.
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    let x = match torch::take(x) {
        Ok(t) => {
            let kind = t.tensor.kind();
            let y = t.tensor.softmax(-1, kind);
            return torch::give(burn::backend::libtorch::TchTensor::new(y));
        }
        Err(x) => x,
    };
    let x = match nd::map_rows(x, &vmath::Softmax) {
        Ok(y) => return y,
        Err(x) => x,
    };
    burn::tensor::activation::softmax(x, D - 1)
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
    let params = nd::vector(weight.clone()).map(|w| (w, bias.clone().map(nd::vector)));
    let x = match params {
        // Only when the bias (if any) is an f32 NdArray vector too.
        Some((w, b)) if !matches!(b, Some(None)) => {
            let b = b.flatten();
            let kernel = vmath::LayerNorm {
                w: &w,
                b: b.as_deref(),
                eps,
            };
            match nd::map_rows(x, &kernel) {
                Ok(y) => return y,
                Err(x) => x,
            }
        }
        _ => x,
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
    fn row_kernels_match_burns_formulas() {
        // NdArray takes the row kernels; burn's formulas are the reference.
        let dev = Default::default();
        let x = Tensor::<B, 3>::from_data(
            TensorData::new(
                (0..2 * 3 * 37)
                    .map(|i| ((i * 29 % 71) as f32 - 35.0) / 7.0)
                    .collect::<Vec<_>>(),
                [2, 3, 37],
            ),
            &dev,
        );
        let close = |got: Tensor<B, 3>, want: Tensor<B, 3>, what: &str| {
            let (g, w): (Vec<f32>, Vec<f32>) = (
                got.into_data().to_vec().unwrap(),
                want.into_data().to_vec().unwrap(),
            );
            for (a, b) in g.iter().zip(&w) {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                    "{what}: {a} vs {b}"
                );
            }
        };
        close(
            softmax_last(x.clone()),
            burn::tensor::activation::softmax(x.clone(), 2),
            "softmax",
        );
        let w = Tensor::<B, 1>::from_data(
            TensorData::new(
                (0..37).map(|i| 0.5 + i as f32 / 37.0).collect::<Vec<_>>(),
                [37],
            ),
            &dev,
        );
        let b = w.clone().mul_scalar(-0.3);
        let (var, mean) = x.clone().var_mean_bias(2);
        let want = (x.clone() - mean)
            .div((var + 1e-5).sqrt())
            .mul(w.clone().unsqueeze())
            .add(b.clone().unsqueeze());
        close(layer_norm(x.clone(), w, Some(b), 1e-5), want, "layer_norm");
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
