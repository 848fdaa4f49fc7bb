//! The f32 matrix product of the linear layers on CPUs, on the `gemm` crate's runtime-dispatched
//! AVX-512 / AVX2 kernels.
//!
//! Why not the backend's own: LibTorch's CPU matmul is MKL's, which on AMD processors takes its
//! non-AVX-512 path, and NdArray's is `matrixmultiply`. On the 2-core AMD EPYC (Zen 5) of our CI
//! a `[4640, 768] × [768, 3072]` product runs at 191 GFLOP/s in torch 2.9 (MKL), 124 GFLOP/s per
//! core in OpenBLAS, and 460 GFLOP/s here (docs/validation.md). The base model's linear layers
//! are ~88 % of its encoder's FLOPs.
#![allow(unsafe_code)]

/// `out = x · w (+ bias on every row)` for row-major `x [rows, d_in]`, `w [d_in, d_out]`,
/// `out [rows, d_out]`, on the current rayon pool's threads.
///
/// # Panics
/// If a slice's length does not match the dimensions (a caller bug, not an input error).
pub fn linear_rows(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    d_in: usize,
    d_out: usize,
    out: &mut [f32],
) {
    assert_eq!(x.len(), rows * d_in, "linear: x is not [rows, d_in]");
    assert_eq!(w.len(), d_in * d_out, "linear: w is not [d_in, d_out]");
    assert_eq!(out.len(), rows * d_out, "linear: out is not [rows, d_out]");
    match bias {
        Some(b) => {
            assert_eq!(b.len(), d_out, "linear: bias is not [d_out]");
            for row in out.chunks_exact_mut(d_out.max(1)) {
                row.copy_from_slice(b);
            }
        }
        None => out.fill(0.0),
    }
    if rows == 0 || d_out == 0 || d_in == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    // Below ~1 MFLOP the fork-join costs more than it saves.
    let parallelism = if threads > 1 && rows * d_in * d_out >= 1 << 19 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three buffers are valid for the lengths asserted above, `out` is exclusively
    // borrowed and does not alias `x` or `w` (shared borrows), and the strides describe
    // row-major `[rows, d_out]`, `[rows, d_in]` and `[d_in, d_out]` matrices within them.
    unsafe {
        gemm::gemm(
            rows,
            d_out,
            d_in,
            out.as_mut_ptr(),
            1,              // dst column stride
            d_out as isize, // dst row stride
            true,           // accumulate onto the bias (or zeros) already in `out`
            x.as_ptr(),
            1,
            d_in as isize,
            w.as_ptr(),
            1,
            d_out as isize,
            1.0, // dst := 1·dst + 1·(x·w)
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_product_with_and_without_bias() {
        // Sizes on both sides of the threading threshold, non-multiples of the kernel tiles.
        for (rows, d_in, d_out) in [(3, 5, 7), (37, 129, 131), (1, 1, 1), (0, 4, 4)] {
            let x: Vec<f32> = (0..rows * d_in)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let w: Vec<f32> = (0..d_in * d_out)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let b: Vec<f32> = (0..d_out).map(|i| i as f32 * 0.25 - 1.0).collect();
            for bias in [None, Some(b.as_slice())] {
                let mut out = vec![f32::NAN; rows * d_out];
                linear_rows(&x, &w, bias, rows, d_in, d_out, &mut out);
                for r in 0..rows {
                    for o in 0..d_out {
                        let mut want = bias.map_or(0.0, |b| b[o] as f64);
                        for i in 0..d_in {
                            want += x[r * d_in + i] as f64 * w[i * d_out + o] as f64;
                        }
                        let got = out[r * d_out + o] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{rows}x{d_in}x{d_out} [{r},{o}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
